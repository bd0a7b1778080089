#pragma once
// The aarch64 kernels, included by kernels_neon.cpp (plain Armv8 NEON) and kernels_dotprod.cpp (with the SDOT
// dot-product instructions, BLUELM_NEON_DOTPROD = 1). Everything is in an anonymous namespace, so each file gets
// its own copy compiled with its own flags (no inline function is shared between tiers).
//
// A panel piece (32 bytes) is two q registers: rows 0-3 and rows 4-7, 4 bytes per row. Nibbles and int8 weights
// are used as signed bytes (a nibble 0..15 fits), activations are broadcast 4 bytes at a time (vld1q_dup_s32).
//   dotprod: SDOT adds the 4 products of each row straight into an int32 lane.
//   plain:   SMULL / SMLAL into int16 lanes (row pairs), widened with SADALP; for int4 a lane holds at most
//            8 products of 15 * 127 before it is widened (15240 < 32767); for int8 every product is widened.
#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "kernels/kernels_isa.h"

#ifndef BLUELM_NEON_DOTPROD
#define BLUELM_NEON_DOTPROD 0
#endif

namespace bluelm::kernels {
namespace {

int8x16_t dup4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

void quantize_row_neon(const float* x, int64_t k, int group, ActSumRule rule, int8_t* q, float* d, float* s) {
  const float32x4_t lim = vdupq_n_f32(127.0f), nlim = vdupq_n_f32(-127.0f);
  for (int64_t b = 0; b < k / group; ++b) {
    const float* xb = x + b * group;
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int i = 0; i < group; i += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(xb + i)));
    const float amax = vmaxvq_f32(m);
    const float db = amax / 127.0f;
    const float32x4_t id = vdupq_n_f32(amax > 0.0f ? 127.0f / amax : 0.0f);
    int32x4_t sum = vdupq_n_s32(0);
    for (int i = 0; i < group; i += 8) {
      const int32x4_t a = vcvtnq_s32_f32(vmaxq_f32(vminq_f32(vmulq_f32(vld1q_f32(xb + i), id), lim), nlim));
      const int32x4_t c = vcvtnq_s32_f32(vmaxq_f32(vminq_f32(vmulq_f32(vld1q_f32(xb + i + 4), id), lim), nlim));
      sum = vaddq_s32(sum, vaddq_s32(a, c));
      vst1_s8(q + b * group + i, vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(c))));
    }
    d[b] = db;
    s[b] = rule.times_d ? db * float(vaddvq_s32(sum)) * rule.factor : float(vaddvq_s32(sum)) * rule.factor;
  }
}

float32x4_t load_scales(const uint8_t* p) {
  uint16_t h[4];
  std::memcpy(h, p, 8);
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

// Integer sums of one block for 8 rows: out[0] rows 0-3, out[1] rows 4-7.
template <int KIND, int G>
void block_sums(const uint8_t* qb, const int8_t* x, int32x4_t out[2]) {
#if BLUELM_NEON_DOTPROD
  int32x4_t a0 = vdupq_n_s32(0), a1 = a0, c0 = a0, c1 = a0;
  if (KIND == static_cast<int>(Kind::int8_sym)) {
    for (int p = 0; p < G / 4; p += 2) {
      const int8x16_t x0 = dup4(x + 4 * p), x1 = dup4(x + 4 * p + 4);
      a0 = vdotq_s32(a0, vld1q_s8(reinterpret_cast<const int8_t*>(qb + 32 * p)), x0);
      a1 = vdotq_s32(a1, vld1q_s8(reinterpret_cast<const int8_t*>(qb + 32 * p + 16)), x0);
      c0 = vdotq_s32(c0, vld1q_s8(reinterpret_cast<const int8_t*>(qb + 32 * p + 32)), x1);
      c1 = vdotq_s32(c1, vld1q_s8(reinterpret_cast<const int8_t*>(qb + 32 * p + 48)), x1);
    }
  } else {
    const uint8x16_t mask = vdupq_n_u8(0x0F);
    for (int p = 0; p < G / 8; ++p) {
      const uint8x16_t v0 = vld1q_u8(qb + 32 * p), v1 = vld1q_u8(qb + 32 * p + 16);
      const int8x16_t xl = dup4(x + 4 * p), xh = dup4(x + G / 2 + 4 * p);
      a0 = vdotq_s32(a0, vreinterpretq_s8_u8(vandq_u8(v0, mask)), xl);
      a1 = vdotq_s32(a1, vreinterpretq_s8_u8(vandq_u8(v1, mask)), xl);
      c0 = vdotq_s32(c0, vreinterpretq_s8_u8(vshrq_n_u8(v0, 4)), xh);
      c1 = vdotq_s32(c1, vreinterpretq_s8_u8(vshrq_n_u8(v1, 4)), xh);
    }
  }
  out[0] = vaddq_s32(a0, c0);
  out[1] = vaddq_s32(a1, c1);
#else
  // Row pairs (01, 23, 45, 67), two int32 lanes per row until the final pairwise add.
  int32x4_t w01 = vdupq_n_s32(0), w23 = w01, w45 = w01, w67 = w01;
  if (KIND == static_cast<int>(Kind::int8_sym)) {
    for (int p = 0; p < G / 4; ++p) {
      const int8x16_t v0 = vld1q_s8(reinterpret_cast<const int8_t*>(qb + 32 * p));
      const int8x16_t v1 = vld1q_s8(reinterpret_cast<const int8_t*>(qb + 32 * p + 16));
      const int8x16_t xv = dup4(x + 4 * p);
      w01 = vpadalq_s16(w01, vmull_s8(vget_low_s8(v0), vget_low_s8(xv)));
      w23 = vpadalq_s16(w23, vmull_high_s8(v0, xv));
      w45 = vpadalq_s16(w45, vmull_s8(vget_low_s8(v1), vget_low_s8(xv)));
      w67 = vpadalq_s16(w67, vmull_high_s8(v1, xv));
    }
  } else {
    const uint8x16_t mask = vdupq_n_u8(0x0F);
    for (int sub = 0; sub < G / 32; ++sub) {
      int16x8_t h01 = vdupq_n_s16(0), h23 = h01, h45 = h01, h67 = h01;
      for (int j = 0; j < 4; ++j) {
        const int p = sub * 4 + j;
        const uint8x16_t v0 = vld1q_u8(qb + 32 * p), v1 = vld1q_u8(qb + 32 * p + 16);
        const int8x16_t l0 = vreinterpretq_s8_u8(vandq_u8(v0, mask)), l1 = vreinterpretq_s8_u8(vandq_u8(v1, mask));
        const int8x16_t u0 = vreinterpretq_s8_u8(vshrq_n_u8(v0, 4)), u1 = vreinterpretq_s8_u8(vshrq_n_u8(v1, 4));
        const int8x16_t xl = dup4(x + 4 * p), xh = dup4(x + G / 2 + 4 * p);
        h01 = vmlal_s8(h01, vget_low_s8(l0), vget_low_s8(xl));
        h23 = vmlal_high_s8(h23, l0, xl);
        h45 = vmlal_s8(h45, vget_low_s8(l1), vget_low_s8(xl));
        h67 = vmlal_high_s8(h67, l1, xl);
        h01 = vmlal_s8(h01, vget_low_s8(u0), vget_low_s8(xh));
        h23 = vmlal_high_s8(h23, u0, xh);
        h45 = vmlal_s8(h45, vget_low_s8(u1), vget_low_s8(xh));
        h67 = vmlal_high_s8(h67, u1, xh);
      }
      w01 = vpadalq_s16(w01, h01);
      w23 = vpadalq_s16(w23, h23);
      w45 = vpadalq_s16(w45, h45);
      w67 = vpadalq_s16(w67, h67);
    }
  }
  out[0] = vpaddq_s32(w01, w23);
  out[1] = vpaddq_s32(w45, w67);
#endif
}

template <int KIND, int G>
void panels_neon(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                 int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const PanelGeometry g = panel_geometry(w.format, w.k);
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = w.data + p * g.stride;
    const int64_t rows = w.n - p * kPanelRows < kPanelRows ? w.n - p * kPanelRows : kPanelRows;
    for (int64_t t = t0; t < t1; ++t) {
      const int8_t* xq = a.q + t * a.k;
      const float* xd = a.d + t * g.nb;
      const float* xs = a.s + t * g.nb;
      float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0;
      for (int64_t b = b0; b < b1; ++b) {
        int32x4_t isum[2];
        block_sums<KIND, G>(panel + b * g.qbytes, xq + b * G, isum);
        const float32x4_t d0 = load_scales(panel + g.scales + b * 16), d1 = load_scales(panel + g.scales + b * 16 + 8);
        const float32x4_t f0 = vcvtq_f32_s32(isum[0]), f1 = vcvtq_f32_s32(isum[1]);
        const float32x4_t vd = vdupq_n_f32(xd[b]), vs = vdupq_n_f32(xs[b]);
        if (KIND == static_cast<int>(Kind::int4_sym)) {
          acc0 = vfmaq_f32(acc0, d0, vfmaq_f32(vs, f0, vd));
          acc1 = vfmaq_f32(acc1, d1, vfmaq_f32(vs, f1, vd));
        } else if (KIND == static_cast<int>(Kind::int4_asym)) {
          const float32x4_t m0 = load_scales(panel + g.minima + b * 16), m1 = load_scales(panel + g.minima + b * 16 + 8);
          acc0 = vfmaq_f32(vfmaq_f32(acc0, d0, vmulq_f32(f0, vd)), m0, vs);
          acc1 = vfmaq_f32(vfmaq_f32(acc1, d1, vmulq_f32(f1, vd)), m1, vs);
        } else {
          acc0 = vfmaq_f32(acc0, d0, vmulq_f32(f0, vd));
          acc1 = vfmaq_f32(acc1, d1, vmulq_f32(f1, vd));
        }
      }
      float tmp[kPanelRows];
      vst1q_f32(tmp, acc0);
      vst1q_f32(tmp + 4, acc1);
      float* out = y + t * ldy + p * kPanelRows;
      for (int64_t r = 0; r < rows; ++r) out[r] = accumulate ? out[r] + tmp[r] : tmp[r];
    }
  }
}

using PanelsFn = void (*)(const PackedView&, const QuantizedActs&, int64_t, int64_t, int64_t, int64_t, int64_t,
                          int64_t, bool, float*, int64_t);

template <int KIND>
PanelsFn pick_group(int group) {
  return group == 32 ? panels_neon<KIND, 32> : group == 64 ? panels_neon<KIND, 64> : panels_neon<KIND, 128>;
}

#include "kernels/kquant_neon_impl.h"  // gemm_panels_k_neon, in this anonymous namespace

void gemm_panels_neon(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                      int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const quant::FormatInfo& fi = quant::format_info(w.format);
  if (fi.super_block && fi.kind != Kind::k8) return gemm_panels_k_neon(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  if (fi.super_block)  // q8_k is an activation format: the scalar kernel only
    return isa_kernels_scalar()->gemm_panels(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  if (quant::is_int5(fi.kind))  // Q5_0 / Q5_1: each panel widened to int8 levels, then the q8_0 kernel
    return gemm_panels_int5_widened(panels_neon<2, 32>, widen_int5_panel, w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  PanelsFn fn = fi.kind == Kind::int4_sym    ? pick_group<0>(fi.group)
                : fi.kind == Kind::int4_asym ? pick_group<1>(fi.group)
                                             : pick_group<2>(fi.group);
  fn(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
}

void layer_norm_row_neon(const float* x, int64_t n, const float* gamma, const float* beta, float eps, float* y) {
  float32x4_t acc = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) acc = vaddq_f32(acc, vld1q_f32(x + i));
  float sum = vaddvq_f32(acc);
  for (; i < n; ++i) sum += x[i];
  const float mean = sum / float(n);
  const float32x4_t vm = vdupq_n_f32(mean);
  acc = vdupq_n_f32(0.0f);
  for (i = 0; i + 4 <= n; i += 4) {
    const float32x4_t v = vsubq_f32(vld1q_f32(x + i), vm);
    acc = vfmaq_f32(acc, v, v);
  }
  float var = vaddvq_f32(acc);
  for (; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float rstd = 1.0f / __builtin_sqrtf(var / float(n) + eps);
  for (i = 0; i + 4 <= n; i += 4) {
    float32x4_t v = vmulq_n_f32(vsubq_f32(vld1q_f32(x + i), vm), rstd);
    if (gamma) v = vmulq_f32(v, vld1q_f32(gamma + i));
    if (beta) v = vaddq_f32(v, vld1q_f32(beta + i));
    vst1q_f32(y + i, v);
  }
  for (; i < n; ++i) {
    float v = (x[i] - mean) * rstd;
    if (gamma) v *= gamma[i];
    if (beta) v += beta[i];
    y[i] = v;
  }
}

}  // namespace
}  // namespace bluelm::kernels

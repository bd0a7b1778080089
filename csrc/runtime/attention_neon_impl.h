#pragma once
// The aarch64 inner loops of attention (attention_isa.h), included by attention_neon.cpp (plain Armv8 NEON) and
// attention_dotprod.cpp (with SDOT, BLUELM_NEON_DOTPROD = 1). Everything is in an anonymous namespace, so each file
// gets its own copy compiled with its own flags. Same arithmetic as the AVX2 tier, four lanes at a time: every score
// and output element is one chain of fused multiply-adds in ascending i or j; loaders and the integer paths give the
// scalar tier's results exactly (the int8 scores up to the order of their per-group float sums).
//   dotprod: SDOT adds 4 int8 products into each int32 lane.
//   plain:   SMULL / SMLAL2 leave 2 products per int16 lane (at most 2 x 127 x 127 = 32258), widened by SADALP.
#include <arm_neon.h>

#include <cmath>
#include <cstring>

#include "runtime/attention.h"
#include "runtime/attention_isa.h"

#ifndef BLUELM_NEON_DOTPROD
#define BLUELM_NEON_DOTPROD 0
#endif

namespace bluelm::runtime {
namespace {

const AttentionKernels& scalar_tier() { return *attention_kernels_scalar(); }

// exp(x) as the AVX2 tier computes it (attention_avx2.cpp): x clamped to [-87.3, 88.3], n = round(x / ln 2),
// r = x - n ln 2 with ln 2 in two parts, the degree-6 Taylor polynomial of exp(r), times 2^n built in the exponent.
float32x4_t exp_neon(float32x4_t x) {
  x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.3f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.0f / 720);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 120), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 24), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 6), p, r);
  p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

// Up to 4 floats of x from i (the rest 0), and back.
float32x4_t load_tail(const float* x, int64_t n) {
  float t[4] = {0, 0, 0, 0};
  std::memcpy(t, x, size_t(n) * sizeof(float));
  return vld1q_f32(t);
}
void store_tail(float* x, int64_t n, float32x4_t v) {
  float t[4];
  vst1q_f32(t, v);
  std::memcpy(x, t, size_t(n) * sizeof(float));
}

float exp_sum_neon(float* x, int64_t n, float sub) {
  const float32x4_t vs = vdupq_n_f32(sub);
  float32x4_t acc = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = exp_neon(vsubq_f32(vld1q_f32(x + i), vs));
    vst1q_f32(x + i, v);
    acc = vaddq_f32(acc, v);
  }
  float s = vaddvq_f32(acc);
  if (i < n) {
    float t[4];
    vst1q_f32(t, exp_neon(vsubq_f32(load_tail(x + i, n - i), vs)));
    for (int64_t j = i; j < n; ++j) s += (x[j] = t[j - i]);
  }
  return s;
}

// 0.5 v (1 + tanh(y)) = v / (1 + exp(-2y)), y = sqrt(2 / pi) (v + 0.044715 v^3).
float32x4_t gelu_tanh4(float32x4_t v) {
  const float32x4_t v3 = vmulq_f32(vmulq_f32(v, v), v);
  const float32x4_t y2 = vmulq_f32(vdupq_n_f32(-2.0f * 0.79788456080286536f), vfmaq_f32(v, vdupq_n_f32(0.044715f), v3));
  return vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0f), exp_neon(y2)));
}

// g / (1 + exp(-g)) * u, as the AVX2 tier computes it.
float32x4_t silu_mul4(float32x4_t g, float32x4_t u) {
  return vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), exp_neon(vnegq_f32(g)))), u);
}

void silu_mul_neon(const float* g, const float* u, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, silu_mul4(vld1q_f32(g + i), vld1q_f32(u + i)));
  if (i < n) store_tail(out + i, n - i, silu_mul4(load_tail(g + i, n - i), load_tail(u + i, n - i)));
}

void rms_norm_row_neon(const float* x, const float* w, float* y, int64_t d, float eps) {
  float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
  int64_t i = 0;
  for (; i + 8 <= d; i += 8) {
    const float32x4_t v0 = vld1q_f32(x + i), v1 = vld1q_f32(x + i + 4);
    a0 = vfmaq_f32(a0, v0, v0);
    a1 = vfmaq_f32(a1, v1, v1);
  }
  float ss = vaddvq_f32(vaddq_f32(a0, a1));
  for (int64_t j = i; j < d; ++j) ss += x[j] * x[j];
  const float inv = 1.0f / std::sqrt(ss / float(d) + eps);
  const float32x4_t vinv = vdupq_n_f32(inv);
  for (i = 0; i + 4 <= d; i += 4) vst1q_f32(y + i, vmulq_f32(vld1q_f32(w + i), vmulq_f32(vld1q_f32(x + i), vinv)));
  for (; i < d; ++i) y[i] = w[i] * (x[i] * inv);
}

void gelu_tanh_neon(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(x + i, gelu_tanh4(vld1q_f32(x + i)));
  if (i < n) store_tail(x + i, n - i, gelu_tanh4(load_tail(x + i, n - i)));
}

float row_max_neon(const float* x, int64_t n) {
  int64_t i = 0;
  float m = x[0];
  if (n >= 4) {
    float32x4_t a = vld1q_f32(x);
    for (i = 4; i + 4 <= n; i += 4) a = vmaxq_f32(a, vld1q_f32(x + i));
    m = vmaxvq_f32(a);
  }
  for (; i < n; ++i) m = m > x[i] ? m : x[i];
  return m;
}

float32x4_t load4_i8(const int8_t* p) {
  int32_t w;
  std::memcpy(&w, p, 4);
  const int16x8_t h = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(w)));
  return vcvtq_f32_s32(vmovl_s16(vget_low_s16(h)));
}

// 4 IEEE halves -> floats (FCVTL: exact, as quant::fp16_to_fp32).
float32x4_t load4_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

// Keys transposed in 4x4 blocks: rows of 4 positions x 4 dimensions loaded as floats by load(position, dimension),
// columns stored into kt; positions nb .. round_up(nb, 8) are zero. hd a multiple of 4.
template <class Load>
void keys_t_4x4(int64_t nb, int64_t hd, float* kt, int64_t ldk, Load load) {
  const int64_t padded = (nb + 7) / 8 * 8;
  for (int64_t j = 0; j < padded; j += 4) {
    for (int64_t i = 0; i < hd; i += 4) {
      float32x4_t r[4];
      for (int64_t a = 0; a < 4; ++a) r[a] = j + a < nb ? load(j + a, i) : vdupq_n_f32(0.0f);
      const float32x4_t t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
      const float32x4_t t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
      const auto d = [](float32x4_t v) { return vreinterpretq_f64_f32(v); };
      vst1q_f32(kt + (i + 0) * ldk + j, vreinterpretq_f32_f64(vtrn1q_f64(d(t0), d(t2))));
      vst1q_f32(kt + (i + 1) * ldk + j, vreinterpretq_f32_f64(vtrn1q_f64(d(t1), d(t3))));
      vst1q_f32(kt + (i + 2) * ldk + j, vreinterpretq_f32_f64(vtrn2q_f64(d(t0), d(t2))));
      vst1q_f32(kt + (i + 3) * ldk + j, vreinterpretq_f32_f64(vtrn2q_f64(d(t1), d(t3))));
    }
  }
}

void keys_i8_t_neon(const int8_t* k, const float* ks, int64_t nb, int64_t hd, int64_t gs, float* kt, int64_t ldk) {
  if (hd % 4 || gs % 4) return scalar_tier().keys_i8_t(k, ks, nb, hd, gs, kt, ldk);
  const int64_t groups = hd / gs;
  keys_t_4x4(nb, hd, kt, ldk, [&](int64_t p, int64_t i) {
    return vmulq_f32(load4_i8(k + p * hd + i), vdupq_n_f32(ks[p * groups + i / gs]));
  });
}

void keys_f32_t_neon(const float* k, int64_t nb, int64_t hd, float* kt, int64_t ldk) {
  if (hd % 4) return scalar_tier().keys_f32_t(k, nb, hd, kt, ldk);
  keys_t_4x4(nb, hd, kt, ldk, [&](int64_t p, int64_t i) { return vld1q_f32(k + p * hd + i); });
}

void keys_f16_t_neon(const uint16_t* k, int64_t nb, int64_t hd, float* kt, int64_t ldk) {
  if (hd % 4) return scalar_tier().keys_f16_t(k, nb, hd, kt, ldk);
  keys_t_4x4(nb, hd, kt, ldk, [&](int64_t p, int64_t i) { return load4_f16(k + p * hd + i); });
}

void values_f16_neon(const uint16_t* v, int64_t nb, int64_t hd, float* vt) {
  const int64_t n = nb * hd, whole = n / 4 * 4;
  for (int64_t i = 0; i < whole; i += 4) vst1q_f32(vt + i, load4_f16(v + i));
  if (whole < n) scalar_tier().values_f16(v + whole, 1, n - whole, vt + whole);
}

void values_i8_neon(const int8_t* v, const float* vs, int64_t nb, int64_t hd, int64_t gs, float* vt) {
  if (hd % 4 || gs % 4) return scalar_tier().values_i8(v, vs, nb, hd, gs, vt);
  const int64_t groups = hd / gs;
  for (int64_t j = 0; j < nb; ++j)
    for (int64_t g = 0; g < groups; ++g) {
      const float32x4_t d = vdupq_n_f32(vs[j * groups + g]);
      for (int64_t i = g * gs; i < (g + 1) * gs; i += 4) vst1q_f32(vt + j * hd + i, vmulq_f32(load4_i8(v + j * hd + i), d));
    }
}

// C [R, 4W] (+)= A [R, k] * B [k, 4W], all row-major: the one micro-kernel of both attention products (as the AVX2
// tier's product_tile). Scores: q [m, hd] * k^T [hd, n] into a fresh tile; values: p [m, nb] * v [nb, hd] added.
template <int R, int W, bool Acc>
void product_tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, float* c, int64_t ldc) {
  float32x4_t acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) acc[r][w] = Acc ? vld1q_f32(c + r * ldc + 4 * w) : vdupq_n_f32(0.0f);
  for (int64_t i = 0; i < k; ++i) {
    float32x4_t bv[W];
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) bv[w] = vld1q_f32(b + i * ldb + 4 * w);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const float x = a[r * lda + i];
#pragma GCC unroll 16
      for (int w = 0; w < W; ++w) acc[r][w] = vfmaq_n_f32(acc[r][w], bv[w], x);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) vst1q_f32(c + r * ldc + 4 * w, acc[r][w]);
}

template <int R, bool Acc>
void product_rows(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t n, int64_t k, float* c,
                  int64_t ldc) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) product_tile<R, 4, Acc>(a, lda, b + j, ldb, k, c + j, ldc);
  for (; j < n; j += 4) product_tile<R, 1, Acc>(a, lda, b + j, ldb, k, c + j, ldc);
}

// C [m, n] (+)= A [m, k] * B [k, n], n a multiple of 4: rows in fours, then the remainder.
template <bool Acc>
void product(const float* a, int64_t lda, int64_t m, const float* b, int64_t ldb, int64_t n, int64_t k, float* c,
             int64_t ldc) {
  for_row_blocks(m, [&](auto rows, int64_t r) {
    product_rows<decltype(rows)::value, Acc>(a + r * lda, lda, b, ldb, n, k, c + r * ldc, ldc);
  });
}

void scores_neon(const float* q, int64_t ldq, int64_t m, const float* kt, int64_t ldk, int64_t nc, int64_t hd,
                 float* s, int64_t lds) {
  product<false>(q, ldq, m, kt, ldk, nc, hd, s, lds);
}

void accumulate_neon(const float* p, int64_t ldp, int64_t m, const float* v, int64_t ldv, int64_t nb, int64_t hd,
                     float* o, int64_t ldo) {
  if (hd % 4) return scalar_tier().accumulate(p, ldp, m, v, ldv, nb, hd, o, ldo);
  product<true>(p, ldp, m, v, ldv, hd, nb, o, ldo);
}

// acc += the products of 16 int8 pairs, 4 per int32 lane.
int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if BLUELM_NEON_DOTPROD
  return vdotq_s32(acc, a, b);
#else
  return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b));
#endif
}

// Decode's integer scores (AttentionKernels::scores_i8q) for 4 positions at a time: per row and scale group, the
// 4 positions' int32 dot products are reduced together by pairwise adds (lane p = position p), converted once and
// scaled by key scale x query scale, in the scalar tier's order of groups.
bool scores_i8q_neon(const int8_t* q8, const float* qd, const int32_t* qsum, int64_t m, const int8_t* k,
                     const float* ks, int64_t nb, int64_t hd, int64_t gs, float* s, int64_t lds) {
  if (gs % 16 || hd % gs) return scalar_tier().scores_i8q(q8, qd, qsum, m, k, ks, nb, hd, gs, s, lds);
  const int64_t groups = hd / gs;
  for (int64_t j0 = 0; j0 < nb; j0 += 4) {
    const int64_t np = nb - j0 < 4 ? nb - j0 : 4;
    const int8_t* kp[4];
    for (int64_t p = 0; p < 4; ++p) kp[p] = k + (j0 + (p < np ? p : np - 1)) * hd;  // a short block repeats its last
    for (int64_t r = 0; r < m; ++r) {
      float32x4_t sc = vdupq_n_f32(0.0f);
      for (int64_t g = 0; g < groups; ++g) {
        int32x4_t acc[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
        for (int64_t i = g * gs; i < (g + 1) * gs; i += 16) {
          const int8x16_t qv = vld1q_s8(q8 + r * hd + i);
#pragma GCC unroll 4
          for (int p = 0; p < 4; ++p) acc[p] = dot16(acc[p], qv, vld1q_s8(kp[p] + i));
        }
        const int32x4_t t = vpaddq_s32(vpaddq_s32(acc[0], acc[1]), vpaddq_s32(acc[2], acc[3]));
        float d[4];
        for (int64_t p = 0; p < 4; ++p) d[p] = p < np ? ks[(j0 + p) * groups + g] * qd[r * groups + g] : 0.0f;
        sc = vaddq_f32(sc, vmulq_f32(vcvtq_f32_s32(t), vld1q_f32(d)));
      }
      if (np == 4) vst1q_f32(s + r * lds + j0, sc);
      else store_tail(s + r * lds + j0, np, sc);
    }
  }
  return true;
}

// Decode's values with int16 weights (AttentionKernels::accumulate_i8w), the scalar tier's rounding: per row and
// scale group the weights are rounded to int16 on the group's scale, then 8 columns at a time summed in int32 with
// SMLAL (v widened to int16 x the weight) over the block's positions. The integer sums are exact, so the result
// equals the scalar tier's.
void accumulate_i8w_neon(const float* p, int64_t ldp, int64_t m, const int8_t* v, const float* vs, int64_t nb,
                         int64_t hd, int64_t gs, float* o, int64_t ldo) {
  const int64_t groups = hd / gs;
  if (gs % 8 || hd % gs || nb > kAttnBlock)
    return scalar_tier().accumulate_i8w(p, ldp, m, v, vs, nb, hd, gs, o, ldo);
  int16_t wq[kAttnBlock];
  for (int64_t r = 0; r < m; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      float w[kAttnBlock];
      for (int64_t j = 0; j < nb; ++j) w[j] = p[r * ldp + j] * vs[j * groups + g];
      float mx = 0.0f;
      for (int64_t j = 0; j < nb; ++j) mx = mx > w[j] ? mx : w[j];
      const float sw = mx / 32767.0f, inv = sw > 0.0f ? 1.0f / sw : 0.0f;
      const float32x4_t vinv = vdupq_n_f32(inv);
      int64_t j = 0;
      for (; j + 4 <= nb; j += 4)  // FCVTNS: round to nearest even, as std::nearbyint
        vst1_s16(wq + j, vmovn_s32(vcvtnq_s32_f32(vmulq_f32(vld1q_f32(w + j), vinv))));
      for (; j < nb; ++j) wq[j] = int16_t(vgetq_lane_s32(vcvtnq_s32_f32(vdupq_n_f32(w[j] * inv)), 0));
      const float32x4_t d = vdupq_n_f32(sw);
      for (int64_t c = g * gs; c < (g + 1) * gs; c += 8) {
        int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
        for (int64_t jj = 0; jj < nb; ++jj) {
          const int16x8_t x = vmovl_s8(vld1_s8(v + jj * hd + c));
          lo = vmlal_n_s16(lo, vget_low_s16(x), wq[jj]);
          hi = vmlal_high_n_s16(hi, x, wq[jj]);
        }
        float* out = o + r * ldo + c;
        vst1q_f32(out, vaddq_f32(vld1q_f32(out), vmulq_f32(d, vcvtq_f32_s32(lo))));
        vst1q_f32(out + 4, vaddq_f32(vld1q_f32(out + 4), vmulq_f32(d, vcvtq_f32_s32(hi))));
      }
    }
}

#if BLUELM_NEON_DOTPROD
constexpr const char* kTierName = "neon_dotprod";
#else
constexpr const char* kTierName = "neon";
#endif

const AttentionKernels kNeon = {
    kTierName,       exp_sum_neon,    gelu_tanh_neon,  row_max_neon,        keys_i8_t_neon,
    keys_f32_t_neon, keys_f16_t_neon, values_i8_neon,  values_f16_neon,     scores_neon,
    accumulate_neon, nullptr,         scores_i8q_neon, accumulate_i8w_neon, nullptr,
    nullptr,         nullptr,         silu_mul_neon,   rms_norm_row_neon};

}  // namespace
}  // namespace bluelm::runtime

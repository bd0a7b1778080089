// Scalar tier: the portable definition every SIMD variant is tested against (same panel layout, same integer
// sums, same float formula per block; SIMD tiers differ only in the order of float additions).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kernels_isa.h"

namespace bluelm::kernels {
namespace {

// One group of x rounded to integers in [-kMax, kMax] on its own step d = amax / kMax: q = nearest-even(x * (kMax
// / amax)), NaN -> 0 (a defined, if meaningless, output; amax ignores NaN, as fmax does). Returns sum(q). The
// rounding adds and subtracts 1.5 * 2^23, exact nearest-even for |v| <= 2^22 in the default rounding mode (no
// library call per value; the compiler may not fold it without -ffast-math).
template <class T, int kMax>
int32_t round_group(const float* xb, int group, T* q, float* d) {
  float amax = 0.0f;
  for (int i = 0; i < group; ++i) {
    const float a = std::fabs(xb[i]);
    amax = a > amax ? a : amax;
  }
  const float lim = float(kMax);
  const float id = amax > 0.0f ? lim / amax : 0.0f;
  int32_t sum = 0;
  for (int i = 0; i < group; ++i) {
    float v = xb[i] * id;
    v = v > lim ? lim : v < -lim ? -lim : v;
    if (v != v) v = 0.0f;
    const int qi = int((v + 12582912.0f) - 12582912.0f);
    q[i] = T(qi);
    sum += qi;
  }
  *d = amax / lim;
  return sum;
}

void quantize_row_scalar(const float* x, int64_t k, int group, ActSumRule rule, int8_t* q, float* d, float* s) {
  for (int64_t b = 0; b < k / group; ++b) {
    const int32_t sum = round_group<int8_t, 127>(x + b * group, group, q + b * group, d + b);
    s[b] = rule.times_d ? d[b] * float(sum) * rule.factor : float(sum) * rule.factor;
  }
}

// The integer dot product of row r of a panel block with the activations of the block.
int32_t dot_block(int kind, int group, const uint8_t* blk, int r, const int8_t* x) {
  int32_t isum = 0;
  if (kind == static_cast<int>(Kind::int8_sym)) {
    for (int j = 0; j < group / 4; ++j) {
      const int8_t* piece = reinterpret_cast<const int8_t*>(blk + (j * kPanelRows + r) * 4);
      for (int i = 0; i < 4; ++i) isum += int32_t(piece[i]) * x[4 * j + i];
    }
  } else {
    for (int j = 0; j < group / 8; ++j) {
      const uint8_t* piece = blk + (j * kPanelRows + r) * 4;
      for (int i = 0; i < 4; ++i)
        isum += int32_t(piece[i] & 0x0F) * x[4 * j + i] + int32_t(piece[i] >> 4) * x[group / 2 + 4 * j + i];
    }
  }
  return isum;
}

// One K-quant super-block of one row against 256 int8 activations x, in integers: isum = sum_j sc_j *
// (sum_{i in sub-block j} q_i x_i) and msum = sum_j m_j * (sum_{i in j} x_i) (Q4_K / Q5_K minima; 0 otherwise).
// The block's value is d * dx * isum - dmin * dx * msum (Q6_K's levels carry their -32; Q8_K has d in float32).
void dot_super_block(Kind kind, const uint8_t* blk, const int8_t* x, int32_t& isum, int32_t& msum) {
  isum = msum = 0;
  if (kind == Kind::k4 || kind == Kind::k5) {
    const uint8_t* sb = blk + 4;
    const uint8_t* qh = blk + 16;
    const uint8_t* qs = blk + (kind == Kind::k4 ? 16 : 48);
    for (int j = 0; j < 8; ++j) {
      const int sc = j < 4 ? sb[j] & 63 : (sb[j + 4] & 0x0F) | ((sb[j - 4] >> 6) << 4);
      const int m = j < 4 ? sb[j + 4] & 63 : (sb[j + 4] >> 4) | ((sb[j] >> 6) << 4);
      int32_t dot = 0, xs = 0;
      for (int l = 0; l < 32; ++l) {
        int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F;
        if (kind == Kind::k5) q |= ((qh[l] >> j) & 1) << 4;
        dot += q * x[32 * j + l];
        xs += x[32 * j + l];
      }
      isum += sc * dot;
      msum += m * xs;
    }
  } else if (kind == Kind::k6) {
    const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
    for (int j = 0; j < 16; ++j) {
      int32_t dot = 0;
      for (int e = 16 * j; e < 16 * j + 16; ++e) {
        const int h = e / 128, s = (e % 128) / 32, l = e % 32;
        const int lo = (blk[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0x0F;
        const int hi = (blk[128 + 32 * h + l] >> (2 * s)) & 3;
        dot += ((lo | (hi << 4)) - 32) * x[e];
      }
      isum += sc[j] * dot;
    }
  } else {
    const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 4);
    for (int i = 0; i < 256; ++i) isum += qs[i] * x[i];
  }
}

void gemm_panels_k_scalar(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0,
                          int64_t t1, int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const PanelGeometry g = panel_geometry(w.format, w.k);
  const quant::FormatInfo& fi = quant::format_info(w.format);
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = w.data + p * g.stride;
    const int64_t rows = std::min<int64_t>(kPanelRows, w.n - p * kPanelRows);
    for (int64_t t = t0; t < t1; ++t) {
      float acc[kPanelRows] = {};
      for (int64_t b = b0; b < b1; ++b) {
        const int8_t* x = a.q + t * a.k + b * g.group;
        const float dx = a.d[t * g.nb + b];
        for (int r = 0; r < kPanelRows; ++r) {
          uint8_t gathered[kMaxPieceBlock];
          const uint8_t* blk = super_block_row(w.format, panel + b * g.qbytes, r, gathered);
          int32_t isum, msum;
          dot_super_block(fi.kind, blk, x, isum, msum);
          if (fi.kind == Kind::k8) {
            float d;
            std::memcpy(&d, blk, 4);
            acc[r] += d * (float(isum) * dx);
          } else if (fi.kind == Kind::k6) {
            acc[r] += quant::fp16_to_fp32(quant::load_u16(blk + 208)) * (float(isum) * dx);
          } else {
            acc[r] += quant::fp16_to_fp32(quant::load_u16(blk)) * (float(isum) * dx) -
                      quant::fp16_to_fp32(quant::load_u16(blk + 2)) * (float(msum) * dx);
          }
        }
      }
      float* out = y + t * ldy + p * kPanelRows;
      for (int64_t r = 0; r < rows; ++r) out[r] = accumulate ? out[r] + acc[r] : acc[r];
    }
  }
}

void gemm_panels_scalar(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                        int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  if (quant::format_info(w.format).super_block)
    return gemm_panels_k_scalar(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  if (quant::is_int5(quant::format_info(w.format).kind))
    return gemm_panels_int5_widened(gemm_panels_scalar, widen_int5_panel, w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  const PanelGeometry g = panel_geometry(w.format, w.k);
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = w.data + p * g.stride;
    const int64_t rows = std::min<int64_t>(kPanelRows, w.n - p * kPanelRows);
    for (int64_t t = t0; t < t1; ++t) {
      float acc[kPanelRows] = {};
      for (int64_t b = b0; b < b1; ++b) {
        const int8_t* x = a.q + t * a.k + b * g.group;
        const float dx = a.d[t * g.nb + b], sx = a.s[t * g.nb + b];
        for (int r = 0; r < kPanelRows; ++r) {
          const int32_t isum = dot_block(g.kind, g.group, panel + b * g.qbytes, r, x);
          uint16_t dh, mh = 0;
          std::memcpy(&dh, panel + g.scales + (b * kPanelRows + r) * 2, 2);
          const float dw = quant::fp16_to_fp32(dh);
          if (g.kind == static_cast<int>(Kind::int4_sym)) {
            acc[r] += dw * (float(isum) * dx + sx);
          } else if (g.kind == static_cast<int>(Kind::int4_asym)) {
            std::memcpy(&mh, panel + g.minima + (b * kPanelRows + r) * 2, 2);
            acc[r] += dw * (float(isum) * dx) + quant::fp16_to_fp32(mh) * sx;
          } else {
            acc[r] += dw * (float(isum) * dx);
          }
        }
      }
      float* out = y + t * ldy + p * kPanelRows;
      for (int64_t r = 0; r < rows; ++r) out[r] = accumulate ? out[r] + acc[r] : acc[r];
    }
  }
}

void layer_norm_row_scalar(const float* x, int64_t n, const float* gamma, const float* beta, float eps, float* y) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / double(n);
  double var = 0.0;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float m = float(mean), rstd = float(1.0 / std::sqrt(var / double(n) + double(eps)));
  for (int64_t i = 0; i < n; ++i) {
    float v = (x[i] - m) * rstd;
    if (gamma) v *= gamma[i];
    if (beta) v += beta[i];
    y[i] = v;
  }
}

// Rounds x [k] to int16 per group: d = amax / 32767, q = nearest-even(x * (32767 / amax)), s = d * sum(q).
void quantize_i16_row_scalar(const float* x, int64_t k, int group, int16_t* q, float* d, float* s) {
  for (int64_t b = 0; b < k / group; ++b) {
    const int32_t sum = round_group<int16_t, 32767>(x + b * group, group, q + b * group, d + b);
    s[b] = d[b] * float(sum);
  }
}

void gemm_i16_panels_scalar(const WidePanel* w, int np, int64_t nb, const I16Acts& a, int64_t t0, int64_t t1,
                            float* y, int64_t ldy, int rows) {
  const int pairs = a.group / 2;
  for (int64_t t = t0; t < t1; ++t) {
    const int16_t* x = a.q + t * a.k;
    const float* xd = a.d + t * nb;
    const float* xs = a.s + t * nb;
    for (int r = 0; r < rows; ++r) {
      const WidePanel& p = w[r / kPanelRows];
      const int lane = r % kPanelRows;
      float acc = 0.0f;
      for (int64_t g = 0; g < nb; ++g) {
        const int16_t* q = p.q + (g * pairs * kPanelRows + lane) * 2;
        const int16_t* xg = x + g * a.group;
        int32_t isum = 0;
        for (int i = 0; i < pairs; ++i)
          isum += int32_t(q[i * 2 * kPanelRows]) * xg[2 * i] + int32_t(q[i * 2 * kPanelRows + 1]) * xg[2 * i + 1];
        acc = std::fma(float(isum), p.d[g * kPanelRows + lane] * xd[g], acc);
        if (p.m) acc = std::fma(p.m[g * kPanelRows + lane], xs[g], acc);
      }
      y[t * ldy + r] = acc;
    }
  }
  (void)np;
}

void add_block_minima_scalar(const float* m, int64_t nb, const float* xsum, int64_t tokens, float* y, int64_t ldy,
                             int rows) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xs = xsum + t * nb;
    float acc[kPanelRows] = {};
    for (int64_t b = 0; b < nb; ++b)
      for (int r = 0; r < kPanelRows; ++r) acc[r] += m[b * kPanelRows + r] * xs[b];
    for (int r = 0; r < rows; ++r) y[t * ldy + r] += acc[r];
  }
}

const IsaKernels kTable = {"scalar", quantize_row_scalar, gemm_panels_scalar, layer_norm_row_scalar,
                              gemm_i16_panels_scalar, nullptr,
                              quantize_i16_row_scalar, nullptr,
                              add_block_minima_scalar, 8};

}  // namespace

const IsaKernels* isa_kernels_scalar() { return &kTable; }

}  // namespace bluelm::kernels

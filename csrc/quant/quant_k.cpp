// GGUF's K-quants (Q4_K, Q5_K, Q6_K, and Q8_K for activations): quantize / dequantize one super-block of 256.
// The quantizers reproduce ggml's reference quantizers (the ones llama.cpp's quantize tool uses without an
// importance matrix) operation by operation in float32, so the bytes match its files; the build compiles this
// file with -ffp-contract=off, like ggml's portable code, so no FMA changes a rounding. Layouts: quant.h.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/quant.h"

namespace bluelm::quant {
namespace {

// Round half to even for |v| < 2^22 by adding 1.5 * 2^23, as ggml does (the same integer for every input its
// quantizers can produce, including the out-of-range ones they then clamp).
int round_even(float v) {
  const float shifted = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return (bits & 0x007FFFFF) - 0x00400000;
}

void put_fp16(uint8_t* p, float v) {
  const uint16_t h = fp32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

// Scale and minimum of n values for levels 0..nmax, minimizing the weighted squared error: start from the
// range, then try nstep + 1 stretched ranges (rmin + rdelta * i levels more) fitted by weighted least squares and
// keep the best. Returns the scale; *neg_min = -(the minimum) >= 0; L holds the levels.
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min, float rmin,
                    float rdelta, int nstep) {
  float lo = x[0], hi = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (lo > 0) lo = 0;
  if (hi == lo) {
    std::fill(L, L + n, uint8_t(0));
    *neg_min = -lo;
    return 0.0f;
  }
  float inv = float(nmax) / (hi - lo);
  float scale = 1.0f / inv;
  float best = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(round_even(inv * (x[i] - lo)), 0, nmax);
    L[i] = uint8_t(l);
    float e = scale * float(l) + lo - x[i];
    e = e * e;
    best += w[i] * e;
  }
  uint8_t trial[32];
  for (int step = 0; step <= nstep; ++step) {
    inv = (rmin + rdelta * float(step) + float(nmax)) / (hi - lo);
    float sl = 0, sl2 = 0, sxl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(round_even(inv * (x[i] - lo)), 0, nmax);
      trial[i] = uint8_t(l);
      sl += w[i] * float(l);
      sl2 += w[i] * float(l) * float(l);
      sxl += w[i] * float(l) * x[i];
    }
    const float det = sum_w * sl2 - sl * sl;
    if (!(det > 0)) continue;
    float s = (sum_w * sxl - sum_x * sl) / det;
    float m = (sl2 * sum_x - sl * sxl) / det;
    if (m > 0) {
      m = 0;
      s = sxl / sl2;
    }
    float err = 0;
    for (int i = 0; i < n; ++i) {
      float e = s * float(trial[i]) + m - x[i];
      e = e * e;
      err += w[i] * e;
    }
    if (err < best) {
      std::memcpy(L, trial, size_t(n));
      best = err;
      scale = s;
      lo = m;
    }
  }
  *neg_min = -lo;
  return scale;
}

// Symmetric scale of n values for levels -nmax..nmax-1, weighted by x^2: the range's scale, then 18 nudged ones
// (nmax +- 0.1 i), keeping the best least-squares fit. L holds levels + nmax. Returns the (signed) scale.
float fit_scale_sym(int n, int nmax, const float* x, int8_t* L) {
  float amax = 0, vmax = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), vmax = x[i];
  if (amax < 1e-15f) {
    std::fill(L, L + n, int8_t(0));
    return 0.0f;
  }
  auto sums = [&](float inv, float& sxl, float& sl2, bool store) {
    sxl = sl2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(round_even(inv * x[i]), -nmax, nmax - 1);
      if (store) L[i] = int8_t(l + nmax);
      const float w = x[i] * x[i];
      sxl += w * x[i] * float(l);
      sl2 += w * float(l) * float(l);
    }
  };
  float inv = float(-nmax) / vmax;
  float sxl, sl2;
  sums(inv, sxl, sl2, true);
  float scale = sl2 != 0 ? sxl / sl2 : 0.0f;
  float best = scale * sxl;
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    inv = -(float(nmax) + 0.1f * float(step)) / vmax;
    sums(inv, sxl, sl2, false);
    if (sl2 > 0 && sxl * sxl > best * sl2) {
      sums(inv, sxl, sl2, true);
      scale = sxl / sl2;
      best = scale * sxl;
    }
  }
  return scale;
}

// The 6-bit scale and minimum of sub-block j from the 12 packed bytes.
void scale_min(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q4_K / Q5_K: levels 0..nmax per sub-block of 32 into L, the header (d, dmin, 12 scale bytes) into out.
void quantize_k45(const float* x, int nmax, float rmin, int nstep, uint8_t* out, uint8_t* L) {
  float scales[8], mins[8], w[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float av = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) w[l] = av + std::fabs(xs[l]);
    scales[j] = fit_scale_min(32, nmax, xs, w, L + 32 * j, &mins[j], rmin, 0.1f, nstep);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  uint8_t* sb = out + 4;
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = std::min<uint8_t>(63, uint8_t(round_even(inv_scale * scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, uint8_t(round_even(inv_min * mins[j])));
    if (j < 4) {
      sb[j] = ls;
      sb[j + 4] = lm;
    } else {
      sb[j + 4] = uint8_t((ls & 0x0F) | ((lm & 0x0F) << 4));
      sb[j - 4] |= uint8_t((ls >> 4) << 6);
      sb[j] |= uint8_t((lm >> 4) << 6);
    }
  }
  put_fp16(out, max_scale / 63.0f);
  put_fp16(out + 2, max_min / 63.0f);
  // Levels again against the stored (rounded) scales; a sub-block whose scale rounds to 0 keeps its fitted ones.
  const float d = fp16_to_fp32(load_u16(out)), dmin = fp16_to_fp32(load_u16(out + 2));
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    scale_min(j, sb, sc, m);
    const float ds = d * float(sc);
    if (ds == 0.0f) continue;
    const float dm = dmin * float(m);
    for (int l = 0; l < 32; ++l) L[32 * j + l] = uint8_t(std::clamp(round_even((x[32 * j + l] + dm) / ds), 0, nmax));
  }
}

void quantize_q4_k(const float* x, uint8_t* out) {
  uint8_t L[256];
  std::memset(out, 0, sizeof(BlockQ4_K));
  quantize_k45(x, 15, -1.0f, 20, out, L);
  uint8_t* qs = out + 16;
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < 32; ++l) qs[32 * i + l] = uint8_t(L[64 * i + l] | (L[64 * i + 32 + l] << 4));
}

void quantize_q5_k(const float* x, uint8_t* out) {
  uint8_t L[256];
  std::memset(out, 0, sizeof(BlockQ5_K));
  quantize_k45(x, 31, -0.5f, 15, out, L);
  uint8_t* qh = out + 16;
  uint8_t* qs = out + 48;
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < 32; ++l) {
      const int a = L[64 * i + l], b = L[64 * i + 32 + l];
      qh[l] |= uint8_t(((a >> 4) << (2 * i)) | ((b >> 4) << (2 * i + 1)));
      qs[32 * i + l] = uint8_t((a & 0x0F) | ((b & 0x0F) << 4));
    }
}

void quantize_q6_k(const float* x, uint8_t* out) {
  int8_t L[256];
  float scales[16];
  float max_scale = 0, max_abs = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = fit_scale_sym(16, 32, x + 16 * j, L + 16 * j);
    if (std::fabs(scales[j]) > max_abs) max_abs = std::fabs(scales[j]), max_scale = scales[j];
  }
  std::memset(out, 0, sizeof(BlockQ6_K));
  if (max_abs < 1e-15f) return;  // all zero: every byte 0 (d = +0)
  int8_t* sc = reinterpret_cast<int8_t*>(out + 192);
  const float inv = -128.0f / max_scale;
  put_fp16(out + 208, 1.0f / inv);
  for (int j = 0; j < 16; ++j) sc[j] = int8_t(std::min(127, round_even(inv * scales[j])));
  const float d = fp16_to_fp32(load_u16(out + 208));
  for (int j = 0; j < 16; ++j) {
    const float ds = d * float(sc[j]);
    if (ds == 0.0f) continue;
    for (int l = 0; l < 16; ++l) L[16 * j + l] = int8_t(std::clamp(round_even(x[16 * j + l] / ds), -32, 31) + 32);
  }
  uint8_t* ql = out;
  uint8_t* qh = out + 128;
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* q = reinterpret_cast<const uint8_t*>(L) + 128 * h + l;  // levels 0..63
      ql[64 * h + l] = uint8_t((q[0] & 0x0F) | ((q[64] & 0x0F) << 4));
      ql[64 * h + 32 + l] = uint8_t((q[32] & 0x0F) | ((q[96] & 0x0F) << 4));
      qh[32 * h + l] = uint8_t((q[0] >> 4) | ((q[32] >> 4) << 2) | ((q[64] >> 4) << 4) | ((q[96] >> 4) << 6));
    }
}

void quantize_q8_k(const float* x, uint8_t* out) {
  BlockQ8_K b{};
  float amax = 0, vmax = 0;
  for (int i = 0; i < 256; ++i)
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), vmax = x[i];
  if (amax != 0) {
    const float inv = -127.0f / vmax;
    for (int i = 0; i < 256; ++i) b.qs[i] = int8_t(std::min(127, round_even(inv * x[i])));
    for (int j = 0; j < 16; ++j) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += b.qs[16 * j + i];
      b.bsums[j] = int16_t(sum);
    }
    b.d = 1.0f / inv;
  }
  std::memcpy(out, &b, sizeof b);
}

}  // namespace

void quantize_super_block(Kind kind, const float* x, uint8_t* out) {
  switch (kind) {
    case Kind::k4: return quantize_q4_k(x, out);
    case Kind::k5: return quantize_q5_k(x, out);
    case Kind::k6: return quantize_q6_k(x, out);
    default: return quantize_q8_k(x, out);
  }
}

void dequantize_super_block(Kind kind, const uint8_t* in, float* y) {
  if (kind == Kind::k4 || kind == Kind::k5) {
    const float d = fp16_to_fp32(load_u16(in)), dmin = fp16_to_fp32(load_u16(in + 2));
    const uint8_t* sb = in + 4;
    const uint8_t* qh = in + 16;                          // Q5_K only
    const uint8_t* qs = in + (kind == Kind::k4 ? 16 : 48);
    for (int j = 0; j < 8; ++j) {
      int sc, m;
      scale_min(j, sb, sc, m);
      const float ds = d * float(sc), dm = dmin * float(m);
      const int shift = (j % 2) * 4, i = j / 2;  // sub-block j: nibble half (j % 2) of bytes 32(j / 2)..
      for (int l = 0; l < 32; ++l) {
        int q = (qs[32 * i + l] >> shift) & 0x0F;
        if (kind == Kind::k5) q |= ((qh[l] >> j) & 1) << 4;
        y[32 * j + l] = ds * float(q) - dm;
      }
    }
  } else if (kind == Kind::k6) {
    const float d = fp16_to_fp32(load_u16(in + 208));
    const uint8_t* ql = in;
    const uint8_t* qh = in + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(in + 192);
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, s = (e % 128) / 32, l = e % 32;  // quarter s of half h
      const int lo = (ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 0x0F;
      const int hi = (qh[32 * h + l] >> (2 * s)) & 3;
      y[e] = d * float(sc[e / 16]) * float((lo | (hi << 4)) - 32);
    }
  } else {
    float d;
    std::memcpy(&d, in, 4);
    const int8_t* qs = reinterpret_cast<const int8_t*>(in + 4);
    for (int i = 0; i < 256; ++i) y[i] = d * float(qs[i]);
  }
}

}  // namespace bluelm::quant

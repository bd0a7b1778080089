// AVX2 products of the K-quants (Q4_K, Q5_K, Q6_K) with int8 activations quantized per super-block of 256.
// Per panel and super-block, the 8 rows' blocks are first unpacked into unsigned levels (0..15, 0..31 or 0..63)
// and sub-block scales (Q4_K / Q5_K: one per 32, Q6_K: one per 16); that work is shared by every token of the
// tile. Per token and row, vpmaddubsw multiplies 32 levels by 32 activations into pair sums (at most
// 2 * 63 * 127 = 16002, no saturation), vpmaddwd applies the sub-block scales of those 32 in integers, and the
// row's 8 int32 lanes are converted to float once per super-block (fused into 8 float accumulators, summed at the
// end). The offset term (Q4_K / Q5_K minima, Q6_K's -32) is one vpmaddwd of the row's 16 offsets with the 16 sums
// of 16 activations, taken once per token. Same panel layout and result as the scalar kernel
// (kernels_scalar.cpp) up to float rounding.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/kernels_isa.h"

namespace bluelm::kernels {
namespace {

// One row's super-block, unpacked: levels, per-32 scale and offset vectors (two sub-blocks of 16 per vector),
// and the float factors of the integer sums: value = D * sum(sc * q * x) - M * sum(mn * x).
struct Unpacked {
  alignas(32) uint8_t q[256];
  __m256i sc[8];
  __m256i mn;  // the 16 offsets in the order of activation_sums16: sub-blocks 0, 2, .., 14 | 1, 3, .., 15
  float D, M;
};

// Offsets of the 16 sub-blocks of 16 (int16) in the lane order activation_sums16 produces.
inline __m256i offsets16(const int* mn16) {
  return _mm256_setr_epi16(int16_t(mn16[0]), int16_t(mn16[2]), int16_t(mn16[4]), int16_t(mn16[6]),
                           int16_t(mn16[8]), int16_t(mn16[10]), int16_t(mn16[12]), int16_t(mn16[14]),
                           int16_t(mn16[1]), int16_t(mn16[3]), int16_t(mn16[5]), int16_t(mn16[7]),
                           int16_t(mn16[9]), int16_t(mn16[11]), int16_t(mn16[13]), int16_t(mn16[15]));
}

// The 16 sums of 16 activations of a super-block (each at most 16 * 127: int16), from the pair sums xs[v] of the
// 8 vectors of 32: lanes [S0, S2, .., S14 | S1, S3, .., S15] (vphaddd works within 128-bit halves).
inline __m256i activation_sums16(const __m256i* xs) {
  const __m256i one16 = _mm256_set1_epi16(1);
  __m256i s[8];
  for (int v = 0; v < 8; ++v) s[v] = _mm256_madd_epi16(xs[v], one16);  // sums of 4
  const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
  const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
  return _mm256_packs_epi32(a, b);
}

inline __m256i pair16(int lo, int hi) {
  return _mm256_setr_m128i(_mm_set1_epi16(int16_t(lo)), _mm_set1_epi16(int16_t(hi)));
}

void unpack_k45(Kind kind, const uint8_t* blk, Unpacked& u) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  const uint8_t* sb = blk + 4;
  const uint8_t* qs = blk + (kind == Kind::k4 ? 16 : 48);
  const __m256i qh = kind == Kind::k5 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16))
                                      : _mm256_setzero_si256();
  for (int i = 0; i < 4; ++i) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * i));
    __m256i a = _mm256_and_si256(v, low), b = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    if (kind == Kind::k5) {
      const __m256i ma = _mm256_set1_epi8(char(1 << (2 * i))), mb = _mm256_set1_epi8(char(2 << (2 * i)));
      const __m256i sixteen = _mm256_set1_epi8(16);
      a = _mm256_or_si256(a, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, ma), ma), sixteen));
      b = _mm256_or_si256(b, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, mb), mb), sixteen));
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(u.q + 64 * i), a);
    _mm256_store_si256(reinterpret_cast<__m256i*>(u.q + 64 * i + 32), b);
  }
  int mn16[16];
  for (int j = 0; j < 8; ++j) {
    const int sc = j < 4 ? sb[j] & 63 : (sb[j + 4] & 0x0F) | ((sb[j - 4] >> 6) << 4);
    const int m = j < 4 ? sb[j + 4] & 63 : (sb[j + 4] >> 4) | ((sb[j] >> 6) << 4);
    u.sc[j] = _mm256_set1_epi16(int16_t(sc));
    mn16[2 * j] = mn16[2 * j + 1] = m;
  }
  u.mn = offsets16(mn16);
  u.D = quant::fp16_to_fp32(quant::load_u16(blk));
  u.M = quant::fp16_to_fp32(quant::load_u16(blk + 2));
}

void unpack_k6(const uint8_t* blk, Unpacked& u) {
  const __m256i low = _mm256_set1_epi8(0x0F), two = _mm256_set1_epi8(3);
  for (int h = 0; h < 2; ++h) {
    const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
    const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
    const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
    const __m256i lo[4] = {_mm256_and_si256(l0, low), _mm256_and_si256(l1, low),
                           _mm256_and_si256(_mm256_srli_epi16(l0, 4), low),
                           _mm256_and_si256(_mm256_srli_epi16(l1, 4), low)};
    for (int s = 0; s < 4; ++s) {
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * s), two);
      _mm256_store_si256(reinterpret_cast<__m256i*>(u.q + 128 * h + 32 * s),
                         _mm256_or_si256(lo[s], _mm256_slli_epi16(hi, 4)));
    }
  }
  const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
  int mn16[16];
  for (int v = 0; v < 8; ++v) u.sc[v] = pair16(sc[2 * v], sc[2 * v + 1]);
  for (int j = 0; j < 16; ++j) mn16[j] = 32 * sc[j];
  u.mn = offsets16(mn16);
  u.D = u.M = quant::fp16_to_fp32(quant::load_u16(blk + 208));
}

float hsum_f(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  m = _mm_add_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

}  // namespace

void gemm_panels_k_avx2(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                        int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const PanelGeometry g = panel_geometry(w.format, w.k);
  const quant::FormatInfo& fi = quant::format_info(w.format);
  const __m256i ones = _mm256_set1_epi8(1);
  Unpacked u[kPanelRows];
  // Per token and row, 8 float lanes accumulate the super-blocks (one conversion per 256 weights); summed at the end.
  constexpr int64_t kTokens = 32;
  __m256 acc[kTokens][kPanelRows];
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = w.data + p * g.stride;
    const int64_t rows = std::min<int64_t>(kPanelRows, w.n - p * kPanelRows);
    for (int64_t tb = t0; tb < t1; tb += kTokens) {
      const int64_t te = std::min(t1, tb + kTokens);
      for (int64_t t = tb; t < te; ++t)
        for (int r = 0; r < kPanelRows; ++r) acc[t - tb][r] = _mm256_setzero_ps();
      for (int64_t b = b0; b < b1; ++b) {
        for (int r = 0; r < kPanelRows; ++r) {
          const uint8_t* blk = panel + b * g.qbytes + r * fi.block_bytes;
          if (fi.kind == Kind::k6)
            unpack_k6(blk, u[r]);
          else
            unpack_k45(fi.kind, blk, u[r]);
        }
        for (int64_t t = tb; t < te; ++t) {
          const int8_t* x = a.q + t * a.k + b * g.group;
          const float dx = a.d[t * g.nb + b];
          __m256i xv[8], xs[8];
          for (int v = 0; v < 8; ++v) {
            xv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 * v));
            xs[v] = _mm256_maddubs_epi16(ones, xv[v]);  // pair sums of the activations
          }
          const __m256i sums16 = activation_sums16(xs);
          for (int r = 0; r < kPanelRows; ++r) {
            __m256i dot = _mm256_setzero_si256();
            for (int v = 0; v < 8; ++v) {
              const __m256i q = _mm256_load_si256(reinterpret_cast<const __m256i*>(u[r].q + 32 * v));
              dot = _mm256_add_epi32(dot, _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv[v]), u[r].sc[v]));
            }
            const __m256i off = _mm256_madd_epi16(sums16, u[r].mn);
            __m256& out = acc[t - tb][r];
            if (fi.kind == Kind::k6) {  // the offset has the scale's factor: subtract in integers
              out = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(dot, off)), _mm256_set1_ps(u[r].D * dx), out);
            } else {
              out = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(u[r].D * dx), out);
              out = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(off), _mm256_set1_ps(u[r].M * dx), out);
            }
          }
        }
      }
      for (int64_t t = tb; t < te; ++t) {
        float* out = y + t * ldy + p * kPanelRows;
        for (int64_t r = 0; r < rows; ++r) {
          const float v = hsum_f(acc[t - tb][r]);
          out[r] = accumulate ? out[r] + v : v;
        }
      }
    }
  }
}

}  // namespace bluelm::kernels

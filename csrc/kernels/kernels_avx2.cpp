// AVX2 + FMA + F16C tier (Haswell, Zen 1-3 and later). Integer dot products with vpmaddubsw: the unsigned
// operand is the weight (a nibble 0..15, or |w| for int8 with the activation's sign moved over by vpsignb), the
// signed one the int8 activation. For int4 a pair sum is at most 2 * 15 * 127 = 3810, so eight vpmaddubsw
// results (32 weights) add up in int16 with vpaddw before one vpmaddwd widens them: 2 ops per 32 products
// instead of 3. A tile is two 8-row panels (one row per 32-bit lane) by 4 tokens, or one panel by the 1-3 tokens
// left over (a decode step is one token).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/asm_bytes.h"
#include "kernels/kernels_isa.h"

namespace bluelm::kernels {
namespace {

int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

float hsum(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  m = _mm_add_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

int32_t hsum_i32(__m256i v) {
  __m128i m = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0x4E));
  m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0xB1));
  return _mm_cvtsi128_si32(m);
}

// Decode (one token) streams every weight from DRAM once. The hardware prefetchers alone kept this machine's
// GEMV at 53-65% of its read bandwidth; a software prefetch 24 KB ahead (well past the 4 KB pages the L2 prefetcher
// stops at) raised it by 10-20 points. The prefetch walks the packed matrix linearly, quantized bytes and scales
// alike: prefetching 24 KB past each block's own bytes had left every panel's scale region (1152 of 10368 bytes for
// K = 2304) shifted into a hole of the prefetched stream, and closing it gave another 4-12 points (A/B in one
// process: q4_0 stream GEMV 63-72% -> 66-78% of the read bandwidth, 1 thread; benchmarks/kernels.py, `stream`
// rows; docs/kernels.md). 16-64 KB ahead measured the same within noise. Prefetching past the end of the matrix is
// harmless: prefetches do not fault. The distance is kPrefetchBytes, the level decode_prefetch_l2() (SpreadPrefetch,
// kernels_isa.h).


// The two-panel tiles keep their 8 float accumulators in a small array in memory, updated in place once per
// block: the assembly block needs all 16 ymm registers, so they cannot stay in registers anyway, and when they
// were __m256 variables gcc spilled them around it with two stores each and reloaded its pointers (A/B in one
// process, bit-identical results: q4_0 T = 128 +4-8% on one thread, q4_1 +4-7%, q8_0 +2-14%).
inline void fma_into(float* acc, __m256 a, __m256 b) {
  _mm256_store_ps(acc, _mm256_fmadd_ps(a, b, _mm256_load_ps(acc)));
}

void quantize_row_avx2(const float* x, int64_t k, int group, ActSumRule rule, int8_t* q, float* d, float* s) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256 lim = _mm256_set1_ps(127.0f);
  for (int64_t b = 0; b < k / group; ++b) {
    const float* xb = x + b * group;
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < group; i += 8) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(xb + i), abs_mask));
    const float amax = hmax(m);
    const float db = amax / 127.0f;
    const __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    __m256i sum = _mm256_setzero_si256();
    for (int i = 0; i < group; i += 32) {
      __m256i v[4];
      for (int j = 0; j < 4; ++j) {
        const __m256 p = _mm256_mul_ps(_mm256_loadu_ps(xb + i + 8 * j), id);
        v[j] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(p, lim), _mm256_sub_ps(_mm256_setzero_ps(), lim)));
      }
      sum = _mm256_add_epi32(sum, _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3])));
      const __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * group + i), _mm256_permutevar8x32_epi32(p8, order));
    }
    d[b] = db;
    s[b] = rule.times_d ? db * float(hsum_i32(sum)) * rule.factor : float(hsum_i32(sum)) * rule.factor;
  }
}



// Four tokens x one 32-weight sub-block of two int4 panels (16 rows): a[m] / b[m] (int16 lanes, one row per 32-bit
// lane pair) = sum over the sub-block of nibble * activation. Each broadcast activation feeds two vpmaddubsw. In
// assembly because gcc 12 computed all the products of the intrinsics version before adding any, spilling half of
// them (a one-panel version in assembly was ~25% faster than intrinsics). On this Zen 3 the broadcast loads bounded
// the one-panel block (an isolated copy in L1 ran at ~65% of the vpmaddubsw peak
// with broadcasts, 87% with register operands), and a 128-token chunk pulls its activations from L2 once per tile,
// so halving the broadcasts halves that traffic too (q4_0 T = 128: 100-128 -> 152-169 GFLOP/s on 1 thread). The
// isolated two-panel block runs at ~65% of the peak, and 32-byte loads in place of its broadcasts or pre-unpacked
// nibbles changed that by under 3%. Uses all 16 ymm registers.
#define BLUELM_Q4P_LOAD(J)                                                               \
  "vmovdqu " #J "*32(%[w0]), %[h0]\n\t"                                                  \
  "vpand %[h0], %[mask], %[l0]\n\t"                                                      \
  "vpsrlw $4, %[h0], %[h0]\n\t"                                                          \
  "vpand %[h0], %[mask], %[h0]\n\t"                                                      \
  "vmovdqu " #J "*32(%[w1]), %[h1]\n\t"                                                  \
  "vpand %[h1], %[mask], %[l1]\n\t"                                                      \
  "vpsrlw $4, %[h1], %[h1]\n\t"                                                          \
  "vpand %[h1], %[mask], %[h1]\n\t"
#define BLUELM_Q4P_BCAST(J, XA)                                                          \
  "vpbroadcastd " #J "*4" XA ", %[t0]\n\t"                                               \
  "vpbroadcastd %c[h]+" #J "*4" XA ", %[t1]\n\t"
#define BLUELM_Q4P_FIRST(J, XA, A, B)                                                    \
  BLUELM_Q4P_BCAST(J, XA)                                                                \
  "vpmaddubsw %[t0], %[l0], %[" A "]\n\t"                                                \
  "vpmaddubsw %[t1], %[h0], %[p]\n\t"                                                    \
  "vpaddw %[p], %[" A "], %[" A "]\n\t"                                                  \
  "vpmaddubsw %[t0], %[l1], %[" B "]\n\t"                                                \
  "vpmaddubsw %[t1], %[h1], %[p]\n\t"                                                    \
  "vpaddw %[p], %[" B "], %[" B "]\n\t"
#define BLUELM_Q4P_NEXT(J, XA, A, B)                                                     \
  BLUELM_Q4P_BCAST(J, XA)                                                                \
  "vpmaddubsw %[t0], %[l0], %[p]\n\t"                                                    \
  "vpaddw %[p], %[" A "], %[" A "]\n\t"                                                  \
  "vpmaddubsw %[t1], %[h0], %[p]\n\t"                                                    \
  "vpaddw %[p], %[" A "], %[" A "]\n\t"                                                  \
  "vpmaddubsw %[t0], %[l1], %[t0]\n\t"                                                   \
  "vpaddw %[t0], %[" B "], %[" B "]\n\t"                                                 \
  "vpmaddubsw %[t1], %[h1], %[t1]\n\t"                                                   \
  "vpaddw %[t1], %[" B "], %[" B "]\n\t"
#define BLUELM_Q4P_STEP(J, OP)                                                           \
  BLUELM_Q4P_LOAD(J)                                                                     \
  OP(J, "(%[x])", "a0", "b0")                                                            \
  OP(J, "(%[x],%[k],1)", "a1", "b1")                                                     \
  OP(J, "(%[x],%[k],2)", "a2", "b2")                                                     \
  OP(J, "(%[x],%[k3],1)", "a3", "b3")

// Four tokens x one 32-weight sub-block of two int4 panels: a[m] for the panel at w0, b[m] for the one at w1.
template <int HI>
inline void q4_sub_p2m4(const uint8_t* w0, const uint8_t* w1, const int8_t* x, int64_t k, __m256i mask,
                        __m256i (&a)[4], __m256i (&b)[4]) {
  __m256i l0, h0, l1, h1, t0, t1, p;
  const int64_t k3 = 3 * k;
  __asm__(BLUELM_Q4P_STEP(0, BLUELM_Q4P_FIRST) BLUELM_Q4P_STEP(1, BLUELM_Q4P_NEXT)
              BLUELM_Q4P_STEP(2, BLUELM_Q4P_NEXT) BLUELM_Q4P_STEP(3, BLUELM_Q4P_NEXT)
          : [a0] "=&x"(a[0]), [a1] "=&x"(a[1]), [a2] "=&x"(a[2]), [a3] "=&x"(a[3]), [b0] "=&x"(b[0]),
            [b1] "=&x"(b[1]), [b2] "=&x"(b[2]), [b3] "=&x"(b[3]), [l0] "=&x"(l0), [h0] "=&x"(h0), [l1] "=&x"(l1),
            [h1] "=&x"(h1), [t0] "=&x"(t0), [t1] "=&x"(t1), [p] "=&x"(p)
          : [w0] "r"(w0), [w1] "r"(w1), [x] "r"(x), [k] "r"(k), [k3] "r"(k3), [mask] "x"(mask), [h] "i"(HI),
            "m"(bytes_at<128>(w0)), "m"(bytes_at<128>(w1)), "m"(bytes_at<HI + 16>(x)), "m"(bytes_at<HI + 16>(x + k)),
            "m"(bytes_at<HI + 16>(x + 2 * k)), "m"(bytes_at<HI + 16>(x + k3)));
}
#undef BLUELM_Q4P_LOAD
#undef BLUELM_Q4P_BCAST
#undef BLUELM_Q4P_FIRST
#undef BLUELM_Q4P_NEXT
#undef BLUELM_Q4P_STEP

// The activation rows of tokens t .. t + M - 1: their int8 values, block scales and block sums.
template <int M>
struct TokenRows {
  const int8_t* q[M];
  const float* d[M];
  const float* s[M];
  TokenRows(const QuantizedActs& a, int64_t t, int64_t nb) {
    for (int m = 0; m < M; ++m) {
      q[m] = a.q + (t + m) * a.k;
      d[m] = a.d + (t + m) * nb;
      s[m] = a.s + (t + m) * nb;
    }
  }
};

// One token of Q8_0 with the scales last (decode_scales_last(), kernels.h): the tile reads its panel front to back,
// as one stream. Each block's 8 row values (the integer sums times the activations' scale) wait here, and the
// panel's fp16 scales, which pack.cpp puts after all of its levels, are applied after the last block, with the same
// FMAs in the same order as per block (the same bytes). The values and the activations stay in L1 while the panel
// streams past only up to kScalesLastBytes of the two: past it (K = 4096 and up) the stream ran slower than
// with the scales read per block and the software prefetch; there the tile prefetches the next panel's scales to L2
// as it starts a panel (q8_0_next_scales), so its reads of them leave the memory's one stream alone. Q4_0 streamed
// 0.94-0.97x as fast with the scales last, so it keeps the scales per block (docs/kernels.md, "Decode with the scales
// last").
inline bool scales_last(const PanelGeometry& g, int64_t k, int kind) {
  return kind == static_cast<int>(Kind::int8_sym) && q8_0_scales_last(g, k);
}
template <int M>
struct DeferredScales {
  // K >= 32 per block, so at most kScalesLastBytes / 64 blocks fit the budget.
  static constexpr int64_t kBlocks = kScalesLastBytes / 64;
  bool on;
  DeferredScales(const PanelGeometry& g, int64_t k, int kind) : on(M == 1 && scales_last(g, k, kind)) {}
  alignas(32) float v[M == 1 ? kBlocks : 1][kPanelRows];
  __attribute__((always_inline)) void put(int64_t i, __m256 x) { _mm256_store_ps(v[i], x); }
  // acc += dw[b] * v[b] for b in [b0, b1), b0 the block of v[0].
  __attribute__((always_inline)) void apply(const uint16_t* dsc, int64_t b0, int64_t b1, __m256& acc) const {
    for (int64_t b = b0; b < b1; ++b) {
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dsc + b * kPanelRows)));
      acc = _mm256_fmadd_ps(dw, _mm256_load_ps(v[b - b0]), acc);
    }
  }
};

// Accumulates acc[m] (8 rows) += W_panel[blocks b0..b1) . x[t + m] for int4 formats of group G.
template <int KIND, int G, int M>
void tile_int4(const uint8_t* panel, const PanelGeometry& g, const QuantizedActs& a, int64_t t, int64_t b0,
               int64_t b1, __m256 (&acc)[M]) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  const uint16_t* dsc = reinterpret_cast<const uint16_t*>(panel + g.scales);
  const uint16_t* msc = reinterpret_cast<const uint16_t*>(panel + g.minima);
  const TokenRows<M> rows(a, t, g.nb);
  const int8_t* const* xq = rows.q;
  const float* const* xd = rows.d;
  const float* const* xs = rows.s;
  SpreadPrefetch pf{prefetch_start(panel, g, b0), 0};
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* qb = panel + b * (4 * G);
    pf.end = prefetch_target(panel, g, b);
    __m256i isum[M];
#pragma GCC unroll 4
    for (int sub = 0; sub < G / 32; ++sub) {
      __m256i s16[M];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const int p = sub * 4 + j;
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb + 32 * p));
        pf.one();
        const __m256i lo = _mm256_and_si256(v, mask);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
#pragma GCC unroll 4
        for (int m = 0; m < M; ++m) {
          const int8_t* x = xq[m] + b * G;
          const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(load_i32(x + 4 * p)));
          const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load_i32(x + G / 2 + 4 * p)));
          s16[m] = j == 0 ? _mm256_add_epi16(plo, phi) : _mm256_add_epi16(s16[m], _mm256_add_epi16(plo, phi));
        }
      }
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m) {
        const __m256i s32 = _mm256_madd_epi16(s16[m], ones);
        isum[m] = sub == 0 ? s32 : _mm256_add_epi32(isum[m], s32);
      }
    }
    pf.rest();
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dsc + b * kPanelRows)));
    if (KIND == static_cast<int>(Kind::int4_sym)) {
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m) {
        const __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[m]), _mm256_broadcast_ss(xd[m] + b),
                                         _mm256_broadcast_ss(xs[m] + b));
        acc[m] = _mm256_fmadd_ps(dw, v, acc[m]);
      }
    } else {
      const __m256 mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(msc + b * kPanelRows)));
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m) {
        const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(isum[m]), _mm256_broadcast_ss(xd[m] + b));
        acc[m] = _mm256_fmadd_ps(mw, _mm256_broadcast_ss(xs[m] + b), _mm256_fmadd_ps(dw, v, acc[m]));
      }
    }
  }
}

// Accumulates acc[8m .. 8m+8) (panel p) and acc[32 + 8m ..) (panel p+1) += W (blocks b0..b1) . x[t + m], m < 4,
// for int4 formats; acc is 32-byte aligned (fma_into).
template <int KIND, int G>
void tile_int4_pair(const uint8_t* panel0, const uint8_t* panel1, const PanelGeometry& g, const QuantizedActs& a,
                    int64_t t, int64_t b0, int64_t b1, float* acc) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  const uint16_t* dsc0 = reinterpret_cast<const uint16_t*>(panel0 + g.scales);
  const uint16_t* dsc1 = reinterpret_cast<const uint16_t*>(panel1 + g.scales);
  const uint16_t* msc0 = reinterpret_cast<const uint16_t*>(panel0 + g.minima);
  const uint16_t* msc1 = reinterpret_cast<const uint16_t*>(panel1 + g.minima);
  const int8_t* xq = a.q + t * a.k;
  const float* xd = a.d + t * g.nb;
  const float* xs = a.s + t * g.nb;
  for (int64_t b = b0; b < b1; ++b) {
    __m256i i0[4], i1[4];
#pragma GCC unroll 4
    for (int sub = 0; sub < G / 32; ++sub) {
      __m256i s0[4], s1[4];
      q4_sub_p2m4<G / 2>(panel0 + b * (4 * G) + 128 * sub, panel1 + b * (4 * G) + 128 * sub, xq + b * G + 16 * sub,
                         a.k, mask, s0, s1);
#pragma GCC unroll 4
      for (int m = 0; m < 4; ++m) {
        const __m256i w0 = _mm256_madd_epi16(s0[m], ones), w1 = _mm256_madd_epi16(s1[m], ones);
        i0[m] = sub == 0 ? w0 : _mm256_add_epi32(i0[m], w0);
        i1[m] = sub == 0 ? w1 : _mm256_add_epi32(i1[m], w1);
      }
    }
    const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dsc0 + b * kPanelRows)));
    const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dsc1 + b * kPanelRows)));
    if (KIND == static_cast<int>(Kind::int4_sym)) {
#pragma GCC unroll 4
      for (int m = 0; m < 4; ++m) {
        const __m256 d = _mm256_broadcast_ss(xd + m * g.nb + b), s = _mm256_broadcast_ss(xs + m * g.nb + b);
        fma_into(acc + 8 * m, dw0, _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0[m]), d, s));
        fma_into(acc + 32 + 8 * m, dw1, _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1[m]), d, s));
      }
    } else {
      const __m256 mw0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(msc0 + b * kPanelRows)));
      const __m256 mw1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(msc1 + b * kPanelRows)));
#pragma GCC unroll 4
      for (int m = 0; m < 4; ++m) {
        const __m256 d = _mm256_broadcast_ss(xd + m * g.nb + b), s = _mm256_broadcast_ss(xs + m * g.nb + b);
        fma_into(acc + 8 * m, dw0, _mm256_mul_ps(_mm256_cvtepi32_ps(i0[m]), d));
        fma_into(acc + 8 * m, mw0, s);
        fma_into(acc + 32 + 8 * m, dw1, _mm256_mul_ps(_mm256_cvtepi32_ps(i1[m]), d));
        fma_into(acc + 32 + 8 * m, mw1, s);
      }
    }
  }
}

// int8 weights: vpmaddubsw(|w|, sign(x, w)); a pair sum reaches 2 * 128 * 127, so each result is widened at once.
template <int KIND, int G, int M>
void tile_int8(const uint8_t* panel, const PanelGeometry& g, const QuantizedActs& a, int64_t t, int64_t b0,
               int64_t b1, __m256 (&acc)[M]) {
  const __m256i ones = _mm256_set1_epi16(1);
  const uint16_t* dsc = reinterpret_cast<const uint16_t*>(panel + g.scales);
  const int8_t* xq[M];
  const float* xd[M];
  for (int m = 0; m < M; ++m) {
    xq[m] = a.q + (t + m) * a.k;
    xd[m] = a.d + (t + m) * g.nb;
  }
  DeferredScales<M> later(g, a.k, KIND);
  if (M == 1 && KIND == static_cast<int>(Kind::int8_sym) && q8_0_next_scales(g, a.k)) {
    // the next panel's scales to L2 (past the matrix for the last panel: a prefetch never faults)
    const uintptr_t s0 = reinterpret_cast<uintptr_t>(panel + g.stride + g.scales + b0 * 16) & ~uintptr_t(63);
    const uintptr_t s1 = reinterpret_cast<uintptr_t>(panel + g.stride + g.scales + b1 * 16);
    for (uintptr_t l = s0; l < s1; l += 64) SpreadPrefetch::line(l, true);
  }
  SpreadPrefetch pf{later.on ? ~uintptr_t(0) : prefetch_start(panel, g, b0), 0};
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* qb = panel + b * (8 * G);
    pf.end = prefetch_target(panel, g, b);
    __m256i isum[M];
    for (int m = 0; m < M; ++m) isum[m] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int p = 0; p < G / 4; ++p) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb + 32 * p));
      pf.one();
      const __m256i u = _mm256_abs_epi8(w);
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m) {
        const __m256i xs = _mm256_sign_epi8(_mm256_set1_epi32(load_i32(xq[m] + b * G + 4 * p)), w);
        isum[m] = _mm256_add_epi32(isum[m], _mm256_madd_epi16(_mm256_maddubs_epi16(u, xs), ones));
      }
    }
    pf.rest();
    if (later.on) {
      later.put(b - b0, _mm256_mul_ps(_mm256_cvtepi32_ps(isum[0]), _mm256_broadcast_ss(xd[0] + b)));
      continue;
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dsc + b * kPanelRows)));
#pragma GCC unroll 4
    for (int m = 0; m < M; ++m) {
      const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(isum[m]), _mm256_broadcast_ss(xd[m] + b));
      acc[m] = _mm256_fmadd_ps(dw, v, acc[m]);
    }
  }
  if (later.on) later.apply(dsc, b0, b1, acc[0]);
}

// Two panels x 4 tokens for int8 weights: each broadcast activation feeds both panels' vpsignb + vpmaddubsw
// (A/B in one process, q8_0 T = 128 on the 3B shapes: +13-23% on 1 thread, +22% on 2). One 4-weight step in
// assembly: gcc 12 computed all the products of the intrinsics version before summing them and spilled them.
#define BLUELM_Q8P_TOKEN(XA, A, B)                                                       \
  "vpbroadcastd " XA ", %[x]\n\t"                                                        \
  "vpsignb %[w0], %[x], %[t]\n\t"                                                        \
  "vpmaddubsw %[t], %[u0], %[t]\n\t"                                                     \
  "vpmaddwd %[ones], %[t], %[t]\n\t"                                                     \
  "vpaddd %[t], %[" A "], %[" A "]\n\t"                                                  \
  "vpsignb %[w1], %[x], %[x]\n\t"                                                        \
  "vpmaddubsw %[x], %[u1], %[x]\n\t"                                                     \
  "vpmaddwd %[ones], %[x], %[x]\n\t"                                                     \
  "vpaddd %[x], %[" B "], %[" B "]\n\t"

inline void q8_step_p2m4(const uint8_t* w0p, const uint8_t* w1p, const int8_t* x, int64_t k, __m256i ones,
                         __m256i (&a)[4], __m256i (&b)[4]) {
  __m256i w0, w1, u0, u1, xv, t;
  const int64_t k3 = 3 * k;
  __asm__("vmovdqu %[m0], %[w0]\n\t"
          "vmovdqu %[m1], %[w1]\n\t"
          "vpabsb %[w0], %[u0]\n\t"
          "vpabsb %[w1], %[u1]\n\t"
          BLUELM_Q8P_TOKEN("(%[xp])", "a0", "b0") BLUELM_Q8P_TOKEN("(%[xp],%[k],1)", "a1", "b1")
          BLUELM_Q8P_TOKEN("(%[xp],%[k],2)", "a2", "b2") BLUELM_Q8P_TOKEN("(%[xp],%[k3],1)", "a3", "b3")
          : [a0] "+x"(a[0]), [a1] "+x"(a[1]), [a2] "+x"(a[2]), [a3] "+x"(a[3]), [b0] "+x"(b[0]), [b1] "+x"(b[1]),
            [b2] "+x"(b[2]), [b3] "+x"(b[3]), [w0] "=&x"(w0), [w1] "=&x"(w1), [u0] "=&x"(u0), [u1] "=&x"(u1),
            [x] "=&x"(xv), [t] "=&x"(t)
          : [m0] "m"(bytes_at<32>(w0p)), [m1] "m"(bytes_at<32>(w1p)), [xp] "r"(x), [k] "r"(k), [k3] "r"(k3),
            // reads x[0 .. 3k + 4); the bound only tells the compiler which memory the assembly reads (clang, which
            // builds `make fuzz`, wants a complete array type where gcc takes an unsized one)
            [ones] "x"(ones), "m"(*reinterpret_cast<const int8_t(*)[1 << 30]>(x)));
}
#undef BLUELM_Q8P_TOKEN

// Same accumulator layout as tile_int4_pair.
template <int G>
void tile_int8_pair(const uint8_t* panel0, const uint8_t* panel1, const PanelGeometry& g, const QuantizedActs& a,
                    int64_t t, int64_t b0, int64_t b1, float* acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  const uint16_t* dsc0 = reinterpret_cast<const uint16_t*>(panel0 + g.scales);
  const uint16_t* dsc1 = reinterpret_cast<const uint16_t*>(panel1 + g.scales);
  const int8_t* xq = a.q + t * a.k;
  const float* xd = a.d + t * g.nb;
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* q0 = panel0 + b * (8 * G);
    const uint8_t* q1 = panel1 + b * (8 * G);
    __m256i i0[4], i1[4];
    for (int m = 0; m < 4; ++m) i0[m] = i1[m] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int p = 0; p < G / 4; ++p) q8_step_p2m4(q0 + 32 * p, q1 + 32 * p, xq + b * G + 4 * p, a.k, ones, i0, i1);
    const __m256 dw0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dsc0 + b * kPanelRows)));
    const __m256 dw1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dsc1 + b * kPanelRows)));
#pragma GCC unroll 4
    for (int m = 0; m < 4; ++m) {
      const __m256 d = _mm256_broadcast_ss(xd + m * g.nb + b);
      fma_into(acc + 8 * m, dw0, _mm256_mul_ps(_mm256_cvtepi32_ps(i0[m]), d));
      fma_into(acc + 32 + 8 * m, dw1, _mm256_mul_ps(_mm256_cvtepi32_ps(i1[m]), d));
    }
  }
}

template <int M>
void store_tile(const __m256 (&acc)[M], bool accumulate, float* y, int64_t ldy, int64_t rows) {
  for (int m = 0; m < M; ++m) {
    float* out = y + m * ldy;
    if (rows == kPanelRows) {
      _mm256_storeu_ps(out, accumulate ? _mm256_add_ps(_mm256_loadu_ps(out), acc[m]) : acc[m]);
    } else {
      float tmp[kPanelRows];
      _mm256_storeu_ps(tmp, acc[m]);
      for (int64_t r = 0; r < rows; ++r) out[r] = accumulate ? out[r] + tmp[r] : tmp[r];
    }
  }
}

template <int KIND, int G, int M>
void run_tile(const uint8_t* panel, const PanelGeometry& g, const QuantizedActs& a, int64_t t, int64_t b0, int64_t b1,
              bool accumulate, float* y, int64_t ldy, int64_t rows) {
  __m256 acc[M];
  for (int m = 0; m < M; ++m) acc[m] = _mm256_setzero_ps();
  if (KIND == static_cast<int>(Kind::int8_sym))
    tile_int8<KIND, G, M>(panel, g, a, t, b0, b1, acc);
  else
    tile_int4<KIND, G, M>(panel, g, a, t, b0, b1, acc);
  store_tile<M>(acc, accumulate, y, ldy, rows);
}

// Q5_0 / Q5_1 panels (pack.cpp: the int4 layout's nibbles, then a plane of fifth bits per block), for decode's few
// tokens: the int4 tile with each half piece's fifth bits moved to bit 4 by one 16-bit shift of the plane (bit 4 of
// a byte only receives bits of the same byte for these shifts) and OR-ed in. A level reaches 31, so a vpmaddubsw pair
// sum reaches 2 * 31 * 127 = 7874: four fit in int16, and a block's eight are widened in two halves. Q5_0's -16 per
// level comes from the activations' sums (s = -128 sum(q), act_sum_rule): isum - 16 sum(q) = isum + s / 8, exact in
// float. Q5_1's minima are the driver's. More tokens widen each panel to q8_0 once (gemm_panels_int5_widened).
template <int S>
__attribute__((always_inline)) inline __m256i fifth_bits(__m256i plane, __m256i bit) {
  if constexpr (S > 0) return _mm256_and_si256(_mm256_slli_epi16(plane, S), bit);
  else if constexpr (S < 0) return _mm256_and_si256(_mm256_srli_epi16(plane, -S), bit);
  else return _mm256_and_si256(plane, bit);
}

template <int J>
__attribute__((always_inline)) inline void int5_piece(const uint8_t* qb, __m256i plane, __m256i mask, __m256i bit,
                                                      __m256i& lo, __m256i& hi) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb + 32 * J));
  lo = _mm256_or_si256(_mm256_and_si256(v, mask), fifth_bits<4 - 2 * J>(plane, bit));
  hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), mask), fifth_bits<3 - 2 * J>(plane, bit));
}

template <bool SYM, int M>
void tile_int5(const uint8_t* panel, const PanelGeometry& g, const QuantizedActs& a, int64_t t, int64_t b0,
               int64_t b1, __m256 (&acc)[M]) {
  const __m256i mask = _mm256_set1_epi8(0x0F), bit = _mm256_set1_epi8(0x10), ones = _mm256_set1_epi16(1);
  const uint16_t* dsc = reinterpret_cast<const uint16_t*>(panel + g.scales);
  const TokenRows<M> x(a, t, g.nb);
  SpreadPrefetch pf{prefetch_start(panel, g, b0), 0};
  const auto pf_one = [&]() __attribute__((always_inline)) {
    pf.one();
  };
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* qb = panel + b * g.qbytes;
    pf.end = prefetch_target(panel, g, b);
    const __m256i plane = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb + 128));
    __m256i lo[4], hi[4];
    int5_piece<0>(qb, plane, mask, bit, lo[0], hi[0]);
    pf_one();
    int5_piece<1>(qb, plane, mask, bit, lo[1], hi[1]);
    pf_one();
    int5_piece<2>(qb, plane, mask, bit, lo[2], hi[2]);
    pf_one();
    int5_piece<3>(qb, plane, mask, bit, lo[3], hi[3]);
    pf.rest();
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(dsc + b * kPanelRows)));
#pragma GCC unroll 4
    for (int m = 0; m < M; ++m) {
      const int8_t* xm = x.q[m] + b * 32;
      __m256i half[2];
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256i plo = _mm256_maddubs_epi16(lo[j], _mm256_set1_epi32(load_i32(xm + 4 * j)));
        const __m256i phi = _mm256_maddubs_epi16(hi[j], _mm256_set1_epi32(load_i32(xm + 16 + 4 * j)));
        half[j / 2] = j % 2 == 0 ? _mm256_add_epi16(plo, phi) : _mm256_add_epi16(half[j / 2], _mm256_add_epi16(plo, phi));
      }
      const __m256i isum = _mm256_add_epi32(_mm256_madd_epi16(half[0], ones), _mm256_madd_epi16(half[1], ones));
      __m256 v = _mm256_cvtepi32_ps(isum);
      if constexpr (SYM) v = _mm256_add_ps(v, _mm256_set1_ps(x.s[m][b] * 0.125f));
      acc[m] = _mm256_fmadd_ps(dw, _mm256_mul_ps(v, _mm256_broadcast_ss(x.d[m] + b)), acc[m]);
    }
  }
}

// Rows of panel p (the last panel may be partial).
inline int64_t panel_rows(const PackedView& w, int64_t p) {
  return w.n - p * kPanelRows < kPanelRows ? w.n - p * kPanelRows : kPanelRows;
}

template <int KIND, int G>
void panels_avx2(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                 int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const PanelGeometry g = panel_geometry(w.format, w.k);
  if (t1 - t0 <= 3 && !(t1 - t0 == 1 && scales_last(g, w.k, KIND))) {
    prefetch_head(w, g, p0, p1, b0);  // decode: 1-3 tokens (two for int16 activations' two passes)
  }
  // Tiles of two panels x 4 tokens (an odd last panel is paired with itself and only its own rows are kept), then
  // the leftover 1-3 tokens (all of a decode step) one panel at a time.
  for (int64_t p = p0; p < p1; p += 2) {
    const bool pair = p + 1 < p1;
    const uint8_t* panel0 = w.data + p * g.stride;
    const uint8_t* panel1 = pair ? panel0 + g.stride : panel0;
    int64_t t = t0;
    for (; t + 4 <= t1; t += 4) {
      alignas(32) float acc[64] = {};
      if constexpr (KIND == static_cast<int>(Kind::int8_sym))
        tile_int8_pair<G>(panel0, panel1, g, a, t, b0, b1, acc);
      else
        tile_int4_pair<KIND, G>(panel0, panel1, g, a, t, b0, b1, acc);
      __m256 acc0[4], acc1[4];
      for (int m = 0; m < 4; ++m) acc0[m] = _mm256_load_ps(acc + 8 * m), acc1[m] = _mm256_load_ps(acc + 32 + 8 * m);
      float* out = y + t * ldy + p * kPanelRows;
      store_tile<4>(acc0, accumulate, out, ldy, panel_rows(w, p));
      if (pair) store_tile<4>(acc1, accumulate, out + kPanelRows, ldy, panel_rows(w, p + 1));
    }
    for (int64_t q = p; q < (pair ? p + 2 : p + 1) && t < t1; ++q) {
      const uint8_t* panel = w.data + q * g.stride;
      float* out = y + t * ldy + q * kPanelRows;
      switch (t1 - t) {
        case 1: run_tile<KIND, G, 1>(panel, g, a, t, b0, b1, accumulate, out, ldy, panel_rows(w, q)); break;
        case 2: run_tile<KIND, G, 2>(panel, g, a, t, b0, b1, accumulate, out, ldy, panel_rows(w, q)); break;
        default: run_tile<KIND, G, 3>(panel, g, a, t, b0, b1, accumulate, out, ldy, panel_rows(w, q)); break;
      }
    }
  }
}

using PanelsFn = void (*)(const PackedView&, const QuantizedActs&, int64_t, int64_t, int64_t, int64_t, int64_t,
                          int64_t, bool, float*, int64_t);

template <int KIND>
PanelsFn pick_group(int group) {
  return group == 32 ? panels_avx2<KIND, 32> : group == 64 ? panels_avx2<KIND, 64> : panels_avx2<KIND, 128>;
}

// Q5_0 / Q5_1 panels: up to 3 tokens (decode) straight from the 5-bit panels, more through q8_0 widening.
template <bool SYM>
void panels_int5(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                      int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  if (t1 - t0 > 3)
    return gemm_panels_int5_widened(panels_avx2<2, 32>, widen_int5_panel_avx2, w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  const PanelGeometry g = panel_geometry(w.format, w.k);
  prefetch_head(w, g, p0, p1, b0);
  auto run = [&](auto tokens, int64_t p) {
    constexpr int M = decltype(tokens)::value;
    __m256 acc[M];
    for (int m = 0; m < M; ++m) acc[m] = _mm256_setzero_ps();
    tile_int5<SYM, M>(w.data + p * g.stride, g, a, t0, b0, b1, acc);
    store_tile<M>(acc, accumulate, y + t0 * ldy + p * kPanelRows, ldy, panel_rows(w, p));
  };
  for (int64_t p = p0; p < p1; ++p) {
    switch (t1 - t0) {
      case 1: run(std::integral_constant<int, 1>{}, p); break;
      case 2: run(std::integral_constant<int, 2>{}, p); break;
      default: run(std::integral_constant<int, 3>{}, p); break;
    }
  }
}

}  // namespace

void add_block_minima_avx2(const float* m, int64_t nb, const float* xsum, int64_t tokens, float* y, int64_t ldy,
                           int rows) {
  // 4 tokens at a time share each block's 8 minima.
  const auto run = [&](auto count, int64_t t) {
    constexpr int M = decltype(count)::value;
    __m256 acc[M];
    for (int i = 0; i < M; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const __m256 mv = _mm256_loadu_ps(m + b * kPanelRows);
      for (int i = 0; i < M; ++i) acc[i] = _mm256_fmadd_ps(mv, _mm256_broadcast_ss(xsum + (t + i) * nb + b), acc[i]);
    }
    for (int i = 0; i < M; ++i) {
      float* out = y + (t + i) * ldy;
      if (rows == kPanelRows) {
        _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), acc[i]));
      } else {
        alignas(32) float tmp[kPanelRows];
        _mm256_store_ps(tmp, acc[i]);
        for (int r = 0; r < rows; ++r) out[r] += tmp[r];
      }
    }
  };
  int64_t t = 0;
  for (; t + 4 <= tokens; t += 4) run(std::integral_constant<int, 4>{}, t);
  for (; t < tokens; ++t) run(std::integral_constant<int, 1>{}, t);
}

void widen_int5_panel_avx2(const uint8_t* panel, const PanelGeometry& g5, bool sym, int64_t b0, int64_t b1,
                           uint8_t* out, const PanelGeometry& g8) {
  const __m256i mask = _mm256_set1_epi8(0x0F), bit = _mm256_set1_epi8(0x10);
  const __m256i bias = _mm256_set1_epi8(sym ? 16 : 0);
  const auto piece = [&](auto j, const uint8_t* qb, __m256i plane, uint8_t* o) {
    constexpr int J = decltype(j)::value;
    __m256i lo, hi;
    int5_piece<J>(qb, plane, mask, bit, lo, hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 32 * J), _mm256_sub_epi8(lo, bias));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 32 * (J + 4)), _mm256_sub_epi8(hi, bias));
  };
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* qb = panel + b * g5.qbytes;
    const __m256i plane = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qb + 128));
    uint8_t* o = out + b * g8.qbytes;
    piece(std::integral_constant<int, 0>{}, qb, plane, o);
    piece(std::integral_constant<int, 1>{}, qb, plane, o);
    piece(std::integral_constant<int, 2>{}, qb, plane, o);
    piece(std::integral_constant<int, 3>{}, qb, plane, o);
  }
  std::memcpy(out + g8.scales + b0 * kPanelRows * 2, panel + g5.scales + b0 * kPanelRows * 2,
              size_t((b1 - b0) * kPanelRows * 2));
}

namespace {

void gemm_panels_avx2(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                      int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const quant::FormatInfo& fi = quant::format_info(w.format);
  if (fi.super_block && fi.kind != Kind::k8) return gemm_panels_k_avx2(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  if (fi.super_block)  // q8_k is an activation format: the scalar kernel only
    return isa_kernels_scalar()->gemm_panels(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  PanelsFn fn = fi.kind == Kind::int4_sym    ? pick_group<0>(fi.group)
                : fi.kind == Kind::int4_asym ? pick_group<1>(fi.group)
                : fi.kind == Kind::int5_sym  ? panels_int5<true>
                : fi.kind == Kind::int5_asym ? panels_int5<false>
                                             : pick_group<2>(fi.group);
  fn(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
}

void layer_norm_row_avx2(const float* x, int64_t n, const float* gamma, const float* beta, float eps, float* y) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
  }
  float sum = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) sum += x[i];
  const float mean = sum / float(n);
  const __m256 vm = _mm256_set1_ps(mean);
  s0 = s1 = _mm256_setzero_ps();
  for (i = 0; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm), b = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm);
    s0 = _mm256_fmadd_ps(a, a, s0);
    s1 = _mm256_fmadd_ps(b, b, s1);
  }
  float var = hsum(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float rstd = 1.0f / __builtin_sqrtf(var / float(n) + eps);
  const __m256 vr = _mm256_set1_ps(rstd);
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vr);
    if (gamma) v = _mm256_mul_ps(v, _mm256_loadu_ps(gamma + i));
    if (beta) v = _mm256_add_ps(v, _mm256_loadu_ps(beta + i));
    _mm256_storeu_ps(y + i, v);
  }
  for (; i < n; ++i) {
    float v = (x[i] - mean) * rstd;
    if (gamma) v *= gamma[i];
    if (beta) v += beta[i];
    y[i] = v;
  }
}

// One group of the 2-panel x 4-token int16 tile: s0[j] / s1[j] = the int32 sums of panel 0 / 1's 8 rows (one per
// lane) with token j, over `pairs` column pairs. In assembly: with intrinsics gcc kept the 8 sums, 2 weight
// vectors and 4 broadcasts in 16 registers by a register-to-register move per product (the loop as written ran
// at ~0.6 of this one's rate; unrolled, it spilled). Inlined: a call would spill the tile's 8 float sums.
__attribute__((always_inline)) inline void i16_group_2x4(const int16_t* w0, const int16_t* w1, const int16_t* const* x,
                                                       int pairs, __m256i* s0, __m256i* s1) {
  __m256i a0, a1, a2, a3, b0, b1, b2, b3, wa, wb, bc, t0, t1;
  int64_t i = 0;
  const int64_t end = int64_t(pairs) * 4;  // bytes of one token's activations in the group
  asm("vpxor %[a0], %[a0], %[a0]\n\t"
      "vpxor %[a1], %[a1], %[a1]\n\t"
      "vpxor %[a2], %[a2], %[a2]\n\t"
      "vpxor %[a3], %[a3], %[a3]\n\t"
      "vpxor %[b0], %[b0], %[b0]\n\t"
      "vpxor %[b1], %[b1], %[b1]\n\t"
      "vpxor %[b2], %[b2], %[b2]\n\t"
      "vpxor %[b3], %[b3], %[b3]\n\t"
      "1:\n\t"
      "vmovdqu (%[w0], %[i], 8), %[wa]\n\t"
      "vmovdqu (%[w1], %[i], 8), %[wb]\n\t"
      "vpbroadcastd (%[x0], %[i]), %[bc]\n\t"
      "vpmaddwd %[bc], %[wa], %[t0]\n\t"
      "vpmaddwd %[bc], %[wb], %[t1]\n\t"
      "vpaddd %[t0], %[a0], %[a0]\n\t"
      "vpaddd %[t1], %[b0], %[b0]\n\t"
      "vpbroadcastd (%[x1], %[i]), %[bc]\n\t"
      "vpmaddwd %[bc], %[wa], %[t0]\n\t"
      "vpmaddwd %[bc], %[wb], %[t1]\n\t"
      "vpaddd %[t0], %[a1], %[a1]\n\t"
      "vpaddd %[t1], %[b1], %[b1]\n\t"
      "vpbroadcastd (%[x2], %[i]), %[bc]\n\t"
      "vpmaddwd %[bc], %[wa], %[t0]\n\t"
      "vpmaddwd %[bc], %[wb], %[t1]\n\t"
      "vpaddd %[t0], %[a2], %[a2]\n\t"
      "vpaddd %[t1], %[b2], %[b2]\n\t"
      "vpbroadcastd (%[x3], %[i]), %[bc]\n\t"
      "vpmaddwd %[bc], %[wa], %[t0]\n\t"
      "vpmaddwd %[bc], %[wb], %[t1]\n\t"
      "vpaddd %[t0], %[a3], %[a3]\n\t"
      "vpaddd %[t1], %[b3], %[b3]\n\t"
      "add $4, %[i]\n\t"
      "cmp %[end], %[i]\n\t"
      "jne 1b\n\t"
      : [a0] "=&x"(a0), [a1] "=&x"(a1), [a2] "=&x"(a2), [a3] "=&x"(a3), [b0] "=&x"(b0), [b1] "=&x"(b1),
        [b2] "=&x"(b2), [b3] "=&x"(b3), [wa] "=&x"(wa), [wb] "=&x"(wb), [bc] "=&x"(bc), [t0] "=&x"(t0),
        [t1] "=&x"(t1), [i] "+r"(i)
      : [w0] "r"(w0), [w1] "r"(w1), [x0] "r"(x[0]), [x1] "r"(x[1]), [x2] "r"(x[2]), [x3] "r"(x[3]), [end] "r"(end)
      : "cc", "memory");
  s0[0] = a0, s0[1] = a1, s0[2] = a2, s0[3] = a3;
  s1[0] = b0, s1[1] = b1, s1[2] = b2, s1[3] = b3;
}

// One-pass int16 activations (gemm_i16): np widened panels (one row per 32-bit lane) by J tokens. Per pair of
// columns: one 32-bit broadcast of the token's two int16 values, one vpmaddwd per panel (the 8 rows' two levels
// times the pair, |sum| <= 2 * 128 * 32767) and one vpaddd into the group's int32 sums; per group the sums are
// converted once and scaled by the rows' scales times the token's (one vmulps and one FMA per panel and token),
// the order gemm_i16_panels promises (kernels_isa.h), so the result is the scalar tier's bit for bit.
template <int P, int J, int G, bool ASYM>
void i16_tile(const WidePanel* w, int64_t nb, const I16Acts& a, int64_t t, float* y, int64_t ldy, int rows) {
  constexpr int kPairs = G / 2;
  __m256 acc[P][J];
  for (int p = 0; p < P; ++p)
    for (int j = 0; j < J; ++j) acc[p][j] = _mm256_setzero_ps();
  for (int64_t g = 0; g < nb; ++g) {
    __m256i is[P][J];
    for (int p = 0; p < P; ++p)
      for (int j = 0; j < J; ++j) is[p][j] = _mm256_setzero_si256();
    const int16_t* xg[J];
    for (int j = 0; j < J; ++j) xg[j] = a.q + (t + j) * a.k + g * G;
    const int16_t* wq[P];
    for (int p = 0; p < P; ++p) wq[p] = w[p].q + g * kPairs * 2 * kPanelRows;
    if constexpr (P == 2 && J == 4) {
      i16_group_2x4(wq[0], wq[1], xg, kPairs, is[0], is[1]);
    } else {
    for (int i = 0; i < kPairs; ++i) {
      __m256i wv[P];
      for (int p = 0; p < P; ++p) wv[p] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq[p] + i * 16));
      for (int j = 0; j < J; ++j) {
        int32_t pair;
        std::memcpy(&pair, xg[j] + 2 * i, 4);
        const __m256i b = _mm256_set1_epi32(pair);
        for (int p = 0; p < P; ++p) is[p][j] = _mm256_add_epi32(is[p][j], _mm256_madd_epi16(wv[p], b));
      }
    }
    }
    for (int j = 0; j < J; ++j) {
      const __m256 xd = _mm256_broadcast_ss(a.d + (t + j) * nb + g);
      for (int p = 0; p < P; ++p) {
        const __m256 sc = _mm256_mul_ps(_mm256_loadu_ps(w[p].d + g * kPanelRows), xd);
        acc[p][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[p][j]), sc, acc[p][j]);
        if constexpr (ASYM)
          acc[p][j] = _mm256_fmadd_ps(_mm256_loadu_ps(w[p].m + g * kPanelRows),
                                      _mm256_broadcast_ss(a.s + (t + j) * nb + g), acc[p][j]);
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    const int r = std::min(kPanelRows, rows - p * kPanelRows);
    for (int j = 0; j < J; ++j) {
      float* out = y + (t + j) * ldy + p * kPanelRows;
      if (r == kPanelRows) {
        _mm256_storeu_ps(out, acc[p][j]);
      } else if (r > 0) {
        alignas(32) float tmp[kPanelRows];
        _mm256_store_ps(tmp, acc[p][j]);
        std::memcpy(out, tmp, size_t(r) * sizeof(float));
      }
    }
  }
}

template <int P, int G, bool ASYM>
void i16_tokens(const WidePanel* w, int64_t nb, const I16Acts& a, int64_t t0, int64_t t1, float* y, int64_t ldy,
                int rows) {
  int64_t t = t0;
  for (; t + 4 <= t1; t += 4) i16_tile<P, 4, G, ASYM>(w, nb, a, t, y, ldy, rows);
  switch (t1 - t) {
    case 1: i16_tile<P, 1, G, ASYM>(w, nb, a, t, y, ldy, rows); break;
    case 2: i16_tile<P, 2, G, ASYM>(w, nb, a, t, y, ldy, rows); break;
    case 3: i16_tile<P, 3, G, ASYM>(w, nb, a, t, y, ldy, rows); break;
    default: break;
  }
}

template <int G, bool ASYM>
void i16_panels(const WidePanel* w, int np, int64_t nb, const I16Acts& a, int64_t t0, int64_t t1, float* y,
                int64_t ldy, int rows) {
  if (np == 2)
    i16_tokens<2, G, ASYM>(w, nb, a, t0, t1, y, ldy, rows);
  else
    i16_tokens<1, G, ASYM>(w, nb, a, t0, t1, y, ldy, rows);
}

void gemm_i16_panels_avx2(const WidePanel* w, int np, int64_t nb, const I16Acts& a, int64_t t0, int64_t t1, float* y,
                          int64_t ldy, int rows) {
  const bool asym = w[0].m != nullptr;
  switch (a.group) {
    case 32: return asym ? i16_panels<32, true>(w, np, nb, a, t0, t1, y, ldy, rows)
                         : i16_panels<32, false>(w, np, nb, a, t0, t1, y, ldy, rows);
    case 64: return asym ? i16_panels<64, true>(w, np, nb, a, t0, t1, y, ldy, rows)
                         : i16_panels<64, false>(w, np, nb, a, t0, t1, y, ldy, rows);
    default: return asym ? i16_panels<128, true>(w, np, nb, a, t0, t1, y, ldy, rows)
                         : i16_panels<128, false>(w, np, nb, a, t0, t1, y, ldy, rows);
  }
}

}  // namespace

// A q8_0 panel's levels into gemm_i16's layout: each 32-byte piece holds 4 columns of the 8 rows (row r's bytes at
// 4r); one in-lane byte shuffle gathers columns 4j, 4j+1 of rows 0-3 / 4-7 into the low 8 bytes of each lane and
// columns 4j+2, 4j+3 into the high 8, a qword permute puts the two halves of each pair together, and two sign
// extensions give the two column pairs' 16 int16 values. The 8 fp16 scales of a block are contiguous: one F16C
// conversion.
void widen_int8_panel_avx2(const uint8_t* panel, int64_t nb, int group, int64_t scales, int16_t* q, float* d) {
  const __m256i order = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,  //
                                         0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
  const int64_t pieces = int64_t(nb) * group / 4;
  for (int64_t j = 0; j < pieces; ++j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + j * 32));
    const __m256i s = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, order), 0xD8);  // qwords 0, 2, 1, 3
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + j * 32), _mm256_cvtepi8_epi16(_mm256_castsi256_si128(s)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + j * 32 + 16),
                        _mm256_cvtepi8_epi16(_mm256_extracti128_si256(s, 1)));
  }
  for (int64_t b = 0; b < nb; ++b)
    _mm256_storeu_ps(d + b * kPanelRows,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(panel + scales + b * 16))));
}

// quantize_i16_row (kernels_isa.h) 8 values at a time: max_ps(|x|, amax) keeps amax when |x| is NaN (as the
// scalar `a > amax`), NaN products are masked to 0 before the clamp, and vcvtps2dq rounds to nearest even as the
// scalar tier's 1.5 * 2^23 trick does (both in the default rounding mode).
void quantize_i16_row_avx2(const float* x, int64_t k, int group, int16_t* q, float* d, float* s) {
  const __m256 sign = _mm256_set1_ps(-0.0f), hi = _mm256_set1_ps(32767.0f), lo = _mm256_set1_ps(-32767.0f);
  for (int64_t b = 0; b < k / group; ++b) {
    const float* xb = x + b * group;
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < group; i += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb + i)), m);
    const float amax = hmax(m);
    const float db = amax / 32767.0f;
    const __m256 id = _mm256_set1_ps(amax > 0.0f ? 32767.0f / amax : 0.0f);
    __m256i sum = _mm256_setzero_si256();
    for (int i = 0; i < group; i += 16) {
      __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(xb + i), id), v1 = _mm256_mul_ps(_mm256_loadu_ps(xb + i + 8), id);
      const __m256 ok0 = _mm256_cmp_ps(v0, v0, _CMP_ORD_Q), ok1 = _mm256_cmp_ps(v1, v1, _CMP_ORD_Q);
      v0 = _mm256_and_ps(_mm256_min_ps(_mm256_max_ps(v0, lo), hi), ok0);
      v1 = _mm256_and_ps(_mm256_min_ps(_mm256_max_ps(v1, lo), hi), ok1);
      const __m256i q0 = _mm256_cvtps_epi32(v0), q1 = _mm256_cvtps_epi32(v1);
      sum = _mm256_add_epi32(sum, _mm256_add_epi32(q0, q1));
      // packs interleaves the 128-bit lanes: qwords 0, 2, 1, 3 restore the order
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * group + i), packed);
    }
    d[b] = db;
    s[b] = db * float(hsum_i32(sum));
  }
}

namespace {

const IsaKernels kTable = {"avx2", quantize_row_avx2, gemm_panels_avx2, layer_norm_row_avx2,
                              gemm_i16_panels_avx2, widen_int8_panel_avx2,
                              quantize_i16_row_avx2,   widen_int5_panel_avx2,
                              add_block_minima_avx2, 8};

}  // namespace

const IsaKernels* isa_kernels_avx2() { return &kTable; }

}  // namespace bluelm::kernels

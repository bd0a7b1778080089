// AVX-512 (F/BW/VL/DQ) + VNNI tier (Ice Lake, Zen 4/5 and later). vpdpbusd multiplies unsigned bytes (the
// weights: nibbles 0..15, or int8 weights made unsigned, w + 128) by signed int8 activations and accumulates in
// int32, with no int16 stage. The int8 weights' offset is taken out per block with the activations' block sums:
// sum (w + 128) q = sum w q + 128 sum q, with s = -128 sum(q) (act_sum_rule) added to the integer sum before it
// is scaled, so the result is exact (q4_0's 8 is taken out the same way, in float, with s = -8 d sum(q)). A zmm
// holds two 8-row panels (16 rows, one row per 32-bit lane): panels p and p+1 whose outputs are adjacent; an odd
// last panel is paired with itself. Decode (1-3 tokens) reads the panel pairs as they are (tile); prefill unpacks
// four panels once per 256 weights and 128 tokens (quad_panels), so each broadcast feeds two vpdpbusd.
//
// This file is also compiled by the tests through SIMDe (BLUELM_AVX512_SIMDE, kernels_simde_test.cpp), so the
// exact kernel source is checked against the scalar tier on CPUs without AVX-512; it then lives in namespace
// avx512_simde instead of avx512.
// GCC 12's avx512fintrin.h casts (_mm512_castsi256_si512, ...) start from an undefined register on purpose and
// then warn about it; the warnings are about the header, not this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if defined(BLUELM_AVX512_SIMDE)
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#define BLUELM_AVX512_NS avx512_simde
#define BLUELM_AVX512_TABLE isa_kernels_avx512_simde
#include "kernels/simde_avx512_gaps.h"
#else
#include <immintrin.h>
#define BLUELM_AVX512_NS avx512
#define BLUELM_AVX512_TABLE isa_kernels_avx512
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/kernels_isa.h"

namespace bluelm::kernels {
namespace BLUELM_AVX512_NS {
namespace {

int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void quantize_row(const float* x, int64_t k, int group, ActSumRule rule, int8_t* q, float* d, float* s) {
  const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
  for (int64_t b = 0; b < k / group; ++b) {
    const float* xb = x + b * group;
    __m512 m = _mm512_setzero_ps();
    for (int i = 0; i < group; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(xb + i)));
    const float amax = _mm512_reduce_max_ps(m);
    const float db = amax / 127.0f;
    const __m512 id = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    __m512i sum = _mm512_setzero_si512();
    for (int i = 0; i < group; i += 16) {
      const __m512 p = _mm512_mul_ps(_mm512_loadu_ps(xb + i), id);
      const __m512i v = _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(p, lim), nlim));
      sum = _mm512_add_epi32(sum, v);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * group + i), _mm512_cvtsepi32_epi8(v));
    }
    d[b] = db;
    s[b] = rule.times_d ? db * float(_mm512_reduce_add_epi32(sum)) * rule.factor : float(_mm512_reduce_add_epi32(sum)) * rule.factor;
  }
}

__m512i load_pair(const uint8_t* pa, const uint8_t* pb) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(pa))),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pb)), 1);
}

__m512 load_scales(const uint8_t* pa, const uint8_t* pb) {
  const __m256i h = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pa))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(pb)), 1);
  return _mm512_cvtph_ps(h);
}

// Decode streams the weights from DRAM: as in the AVX2 tier, a tile of 1-3 tokens prefetches kPrefetchBytes ahead (the
// level as SpreadPrefetch::line picks it, kernels_isa.h): a line of each panel after every other 64-byte weight
// load and the rest of the block's share (its scales) after the last. Each panel of the pair is walked on its own,
// half the distance ahead of where the tile reads it, and past its end the walk carries on into the same panel of
// the next pair (two strides on), which the next tile reads. One walk over the pair's bytes in address order, at
// twice a panel's pace, reached the second panel's first (stride - kPrefetchBytes) bytes only after the tile had
// read them: with the ffn_down matrices of the 3B shape (K = 5760) Q8_0 streamed at 0.67 of the read and Q5_0 at
// 0.75 on a Zen 4, against 0.96 for Q4_K's single-panel walk (docs/kernels.md, "The pair tile's prefetch").
class PairPrefetch {
 public:
  PairPrefetch(const uint8_t* pa, const uint8_t* pb, const PanelGeometry& g, int64_t b0)
      : PairPrefetch(pa, pb, g, kAhead + b0 * g.span, kAhead + b0 * g.span) {}
  // Lines up to block b's share ahead.
  __attribute__((always_inline)) void through(int64_t b) { end_ = kAhead + (b + 1) * span_; }
  __attribute__((always_inline)) void one() {
    if (at_ < end_) step();
  }
  __attribute__((always_inline)) void rest() {
    while (at_ < end_) step();
  }
  // Whether the walk, kAhead bytes ahead in each panel, reaches the scales of a panel's first blocks (after all of
  // its levels) only after the tile has read them: a panel whose levels take more than kAhead bytes (Q5_0 from
  // K = 2464, Q8_0 from K = 1568). There the tile also prefetches the next pair's scales, spread over its blocks.
  // Per call on a Zen 4 (9 rounds in one process, one thread, 2304-row Q5_0): 0.76-0.77 -> 0.83-0.84 of the read
  // at K = 4608 / 5760; at K = 2304, which has no such hole, the same prefetch cost 0.91 -> 0.80, so only where
  // the hole is. In the engine (the 3B shape's Q4_K_M, whose K = 5760 ffn_down is Q5_0 in 20 layers) no change
  // beyond the spread: 0.98-1.01x (docs/kernels.md, "The pair tile's prefetch").
  static bool scales_late(const PanelGeometry& g) { return g.scales > kAhead; }
  // This thread's first kAhead bytes of each panel from block b0 on, before its first tile.
  static void head(const uint8_t* pa, const uint8_t* pb, const PanelGeometry& g, int64_t b0) {
    PairPrefetch h(pa, pb, g, b0 * g.span, b0 * g.span + kAhead);
    h.rest();
  }

 private:
  static constexpr int64_t kAhead = kPrefetchBytes / 2;
  // Walk offset `at` (bytes past the start of panel A, counting only the bytes of the panels this pair position
  // reads) up to `end`: `at` / stride panels on (two strides each for a pair), `at` % stride into the panel.
  PairPrefetch(const uint8_t* pa, const uint8_t* pb, const PanelGeometry& g, int64_t at, int64_t end)
      : delta_(uintptr_t(pb - pa)), stride_(g.stride), span_(g.span), two_(pa != pb), at_(at), end_(end),
        into_(at % g.stride) {
    cur_ = reinterpret_cast<uintptr_t>(pa) + uintptr_t(at / g.stride * (two_ ? 2 : 1) * g.stride);
  }
  __attribute__((always_inline)) void step() {
    SpreadPrefetch::line(cur_ + uintptr_t(into_), l2_);
    if (two_) SpreadPrefetch::line(cur_ + delta_ + uintptr_t(into_), l2_);
    at_ += 64;
    into_ += 64;
    if (into_ >= stride_) {  // on to the same panel of the next pair
      into_ -= stride_;
      cur_ += uintptr_t((two_ ? 2 : 1) * stride_);
    }
  }
  uintptr_t delta_;  // panel B - panel A
  int64_t stride_, span_;
  bool two_;
  int64_t at_, end_;  // walk offsets
  int64_t into_;      // at_ within the current panel
  uintptr_t cur_;     // the current panel A
  bool l2_ = decode_prefetch_l2();
};

constexpr int kInt5Sym = static_cast<int>(Kind::int5_sym), kInt5Asym = static_cast<int>(Kind::int5_asym);

// acc[m] (16 rows: panel A then panel B) += W[blocks b0..b1) . x[t + m]. SIGN: int8 weights through the former
// sign trick (A/B runs only).
template <int KIND, int G, int M, bool SIGN>
void tile(const uint8_t* pa, const uint8_t* pb, const PanelGeometry& g, const QuantizedActs& a, int64_t t, int64_t b0,
          int64_t b1, __m512 (&acc)[M]) {
  const __m512i mask = _mm512_set1_epi8(0x0F);
  const __m512i zero = _mm512_setzero_si512();
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  const int8_t* xq[M];
  const float* xd[M];
  const float* xs[M];
  for (int m = 0; m < M; ++m) {
    xq[m] = a.q + (t + m) * a.k;
    xd[m] = a.d + (t + m) * g.nb;
    xs[m] = a.s + (t + m) * g.nb;
  }
  // pb is pa + stride, or pa itself for an odd last panel.
  PairPrefetch pf(pa, pb, g, b0);
  // The next pair's scales, a line of each panel every fourth block, to L2, where the walk reaches them late
  // (PairPrefetch::scales_late).
  const bool next_scales = M <= 3 && PairPrefetch::scales_late(g);
  int loads = 0;  // a line of each panel after every other weight load (each load takes 32 bytes of each)
  const auto pf_one = [&]() __attribute__((always_inline)) {
    if (M <= 3 && (++loads & 1) == 0) pf.one();
  };
  const uintptr_t next_a = reinterpret_cast<uintptr_t>(pa) + uintptr_t((pa != pb ? 2 : 1) * g.stride + g.scales);
  const uintptr_t next_b = next_a + uintptr_t(pb - pa);
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* qa = pa + b * g.qbytes;
    const uint8_t* qb = pb + b * g.qbytes;
    pf.through(b);
    if (next_scales && ((b - b0) & 3) == 0) {
      SpreadPrefetch::line(next_a + uintptr_t(16 * b), true);
      SpreadPrefetch::line(next_b + uintptr_t(16 * b), true);
    }
    __m512i s0[M], s1[M];
    for (int m = 0; m < M; ++m) s0[m] = s1[m] = zero;
    if (KIND == static_cast<int>(Kind::int8_sym) && SIGN) {
      // The former sign trick, kept for in-process A/B runs (set_int8_sign_trick): |w| times the activation with
      // w's sign moved over, a masked subtract per token and weight vector.
#pragma GCC unroll 8
      for (int p = 0; p < G / 4; ++p) {
        const __m512i w = load_pair(qa + 32 * p, qb + 32 * p);
        pf_one();
        const __m512i u = _mm512_abs_epi8(w);
        const __mmask64 neg = _mm512_movepi8_mask(w);
#pragma GCC unroll 4
        for (int m = 0; m < M; ++m) {
          const __m512i xv = _mm512_set1_epi32(load_i32(xq[m] + b * G + 4 * p));
          const __m512i sx = _mm512_mask_sub_epi8(xv, neg, zero, xv);
          if (p % 2 == 0)
            s0[m] = _mm512_dpbusd_epi32(s0[m], u, sx);
          else
            s1[m] = _mm512_dpbusd_epi32(s1[m], u, sx);
        }
      }
    } else if (KIND == static_cast<int>(Kind::int8_sym)) {
      // w + 128 (flipping the top bit) once per weight vector, shared by the M tokens; each token is then one
      // broadcast and one vpdpbusd. 4 bytes of (w + 128) x stay within int32 exactly (4 * 255 * 127).
#pragma GCC unroll 8
      for (int p = 0; p < G / 4; ++p) {
        const __m512i u = _mm512_xor_si512(load_pair(qa + 32 * p, qb + 32 * p), flip);
        pf_one();
#pragma GCC unroll 4
        for (int m = 0; m < M; ++m) {
          const __m512i xv = _mm512_set1_epi32(load_i32(xq[m] + b * G + 4 * p));
          if (p % 2 == 0)
            s0[m] = _mm512_dpbusd_epi32(s0[m], u, xv);
          else
            s1[m] = _mm512_dpbusd_epi32(s1[m], u, xv);
        }
      }
    } else if (KIND == kInt5Sym || KIND == kInt5Asym) {
      // Q5_0 / Q5_1 panels (pack.cpp): the nibbles with each piece's fifth bits from the block's plane, moved to
      // bit 4 by a 16-bit shift (bit 4 of a byte only receives bits of its own byte for these shifts) and OR-ed in
      // with one ternary-logic op ((v & 0x0F) | bits). Levels <= 31: vpdpbusd needs no int16 stage.
      const __m512i plane = load_pair(qa + 128, qb + 128), bit = _mm512_set1_epi8(0x10);
      const __m512i lo5[4] = {_mm512_and_si512(_mm512_slli_epi16(plane, 4), bit),
                              _mm512_and_si512(_mm512_slli_epi16(plane, 2), bit), _mm512_and_si512(plane, bit),
                              _mm512_and_si512(_mm512_srli_epi16(plane, 2), bit)};
      const __m512i hi5[4] = {_mm512_and_si512(_mm512_slli_epi16(plane, 3), bit),
                              _mm512_and_si512(_mm512_slli_epi16(plane, 1), bit),
                              _mm512_and_si512(_mm512_srli_epi16(plane, 1), bit),
                              _mm512_and_si512(_mm512_srli_epi16(plane, 3), bit)};
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {
        const __m512i v = load_pair(qa + 32 * p, qb + 32 * p);
        pf_one();
        const __m512i lo = _mm512_ternarylogic_epi32(v, mask, lo5[p], 0xEA);  // (a & b) | c
        const __m512i hi = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 4), mask, hi5[p], 0xEA);
#pragma GCC unroll 4
        for (int m = 0; m < M; ++m) {
          const int8_t* x = xq[m] + b * 32;
          s0[m] = _mm512_dpbusd_epi32(s0[m], lo, _mm512_set1_epi32(load_i32(x + 4 * p)));
          s1[m] = _mm512_dpbusd_epi32(s1[m], hi, _mm512_set1_epi32(load_i32(x + 16 + 4 * p)));
        }
      }
    } else {
#pragma GCC unroll 8
      for (int p = 0; p < G / 8; ++p) {
        const __m512i v = load_pair(qa + 32 * p, qb + 32 * p);
        pf_one();
        const __m512i lo = _mm512_and_si512(v, mask);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
#pragma GCC unroll 4
        for (int m = 0; m < M; ++m) {
          const int8_t* x = xq[m] + b * G;
          s0[m] = _mm512_dpbusd_epi32(s0[m], lo, _mm512_set1_epi32(load_i32(x + 4 * p)));
          s1[m] = _mm512_dpbusd_epi32(s1[m], hi, _mm512_set1_epi32(load_i32(x + G / 2 + 4 * p)));
        }
      }
    }
    if (M <= 3) pf.rest();
    const __m512 dw = load_scales(pa + g.scales + b * 16, pb + g.scales + b * 16);
    if (KIND == static_cast<int>(Kind::int4_sym)) {
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m) {
        const __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(s0[m], s1[m]));
        acc[m] = _mm512_fmadd_ps(dw, _mm512_fmadd_ps(f, _mm512_set1_ps(xd[m][b]), _mm512_set1_ps(xs[m][b])), acc[m]);
      }
    } else if (KIND == static_cast<int>(Kind::int4_asym)) {
      const __m512 mw = load_scales(pa + g.minima + b * 16, pb + g.minima + b * 16);
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m) {
        const __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(s0[m], s1[m]));
        const __m512 v = _mm512_mul_ps(f, _mm512_set1_ps(xd[m][b]));
        acc[m] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xs[m][b]), _mm512_fmadd_ps(dw, v, acc[m]));
      }
    } else if (KIND == kInt5Sym || KIND == kInt5Asym) {
      // Q5_0: isum - 16 sum(q) = isum + s / 8 (s = -128 sum(q)), exact in float; Q5_1's minima are the driver's.
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m) {
        __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(s0[m], s1[m]));
        if (KIND == kInt5Sym) f = _mm512_add_ps(f, _mm512_set1_ps(xs[m][b] * 0.125f));
        acc[m] = _mm512_fmadd_ps(dw, _mm512_mul_ps(f, _mm512_set1_ps(xd[m][b])), acc[m]);
      }
    } else {
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m) {
        __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(s0[m], s1[m]));
        // Unsigned weights: s = -128 sum(q), an integer; the sum, s and their total sum(w q) are all below 2^24 in
        // magnitude, so this float add is exact and the tile gives the sign trick's (and scalar's) integer sum.
        if (!SIGN) f = _mm512_add_ps(f, _mm512_set1_ps(xs[m][b]));
        acc[m] = _mm512_fmadd_ps(dw, _mm512_mul_ps(f, _mm512_set1_ps(xd[m][b])), acc[m]);
      }
    }
  }
}

// Runs one tile and writes (or adds) the first `rows` of its 16 rows.
template <int KIND, int G, int M, bool SIGN>
void run_tile(const uint8_t* pa, const uint8_t* pb, const PanelGeometry& g, const QuantizedActs& a, int64_t t,
              int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy, int64_t rows) {
  __m512 acc[M];
  for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
  tile<KIND, G, M, SIGN>(pa, pb, g, a, t, b0, b1, acc);
  const __mmask16 keep = rows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rows) - 1u);
  for (int m = 0; m < M; ++m) {
    float* out = y + m * ldy;
    __m512 v = acc[m];
    if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(keep, out));
    _mm512_mask_storeu_ps(out, keep, v);
  }
}

template <int KIND, int G, bool SIGN>
void panels(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1, int64_t b0,
            int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const PanelGeometry g = panel_geometry(w.format, w.k);
  if (t1 - t0 <= 3) {
    // Decode (1-3 tokens): the head of this thread's first pair, which the tiles' running prefetch starts past.
    const uint8_t* pa = w.data + p0 * g.stride;
    PairPrefetch::head(pa, p0 + 1 < p1 ? pa + g.stride : pa, g, b0);
  }
  for (int64_t p = p0; p < p1; p += 2) {
    const uint8_t* pa = w.data + p * g.stride;
    const bool pair = p + 1 < p1;
    const uint8_t* pb = pair ? pa + g.stride : pa;
    int64_t rows = w.n - p * kPanelRows;
    const int64_t cap = pair ? 2 * kPanelRows : kPanelRows;
    rows = rows < cap ? rows : cap;
    for (int64_t t = t0; t < t1; t += 4) {
      float* out = y + t * ldy + p * kPanelRows;
      switch (t1 - t) {
        case 1: run_tile<KIND, G, 1, SIGN>(pa, pb, g, a, t, b0, b1, accumulate, out, ldy, rows); break;
        case 2: run_tile<KIND, G, 2, SIGN>(pa, pb, g, a, t, b0, b1, accumulate, out, ldy, rows); break;
        case 3: run_tile<KIND, G, 3, SIGN>(pa, pb, g, a, t, b0, b1, accumulate, out, ldy, rows); break;
        default: run_tile<KIND, G, 4, SIGN>(pa, pb, g, a, t, b0, b1, accumulate, out, ldy, rows); break;
      }
    }
  }
}

using PanelsFn = void (*)(const PackedView&, const QuantizedActs&, int64_t, int64_t, int64_t, int64_t, int64_t,
                          int64_t, bool, float*, int64_t);

// ---- Prefill of Q4_0 / Q4_1 / Q8_0 (4 or more tokens): four panels unpacked once per 128 tokens ----
// The tile above unpacks its panel pair for every block of 4 tokens and broadcasts each token's 4 activations once
// per vpdpbusd, so the loads bound it (the mix loop of that tile, mix_q4_0_avx512, tops out near half of the
// vpdpbusd probe). Here, as in the K-quants' tile (kquant_avx512.cpp), the levels of four panels (32 rows: panels
// 2h and 2h + 1 side by side in half h) are unpacked once per 256 weights and 128 tokens into an L1 tile, nibbles
// masked and shifted or int8 made unsigned, with the scales (and minima) as float; each token's broadcast then
// feeds two vpdpbusd, one per half. Per token and block the float epilogue is the tile's own, in the same order
// from the same starting value, so the result is the same bytes as tile<> gives (the int8 test holds it to that).
template <int G>
struct IntQuad {
  static constexpr int kBlocks = 256 / G;  // blocks per unpacked chunk: 256 weights
  alignas(64) uint8_t q[kBlocks][G / 4][2][64];  // [j][step s][h]: levels of weights 4s..4s+3, panel 2h then 2h + 1
  alignas(64) float d[kBlocks][2][16];           // [j][h][8 e + r]: scale of block j, row r of panel 2h + e
  alignas(64) float m[kBlocks][2][16];           // Q4_1: the minima, same order
};

// Blocks [c0, c0 + nbk) of the four panels at pp[0..3] into t.
template <int KIND, int G>
void unpack_quad(const uint8_t* const (&pp)[4], const PanelGeometry& g, int64_t c0, int nbk, IntQuad<G>& t) {
  const __m512i mask = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8(char(0x80));
  for (int j = 0; j < nbk; ++j) {
    for (int h = 0; h < 2; ++h) {
      const uint8_t* qa = pp[2 * h] + (c0 + j) * g.qbytes;
      const uint8_t* qb = pp[2 * h + 1] + (c0 + j) * g.qbytes;
      if (KIND == static_cast<int>(Kind::int8_sym)) {
        for (int s = 0; s < G / 4; ++s)
          _mm512_store_si512(t.q[j][s][h], _mm512_xor_si512(load_pair(qa + 32 * s, qb + 32 * s), flip));
      } else {
        // Piece c holds weights 4c.. in its low nibbles and G / 2 + 4c.. in its high ones: steps c and G / 8 + c.
        for (int c = 0; c < G / 8; ++c) {
          const __m512i v = load_pair(qa + 32 * c, qb + 32 * c);
          _mm512_store_si512(t.q[j][c][h], _mm512_and_si512(v, mask));
          _mm512_store_si512(t.q[j][G / 8 + c][h], _mm512_and_si512(_mm512_srli_epi16(v, 4), mask));
        }
      }
      _mm512_store_ps(t.d[j][h], load_scales(pp[2 * h] + g.scales + (c0 + j) * 16,
                                             pp[2 * h + 1] + g.scales + (c0 + j) * 16));
      if (KIND == static_cast<int>(Kind::int4_asym))
        _mm512_store_ps(t.m[j][h], load_scales(pp[2 * h] + g.minima + (c0 + j) * 16,
                                               pp[2 * h + 1] + g.minima + (c0 + j) * 16));
    }
  }
}

// NT tokens (x[u]: the token's activations from block c0 on; xd / xs likewise) against nbk blocks of the tile:
// acc[u][32 rows] continues tile<>'s per-block float chain.
template <int KIND, int G, int NT>
inline void quad_tokens(const IntQuad<G>& t, int nbk, const int8_t* const* x, const float* const* xd,
                        const float* const* xs, float* acc) {
  __m512 ac[NT][2];
#pragma GCC unroll 8
  for (int u = 0; u < NT; ++u) {
    ac[u][0] = _mm512_load_ps(acc + 32 * u);
    ac[u][1] = _mm512_load_ps(acc + 32 * u + 16);
  }
#pragma GCC unroll 1
  for (int j = 0; j < nbk; ++j) {
    __m512i s[NT][2];
#pragma GCC unroll 8
    for (int u = 0; u < NT; ++u) s[u][0] = s[u][1] = _mm512_setzero_si512();
#pragma GCC unroll 32
    for (int st = 0; st < G / 4; ++st) {
      const __m512i l0 = _mm512_load_si512(t.q[j][st][0]), l1 = _mm512_load_si512(t.q[j][st][1]);
#pragma GCC unroll 8
      for (int u = 0; u < NT; ++u) {
        const __m512i xb = _mm512_set1_epi32(load_i32(x[u] + j * G + 4 * st));
        s[u][0] = _mm512_dpbusd_epi32(s[u][0], l0, xb);
        s[u][1] = _mm512_dpbusd_epi32(s[u][1], l1, xb);
      }
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m512 dw = _mm512_load_ps(t.d[j][h]);
#pragma GCC unroll 8
      for (int u = 0; u < NT; ++u) {
        const __m512 dx = _mm512_set1_ps(xd[u][j]), sx = _mm512_set1_ps(xs[u][j]);
        __m512 f = _mm512_cvtepi32_ps(s[u][h]);
        if (KIND == static_cast<int>(Kind::int4_sym)) {
          ac[u][h] = _mm512_fmadd_ps(dw, _mm512_fmadd_ps(f, dx, sx), ac[u][h]);
        } else if (KIND == static_cast<int>(Kind::int4_asym)) {
          const __m512 v = _mm512_mul_ps(f, dx);
          ac[u][h] = _mm512_fmadd_ps(_mm512_load_ps(t.m[j][h]), sx, _mm512_fmadd_ps(dw, v, ac[u][h]));
        } else {
          f = _mm512_add_ps(f, sx);  // + (-128 sum(q)): exact, as in tile<>
          ac[u][h] = _mm512_fmadd_ps(dw, _mm512_mul_ps(f, dx), ac[u][h]);
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int u = 0; u < NT; ++u) {
    _mm512_store_ps(acc + 32 * u, ac[u][0]);
    _mm512_store_ps(acc + 32 * u + 16, ac[u][1]);
  }
}

template <int KIND, int G>
void quad_panels(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                 int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  using Quad = IntQuad<G>;
  const PanelGeometry g = panel_geometry(w.format, w.k);
  constexpr int64_t kTokens = 128;
  constexpr int kTokenBlock = 4;
  alignas(64) Quad quad;
  alignas(64) float acc[kTokens][32];
  for (int64_t p = p0; p < p1; p += 4) {
    const int np = int(std::min<int64_t>(4, p1 - p));
    const uint8_t* pp[4];
    for (int pn = 0; pn < 4; ++pn) pp[pn] = w.data + (p + (pn < np ? pn : np - 1)) * g.stride;  // past p1: a copy
    for (int64_t tb = t0; tb < t1; tb += kTokens) {
      const int64_t te = std::min(t1, tb + kTokens);
      std::memset(acc, 0, sizeof(acc));
      for (int64_t c0 = b0; c0 < b1; c0 += Quad::kBlocks) {
        const int nbk = int(std::min<int64_t>(Quad::kBlocks, b1 - c0));
        unpack_quad<KIND, G>(pp, g, c0, nbk, quad);
        if (c0 + nbk < b1)  // the next chunk's levels into L1 while this one runs
          for (int pn = 0; pn < np; ++pn)
            for (int64_t o = 0; o < nbk * g.qbytes; o += 64)
              _mm_prefetch(reinterpret_cast<const char*>(pp[pn] + (c0 + nbk) * g.qbytes + o), _MM_HINT_T0);
        const auto block = [&](auto nt, int64_t t) {
          constexpr int kNt = decltype(nt)::value;
          const int8_t* x[kNt];
          const float* xd[kNt];
          const float* xs[kNt];
          for (int u = 0; u < kNt; ++u) {
            x[u] = a.q + (t + u) * a.k + c0 * G;
            xd[u] = a.d + (t + u) * g.nb + c0;
            xs[u] = a.s + (t + u) * g.nb + c0;
          }
          quad_tokens<KIND, G, kNt>(quad, nbk, x, xd, xs, acc[t - tb]);
        };
        int64_t t = tb;
        for (; t + kTokenBlock <= te; t += kTokenBlock) block(std::integral_constant<int, kTokenBlock>{}, t);
        switch (te - t) {
          case 3: block(std::integral_constant<int, 3>{}, t); break;
          case 2: block(std::integral_constant<int, 2>{}, t); break;
          case 1: block(std::integral_constant<int, 1>{}, t); break;
          default: break;
        }
      }
      for (int pn = 0; pn < np; ++pn) {
        const int64_t rows = std::min<int64_t>(kPanelRows, w.n - (p + pn) * kPanelRows);
        if (rows <= 0) break;
        for (int64_t t = tb; t < te; ++t) {
          float* out = y + t * ldy + (p + pn) * kPanelRows;
          const float* r = acc[t - tb] + 8 * pn;
          if (rows == kPanelRows) {
            const __m256 v = _mm256_load_ps(r);
            _mm256_storeu_ps(out, accumulate ? _mm256_add_ps(_mm256_loadu_ps(out), v) : v);
          } else {
            for (int64_t i = 0; i < rows; ++i) out[i] = accumulate ? out[i] + r[i] : r[i];
          }
        }
      }
    }
  }
}

// Q4_0 / Q4_1 / Q8_0 (and the widened Q5_0 / Q5_1): 1-3 tokens through tile<> (decode reads the panels once, with
// its prefetch), more through the unpacked quads.
template <int KIND, int G>
void panels_or_quads(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                     int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  if (t1 - t0 <= 3 || !avx512_quads()) return panels<KIND, G, false>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  quad_panels<KIND, G>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
}

template <int KIND, bool SIGN = false>
PanelsFn pick_group(int group) {
  if constexpr (SIGN)
    return group == 32 ? panels<KIND, 32, true> : group == 64 ? panels<KIND, 64, true> : panels<KIND, 128, true>;
  else
    return group == 32   ? panels_or_quads<KIND, 32>
           : group == 64 ? panels_or_quads<KIND, 64>
                         : panels_or_quads<KIND, 128>;
}

void gemm_panels(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                 int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const quant::FormatInfo& fi = quant::format_info(w.format);
#if !defined(BLUELM_AVX512_SIMDE)
  // K-quants: the VNNI GEMM, or for decode the AVX2 kernel (kquant_avx512.cpp); through SIMDe (the tests), the
  // scalar one.
  if (fi.super_block && fi.kind != Kind::k8)
    return gemm_panels_k_avx512(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
#endif
  if (fi.super_block)
    return isa_kernels_scalar()->gemm_panels(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  // Q5_0 / Q5_1 for decode's 1-3 tokens: straight from the 5-bit panels.
  if (fi.kind == Kind::int5_sym && t1 - t0 <= 3)
    return panels<kInt5Sym, 32, false>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  if (fi.kind == Kind::int5_asym && t1 - t0 <= 3)
    return panels<kInt5Asym, 32, false>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  if (quant::is_int5(fi.kind)) {  // Q5_0 / Q5_1: each panel widened to int8 levels, then the q8_0 kernel
#if defined(BLUELM_AVX512_SIMDE)
    const WidenInt5Fn widen = widen_int5_panel;
#else
    const WidenInt5Fn widen = widen_int5_panel_avx2;
#endif
    return gemm_panels_int5_widened(int8_sign_trick() ? panels<2, 32, true> : panels_or_quads<2, 32>, widen, w, a, p0,
                                    p1, t0, t1, b0, b1, accumulate, y, ldy);
  }
#if !defined(BLUELM_AVX512_SIMDE)
  // One token on AMD (avx512_pair_decode, kernels.h): Q4_0 on the AVX2 tier's one-panel tile, and Q8_0 where that
  // tile reads its panels the AMD way (decode_scales_last: the scales last, or the next panel's scales prefetched).
  if (t1 - t0 == 1 && !avx512_pair_decode() &&
      (fi.kind == Kind::int4_sym || (fi.kind == Kind::int8_sym && decode_scales_last())))
    return isa_kernels_avx2()->gemm_panels(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
#endif
  PanelsFn fn = fi.kind == Kind::int4_sym    ? pick_group<0>(fi.group)
                : fi.kind == Kind::int4_asym ? pick_group<1>(fi.group)
                : int8_sign_trick()          ? pick_group<2, true>(fi.group)
                                             : pick_group<2>(fi.group);
  fn(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
}

// ---- int16 activations in one pass (kernels_isa.h: gemm_i16_panels) ----
// A zmm holds one column pair of both widened panels (rows 0-7 of panel 0, then of panel 1; an odd last panel is
// paired with itself), and vpdpwssd multiplies each row's two int16 levels by the token's broadcast pair and adds
// both products to the row's int32 sum: what the AVX2 tier's vpmaddwd + vpaddd do in one instruction. The sums
// wrap like vpaddd's and cannot overflow (levels <= 127 in magnitude, 16 pairs of int16 per group of 32, G <= 128).
// The float epilogue is the scalar tier's, lane by lane (acc = fma(float(isum), d * xd, acc), then the minima),
// so every tier gives the same bytes.
__m512 load_scales_f32(const float* pa, const float* pb) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(pa)), _mm256_loadu_ps(pb), 1);
}

template <int J, int G, bool ASYM>
void i16_tile(const WidePanel& w0, const WidePanel& w1, int64_t nb, const I16Acts& a, int64_t t, float* y,
              int64_t ldy, int rows) {
  constexpr int kPairs = G / 2;
  __m512 acc[J];
  for (int j = 0; j < J; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t g = 0; g < nb; ++g) {
    __m512i is[J];
    for (int j = 0; j < J; ++j) is[j] = _mm512_setzero_si512();
    const int16_t* q0 = w0.q + g * kPairs * 2 * kPanelRows;
    const int16_t* q1 = w1.q + g * kPairs * 2 * kPanelRows;
    const int16_t* xg = a.q + t * a.k + g * G;
#pragma GCC unroll 4
    for (int i = 0; i < kPairs; ++i) {
      const __m512i wv = load_pair(reinterpret_cast<const uint8_t*>(q0 + i * 16), reinterpret_cast<const uint8_t*>(q1 + i * 16));
#pragma GCC unroll 8
      for (int j = 0; j < J; ++j) {
        int32_t pair;
        std::memcpy(&pair, xg + j * a.k + 2 * i, 4);
        is[j] = _mm512_dpwssd_epi32(is[j], wv, _mm512_set1_epi32(pair));
      }
    }
    const __m512 d = load_scales_f32(w0.d + g * kPanelRows, w1.d + g * kPanelRows);
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) {
      const __m512 sc = _mm512_mul_ps(d, _mm512_set1_ps(a.d[(t + j) * nb + g]));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[j]), sc, acc[j]);
      if constexpr (ASYM)
        acc[j] = _mm512_fmadd_ps(load_scales_f32(w0.m + g * kPanelRows, w1.m + g * kPanelRows),
                                 _mm512_set1_ps(a.s[(t + j) * nb + g]), acc[j]);
    }
  }
  const __mmask16 keep = rows >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rows) - 1u);
  for (int j = 0; j < J; ++j) _mm512_mask_storeu_ps(y + (t + j) * ldy, keep, acc[j]);
}

template <int G, bool ASYM>
void i16_tokens(const WidePanel& w0, const WidePanel& w1, int64_t nb, const I16Acts& a, int64_t t0, int64_t t1,
                float* y, int64_t ldy, int rows) {
  int64_t t = t0;
  for (; t + 8 <= t1; t += 8) i16_tile<8, G, ASYM>(w0, w1, nb, a, t, y, ldy, rows);
  for (; t + 4 <= t1; t += 4) i16_tile<4, G, ASYM>(w0, w1, nb, a, t, y, ldy, rows);
  for (; t < t1; ++t) i16_tile<1, G, ASYM>(w0, w1, nb, a, t, y, ldy, rows);
}

void gemm_i16_panels(const WidePanel* w, int np, int64_t nb, const I16Acts& a, int64_t t0, int64_t t1, float* y,
                     int64_t ldy, int rows) {
  const WidePanel& w1 = np == 2 ? w[1] : w[0];  // an odd last panel paired with itself; rows stops at its own
  const bool asym = w[0].m != nullptr;
  switch (a.group) {
    case 32: return asym ? i16_tokens<32, true>(w[0], w1, nb, a, t0, t1, y, ldy, rows)
                         : i16_tokens<32, false>(w[0], w1, nb, a, t0, t1, y, ldy, rows);
    case 64: return asym ? i16_tokens<64, true>(w[0], w1, nb, a, t0, t1, y, ldy, rows)
                         : i16_tokens<64, false>(w[0], w1, nb, a, t0, t1, y, ldy, rows);
    default: return asym ? i16_tokens<128, true>(w[0], w1, nb, a, t0, t1, y, ldy, rows)
                         : i16_tokens<128, false>(w[0], w1, nb, a, t0, t1, y, ldy, rows);
  }
}

void layer_norm_row(const float* x, int64_t n, const float* gamma, const float* beta, float eps, float* y) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(x + i));
  float sum = _mm512_reduce_add_ps(acc);
  for (; i < n; ++i) sum += x[i];
  const float mean = sum / float(n);
  const __m512 vm = _mm512_set1_ps(mean);
  acc = _mm512_setzero_ps();
  for (i = 0; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_sub_ps(_mm512_loadu_ps(x + i), vm);
    acc = _mm512_fmadd_ps(v, v, acc);
  }
  float var = _mm512_reduce_add_ps(acc);
  for (; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float rstd = 1.0f / __builtin_sqrtf(var / float(n) + eps);
  const __m512 vr = _mm512_set1_ps(rstd);
  for (i = 0; i + 16 <= n; i += 16) {
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm), vr);
    if (gamma) v = _mm512_mul_ps(v, _mm512_loadu_ps(gamma + i));
    if (beta) v = _mm512_add_ps(v, _mm512_loadu_ps(beta + i));
    _mm512_storeu_ps(y + i, v);
  }
  for (; i < n; ++i) {
    float v = (x[i] - mean) * rstd;
    if (gamma) v *= gamma[i];
    if (beta) v += beta[i];
    y[i] = v;
  }
}

#if defined(BLUELM_AVX512_SIMDE)
const IsaKernels kTable = {"avx512", quantize_row, gemm_panels, layer_norm_row, gemm_i16_panels, nullptr, nullptr,
                           nullptr, nullptr, 16};
#else
const IsaKernels kTable = {"avx512",          quantize_row,          gemm_panels,           layer_norm_row,
                           gemm_i16_panels,   widen_int8_panel_avx2, quantize_i16_row_avx2, widen_int5_panel_avx2,
                           add_block_minima_avx2, 16};
#endif

}  // namespace
}  // namespace BLUELM_AVX512_NS

const IsaKernels* BLUELM_AVX512_TABLE() { return &BLUELM_AVX512_NS::kTable; }

}  // namespace bluelm::kernels

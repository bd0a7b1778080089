// AVX-512 VNNI prefill GEMM of the K-quants (Q4_K, Q5_K, Q6_K): the AVX2 kernel's interleaved tiles (kquant_tiles.h)
// of four panels, two side by side in each of two zmm (32 rows, one per 32-bit lane), fed to vpdpbusd with the
// token's 4 activations broadcast once for both. Per run of a sub-block (Q4_K / Q5_K: its 32 weights; Q6_K: each 16
// with its own scale) a token's int32 sums are converted once and added by one FMA with the rows' D x scale; per
// super-block and token the minima (Q6_K: the offset 32 x scale) are vpdpwssd of the rows' minima with the token's
// sub-block sums, taken off with one FNMADD, and the token's scale applied by one FMA. The AVX2 kernel instead sums vpmaddubsw in int16 and widens
// by the scales with vpmaddwd, two multiplies and an add per product where this takes one instruction.
// Decode (1-3 tokens): Q4_K / Q5_K walk their panels of pieces as the AVX2 kernel does (kquant_k45_decode.h), with
// vpdpbusd for 2-3 tokens and the AVX2 kernel itself for one; Q6_K has its own
// loop below, which reads the GGUF blocks as the AVX2 one does with fewer operations per level (vpternlogd,
// vpdpwssd). Same result as the scalar kernel up to float rounding.
// GCC 12's avx512fintrin.h conversions start from an undefined register on purpose and then warn about it (as in
// kernels_avx512.cpp); the warnings are about the header, not this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/kernels_isa.h"
#include "kernels/kquant_tiles.h"

namespace bluelm::kernels {
namespace {

#include "kernels/kquant_k6_decode.h"

// Four panels' super-block (32 rows as two zmm halves of 16, one row per 32-bit lane): the interleaved levels of
// panels 2h and 2h + 1 side by side in half h of each step, and the factors per row. NSC runs of scale per
// super-block (8 of 32 weights for Q4_K / Q5_K, 16 of 16 for Q6_K); NPAIRS pairs of (minimum or scale) x activation
// sum in the offset term. Four panels rather than two so that one broadcast of 4 activations feeds two vpdpbusd: at
// one per vpdpbusd the broadcasts (loads) bounded the loop below the two vpdpbusd per cycle of this tier's probe.
template <int NSC, int NPAIRS>
struct QuadTile {
  static constexpr int kNsc = NSC, kNpairs = NPAIRS;
  alignas(64) uint8_t q[8][8][2][64];  // [j][s][h]: panel 2h's tile.q[j][s], then panel 2h + 1's
  alignas(64) float f[NSC][2][16];     // [i][h][8 e + r]: D_r x the scale of run i, row r of panel 2h + e
  alignas(64) int16_t mn[NPAIRS][2][32];  // [p][h][16 e + 2 r + c]: the offset term's int16 pairs
  alignas(64) float m[2][16];          // [h][8 e + r]: M_r (Q6_K: 32 d_r)
};
using QuadK45 = QuadTile<8, 4>;
using QuadK6 = QuadTile<16, 8>;

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q4_K / Q5_K decode of 2-3 tokens: the AVX2 tier's walk over the panels of pieces with vpdpbusd on ymm
// (kquant_k45_decode.h).
struct K45Vnni {
  static constexpr bool kVnni = true;
  static __m256i dp(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
};
#include "kernels/kquant_k45_decode.h"

template <class Tile>
void levels_into(const Tile (&t)[4], uint8_t (&q)[8][8][2][64]) {
  for (int j = 0; j < 8; ++j)
    for (int s = 0; s < 8; ++s)
      for (int h = 0; h < 2; ++h)
        _mm512_store_si512(q[j][s][h],
                           _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_load_si256(
                                                  reinterpret_cast<const __m256i*>(t[2 * h].q[j][s]))),
                                              _mm256_load_si256(reinterpret_cast<const __m256i*>(t[2 * h + 1].q[j][s])),
                                              1));
}

// The rows' scale of run i as float (the tiles hold it in both int16 of a row's lane: an arithmetic shift of the
// lane by 16 gives it, signed) times their D.
inline __m256 scaled_factors(const int16_t* sc, const float* d) {
  const __m256i v = _mm256_srai_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(sc)), 16);
  return _mm256_mul_ps(_mm256_load_ps(d), _mm256_cvtepi32_ps(v));
}

void quad_from(const InterleavedK45 (&t)[4], QuadK45& out) {
  levels_into(t, out.q);
  for (int pn = 0; pn < 4; ++pn) {
    const int h = pn / 2, e = pn % 2;
    for (int j = 0; j < 8; ++j) _mm256_store_ps(out.f[j][h] + 8 * e, scaled_factors(t[pn].sc[j], t[pn].d));
    for (int p = 0; p < 4; ++p)
      _mm256_store_si256(reinterpret_cast<__m256i*>(out.mn[p][h] + 16 * e),
                         _mm256_load_si256(reinterpret_cast<const __m256i*>(t[pn].mn[p])));
    _mm256_store_ps(out.m[h] + 8 * e, _mm256_load_ps(t[pn].m));
  }
}

void quad_from(const InterleavedK6 (&t)[4], QuadK6& out) {
  levels_into(t, out.q);
  for (int pn = 0; pn < 4; ++pn) {
    const int h = pn / 2, e = pn % 2;
    for (int i = 0; i < 16; ++i) _mm256_store_ps(out.f[i][h] + 8 * e, scaled_factors(t[pn].sc[i], t[pn].d));
    for (int p = 0; p < 8; ++p)
      _mm256_store_si256(reinterpret_cast<__m256i*>(out.mn[p][h] + 16 * e),
                         _mm256_load_si256(reinterpret_cast<const __m256i*>(t[pn].sp[p])));
    _mm256_store_ps(out.m[h] + 8 * e, _mm256_mul_ps(_mm256_set1_ps(32.0f), _mm256_load_ps(t[pn].d)));
  }
}

// NT tokens against four panels' super-block: acc[u][32 rows] += dx_u (sum_i f_i * sum_run(q . x) - M * off). The
// run sums are exact in int32 (Q6_K's 16 weights: at most 16 x 63 x 128) and in float after the conversion
// (below 2^24); only the additions across runs round. Per step the two halves' levels are loaded once and each
// token's broadcast feeds both: 2 + NT loads per 2 NT vpdpbusd, in 2 NT independent chains.
template <int NSC, int NPAIRS, int NT>
inline void quad_block(const QuadTile<NSC, NPAIRS>& tl, const int8_t* const* x, const int16_t* const* xs,
                       const float* dx, float* acc) {
  constexpr int kRun = 64 / NSC;  // steps of 4 weights per run: 8 or 4
  __m512 sb[NT][2];
#pragma GCC unroll 8
  for (int u = 0; u < NT; ++u) sb[u][0] = sb[u][1] = _mm512_setzero_ps();
#pragma GCC unroll 1
  for (int j = 0; j < 8; ++j) {
#pragma GCC unroll 2
    for (int run = 0; run < 8 / kRun; ++run) {
      __m512i s32[NT][2];
#pragma GCC unroll 8
      for (int u = 0; u < NT; ++u) s32[u][0] = s32[u][1] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int st = kRun * run; st < kRun * (run + 1); ++st) {
        const __m512i l0 = _mm512_load_si512(tl.q[j][st][0]), l1 = _mm512_load_si512(tl.q[j][st][1]);
#pragma GCC unroll 8
        for (int u = 0; u < NT; ++u) {
          const __m512i xb = _mm512_set1_epi32(load_i32(x[u] + 32 * j + 4 * st));
          s32[u][0] = _mm512_dpbusd_epi32(s32[u][0], l0, xb);
          s32[u][1] = _mm512_dpbusd_epi32(s32[u][1], l1, xb);
        }
      }
      const int i = j * (8 / kRun) + run;
      const __m512 f0 = _mm512_load_ps(tl.f[i][0]), f1 = _mm512_load_ps(tl.f[i][1]);
#pragma GCC unroll 8
      for (int u = 0; u < NT; ++u) {
        sb[u][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s32[u][0]), f0, sb[u][0]);
        sb[u][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s32[u][1]), f1, sb[u][1]);
      }
    }
  }
#pragma GCC unroll 8
  for (int u = 0; u < NT; ++u) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m512i off = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int p = 0; p < NPAIRS; ++p)
        off = _mm512_dpwssd_epi32(off, _mm512_load_si512(tl.mn[p][h]), _mm512_set1_epi32(load_i32(xs[u] + 2 * p)));
      const __m512 v = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(off), _mm512_load_ps(tl.m[h]), sb[u][h]);
      float* out = acc + 32 * u + 16 * h;
      _mm512_store_ps(out, _mm512_fmadd_ps(v, _mm512_set1_ps(dx[u]), _mm512_load_ps(out)));
    }
  }
}

template <Kind KIND>
void gemm_panels_vnni(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                      int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  constexpr bool k6 = KIND == Kind::k6;
  using Tile = std::conditional_t<k6, InterleavedK6, InterleavedK45>;
  using Quad = std::conditional_t<k6, QuadK6, QuadK45>;
  constexpr int kSums = k6 ? 16 : 8;
  const PanelGeometry g = panel_geometry(w.format, w.k);
  const int bb = quant::format_info(w.format).block_bytes;
  const int64_t nbb = b1 - b0;
  const int16_t* xsum = kquant_activation_sums(a, g, t0, t1, b0, b1, k6);
  // As in the AVX2 kernel, the tiles are unpacked once per 128 tokens.
  constexpr int64_t kTokens = 128;
  constexpr int kTokenBlock = 4;
  Tile tiles[4];
  alignas(64) Quad quad;
  alignas(64) float acc[kTokens][32];
  for (int64_t p = p0; p < p1; p += 4) {
    const int np = int(std::min<int64_t>(4, p1 - p));
    for (int64_t tb = t0; tb < t1; tb += kTokens) {
      const int64_t te = std::min(t1, tb + kTokens);
      std::memset(acc, 0, sizeof(acc));
      for (int64_t b = b0; b < b1; ++b) {
        for (int pn = 0; pn < 4; ++pn) {  // panels past p1: tiles of zero rows
          const int64_t rows = pn < np ? std::min<int64_t>(kPanelRows, w.n - (p + pn) * kPanelRows) : 0;
          const uint8_t* blocks = w.data + (p + (pn < np ? pn : 0)) * g.stride + b * g.qbytes;
          if constexpr (k6) interleave_k6(blocks, bb, rows, tiles[pn]);
          else interleave_k45(KIND, blocks, rows, tiles[pn]);
        }
        quad_from(tiles, quad);
        if (b + 1 < b1)  // the next super-block's bytes into L1 while this one runs (as the AVX2 kernel)
          for (int pn = 0; pn < np; ++pn)
            for (int64_t o = 0; o < g.qbytes; o += 64)
              _mm_prefetch(reinterpret_cast<const char*>(w.data + (p + pn) * g.stride + (b + 1) * g.qbytes + o),
                           _MM_HINT_T0);
        if (b + 1 == b1)  // the output rows' lines, in cache before the stores (each token's is a line apart)
          for (int64_t t = tb; t < te; ++t)
            for (int pn = 0; pn < np; pn += 2)
              _mm_prefetch(reinterpret_cast<const char*>(y + t * ldy + (p + pn) * kPanelRows), _MM_HINT_T0);
        const auto block = [&](auto nt, int64_t t) {
          constexpr int kNt = decltype(nt)::value;
          const int8_t* x[kNt];
          const int16_t* xs[kNt];
          float dx[kNt];
          for (int u = 0; u < kNt; ++u) {
            x[u] = a.q + (t + u) * a.k + b * g.group;
            xs[u] = xsum + ((t + u - t0) * nbb + (b - b0)) * kSums;
            dx[u] = a.d[(t + u) * g.nb + b];
          }
          quad_block<Quad::kNsc, Quad::kNpairs, kNt>(quad, x, xs, dx, acc[t - tb]);
        };
        int64_t t = tb;
        for (; t + kTokenBlock <= te; t += kTokenBlock) block(std::integral_constant<int, kTokenBlock>{}, t);
        switch (te - t) {
          case 5: block(std::integral_constant<int, 5>{}, t); break;
          case 4: block(std::integral_constant<int, 4>{}, t); break;
          case 3: block(std::integral_constant<int, 3>{}, t); break;
          case 2: block(std::integral_constant<int, 2>{}, t); break;
          case 1: block(std::integral_constant<int, 1>{}, t); break;
          default: break;
        }
      }
      for (int pn = 0; pn < np; ++pn) {
        const int64_t rows = std::min<int64_t>(kPanelRows, w.n - (p + pn) * kPanelRows);
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

// ---- Q6_K decode (1-3 tokens) with AVX-512VL's vpternlogd and VNNI's vpdpwssd. ----
// The AVX2 kernel's per-row loop (kquant_avx2.cpp, decode_panels_k6), about 80 vector operations per row and
// super-block, runs at 0.8 of the read bandwidth on cached weights on a Zen 4, so it cannot keep up with the stream.
// Here the levels take 11 operations per 128 instead of 17: t = hb & 0x33 and u = (hb >> 2) & 0x33 hold the top bit
// pairs of the four vectors at bits 0-1 and 4-5 with bits 2-3 and 6-7 clear, so one vpternlogd (A & 0x0F) | (B & 0xF0)
// joins a vector's low nibbles with its bit pair moved to bits 4-5 (q0: l0, t << 4; q1: l1, u << 4; q2: l0 >> 4, t;
// q3: l1 >> 4, u); bits a 16-bit shift carries across a byte land where the select takes the other operand. The
// scale is applied and summed by one vpdpwssd per 32 levels (vpmaddwd + vpaddd before), and the offset term reads
// the token's 16 sums of 16 in element order (kquant_activation_sums), so no reordering of the scales for it.
// About 58 operations per row and super-block. Each row's integer sum per super-block is the AVX2 kernel's, spread
// over other int32 lanes (the offset in element order), so the floats can differ from that tier's in the last bits.
// The prefetch runs as in the AVX2 kernel: on the Zen 4 it measured alike with and without it (0.88-0.99 of the read
// either way), and the Intel AVX-512 parts this tier also runs on needed it for the other decode tiles.

// NT tokens (1-3) share the row's levels and scales (about 36 operations per row and super-block, then 22 a token);
// each token's sums are computed as for one token alone (the same integers).
template <int NT>
inline void row_k6_vl(const uint8_t* blk, const __m256i (*xv)[8], const __m256i* sums16, __m256i* out) {
  constexpr int kSelect = 0xE4;  // (A & C) | (B & ~C)
  const __m256i m0f = _mm256_set1_epi8(0x0F), m33 = _mm256_set1_epi8(0x33);
  const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
  const __m256i s32 = _mm256_slli_epi16(s16, 5);
  const __m256i lo_half = _mm256_permute2x128_si256(s16, s16, 0x00);  // scales 0..7 in both lanes
  const __m256i hi_half = _mm256_permute2x128_si256(s16, s16, 0x11);  // 8..15
  __m256i d0[NT], d1[NT];
  for (int t = 0; t < NT; ++t) d0[t] = d1[t] = _mm256_setzero_si256();
  for (int h = 0; h < 2; ++h) {
    const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
    const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
    const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
    const __m256i t = _mm256_and_si256(hb, m33), u = _mm256_and_si256(_mm256_srli_epi16(hb, 2), m33);
    const __m256i q[4] = {_mm256_ternarylogic_epi32(l0, _mm256_slli_epi16(t, 4), m0f, kSelect),
                          _mm256_ternarylogic_epi32(l1, _mm256_slli_epi16(u, 4), m0f, kSelect),
                          _mm256_ternarylogic_epi32(_mm256_srli_epi16(l0, 4), t, m0f, kSelect),
                          _mm256_ternarylogic_epi32(_mm256_srli_epi16(l1, 4), u, m0f, kSelect)};
    const __m256i half = h == 0 ? lo_half : hi_half;
    for (int s = 0; s < 4; ++s) {
      const __m256i sc = _mm256_shuffle_epi8(half, _mm256_load_si256(reinterpret_cast<const __m256i*>(kPairMask[s])));
      for (int t = 0; t < NT; ++t) {
        const __m256i m = _mm256_maddubs_epi16(q[s], xv[t][4 * h + s]);
        if (s & 1)
          d1[t] = _mm256_dpwssd_epi32(d1[t], m, sc);
        else
          d0[t] = _mm256_dpwssd_epi32(d0[t], m, sc);
      }
    }
  }
  for (int t = 0; t < NT; ++t)
    out[t] = _mm256_sub_epi32(_mm256_add_epi32(d0[t], d1[t]), _mm256_madd_epi16(sums16[t], s32));
}

void decode_panels_k6_vl(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                         int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const int16_t* xsum = kquant_activation_sums(a, panel_geometry(w.format, w.k), t0, t1, b0, b1, true);
  const int64_t nbb = b1 - b0;
  decode_panels_k6_walk(
      w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy,
      [=](int64_t t, int64_t b) {  // [t][b][16] sums of 16, element order
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xsum + (t * nbb + (b - b0)) * 16));
      },
      [](auto nt, const uint8_t* blk, const __m256i(*xv)[8], const __m256i* s16, __m256i* out) {
        row_k6_vl<decltype(nt)::value>(blk, xv, s16, out);
      });
}

}  // namespace

void gemm_panels_k_avx512(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                          int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const quant::FormatInfo& fi = quant::format_info(w.format);
  if (t1 - t0 <= 3) {
    if (fi.kind == Kind::k6) return decode_panels_k6_vl(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
    // One token stays on the AVX2 walk: vpdpbusd ran it 1.3x as fast on cached weights but no faster in the
    // engine, where one token is bound by the memory (docs/kernels.md, "Q4_K / Q5_K decode of 2-3 tokens with
    // vpdpbusd"); two and three tokens (int16 activations' two passes) are bound by the loop.
    if (!avx512_k45_decode() || t1 - t0 == 1)
      return gemm_panels_k_avx2(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
    const auto run = [&](auto kind) {
      constexpr Kind K = decltype(kind)::value;
      if (t1 - t0 == 2) return decode_panels_pieces<K, 2, K45Vnni>(w, a, p0, p1, t0, b0, b1, accumulate, y, ldy);
      return decode_panels_pieces<K, 3, K45Vnni>(w, a, p0, p1, t0, b0, b1, accumulate, y, ldy);
    };
    if (fi.kind == Kind::k4) return run(std::integral_constant<Kind, Kind::k4>{});
    return run(std::integral_constant<Kind, Kind::k5>{});
  }
  if (fi.kind == Kind::k4) return gemm_panels_vnni<Kind::k4>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  if (fi.kind == Kind::k5) return gemm_panels_vnni<Kind::k5>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  return gemm_panels_vnni<Kind::k6>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
}

}  // namespace bluelm::kernels

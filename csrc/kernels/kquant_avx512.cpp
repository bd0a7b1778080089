// AVX-512 VNNI prefill GEMM of the K-quants (Q4_K, Q5_K, Q6_K): the AVX2 kernel's interleaved tiles (kquant_tiles.h)
// of four panels, two side by side in each of two zmm (32 rows, one per 32-bit lane), fed to vpdpbusd with the
// token's 4 activations broadcast once for both. Per run of a sub-block (Q4_K / Q5_K: its 32 weights; Q6_K: each 16
// with its own scale) a token's int32 sums are converted once and added by one FMA with the rows' D x scale; per
// super-block and token the minima (Q6_K: the offset 32 x scale) are vpdpwssd of the rows' minima with the token's
// sub-block sums, taken off with one FNMADD, and the token's scale applied by one FMA. The AVX2 kernel instead sums vpmaddubsw in int16 and widens
// by the scales with vpmaddwd, two multiplies and an add per product where this takes one instruction.
// Decode (1-3 tokens) keeps the AVX2 kernel (kquant_avx2.cpp), which reads the GGUF blocks without unpacking them.
// Same result as the scalar kernel up to float rounding.
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

}  // namespace

void gemm_panels_k_avx512(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                          int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const quant::FormatInfo& fi = quant::format_info(w.format);
  if (t1 - t0 <= 3) return gemm_panels_k_avx2(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  if (fi.kind == Kind::k4) return gemm_panels_vnni<Kind::k4>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  if (fi.kind == Kind::k5) return gemm_panels_vnni<Kind::k5>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  return gemm_panels_vnni<Kind::k6>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
}

}  // namespace bluelm::kernels

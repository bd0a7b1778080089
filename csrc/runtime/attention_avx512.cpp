// AVX-512 products of attention (attention_isa.h): scores, output accumulation, value dequantization and the
// softmax's exponentials 16 floats at a time; GELU, the row max and the key transpose are the AVX2 tier's (8x8
// register transposes).
// Compiled with the AVX-512 flags only in this file. As in the AVX2 tier, each element is one FMA chain in
// ascending order whatever the tiling, so results do not depend on how a call is split.
#include <immintrin.h>

#include <type_traits>

#include "runtime/attention.h"
#include "runtime/attention_isa.h"

namespace bluelm::runtime {

namespace {

// Mask of the first `n` (1..16) lanes.
__mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

// acc + the VNNI product of x with the 32-bit word at w broadcast to every lane, the broadcast folded into the
// instruction's memory operand ({1to16}). In inline assembly because gcc 12 copies the accumulators of the
// intrinsics' forms between registers on every step of the value tile (perf: a third of its instructions were
// vmovdqa copies) and issues the broadcasts as separate instructions.
__attribute__((always_inline)) inline __m512i dpwssd_bcst(__m512i acc, __m512i x, const void* w) {
  __asm__("vpdpwssd %[w]%{1to16%}, %[x], %[acc]" : [acc] "+v"(acc) : [x] "v"(x), [w] "m"(*static_cast<const int32_t*>(w)));
  return acc;
}
__attribute__((always_inline)) inline __m512i dpbusd_bcst(__m512i acc, __m512i u, const void* w) {
  __asm__("vpdpbusd %[w]%{1to16%}, %[u], %[acc]" : [acc] "+v"(acc) : [u] "v"(u), [w] "m"(*static_cast<const int32_t*>(w)));
  return acc;
}

// C [R, 16W] (+)= A [R, k] * B [k, 16W], all row-major, the last vector masked to `last` lanes: the one
// micro-kernel of both attention products. Scores are q [m, hd] * k^T [hd, n] into a fresh tile (Acc = false);
// values add p [m, nb] * v [nb, hd] to the output (true).
template <int R, int W, bool Acc>
void product_tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, __mmask16 last, float* c,
                  int64_t ldc) {
  __m512 acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w)
      acc[r][w] = Acc ? _mm512_maskz_loadu_ps(w == W - 1 ? last : 0xFFFF, c + r * ldc + 16 * w) : _mm512_setzero_ps();
  for (int64_t i = 0; i < k; ++i) {
    __m512 bv[W];
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) bv[w] = _mm512_maskz_loadu_ps(w == W - 1 ? last : 0xFFFF, b + i * ldb + 16 * w);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * lda + i]);
#pragma GCC unroll 16
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(x, bv[w], acc[r][w]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) _mm512_mask_storeu_ps(c + r * ldc + 16 * w, w == W - 1 ? last : 0xFFFF, acc[r][w]);
}

template <int R, bool Acc>
void product_rows(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t n, int64_t k, float* c,
                  int64_t ldc) {
  for (int64_t j = 0; j < n; j += 64) {
    const int64_t w = n - j >= 64 ? 4 : (n - j + 15) / 16;
    const __mmask16 last = lanes(n - j - 16 * (w - 1));
    switch (w) {
      case 4: product_tile<R, 4, Acc>(a, lda, b + j, ldb, k, last, c + j, ldc); break;
      case 3: product_tile<R, 3, Acc>(a, lda, b + j, ldb, k, last, c + j, ldc); break;
      case 2: product_tile<R, 2, Acc>(a, lda, b + j, ldb, k, last, c + j, ldc); break;
      default: product_tile<R, 1, Acc>(a, lda, b + j, ldb, k, last, c + j, ldc); break;
    }
  }
}

// C [m, n] (+)= A [m, k] * B [k, n]: rows in fours, then the remainder; any n (masked tails).
template <bool Acc>
void product(const float* a, int64_t lda, int64_t m, const float* b, int64_t ldb, int64_t n, int64_t k, float* c,
             int64_t ldc) {
  for_row_blocks(m, [&](auto rows, int64_t r) {
    product_rows<decltype(rows)::value, Acc>(a + r * lda, lda, b, ldb, n, k, c + r * ldc, ldc);
  });
}

void scores_avx512(const float* q, int64_t ldq, int64_t m, const float* kt, int64_t ldk, int64_t nc, int64_t hd,
                   float* s, int64_t lds) {
  product<false>(q, ldq, m, kt, ldk, nc, hd, s, lds);
}

void accumulate_avx512(const float* p, int64_t ldp, int64_t m, const float* v, int64_t ldv, int64_t nb, int64_t hd,
                       float* o, int64_t ldo) {
  product<true>(p, ldp, m, v, ldv, hd, nb, o, ldo);
}

void values_i8_avx512(const int8_t* v, const float* vs, int64_t nb, int64_t hd, int64_t gs, float* vt) {
  if (gs % 16) return attention_kernels_avx2()->values_i8(v, vs, nb, hd, gs, vt);
  const int64_t groups = hd / gs;
  for (int64_t j = 0; j < nb; ++j)
    for (int64_t g = 0; g < groups; ++g) {
      const __m512 d = _mm512_set1_ps(vs[j * groups + g]);
      for (int64_t i = g * gs; i < (g + 1) * gs; i += 16) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + j * hd + i));
        // (masked forms: gcc 12 warns about the undefined source register of the plain ones)
        _mm512_storeu_ps(vt + j * hd + i, _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_maskz_cvtepi8_epi32(0xFFFF, b)), d));
      }
    }
}

// 16 vectors of partial sums (one per position) -> one vector of their 16 totals, lane l holding position
// (l % 4) * 4 + l / 4: a tree of 128-bit and 32-bit shuffles, 45 instructions instead of 16 horizontal reductions
// (zero-masked forms throughout: gcc 12 warns about the undefined source register of the plain ones).
__m512 reduce16(const __m512 v[16]) {
  __m512 a[8], b[4], c[2];
#pragma GCC unroll 16
  for (int i = 0; i < 8; ++i)
    a[i] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(0xFFFF, v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_maskz_shuffle_f32x4(0xFFFF, v[2 * i], v[2 * i + 1], 0xEE));
#pragma GCC unroll 16
  for (int i = 0; i < 4; ++i)
    b[i] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(0xFFFF, a[2 * i], a[2 * i + 1], 0x88),
                         _mm512_maskz_shuffle_f32x4(0xFFFF, a[2 * i], a[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)
    c[i] = _mm512_add_ps(_mm512_maskz_shuffle_ps(0xFFFF, b[2 * i], b[2 * i + 1], 0x88), _mm512_maskz_shuffle_ps(0xFFFF, b[2 * i], b[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_maskz_shuffle_ps(0xFFFF, c[0], c[1], 0x88), _mm512_maskz_shuffle_ps(0xFFFF, c[0], c[1], 0xDD));
}

// R rows against 16 positions at a time: each key row dequantized once (scale folded in) for the R queries, one
// partial-sum vector per (row, position), then one tree reduction per row and 16 positions.
template <int R>
void scores_i8_direct_rows(const float* q, int64_t ldq, const int8_t* k, const float* ks, int64_t nb, int64_t hd,
                           int64_t gs, float* s, int64_t lds) {
  const int64_t groups = hd / gs;
  // The tree leaves lane l with position (l % 4) * 4 + l / 4; this index puts position p in lane p.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int64_t j0 = 0; j0 < nb; j0 += 16) {
    const int64_t np = nb - j0 < 16 ? nb - j0 : 16;
    __m512 part[R][16];
    for (int64_t p = 0; p < 16; ++p) {
      __m512 acc[R];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
      if (p < np) {
        const int8_t* kr = k + (j0 + p) * hd;
        for (int64_t g = 0; g < groups; ++g) {
          const __m512 d = _mm512_set1_ps(ks[(j0 + p) * groups + g]);
          for (int64_t i = g * gs; i < (g + 1) * gs; i += 16) {
            const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kr + i));
            const __m512 kv = _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_maskz_cvtepi8_epi32(0xFFFF, b)), d);
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(q + r * ldq + i), kv, acc[r]);
          }
        }
      }
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) part[r][p] = acc[r];
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
      _mm512_mask_storeu_ps(s + r * lds + j0, lanes(np), _mm512_maskz_permutexvar_ps(0xFFFF, order, reduce16(part[r])));
  }
}

bool scores_i8_direct_avx512(const float* q, int64_t ldq, int64_t m, const int8_t* k, const float* ks, int64_t nb,
                             int64_t hd, int64_t gs, float* s, int64_t lds) {
  if (hd % 16 || gs % 16 || m > 8) return false;
  for_row_blocks(m, [&](auto rows, int64_t r) {
    scores_i8_direct_rows<decltype(rows)::value>(q + r * ldq, ldq, k, ks, nb, hd, gs, s + r * lds, lds);
  });
  return true;
}

// R rows x W vectors of 16 output columns [c, c + 16 W) inside one scale group: each value row converted once for
// the R rows, its weight p * scale folded into one broadcast per row.
template <int R, int W>
void accumulate_i8_tile(const float* p, int64_t ldp, const int8_t* v, const float* vs, int64_t nb, int64_t hd,
                        int64_t groups, int64_t g, int64_t c, float* o, int64_t ldo) {
  __m512 acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) acc[r][w] = _mm512_loadu_ps(o + r * ldo + c + 16 * w);
  for (int64_t j = 0; j < nb; ++j) {
    __m512 vv[W];
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + j * hd + c + 16 * w));
      vv[w] = _mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_maskz_cvtepi8_epi32(0xFFFF, b));
    }
    const float d = vs[j * groups + g];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(p[r * ldp + j] * d);
#pragma GCC unroll 16
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(a, vv[w], acc[r][w]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) _mm512_storeu_ps(o + r * ldo + c + 16 * w, acc[r][w]);
}

template <int R>
void accumulate_i8_rows(const float* p, int64_t ldp, const int8_t* v, const float* vs, int64_t nb, int64_t hd,
                        int64_t gs, float* o, int64_t ldo) {
  const int64_t groups = hd / gs;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t c = g * gs; c < (g + 1) * gs;) {
      const int64_t left = (g + 1) * gs - c;
      if (left >= 64) {
        accumulate_i8_tile<R, 4>(p, ldp, v, vs, nb, hd, groups, g, c, o, ldo);
        c += 64;
      } else if (left >= 32) {
        accumulate_i8_tile<R, 2>(p, ldp, v, vs, nb, hd, groups, g, c, o, ldo);
        c += 32;
      } else {
        accumulate_i8_tile<R, 1>(p, ldp, v, vs, nb, hd, groups, g, c, o, ldo);
        c += 16;
      }
    }
}

bool accumulate_i8_direct_avx512(const float* p, int64_t ldp, int64_t m, const int8_t* v, const float* vs, int64_t nb,
                                 int64_t hd, int64_t gs, float* o, int64_t ldo) {
  if (hd % 16 || gs % 16 || m > 8) return false;
  for_row_blocks(m, [&](auto rows, int64_t r) {
    accumulate_i8_rows<decltype(rows)::value>(p + r * ldp, ldp, v, vs, nb, hd, gs, o + r * ldo, ldo);
  });
  return true;
}

// Columns of the 16x16 block of 32-bit lanes r[0..16) (rows in, columns out), in place: 64 shuffles (zero-masked
// forms: gcc 12 warns about the undefined source register of the plain ones).
__attribute__((always_inline)) inline void transpose16_epi32(__m512i r[16]) {
  __m512i t[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_maskz_unpacklo_epi32(0xFFFF, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_epi32(0xFFFF, r[i], r[i + 1]);
  }
  // u[4 b + d]: dword d of each 128-bit lane of rows 4b .. 4b + 3.
  __m512i u[16];
#pragma GCC unroll 16
  for (int b = 0; b < 4; ++b) {
    u[4 * b + 0] = _mm512_maskz_unpacklo_epi64(0xFF, t[4 * b], t[4 * b + 2]);
    u[4 * b + 1] = _mm512_maskz_unpackhi_epi64(0xFF, t[4 * b], t[4 * b + 2]);
    u[4 * b + 2] = _mm512_maskz_unpacklo_epi64(0xFF, t[4 * b + 1], t[4 * b + 3]);
    u[4 * b + 3] = _mm512_maskz_unpackhi_epi64(0xFF, t[4 * b + 1], t[4 * b + 3]);
  }
#pragma GCC unroll 16
  for (int d = 0; d < 4; ++d) {
    const __m512i s1 = _mm512_maskz_shuffle_i32x4(0xFFFF, u[d], u[4 + d], 0x44), s2 = _mm512_maskz_shuffle_i32x4(0xFFFF, u[d], u[4 + d], 0xEE);
    const __m512i s3 = _mm512_maskz_shuffle_i32x4(0xFFFF, u[8 + d], u[12 + d], 0x44);
    const __m512i s4 = _mm512_maskz_shuffle_i32x4(0xFFFF, u[8 + d], u[12 + d], 0xEE);
    r[d] = _mm512_maskz_shuffle_i32x4(0xFFFF, s1, s3, 0x88);
    r[4 + d] = _mm512_maskz_shuffle_i32x4(0xFFFF, s1, s3, 0xDD);
    r[8 + d] = _mm512_maskz_shuffle_i32x4(0xFFFF, s2, s4, 0x88);
    r[12 + d] = _mm512_maskz_shuffle_i32x4(0xFFFF, s2, s4, 0xDD);
  }
}

// Columns c0 .. c0 + nc (nc <= 16) of the keys of positions j0 .. j0 + np (np <= 16, zero rows past it), transposed:
// t[c] lane p holds dimensions 4 (c0 + c) .. 4 (c0 + c) + 3 of position j0 + p.
__attribute__((always_inline)) inline void key_columns(const int8_t* k, int64_t j0, int64_t np, int64_t hd, int64_t c0,
                                                       int64_t nc, __m512i t[16]) {
#pragma GCC unroll 16
  for (int p = 0; p < 16; ++p) {
    t[p] = p < np ? _mm512_maskz_loadu_epi32(lanes(nc), k + (j0 + p) * hd + 4 * c0) : _mm512_setzero_si512();
    prefetch_later(k + (j0 + p) * hd + 4 * c0, hd);
  }
  transpose16_epi32(t);
}

// Query rows against 16 positions at a time in integers (VNNI): the 16 key rows transposed once in 4-byte columns
// (offset to unsigned, k + 128), so lane p of column c holds dimensions 4c .. 4c + 3 of position p, kept in `cols`
// for every block of R rows (prefill tiles have up to kPrefillRows of them); vpdpbusd multiplies a column by the
// broadcast int8 query and sums four products per lane, and 128 x the query's group sum is taken off again before
// the group's sums are scaled once per position.
constexpr int64_t kMaxKeyColumns = 64;  // hd <= 256

template <int R, int PG>  // PG: columns per scale group when known at compile time (gs 32: 8), else 0
void scores_i8q_cols(const __m512i* cols, int64_t per_group, int64_t groups, const float* scale, const int8_t* q8,
                     const float* qd, const int32_t* qsum, int64_t hd, int64_t np, float* s, int64_t lds) {
  // Each group's sums start at -128 x the query's group sum (the keys' offset taken off in the integers, exact: no
  // subtraction when the group closes); the float steps are the scalar tier's, in its order (no FMA: a score one
  // rounding off can move a softmax weight's int16 rounding). A group's columns are one loop, unrolled when PG is
  // known, with the rows' query pointers set once per group: the loop is products and their loads only.
  const int64_t pg = PG ? PG : per_group;
  __m512 sc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) sc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const __m512i* gc = cols + g * pg;
    const int8_t* qrow[R];
    __m512i acc[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      qrow[r] = q8 + r * hd + 4 * g * pg;
      acc[r] = _mm512_set1_epi32(-128 * qsum[r * groups + g]);
    }
#pragma GCC unroll 16
    for (int64_t c = 0; c < pg; ++c) {
      const __m512i ku = _mm512_load_si512(gc + c);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r] = dpbusd_bcst(acc[r], ku, qrow[r] + 4 * c);
    }
    const __m512 d = _mm512_load_ps(scale + 16 * g);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 w = _mm512_mul_ps(d, _mm512_set1_ps(qd[r * groups + g]));
      sc[r] = _mm512_add_ps(sc[r], _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, acc[r]), w));
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(s + r * lds, lanes(np), sc[r]);
}

// The scales of positions j0 .. j0 + np (np <= 16) of every group, laid out per group (scale[g * ld + p], zero past
// np): for 2 groups (head size 64 at groups of 32) two two-source permutes de-interleave them.
__attribute__((always_inline)) inline void block_scales(const float* ks, int64_t j0, int64_t np, int64_t groups, float* scale, int64_t ld) {
  if (groups == 2) {
    const float* src = ks + j0 * 2;
    const __m512 a = _mm512_maskz_loadu_ps(lanes(2 * np), src);
    const __m512 b = _mm512_maskz_loadu_ps(np > 8 ? lanes(2 * np - 16) : __mmask16(0), src + 16);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    _mm512_storeu_ps(scale, _mm512_permutex2var_ps(a, even, b));
    _mm512_storeu_ps(scale + ld, _mm512_permutex2var_ps(a, _mm512_add_epi32(even, _mm512_set1_epi32(1)), b));
    return;
  }
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t p = 0; p < 16; ++p) scale[g * ld + p] = p < np ? ks[(j0 + p) * groups + g] : 0.0f;
}

// Decode's GQA group (R <= 4 rows, one row block): the same products and float steps as scores_i8q_cols, with the
// transposed columns used straight from the registers of the transpose instead of a stack copy (this, the two
// chains and the VNNI helpers above together: decode attention at depth 4,096 x1.12; docs/engine.md, fifth pass).
template <int R>
void scores_i8q_fused(const int8_t* q8, const float* qd, const int32_t* qsum, const int8_t* k, const float* scale,
                      int64_t j0, int64_t np, int64_t hd, int64_t gs, float* s, int64_t lds) {
  const int64_t groups = hd / gs, chunks = hd / 4, per_group = gs / 4;
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  // Two accumulators per row (even and odd columns), so the chains of dependent vpdpbusd are half as long.
  __m512 sc[R];
  __m512i acc[R][2];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    sc[r] = _mm512_setzero_ps();
    acc[r][0] = _mm512_set1_epi32(-128 * qsum[r * groups]);  // as in scores_i8q_cols
    acc[r][1] = _mm512_setzero_si512();
  }
  int64_t g = 0, left = per_group;  // the group being summed, and its columns still to come
  for (int64_t c0 = 0; c0 < chunks; c0 += 16) {
    const int64_t nc = chunks - c0 < 16 ? chunks - c0 : 16;
    __m512i t[16];
    key_columns(k, j0, np, hd, c0, nc, t);
#pragma GCC unroll 16
    for (int c = 0; c < 16; ++c) {
      if (c >= nc) break;
      const __m512i ku = _mm512_xor_si512(t[c], flip);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r][c & 1] = dpbusd_bcst(acc[r][c & 1], ku, q8 + r * hd + 4 * (c0 + c));
      if (--left == 0) {  // the group ends: scale its sums once
        const __m512 d = _mm512_load_ps(scale + 16 * g);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const __m512i dot = _mm512_add_epi32(acc[r][0], acc[r][1]);
          const __m512 w = _mm512_mul_ps(d, _mm512_set1_ps(qd[r * groups + g]));
          sc[r] = _mm512_add_ps(sc[r], _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, dot), w));
          if (g + 1 < groups) acc[r][0] = _mm512_set1_epi32(-128 * qsum[r * groups + g + 1]);
          acc[r][1] = _mm512_setzero_si512();
        }
        ++g;
        left = per_group;
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(s + r * lds + j0, lanes(np), sc[r]);
}

bool scores_i8q_avx512(const int8_t* q8, const float* qd, const int32_t* qsum, int64_t m, const int8_t* k,
                       const float* ks, int64_t nb, int64_t hd, int64_t gs, float* s, int64_t lds) {
  if (gs % 4 || hd / gs > kMaxScaleGroups || hd / 4 > kMaxKeyColumns)
    return attention_kernels_avx2()->scores_i8q(q8, qd, qsum, m, k, ks, nb, hd, gs, s, lds);
  const int64_t groups = hd / gs, chunks = hd / 4, per_group = gs / 4;
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  alignas(64) float scale[kMaxScaleGroups * 16];
  alignas(64) __m512i cols[kMaxKeyColumns];
  for (int64_t j0 = 0; j0 < nb; j0 += 16) {
    const int64_t np = nb - j0 < 16 ? nb - j0 : 16;
    block_scales(ks, j0, np, groups, scale, 16);
    if (m <= 4) {
      switch (m) {
        case 4: scores_i8q_fused<4>(q8, qd, qsum, k, scale, j0, np, hd, gs, s, lds); break;
        case 3: scores_i8q_fused<3>(q8, qd, qsum, k, scale, j0, np, hd, gs, s, lds); break;
        case 2: scores_i8q_fused<2>(q8, qd, qsum, k, scale, j0, np, hd, gs, s, lds); break;
        case 1: scores_i8q_fused<1>(q8, qd, qsum, k, scale, j0, np, hd, gs, s, lds); break;
        default: break;
      }
      continue;
    }
    for (int64_t c0 = 0; c0 < chunks; c0 += 16) {
      const int64_t nc = chunks - c0 < 16 ? chunks - c0 : 16;
      __m512i t[16];
      key_columns(k, j0, np, hd, c0, nc, t);
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c)
        if (c < nc) cols[c0 + c] = _mm512_xor_si512(t[c], flip);
    }
    for_row_blocks(m, [&](auto rows, int64_t r) {
      constexpr int R = decltype(rows)::value;
      (per_group == 8 ? scores_i8q_cols<R, 8> : scores_i8q_cols<R, 0>)(cols, per_group, groups, scale, q8 + r * hd,
                                                                       qd + r * groups, qsum + r * groups, hd, np,
                                                                       s + r * lds + j0, lds);
    });
  }
  return true;
}

// exp(x) 16 lanes at a time, the AVX2 tier's method (attention_avx2.cpp: 2^n exp(r), ln 2 split in two, degree-6
// Taylor polynomial, x clamped to [-87.3, 88.3]) in 512-bit registers, masked on the tail.
__m512 exp_avx512(__m512 x) {
  x = _mm512_maskz_min_ps(0xFFFF, _mm512_maskz_max_ps(0xFFFF, x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
  const __m512 n = _mm512_maskz_roundscale_ps(0xFFFF, _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  // p 2^n in one vscalefps, the same product the AVX2 tier forms from the exponent bits of 2^n (n >= -126 here).
  return _mm512_maskz_scalef_ps(0xFFFF, p, n);  // (maskz: gcc 12 warns on the unmasked form's undefined source)
}

float exp_sum_avx512(float* x, int64_t n, float sub) {
  const __m512 vs = _mm512_set1_ps(sub);
  // Whole vectors in two chains (so consecutive exps overlap their adds), the tail masked once.
  __m512 acc = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps();
  const int64_t full = n / 16 * 16;
  int64_t i = 0;
  for (; i + 32 <= full; i += 32) {
    const __m512 a = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
    const __m512 b = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), vs));
    _mm512_storeu_ps(x + i, a);
    _mm512_storeu_ps(x + i + 16, b);
    acc = _mm512_add_ps(acc, a);
    acc2 = _mm512_add_ps(acc2, b);
  }
  for (; i < full; i += 16) {
    const __m512 a = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
    _mm512_storeu_ps(x + i, a);
    acc = _mm512_add_ps(acc, a);
  }
  if (const __mmask16 k = lanes(n - full); full < n) {
    const __m512 v = _mm512_maskz_mov_ps(k, exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + full), vs)));
    _mm512_mask_storeu_ps(x + full, k, v);
    acc = _mm512_add_ps(acc, v);
  }
  acc = _mm512_add_ps(acc, acc2);
  const __m256 a8 = _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xFF, acc, 0), _mm512_maskz_extractf32x8_ps(0xFF, acc, 1));
  __m128 a4 = _mm_add_ps(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
  a4 = _mm_add_ps(a4, _mm_movehl_ps(a4, a4));
  a4 = _mm_add_ss(a4, _mm_shuffle_ps(a4, a4, 1));
  return _mm_cvtss_f32(a4);
}

// Decode's values with int16 weights (AttentionKernels::accumulate_i8w). Two value rows j, j + 1 widened to int16
// and interleaved (vpunpck{l,h}wd) give, per 32 output columns, two vectors of (v_j, v_j+1) pairs, each multiplied
// by the broadcast pair (wq_j, wq_j+1) and summed into int32 by vpdpwssd; the interleave permutes the columns
// (lane 4L + e of the low vector is column 8L + e, of the high one 8L + 4 + e), undone once per call.
constexpr int64_t kWeightsLd = kAttnBlock + 2;  // int16 weights of one (row, group), padded to an even count
constexpr int64_t kWeightsRowLd = kMaxScaleGroups * kWeightsLd;  // and of one row

// Two value rows j, j + 1 (b a zero row past nb) for the 32 columns from c: x[0], x[1] the pairs as above.
template <bool Pair>
__attribute__((always_inline)) inline void value_pairs(const int8_t* v, int64_t j, int64_t hd, int64_t c, __m512i x[2]) {
  const __m512i a =
      _mm512_maskz_cvtepi8_epi16(~__mmask32(0), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + j * hd + c)));
  const __m512i b = Pair ? _mm512_maskz_cvtepi8_epi16(~__mmask32(0), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                                                                         v + (j + 1) * hd + c)))
                         : _mm512_setzero_si512();
  x[0] = _mm512_maskz_unpacklo_epi16(~__mmask32(0), a, b);
  x[1] = _mm512_maskz_unpackhi_epi16(~__mmask32(0), a, b);
}

// A block's value rows interleaved once for every row block of a prefill tile (value_pairs for each pair of rows
// and each 32 columns): xi[(j / 2) * hd / 16 + c / 16 + {0, 1}]. With more than 4 query rows the on-the-fly
// unpacking below would be repeated per block of 4 rows: 8 shuffles and widenings per 16 vpdpwssd.
void interleave_values(const int8_t* v, int64_t nb, int64_t hd, __m512i* xi) {
  int64_t j = 0;
  for (; j + 1 < nb; j += 2)
    for (int64_t c = 0; c < hd; c += 32) value_pairs<true>(v, j, hd, c, xi + (j / 2) * (hd / 16) + c / 16);
  if (j < nb)
    for (int64_t c = 0; c < hd; c += 32) value_pairs<false>(v, j, hd, c, xi + (j / 2) * (hd / 16) + c / 16);
}

// Rows r < R of p (as int16 weights wq, scales sw) times the value block, W / 2 halves of 32 columns from column c,
// added to o. The value pairs come unpacked on the fly from v (decode: one block of rows) or, when xi is given,
// from interleave_values' copy.
template <int R, int W>
void accumulate_i8w_tile(const int16_t* wq, const float* sw, int64_t groups, const int8_t* v, const __m512i* xi,
                         int64_t nb, int64_t hd, int64_t gs, int64_t c, float* o, int64_t ldo) {
  __m512i acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) acc[r][w] = _mm512_setzero_si512();
  // The weights of half h's group for row 0; row r's are kWeightsRowLd further, a constant, so each broadcast is one
  // addressing mode off two base registers and the position (no per-row pointers to keep or reload).
  const int16_t* wgroup[W / 2];
#pragma GCC unroll 16
  for (int h = 0; h < W / 2; ++h) wgroup[h] = wq + (c + 32 * h) / gs * kWeightsLd;
  // Positions j, j + 1 (the second a zero row past nb: its weight is 0 too); the pair loop has no branch inside.
  const auto step = [&](int64_t j, auto pair) __attribute__((always_inline)) {
    __m512i x[W];
    if (xi) {
      const __m512i* src = xi + (j / 2) * (hd / 16) + c / 16;
#pragma GCC unroll 16
      for (int w = 0; w < W; ++w) x[w] = _mm512_load_si512(src + w);
    } else {
      prefetch_later(v + j * hd + c, hd);  // the tile's W / 2 x 32 bytes of a row: one line when W = 4
      prefetch_later(v + (j + 1) * hd + c, hd);
#pragma GCC unroll 16
      for (int h = 0; h < W / 2; ++h) value_pairs<decltype(pair)::value>(v, j, hd, c + 32 * h, x + 2 * h);
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
      for (int h = 0; h < W / 2; ++h) {
        acc[r][2 * h] = dpwssd_bcst(acc[r][2 * h], x[2 * h], wgroup[h] + r * kWeightsRowLd + j);
        acc[r][2 * h + 1] = dpwssd_bcst(acc[r][2 * h + 1], x[2 * h + 1], wgroup[h] + r * kWeightsRowLd + j);
      }
  };
  int64_t j = 0;
  for (; j + 1 < nb; j += 2) step(j, std::true_type{});
  if (j < nb) step(j, std::false_type{});
  const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i hi = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int h = 0; h < W / 2; ++h) {
      const __m512 d = _mm512_set1_ps(sw[r * groups + (c + 32 * h) / gs]);
      const __m512 a = _mm512_maskz_cvtepi32_ps(0xFFFF, acc[r][2 * h]);
      const __m512 b = _mm512_maskz_cvtepi32_ps(0xFFFF, acc[r][2 * h + 1]);
      float* out = o + r * ldo + c + 32 * h;
      _mm512_storeu_ps(out, _mm512_fmadd_ps(d, _mm512_permutex2var_ps(a, lo, b), _mm512_loadu_ps(out)));
      _mm512_storeu_ps(out + 16, _mm512_fmadd_ps(d, _mm512_permutex2var_ps(a, hi, b), _mm512_loadu_ps(out + 16)));
    }
}

// The weights of rows r < R in int16, as the scalar tier rounds them: wq [R, kMaxScaleGroups, kWeightsLd] (row r
// from r x kWeightsRowLd), sw [R, groups].
template <int R>
void weights_i16(const float* p, int64_t ldp, const float* vsg, int64_t nb, int64_t groups, int16_t* wq, float* sw) {
  // Two passes over all rows and groups: the products p x value scale and their maxima first (kept, not formed
  // again), then each (row, group)'s scale and its rounding. The maxima's reductions and divisions are latency
  // chains; issued together, they overlap. Whole vectors unmasked, the tail (nb % 16) once.
  const int64_t full = nb / 16 * 16;
  const __mmask16 tail = lanes(nb - full);
  alignas(64) float w[R][kMaxScaleGroups][kAttnBlock];
  float top[R][kMaxScaleGroups];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const float* vg = vsg + g * kAttnBlock;
      const float* pr = p + r * ldp;
      __m512 mx = _mm512_setzero_ps();
      for (int64_t j = 0; j < full; j += 16) {
        const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(pr + j), _mm512_loadu_ps(vg + j));
        _mm512_store_ps(w[r][g] + j, x);
        mx = _mm512_maskz_max_ps(0xFFFF, mx, x);
      }
      if (tail) {
        const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, pr + full), _mm512_maskz_loadu_ps(tail, vg + full));
        _mm512_store_ps(w[r][g] + full, x);
        mx = _mm512_maskz_max_ps(0xFFFF, mx, x);
      }
      // (halves by hand: gcc 12 warns inside _mm512_reduce_max_ps about an undefined source register)
      const __m256 m8 = _mm256_max_ps(_mm512_maskz_extractf32x8_ps(0xFF, mx, 0), _mm512_maskz_extractf32x8_ps(0xFF, mx, 1));
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
      top[r][g] = _mm_cvtss_f32(m4);
    }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const float s = top[r][g] / 32767.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
      sw[r * groups + g] = s;
      const __m512 vinv = _mm512_set1_ps(inv);
      int16_t* out = wq + r * kWeightsRowLd + g * kWeightsLd;
      for (int64_t j = 0; j < full; j += 16)
        _mm512_mask_cvtepi32_storeu_epi16(out + j, 0xFFFF,
                                          _mm512_maskz_cvtps_epi32(0xFFFF, _mm512_mul_ps(_mm512_load_ps(w[r][g] + j), vinv)));
      if (tail)
        _mm512_mask_cvtepi32_storeu_epi16(out + full, tail,
                                          _mm512_maskz_cvtps_epi32(0xFFFF, _mm512_mul_ps(_mm512_load_ps(w[r][g] + full), vinv)));
      out[nb] = 0;  // the pair of an odd last row
    }
}

template <int R>
void accumulate_i8w_rows(const float* p, int64_t ldp, const int8_t* v, const __m512i* xi, const float* vsg, int64_t nb,
                         int64_t hd, int64_t gs, float* o, int64_t ldo) {
  const int64_t groups = hd / gs;
  alignas(64) int16_t wq[R * kMaxScaleGroups * kWeightsLd];
  float sw[R * kMaxScaleGroups];
  weights_i16<R>(p, ldp, vsg, nb, groups, wq, sw);
  int64_t c = 0;
  for (; c + 64 <= hd; c += 64) accumulate_i8w_tile<R, 4>(wq, sw, groups, v, xi, nb, hd, gs, c, o, ldo);
  if (c < hd) accumulate_i8w_tile<R, 2>(wq, sw, groups, v, xi, nb, hd, gs, c, o, ldo);
}

void accumulate_i8w_avx512(const float* p, int64_t ldp, int64_t m, const int8_t* v, const float* vs, int64_t nb,
                           int64_t hd, int64_t gs, float* o, int64_t ldo) {
  const int64_t groups = hd / gs;
  if (hd % 32 || gs % 32 || groups > kMaxScaleGroups || nb > kAttnBlock)
    return attention_kernels_scalar()->accumulate_i8w(p, ldp, m, v, vs, nb, hd, gs, o, ldo);
  alignas(64) float vsg[kMaxScaleGroups * kAttnBlock];  // the value scales per group, positions contiguous
  for (int64_t j = 0; j < nb; j += 16) block_scales(vs, j, nb - j < 16 ? nb - j : 16, groups, vsg + j, kAttnBlock);
  // More than one block of rows (prefill): interleave the block's values once for all of them (32 KB at most).
  constexpr int64_t kMaxInterleavedHd = 256;
  alignas(64) __m512i xi[(kAttnBlock / 2) * (kMaxInterleavedHd / 16)];
  const bool shared = m > 4 && hd <= kMaxInterleavedHd;
  if (shared) interleave_values(v, nb, hd, xi);
  for_row_blocks(m, [&](auto rows, int64_t r) {
    accumulate_i8w_rows<decltype(rows)::value>(p + r * ldp, ldp, v, shared ? xi : nullptr, vsg, nb, hd, gs,
                                               o + r * ldo, ldo);
  });
}

}  // namespace

const AttentionKernels* attention_kernels_avx512() {
  static const AttentionKernels table = [] {
    AttentionKernels k = *attention_kernels_avx2();
    k.name = "avx512";
    k.values_i8 = values_i8_avx512;
    k.scores = scores_avx512;
    k.accumulate = accumulate_avx512;
    k.scores_i8_direct = scores_i8_direct_avx512;
    k.accumulate_i8_direct = accumulate_i8_direct_avx512;
    k.scores_i8q = scores_i8q_avx512;
    k.exp_sum = exp_sum_avx512;
    k.accumulate_i8w = accumulate_i8w_avx512;
    return k;
  }();
  return &table;
}

}  // namespace bluelm::runtime

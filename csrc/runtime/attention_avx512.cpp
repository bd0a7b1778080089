// AVX-512 products of attention (attention_isa.h): scores, output accumulation and value dequantization 16 floats
// at a time; the exponentials, the row max and the key transpose are the AVX2 tier's (8x8 register transposes).
// Compiled with the AVX-512 flags only in this file. As in the AVX2 tier, each element is one FMA chain in
// ascending order whatever the tiling, so results do not depend on how a call is split.
#include <immintrin.h>

#include "runtime/attention_isa.h"

namespace bluelm::runtime {

namespace {

// Mask of the first `n` (1..16) lanes.
__mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

// C [R, 16W] (+)= A [R, k] * B [k, 16W], all row-major, the last vector masked to `last` lanes: the one
// micro-kernel of both attention products. Scores are q [m, hd] * k^T [hd, n] into a fresh tile (Acc = false);
// values add p [m, nb] * v [nb, hd] to the output (true).
template <int R, int W, bool Acc>
void product_tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, __mmask16 last, float* c,
                  int64_t ldc) {
  __m512 acc[R][W];
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w)
      acc[r][w] = Acc ? _mm512_maskz_loadu_ps(w == W - 1 ? last : 0xFFFF, c + r * ldc + 16 * w) : _mm512_setzero_ps();
  for (int64_t i = 0; i < k; ++i) {
    __m512 bv[W];
    for (int w = 0; w < W; ++w) bv[w] = _mm512_maskz_loadu_ps(w == W - 1 ? last : 0xFFFF, b + i * ldb + 16 * w);
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * lda + i]);
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(x, bv[w], acc[r][w]);
    }
  }
  for (int r = 0; r < R; ++r)
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
  for (int i = 0; i < 8; ++i)
    a[i] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(0xFFFF, v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_maskz_shuffle_f32x4(0xFFFF, v[2 * i], v[2 * i + 1], 0xEE));
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
      for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
      if (p < np) {
        const int8_t* kr = k + (j0 + p) * hd;
        for (int64_t g = 0; g < groups; ++g) {
          const __m512 d = _mm512_set1_ps(ks[(j0 + p) * groups + g]);
          for (int64_t i = g * gs; i < (g + 1) * gs; i += 16) {
            const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kr + i));
            const __m512 kv = _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_maskz_cvtepi8_epi32(0xFFFF, b)), d);
            for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(q + r * ldq + i), kv, acc[r]);
          }
        }
      }
      for (int r = 0; r < R; ++r) part[r][p] = acc[r];
    }
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
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) acc[r][w] = _mm512_loadu_ps(o + r * ldo + c + 16 * w);
  for (int64_t j = 0; j < nb; ++j) {
    __m512 vv[W];
    for (int w = 0; w < W; ++w) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + j * hd + c + 16 * w));
      vv[w] = _mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_maskz_cvtepi8_epi32(0xFFFF, b));
    }
    const float d = vs[j * groups + g];
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(p[r * ldp + j] * d);
      for (int w = 0; w < W; ++w) acc[r][w] = _mm512_fmadd_ps(a, vv[w], acc[r][w]);
    }
  }
  for (int r = 0; r < R; ++r)
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
    return k;
  }();
  return &table;
}

}  // namespace bluelm::runtime

// AVX2 + FMA inner loops of attention and the exponentials of softmax and GELU (attention_isa.h). Compiled with
// -mavx2 -mfma only in this file. Every score and output element is one chain of FMAs in ascending i or j, whichever
// rows or columns share its register tile, so results do not depend on how a call is tiled.
#include <immintrin.h>

#include <cmath>

#include "common/transpose_avx2.h"
#include "runtime/attention.h"
#include "runtime/attention_isa.h"

namespace bluelm::runtime {

namespace {

float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

__m256 load8_i8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// 8 IEEE halves -> floats (F16C: exact, as quant::fp16_to_fp32).
__m256 load8_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// The first np (1..8) lanes of v to p: a plain store for a whole vector. A masked store is microcoded on AMD cores
// (on the Zen 3 host it was the hottest instruction of the decode score loop), so only a block's last, partial
// vector takes one.
__attribute__((always_inline)) inline void store8_upto(float* p, __m256 v, int64_t np) {
  if (np == 8) return _mm256_storeu_ps(p, v);
  _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(np)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), v);
}

// exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln 2 / 2, ln 2 / 2] (ln 2 split in two so r is
// exact), exp(r) by its degree-6 Taylor polynomial (truncation < 1.2e-7 relative). x is clamped to [-87.3, 88.3],
// where 2^n stays a normal float; below that the result is ~1e-38 instead of a denormal or 0.
__m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

float exp_sum_avx2(float* x, int64_t n, float sub) {
  const __m256 vs = _mm256_set1_ps(sub);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
    _mm256_storeu_ps(x + i, v);
    acc = _mm256_add_ps(acc, v);
  }
  if (i < n) {
    float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = i; j < n; ++j) tmp[j - i] = x[j] - sub;
    const __m256 v = exp_avx2(_mm256_loadu_ps(tmp));
    _mm256_storeu_ps(tmp, v);
    for (int64_t j = i; j < n; ++j) {
      x[j] = tmp[j - i];
      acc = _mm256_add_ps(acc, _mm256_setr_ps(tmp[j - i], 0, 0, 0, 0, 0, 0, 0));
    }
  }
  return hsum_avx2(acc);
}

// 0.5 v (1 + tanh(y)) = v / (1 + exp(-2y)), y = sqrt(2 / pi) (v + 0.044715 v^3).
__m256 gelu_tanh8(__m256 v) {
  const __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
  const __m256 y2 = _mm256_mul_ps(_mm256_set1_ps(-2.0f * 0.79788456080286536f),
                                  _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
  return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), exp_avx2(y2)));
}

// g / (1 + exp(-g)) * u: for g below -88.3 the clamped exp gives ~2^127 and the quotient ~0, as it should.
__m256 silu_mul8(__m256 g, __m256 u) {
  const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g));
  return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

void silu_mul_avx2(const float* g, const float* u, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, silu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
  if (i < n) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n - i)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(out + i, m, silu_mul8(_mm256_maskload_ps(g + i, m), _mm256_maskload_ps(u + i, m)));
  }
}

void rms_norm_row_avx2(const float* x, const float* w, float* y, int64_t d, float eps) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m256 v0 = _mm256_loadu_ps(x + i), v1 = _mm256_loadu_ps(x + i + 8);
    a0 = _mm256_fmadd_ps(v0, v0, a0);
    a1 = _mm256_fmadd_ps(v1, v1, a1);
  }
  float ss = hsum_avx2(_mm256_add_ps(a0, a1));
  for (int64_t j = i; j < d; ++j) ss += x[j] * x[j];
  const float inv = 1.0f / std::sqrt(ss / float(d) + eps);
  const __m256 vinv = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= d; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv)));
  for (; i < d; ++i) y[i] = w[i] * (x[i] * inv);
}

void gelu_tanh_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu_tanh8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = i; j < n; ++j) tmp[j - i] = x[j];
    _mm256_storeu_ps(tmp, gelu_tanh8(_mm256_loadu_ps(tmp)));
    for (int64_t j = i; j < n; ++j) x[j] = tmp[j - i];
  }
}


float row_max_avx2(const float* x, int64_t n) {
  int64_t i = 0;
  float m = x[0];
  if (n >= 8) {
    __m256 a = _mm256_loadu_ps(x);
    for (i = 8; i + 8 <= n; i += 8) a = _mm256_max_ps(a, _mm256_loadu_ps(x + i));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    m = _mm_cvtss_f32(h);
  }
  for (; i < n; ++i) m = m > x[i] ? m : x[i];
  return m;
}

// The SIMD paths need whole vectors of 8 inside each scale group; other head sizes take the scalar loops.
bool simd_shape(int64_t hd, int64_t gs) { return hd % 8 == 0 && gs % 8 == 0; }

void keys_i8_t_avx2(const int8_t* k, const float* ks, int64_t nb, int64_t hd, int64_t gs, float* kt, int64_t ldk) {
  if (!simd_shape(hd, gs)) return attention_kernels_scalar()->keys_i8_t(k, ks, nb, hd, gs, kt, ldk);
  const int64_t groups = hd / gs;
  for (int64_t j = 0; j < nb; j += 8) {
    const int64_t rows = nb - j < 8 ? nb - j : 8;
    for (int64_t i = 0; i < hd; i += 8) {
      __m256 r[8];
      for (int64_t a = 0; a < 8; ++a)
        r[a] = a < rows ? _mm256_mul_ps(load8_i8(k + (j + a) * hd + i), _mm256_set1_ps(ks[(j + a) * groups + i / gs]))
                        : _mm256_setzero_ps();
      transpose8(r);
      for (int64_t c = 0; c < 8; ++c) _mm256_storeu_ps(kt + (i + c) * ldk + j, r[c]);
    }
  }
}

// Rows of 8 positions x 8 dimensions, loaded as floats by load(position, dimension), transposed into kt.
template <class Load>
void keys_t_8x8(int64_t nb, int64_t hd, float* kt, int64_t ldk, Load load) {
  for (int64_t j = 0; j < nb; j += 8) {
    const int64_t rows = nb - j < 8 ? nb - j : 8;
    for (int64_t i = 0; i < hd; i += 8) {
      __m256 r[8];
      for (int64_t a = 0; a < 8; ++a) r[a] = a < rows ? load(j + a, i) : _mm256_setzero_ps();
      transpose8(r);
      for (int64_t c = 0; c < 8; ++c) _mm256_storeu_ps(kt + (i + c) * ldk + j, r[c]);
    }
  }
}

void keys_f32_t_avx2(const float* k, int64_t nb, int64_t hd, float* kt, int64_t ldk) {
  if (hd % 8) return attention_kernels_scalar()->keys_f32_t(k, nb, hd, kt, ldk);
  keys_t_8x8(nb, hd, kt, ldk, [&](int64_t p, int64_t i) { return _mm256_loadu_ps(k + p * hd + i); });
}

void keys_f16_t_avx2(const uint16_t* k, int64_t nb, int64_t hd, float* kt, int64_t ldk) {
  if (hd % 8) return attention_kernels_scalar()->keys_f16_t(k, nb, hd, kt, ldk);
  keys_t_8x8(nb, hd, kt, ldk, [&](int64_t p, int64_t i) { return load8_f16(k + p * hd + i); });
}

void values_f16_avx2(const uint16_t* v, int64_t nb, int64_t hd, float* vt) {
  const int64_t n = nb * hd, whole = n / 8 * 8;
  for (int64_t i = 0; i < whole; i += 8) _mm256_storeu_ps(vt + i, load8_f16(v + i));
  if (whole < n) attention_kernels_scalar()->values_f16(v + whole, 1, n - whole, vt + whole);
}

void values_i8_avx2(const int8_t* v, const float* vs, int64_t nb, int64_t hd, int64_t gs, float* vt) {
  if (!simd_shape(hd, gs)) return attention_kernels_scalar()->values_i8(v, vs, nb, hd, gs, vt);
  const int64_t groups = hd / gs;
  for (int64_t j = 0; j < nb; ++j)
    for (int64_t g = 0; g < groups; ++g) {
      const __m256 d = _mm256_set1_ps(vs[j * groups + g]);
      for (int64_t i = g * gs; i < (g + 1) * gs; i += 8)
        _mm256_storeu_ps(vt + j * hd + i, _mm256_mul_ps(load8_i8(v + j * hd + i), d));
    }
}

// C [R, 8W] (+)= A [R, k] * B [k, 8W], all row-major: the one micro-kernel of both attention products. Scores are
// q [m, hd] * k^T [hd, n] into a fresh tile (Acc = false); values add p [m, nb] * v [nb, hd] to the output (true).
template <int R, int W, bool Acc>
void product_tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k, float* c, int64_t ldc) {
  __m256 acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) acc[r][w] = Acc ? _mm256_loadu_ps(c + r * ldc + 8 * w) : _mm256_setzero_ps();
  for (int64_t i = 0; i < k; ++i) {
    __m256 bv[W];
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) bv[w] = _mm256_loadu_ps(b + i * ldb + 8 * w);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(a + r * lda + i);
#pragma GCC unroll 16
      for (int w = 0; w < W; ++w) acc[r][w] = _mm256_fmadd_ps(x, bv[w], acc[r][w]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int w = 0; w < W; ++w) _mm256_storeu_ps(c + r * ldc + 8 * w, acc[r][w]);
}

template <int R, bool Acc>
void product_rows(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t n, int64_t k, float* c,
                  int64_t ldc) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) product_tile<R, 2, Acc>(a, lda, b + j, ldb, k, c + j, ldc);
  for (; j < n; j += 8) product_tile<R, 1, Acc>(a, lda, b + j, ldb, k, c + j, ldc);
}

// C [m, n] (+)= A [m, k] * B [k, n], n a multiple of 8: rows in fours, then the remainder.
template <bool Acc>
void product(const float* a, int64_t lda, int64_t m, const float* b, int64_t ldb, int64_t n, int64_t k, float* c,
             int64_t ldc) {
  for_row_blocks(m, [&](auto rows, int64_t r) {
    product_rows<decltype(rows)::value, Acc>(a + r * lda, lda, b, ldb, n, k, c + r * ldc, ldc);
  });
}

void scores_avx2(const float* q, int64_t ldq, int64_t m, const float* kt, int64_t ldk, int64_t nc, int64_t hd,
                 float* s, int64_t lds) {
  product<false>(q, ldq, m, kt, ldk, nc, hd, s, lds);
}

void accumulate_avx2(const float* p, int64_t ldp, int64_t m, const float* v, int64_t ldv, int64_t nb, int64_t hd,
                     float* o, int64_t ldo) {
  if (hd % 8) return attention_kernels_scalar()->accumulate(p, ldp, m, v, ldv, nb, hd, o, ldo);
  product<true>(p, ldp, m, v, ldv, hd, nb, o, ldo);
}

int32_t load_i32(const int8_t* p) {
  int32_t x;
  __builtin_memcpy(&x, p, 4);
  return x;
}

// Query rows against 8 positions at a time in integers: the 8 key rows are transposed once in 4-byte columns (8x8
// blocks of 32-bit lanes; kept with their absolute values for every block of R rows), so lane p of column c holds
// dimensions 4c .. 4c + 3 of position p and each row's dot products are vertical: |k| * sign(q, k) in u8 x s8 pairs
// (vpmaddubsw, at most 2 x 128 x 127, no saturation), widened to 32 bits (vpmaddwd), summed per scale group, then
// scaled once per group and position.
constexpr int64_t kMaxKeyColumns = 64;  // hd <= 256

// acc + the int32 sums of 4-byte columns: lane p gets sum_{e<4} q[e] k_p[e] for the key column kc (ka = |kc|) and
// the row's 4 query bytes at q (|k| * sign(q, k) in u8 x s8 pairs, at most 2 x 128 x 127: no saturation).
__attribute__((always_inline)) inline __m256i add_column_dots(__m256i acc, __m256i kc, __m256i ka, const int8_t* q) {
  const __m256i qb = _mm256_set1_epi32(load_i32(q));
  const __m256i pairs = _mm256_maddubs_epi16(ka, _mm256_sign_epi8(qb, kc));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

template <int R>
void scores_i8q_cols(const __m256i* kc, const __m256i* ka, int64_t chunks, int64_t per_group, int64_t groups,
                     const float* scale, const int8_t* q8, const float* qd, int64_t hd, int64_t np, float* s,
                     int64_t lds) {
  __m256 sc[R];
  __m256i acc[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    sc[r] = _mm256_setzero_ps();
    acc[r] = _mm256_setzero_si256();
  }
  int64_t g = 0, left = per_group;  // the group being summed, and its columns still to come
  for (int64_t c = 0; c < chunks; ++c) {
    const __m256i k = _mm256_load_si256(kc + c), a = _mm256_load_si256(ka + c);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = add_column_dots(acc[r], k, a, q8 + r * hd + 4 * c);
    if (--left == 0) {  // the group ends: scale its sums once
      const __m256 d = _mm256_load_ps(scale + 8 * g);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m256 w = _mm256_mul_ps(d, _mm256_set1_ps(qd[r * groups + g]));
        sc[r] = _mm256_add_ps(sc[r], _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r]), w));
        acc[r] = _mm256_setzero_si256();
      }
      ++g;
      left = per_group;
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) store8_upto(s + r * lds, sc[r], np);
}

// The scale of group g of positions j0 .. j0 + 7 in the lanes of one vector (ks holds G per position), zero past np.
template <int G>
__attribute__((always_inline)) inline __m256 group_scales(const float* ks, int64_t np, int g) {
  if (np == 8 && G == 1) return _mm256_loadu_ps(ks);
  if (np == 8 && G == 2) {  // even / odd lanes of 16 floats, then the 64-bit quarters back in order
    const __m256 a = _mm256_loadu_ps(ks), b = _mm256_loadu_ps(ks + 8);
    const __m256 e = g == 0 ? _mm256_shuffle_ps(a, b, 0x88) : _mm256_shuffle_ps(a, b, 0xDD);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
  }
  alignas(32) float t[8];
  for (int p = 0; p < 8; ++p) t[p] = p < np ? ks[p * G + g] : 0.0f;
  return _mm256_load_ps(t);
}

// Decode's few rows (R <= 4) over groups of 32 (the cache's kKvGroup), G of them per head vector: each group of 8
// positions is one 8x8 transpose of its 4-byte columns, consumed at once by the R rows from registers (no tile on
// the stack), its sums scaled as the group ends. The same arithmetic as scores_i8q_cols, unrolled: on the Zen 3
// host a decode call at 4,096 positions took 0.75 of the general loop's time (docs/engine.md).
template <int G, int R>
void scores_i8q_g32(const int8_t* q8, const float* qd, const int8_t* k, const float* ks, int64_t np, float* s,
                    int64_t lds) {
  constexpr int64_t hd = 32 * G;
  __m256 sc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) sc[r] = _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int g = 0; g < G; ++g) {
    __m256 t[8];
#pragma GCC unroll 8
    for (int p = 0; p < 8; ++p) {
      t[p] = p < np ? _mm256_loadu_ps(reinterpret_cast<const float*>(k + p * hd + 32 * g)) : _mm256_setzero_ps();
      if (g % 2 == 0) prefetch_later(k + p * hd + 32 * g, hd);  // one per 64-byte line
    }
    transpose8(t);
    __m256i acc[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      const __m256i kc = _mm256_castps_si256(t[c]), ka = _mm256_abs_epi8(kc);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = add_column_dots(acc[r], kc, ka, q8 + r * hd + 32 * g + 4 * c);
    }
    const __m256 d = group_scales<G>(ks, np, g);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      sc[r] = _mm256_add_ps(sc[r], _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r]), _mm256_mul_ps(d, _mm256_set1_ps(qd[r * G + g]))));
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) store8_upto(s + r * lds, sc[r], np);
}

template <int G>
void scores_i8q_g32_rows(const int8_t* q8, const float* qd, int64_t m, const int8_t* k, const float* ks, int64_t nb,
                         float* s, int64_t lds) {
  constexpr int64_t hd = 32 * G;
  for (int64_t j0 = 0; j0 < nb; j0 += 8) {
    const int64_t np = nb - j0 < 8 ? nb - j0 : 8;
    for_row_blocks(m, [&](auto rows, int64_t r) {
      scores_i8q_g32<G, decltype(rows)::value>(q8 + r * hd, qd + r * G, k + j0 * hd, ks + j0 * G, np,
                                               s + r * lds + j0, lds);
    });
  }
}

bool scores_i8q_avx2(const int8_t* q8, const float* qd, const int32_t* qsum, int64_t m, const int8_t* k,
                     const float* ks, int64_t nb, int64_t hd, int64_t gs, float* s, int64_t lds) {
  if (gs % 4 || hd / gs > kMaxScaleGroups || hd / 4 > kMaxKeyColumns)
    return attention_kernels_scalar()->scores_i8q(q8, qd, qsum, m, k, ks, nb, hd, gs, s, lds);
  if (gs == 32 && m <= 4) {  // decode's GQA groups; more rows (prefill tiles) share one transposed tile below
    switch (hd) {
      case 32: scores_i8q_g32_rows<1>(q8, qd, m, k, ks, nb, s, lds); return true;
      case 64: scores_i8q_g32_rows<2>(q8, qd, m, k, ks, nb, s, lds); return true;
      case 128: scores_i8q_g32_rows<4>(q8, qd, m, k, ks, nb, s, lds); return true;
      default: break;
    }
  }
  const int64_t groups = hd / gs, chunks = hd / 4, per_group = gs / 4;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  alignas(32) float scale[kMaxScaleGroups * 8];
  alignas(32) __m256i kc[kMaxKeyColumns], ka[kMaxKeyColumns];
  for (int64_t j0 = 0; j0 < nb; j0 += 8) {
    const int64_t np = nb - j0 < 8 ? nb - j0 : 8;
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t p = 0; p < 8; ++p) scale[g * 8 + p] = p < np ? ks[(j0 + p) * groups + g] : 0.0f;
    for (int64_t c0 = 0; c0 < chunks; c0 += 8) {
      const int64_t nc = chunks - c0 < 8 ? chunks - c0 : 8;
      const __m256i cm = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(nc)), lane);
      __m256 t[8];
#pragma GCC unroll 16
      for (int p = 0; p < 8; ++p) {
        t[p] = p >= np  ? _mm256_setzero_ps()
               : nc == 8 ? _mm256_loadu_ps(reinterpret_cast<const float*>(k + (j0 + p) * hd + 4 * c0))
                         : _mm256_castsi256_ps(_mm256_maskload_epi32(
                               reinterpret_cast<const int*>(k + (j0 + p) * hd + 4 * c0), cm));
        if (c0 % 16 == 0) prefetch_later(k + (j0 + p) * hd + 4 * c0, hd);  // one per 64-byte line
      }
      transpose8(t);
#pragma GCC unroll 8
      for (int c = 0; c < 8; ++c)
        if (c < nc) {
          kc[c0 + c] = _mm256_castps_si256(t[c]);
          ka[c0 + c] = _mm256_abs_epi8(kc[c0 + c]);
        }
    }
    for_row_blocks(m, [&](auto rows, int64_t r) {
      scores_i8q_cols<decltype(rows)::value>(kc, ka, chunks, per_group, groups, scale, q8 + r * hd, qd + r * groups,
                                             hd, np, s + r * lds + j0, lds);
    });
  }
  return true;
}

// Decode's values with int16 weights (AttentionKernels::accumulate_i8w): two value rows widened to int16 and
// interleaved give (v_j, v_j+1) pairs for 16 columns in two vectors (lane 4L + e of the low one is column 8L + e, of
// the high one 8L + 4 + e), multiplied by the broadcast weight pair and summed into int32 by vpmaddwd.
constexpr int64_t kWeightsLd = kAttnBlock + 2;  // int16 weights of one (row, group), padded to an even count

__m256i lanes8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 8 floats of x from j, the lanes at or past n zero (a masked load only for the last, partial vector).
__attribute__((always_inline)) inline __m256 load8_upto(const float* x, int64_t j, int64_t n) {
  return n - j >= 8 ? _mm256_loadu_ps(x + j) : _mm256_maskload_ps(x + j, lanes8(n - j));
}

template <int R>
void weights_i16(const float* p, int64_t ldp, const float* vsg, int64_t nb, int64_t groups, int16_t* wq, float* sw) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const float* vg = vsg + g * kAttnBlock;
      const float* pr = p + r * ldp;
      __m256 mx = _mm256_setzero_ps();
      for (int64_t j = 0; j < nb; j += 8) mx = _mm256_max_ps(mx, _mm256_mul_ps(load8_upto(pr, j, nb), load8_upto(vg, j, nb)));
      __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
      h = _mm_max_ps(h, _mm_movehl_ps(h, h));
      h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
      const float s = _mm_cvtss_f32(h) / 32767.0f, inv = s > 0.0f ? 1.0f / s : 0.0f;
      sw[r * groups + g] = s;
      int16_t* out = wq + (r * groups + g) * kWeightsLd;
      const __m256 vinv = _mm256_set1_ps(inv);
      for (int64_t j = 0; j < nb; j += 8) {
        const __m256 w = _mm256_mul_ps(load8_upto(pr, j, nb), load8_upto(vg, j, nb));
        // |w * inv| <= 32767: the saturating pack is exact; lanes 0 and 2 of the 64-bit quarters hold the 8 words.
        const __m256i t = _mm256_cvtps_epi32(_mm256_mul_ps(w, vinv));
        const __m128i w16 = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packs_epi32(t, t), 0x08));
        if (nb - j >= 8) _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), w16);
        else {
          alignas(16) int16_t tmp[8];
          _mm_store_si128(reinterpret_cast<__m128i*>(tmp), w16);
          __builtin_memcpy(out + j, tmp, size_t(nb - j) * sizeof(int16_t));
        }
      }
      out[nb] = 0;  // the pair of an odd last row
    }
}

// The (v_j, v_j+1) int16 pairs of 16 columns from c, in the two vectors accumulate_i8w_tile multiplies: widened and
// interleaved from the cache (decode: one block of rows uses them), or read from a block prepared once for the many
// blocks of rows of a prefill tile (PreparedPairs).
struct CachePairs {
  const int8_t* v;
  int64_t hd;
  __m256i row16(int64_t j, int64_t c) const {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + j * hd + c)));
  }
  // Positions j and j + 1 (second = false: j is the odd last row, its partner zero).
  __attribute__((always_inline)) void at(int64_t j, int64_t c, bool second, __m256i& x0, __m256i& x1) const {
    if (c % 64 == 0) {  // one per 64-byte line
      prefetch_later(v + j * hd + c, hd);
      prefetch_later(v + (j + 1) * hd + c, hd);
    }
    const __m256i a = row16(j, c), b = second ? row16(j + 1, c) : _mm256_setzero_si256();
    x0 = _mm256_unpacklo_epi16(a, b);
    x1 = _mm256_unpackhi_epi16(a, b);
  }
};

struct PreparedPairs {
  const __m256i* p;  // [pair][tile of 16 columns][2]
  int64_t tiles;
  __attribute__((always_inline)) void at(int64_t j, int64_t c, bool, __m256i& x0, __m256i& x1) const {
    const __m256i* q = p + ((j / 2) * tiles + c / 16) * 2;
    x0 = _mm256_load_si256(q);
    x1 = _mm256_load_si256(q + 1);
  }
};

template <int R, class Pairs>
void accumulate_i8w_tile(const int16_t* wq, const float* sw, int64_t groups, const Pairs& pairs, int64_t nb,
                         int64_t gs, int64_t c, float* o, int64_t ldo) {
  const int64_t g = c / gs;
  __m256i acc[R][2];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const auto step = [&](int64_t j, bool second) {
    __m256i x0, x1;
    pairs.at(j, c, second, x0, x1);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      __builtin_memcpy(&pair, wq + (r * groups + g) * kWeightsLd + j, 4);
      const __m256i wp = _mm256_set1_epi32(pair);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(x0, wp));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(x1, wp));
    }
  };
  int64_t j = 0;
#pragma GCC unroll 4
  for (; j + 2 <= nb; j += 2) step(j, true);
  if (j < nb) step(j, false);  // an odd last row (its pair weight is 0)
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    const __m256 d = _mm256_set1_ps(sw[r * groups + g]);
    const __m256 a = _mm256_cvtepi32_ps(acc[r][0]), b = _mm256_cvtepi32_ps(acc[r][1]);
    float* out = o + r * ldo + c;
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), _mm256_mul_ps(d, _mm256_permute2f128_ps(a, b, 0x20))));
    _mm256_storeu_ps(out + 8,
                     _mm256_add_ps(_mm256_loadu_ps(out + 8), _mm256_mul_ps(d, _mm256_permute2f128_ps(a, b, 0x31))));
  }
}

template <int R, class Pairs>
void accumulate_i8w_rows(const float* p, int64_t ldp, const Pairs& pairs, const float* vsg, int64_t nb, int64_t hd,
                         int64_t gs, float* o, int64_t ldo) {
  const int64_t groups = hd / gs;
  alignas(32) int16_t wq[R * kMaxScaleGroups * kWeightsLd];
  float sw[R * kMaxScaleGroups];
  weights_i16<R>(p, ldp, vsg, nb, groups, wq, sw);
  for (int64_t c = 0; c < hd; c += 16) accumulate_i8w_tile<R>(wq, sw, groups, pairs, nb, gs, c, o, ldo);
}

// Head sizes whose value pairs a prefill tile prepares on the stack (16 KB at 128).
constexpr int64_t kMaxPreparedHd = 128;

void accumulate_i8w_avx2(const float* p, int64_t ldp, int64_t m, const int8_t* v, const float* vs, int64_t nb,
                         int64_t hd, int64_t gs, float* o, int64_t ldo) {
  const int64_t groups = hd / gs;
  if (hd % 16 || gs % 16 || groups > kMaxScaleGroups || nb > kAttnBlock)
    return attention_kernels_scalar()->accumulate_i8w(p, ldp, m, v, vs, nb, hd, gs, o, ldo);
  alignas(32) float vsg[kMaxScaleGroups * kAttnBlock];  // the value scales per group, positions contiguous
  if (groups == 2) {
    for (int64_t j = 0; j < nb; j += 8) {
      const int64_t np = nb - j < 8 ? nb - j : 8;
      _mm256_store_ps(vsg + j, group_scales<2>(vs + 2 * j, np, 0));
      _mm256_store_ps(vsg + kAttnBlock + j, group_scales<2>(vs + 2 * j, np, 1));
    }
  } else {
    for (int64_t j = 0; j < nb; ++j)
      for (int64_t g = 0; g < groups; ++g) vsg[g * kAttnBlock + j] = vs[j * groups + g];
  }
  const CachePairs cache{v, hd};
  if (m > 4 && hd <= kMaxPreparedHd) {
    // A prefill tile's rows come in blocks of 4: widen and interleave the block's values once for all of them,
    // not once per block of rows (perf of the 128-token chunk at depth 4,096: the values were 42% of the time).
    alignas(32) __m256i prepared[(kAttnBlock / 2) * (kMaxPreparedHd / 16) * 2];
    const int64_t tiles = hd / 16;
    for (int64_t j = 0; j < nb; j += 2)
      for (int64_t t = 0; t < tiles; ++t) {
        __m256i* q = prepared + ((j / 2) * tiles + t) * 2;
        cache.at(j, 16 * t, j + 1 < nb, q[0], q[1]);
      }
    const PreparedPairs pre{prepared, tiles};
    for_row_blocks(m, [&](auto rows, int64_t r) {
      accumulate_i8w_rows<decltype(rows)::value>(p + r * ldp, ldp, pre, vsg, nb, hd, gs, o + r * ldo, ldo);
    });
    return;
  }
  for_row_blocks(m, [&](auto rows, int64_t r) {
    accumulate_i8w_rows<decltype(rows)::value>(p + r * ldp, ldp, cache, vsg, nb, hd, gs, o + r * ldo, ldo);
  });
}

// Decode over the f16 cache (AttentionKernels::scores_f16_direct, accumulate_f16_direct): the few query rows of
// one GQA group read each half once, converted by F16C. Scores take 4 positions at a time, their dot products kept
// as R x 4 vectors of partial sums (each key vector converted once for the R rows), then folded by horizontal adds
// (two positions per vhaddps) into one vector per row and 8 positions.

// Lane p of the result: the total of a[p]'s 8 lanes (p < 4 from h0123 = fold4 of a[0..4), p >= 4 from h4567).
__attribute__((always_inline)) inline __m256 fold4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  return _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));  // [a0..a3 low halves | high halves]
}
__attribute__((always_inline)) inline __m256 fold8(__m256 h0123, __m256 h4567) {
  return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20), _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

// R rows x 4 positions from position j of k (np of them real, the rest read as zero): fold4 per row.
template <int R>
__attribute__((always_inline)) inline void scores_f16_quad(const float* q, int64_t ldq, const uint16_t* k, int64_t np,
                                                           int64_t hd, __m256 h[R]) {
  __m256 acc[R][4];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) acc[r][p] = _mm256_setzero_ps();
  if (np >= 4) {
    for (int64_t i = 0; i < hd; i += 8)
#pragma GCC unroll 4
      for (int p = 0; p < 4; ++p) {  // the queries as memory operands: R x 4 accumulators and one key vector live
        if (i % 32 == 0) prefetch_later(k + p * hd + i, 2 * hd);  // one per 64-byte line
        const __m256 kv = load8_f16(k + p * hd + i);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) acc[r][p] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * ldq + i), kv, acc[r][p]);
      }
  } else {
    for (int64_t i = 0; i < hd; i += 8)
      for (int64_t p = 0; p < np; ++p) {
        const __m256 kv = load8_f16(k + p * hd + i);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) acc[r][p] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * ldq + i), kv, acc[r][p]);
      }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) h[r] = fold4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
}

template <int R>
void scores_f16_rows(const float* q, int64_t ldq, const uint16_t* k, int64_t nb, int64_t hd, float* s, int64_t lds) {
  for (int64_t j0 = 0; j0 < nb; j0 += 8) {
    const int64_t np = nb - j0 < 8 ? nb - j0 : 8;
    __m256 lo[R], hi[R];
    scores_f16_quad<R>(q, ldq, k + j0 * hd, np < 4 ? np : 4, hd, lo);
    if (np > 4) {
      scores_f16_quad<R>(q, ldq, k + (j0 + 4) * hd, np - 4, hd, hi);
    } else {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) hi[r] = _mm256_setzero_ps();
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) store8_upto(s + r * lds + j0, fold8(lo[r], hi[r]), np);
  }
}

bool scores_f16_direct_avx2(const float* q, int64_t ldq, int64_t m, const uint16_t* k, int64_t nb, int64_t hd,
                            float* s, int64_t lds) {
  if (hd % 8 || m > 8) return false;
  for_row_blocks(m, [&](auto rows, int64_t r) {
    scores_f16_rows<decltype(rows)::value>(q + r * ldq, ldq, k, nb, hd, s + r * lds, lds);
  });
  return true;
}

// R rows x W vectors of output columns from c: each value vector converted once for the R rows (R W + W + 1
// registers of 16).
template <int R, int W>
void accumulate_f16_tile(const float* p, int64_t ldp, const uint16_t* v, int64_t nb, int64_t hd, int64_t c, float* o,
                         int64_t ldo) {
  __m256 acc[R][W];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) acc[r][w] = _mm256_loadu_ps(o + r * ldo + c + 8 * w);
  for (int64_t j = 0; j < nb; ++j) {
    prefetch_later(v + j * hd + c, 2 * hd);  // the tile's W x 16 bytes of the row: the line they start in
    __m256 vv[W];
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) vv[w] = load8_f16(v + j * hd + c + 8 * w);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(p + r * ldp + j);
#pragma GCC unroll 8
      for (int w = 0; w < W; ++w) acc[r][w] = _mm256_fmadd_ps(a, vv[w], acc[r][w]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int w = 0; w < W; ++w) _mm256_storeu_ps(o + r * ldo + c + 8 * w, acc[r][w]);
}

template <int R>
void accumulate_f16_rows(const float* p, int64_t ldp, const uint16_t* v, int64_t nb, int64_t hd, float* o,
                         int64_t ldo) {
  constexpr int W = R <= 2 ? 4 : 3;
  int64_t c = 0;
  for (; c + 8 * W <= hd; c += 8 * W) accumulate_f16_tile<R, W>(p, ldp, v, nb, hd, c, o, ldo);
  for (; c + 16 <= hd; c += 16) accumulate_f16_tile<R, 2>(p, ldp, v, nb, hd, c, o, ldo);
  for (; c < hd; c += 8) accumulate_f16_tile<R, 1>(p, ldp, v, nb, hd, c, o, ldo);
}

bool accumulate_f16_direct_avx2(const float* p, int64_t ldp, int64_t m, const uint16_t* v, int64_t nb, int64_t hd,
                                float* o, int64_t ldo) {
  if (hd % 8 || m > 8) return false;
  for_row_blocks(m, [&](auto rows, int64_t r) {
    accumulate_f16_rows<decltype(rows)::value>(p + r * ldp, ldp, v, nb, hd, o + r * ldo, ldo);
  });
  return true;
}

const AttentionKernels kAvx2 = {
    "avx2",          exp_sum_avx2,    gelu_tanh_avx2,  row_max_avx2,        keys_i8_t_avx2,
    keys_f32_t_avx2, keys_f16_t_avx2, values_i8_avx2,  values_f16_avx2,     scores_avx2,
    accumulate_avx2, nullptr,         scores_i8q_avx2, accumulate_i8w_avx2, nullptr,
    scores_f16_direct_avx2, accumulate_f16_direct_avx2, silu_mul_avx2, rms_norm_row_avx2};

}  // namespace

const AttentionKernels* attention_kernels_avx2() { return &kAvx2; }

}  // namespace bluelm::runtime

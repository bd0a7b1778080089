// AVX2 + FMA inner loops of decode attention and the exponentials of softmax and GELU (attention_isa.h). Compiled
// with -mavx2 -mfma only in this file.
#include <immintrin.h>

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

float dot_f32_i8_avx2(const float* q, const int8_t* k, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8_i8(k + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), load8_i8(k + i + 8), a1);
  }
  for (; i < n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8_i8(k + i), a0);
  return hsum_avx2(_mm256_add_ps(a0, a1));
}

void axpy_i8_avx2(float a, const int8_t* v, float* out, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  for (int64_t i = 0; i < n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(va, load8_i8(v + i), _mm256_loadu_ps(out + i)));
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

const AttentionKernels kAvx2 = {dot_f32_i8_avx2, axpy_i8_avx2, exp_sum_avx2, gelu_tanh_avx2};

}  // namespace

const AttentionKernels* attention_kernels_avx2() { return &kAvx2; }

}  // namespace bluelm::runtime

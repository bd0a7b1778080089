// AVX2 + FMA inner loops of decode attention (attention_isa.h). Compiled with -mavx2 -mfma only in this file.
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

const AttentionKernels kAvx2 = {dot_f32_i8_avx2, axpy_i8_avx2};

}  // namespace

const AttentionKernels* attention_kernels_avx2() { return &kAvx2; }

}  // namespace bluelm::runtime

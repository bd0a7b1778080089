#pragma once
// Test-only: the AVX-512 intrinsics kernels_avx512.cpp uses that SIMDe 0.7.4 (Debian 12's libsimde-dev) does not
// provide yet, written lane by lane with Intel's documented semantics, so the kernel source itself compiles
// unchanged through SIMDe (BLUELM_AVX512_SIMDE). Never part of the shipped library.
#include <cmath>
#include <cstdint>

#include "quant/quant.h"

typedef simde__mmask16 __mmask16;
typedef simde__mmask64 __mmask64;

namespace bluelm::kernels::simde_gaps {

inline simde__m512 cvtepi32_ps(simde__m512i a) {
  int32_t v[16];
  float r[16];
  simde_mm512_storeu_si512(v, a);
  for (int i = 0; i < 16; ++i) r[i] = float(v[i]);  // round to nearest even, as vcvtdq2ps
  return simde_mm512_loadu_ps(r);
}

inline simde__m512i cvtps_epi32(simde__m512 a) {  // MXCSR default: round to nearest even; NaN / overflow -> INT_MIN
  float v[16];
  int32_t r[16];
  simde_mm512_storeu_ps(v, a);
  for (int i = 0; i < 16; ++i) {
    const float n = std::nearbyint(v[i]);
    r[i] = (n >= -2147483648.0f && n < 2147483648.0f) ? int32_t(n) : INT32_MIN;
  }
  return simde_mm512_loadu_si512(r);
}

inline simde__m512 cvtph_ps(simde__m256i a) {
  uint16_t h[16];
  float r[16];
  simde_mm256_storeu_si256(reinterpret_cast<simde__m256i*>(h), a);
  for (int i = 0; i < 16; ++i) r[i] = quant::fp16_to_fp32(h[i]);
  return simde_mm512_loadu_ps(r);
}

// Reductions in the order GCC's immintrin uses (halves, then quarters, ...).
inline float reduce_add_ps(simde__m512 a) {
  float v[16];
  simde_mm512_storeu_ps(v, a);
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) v[i] = v[i] + v[i + w];
  return v[0];
}

inline float reduce_max_ps(simde__m512 a) {
  float v[16];
  simde_mm512_storeu_ps(v, a);
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) v[i] = v[i] > v[i + w] ? v[i] : v[i + w];
  return v[0];
}

inline int32_t reduce_add_epi32(simde__m512i a) {
  int32_t v[16];
  simde_mm512_storeu_si512(v, a);
  uint32_t s = 0;
  for (int i = 0; i < 16; ++i) s += uint32_t(v[i]);
  return int32_t(s);
}

inline simde__m512 maskz_loadu_ps(uint16_t k, const float* p) {  // masked-off lanes are not read
  float r[16];
  for (int i = 0; i < 16; ++i) r[i] = (k >> i) & 1 ? p[i] : 0.0f;
  return simde_mm512_loadu_ps(r);
}

inline void mask_storeu_ps(float* p, uint16_t k, simde__m512 a) {
  float v[16];
  simde_mm512_storeu_ps(v, a);
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) p[i] = v[i];
}

}  // namespace bluelm::kernels::simde_gaps

#define _mm512_cvtepi32_ps bluelm::kernels::simde_gaps::cvtepi32_ps
#define _mm512_cvtps_epi32 bluelm::kernels::simde_gaps::cvtps_epi32
#define _mm512_cvtph_ps bluelm::kernels::simde_gaps::cvtph_ps
#define _mm512_reduce_add_ps bluelm::kernels::simde_gaps::reduce_add_ps
#define _mm512_reduce_max_ps bluelm::kernels::simde_gaps::reduce_max_ps
#define _mm512_reduce_add_epi32 bluelm::kernels::simde_gaps::reduce_add_epi32
#define _mm512_maskz_loadu_ps bluelm::kernels::simde_gaps::maskz_loadu_ps
#define _mm512_mask_storeu_ps bluelm::kernels::simde_gaps::mask_storeu_ps

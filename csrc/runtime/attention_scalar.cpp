// Scalar reference of the attention inner loops (attention_isa.h) and the tier dispatch. Plain loops in the order
// the SIMD tiers use (each score and output element accumulated over i or j in ascending order).
#include <algorithm>
#include <cmath>

#include "quant/quant.h"
#include "runtime/attention.h"
#include "runtime/attention_isa.h"

namespace bluelm::runtime {

namespace {

float exp_sum_scalar(float* x, int64_t n, float sub) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - sub);
    s += x[i];
  }
  return s;
}

void gelu_tanh_scalar(float* x, int64_t n) {
  constexpr float k = 0.79788456080286536f;  // sqrt(2 / pi)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

void silu_mul_scalar(const float* g, const float* u, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void rms_norm_row_scalar(const float* x, const float* w, float* y, int64_t d, float eps) {
  float ss = 0.0f;
  for (int64_t i = 0; i < d; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / float(d) + eps);
  for (int64_t i = 0; i < d; ++i) y[i] = w[i] * (x[i] * inv);
}

float row_max_scalar(const float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }

void keys_i8_t_scalar(const int8_t* k, const float* ks, int64_t nb, int64_t hd, int64_t gs, float* kt, int64_t ldk) {
  const int64_t groups = hd / gs;
  for (int64_t i = 0; i < hd; ++i) {
    float* row = kt + i * ldk;
    for (int64_t j = 0; j < nb; ++j) row[j] = float(k[j * hd + i]) * ks[j * groups + i / gs];
    for (int64_t j = nb; j < round8(nb); ++j) row[j] = 0.0f;
  }
}

void keys_f32_t_scalar(const float* k, int64_t nb, int64_t hd, float* kt, int64_t ldk) {
  for (int64_t i = 0; i < hd; ++i) {
    float* row = kt + i * ldk;
    for (int64_t j = 0; j < nb; ++j) row[j] = k[j * hd + i];
    for (int64_t j = nb; j < round8(nb); ++j) row[j] = 0.0f;
  }
}

void keys_f16_t_scalar(const uint16_t* k, int64_t nb, int64_t hd, float* kt, int64_t ldk) {
  for (int64_t i = 0; i < hd; ++i) {
    float* row = kt + i * ldk;
    for (int64_t j = 0; j < nb; ++j) row[j] = quant::fp16_to_fp32(k[j * hd + i]);
    for (int64_t j = nb; j < round8(nb); ++j) row[j] = 0.0f;
  }
}

void values_f16_scalar(const uint16_t* v, int64_t nb, int64_t hd, float* vt) {
  for (int64_t i = 0; i < nb * hd; ++i) vt[i] = quant::fp16_to_fp32(v[i]);
}

void values_i8_scalar(const int8_t* v, const float* vs, int64_t nb, int64_t hd, int64_t gs, float* vt) {
  const int64_t groups = hd / gs;
  for (int64_t j = 0; j < nb; ++j)
    for (int64_t i = 0; i < hd; ++i) vt[j * hd + i] = float(v[j * hd + i]) * vs[j * groups + i / gs];
}

void scores_scalar(const float* q, int64_t ldq, int64_t m, const float* kt, int64_t ldk, int64_t nc, int64_t hd,
                   float* s, int64_t lds) {
  for (int64_t r = 0; r < m; ++r) {
    float* sr = s + r * lds;
    std::fill(sr, sr + nc, 0.0f);
    for (int64_t i = 0; i < hd; ++i) {
      const float a = q[r * ldq + i];
      const float* kr = kt + i * ldk;
      for (int64_t j = 0; j < nc; ++j) sr[j] += a * kr[j];
    }
  }
}

void accumulate_scalar(const float* p, int64_t ldp, int64_t m, const float* v, int64_t ldv, int64_t nb, int64_t hd,
                       float* o, int64_t ldo) {
  for (int64_t r = 0; r < m; ++r) {
    float* orow = o + r * ldo;
    for (int64_t j = 0; j < nb; ++j) {
      const float a = p[r * ldp + j];
      const float* vr = v + j * ldv;
      for (int64_t i = 0; i < hd; ++i) orow[i] += a * vr[i];
    }
  }
}

bool scores_i8q_scalar(const int8_t* q8, const float* qd, const int32_t*, int64_t m, const int8_t* k,
                       const float* ks, int64_t nb, int64_t hd, int64_t gs, float* s, int64_t lds) {
  if (gs % 4) return false;
  const int64_t groups = hd / gs;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < nb; ++j) {
      float a = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t t = 0;
        for (int64_t i = g * gs; i < (g + 1) * gs; ++i) t += int32_t(q8[r * hd + i]) * int32_t(k[j * hd + i]);
        a += float(t) * (ks[j * groups + g] * qd[r * groups + g]);
      }
      s[r * lds + j] = a;
    }
  return true;
}

void accumulate_i8w_scalar(const float* p, int64_t ldp, int64_t m, const int8_t* v, const float* vs, int64_t nb,
                           int64_t hd, int64_t gs, float* o, int64_t ldo) {
  const int64_t groups = hd / gs;
  int32_t wq[kAttnBlock];
  for (int64_t r = 0; r < m; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      float mx = 0.0f;
      for (int64_t j = 0; j < nb; ++j) mx = std::max(mx, p[r * ldp + j] * vs[j * groups + g]);
      const float sw = mx / 32767.0f, inv = sw > 0.0f ? 1.0f / sw : 0.0f;
      for (int64_t j = 0; j < nb; ++j) wq[j] = int32_t(std::nearbyint(p[r * ldp + j] * vs[j * groups + g] * inv));
      for (int64_t i = g * gs; i < (g + 1) * gs; ++i) {
        int32_t acc = 0;
        for (int64_t j = 0; j < nb; ++j) acc += wq[j] * int32_t(v[j * hd + i]);
        o[r * ldo + i] += sw * float(acc);
      }
    }
}

const AttentionKernels kScalar = {
    "scalar",          exp_sum_scalar,    gelu_tanh_scalar,  row_max_scalar,    keys_i8_t_scalar,
    keys_f32_t_scalar, keys_f16_t_scalar, values_i8_scalar,  values_f16_scalar, scores_scalar,
    accumulate_scalar, nullptr,           scores_i8q_scalar, accumulate_i8w_scalar, nullptr,
    nullptr,           nullptr,           silu_mul_scalar,   rms_norm_row_scalar};

}  // namespace

const AttentionKernels* attention_kernels_scalar() { return &kScalar; }

#if !(defined(__x86_64__) || defined(_M_X64))
const AttentionKernels* attention_kernels_avx2() { return nullptr; }
const AttentionKernels* attention_kernels_avx512() { return nullptr; }
#endif
#if !defined(__aarch64__)
const AttentionKernels* attention_kernels_neon() { return nullptr; }
const AttentionKernels* attention_kernels_dotprod() { return nullptr; }
#endif

const AttentionKernels* attention_kernels_for(Isa isa) {
  switch (isa) {
    case Isa::scalar: return &kScalar;
    case Isa::avx2: return attention_kernels_avx2();
    case Isa::avx512: return attention_kernels_avx512();
    case Isa::neon: return attention_kernels_neon();
    case Isa::neon_dotprod: return attention_kernels_dotprod();
    default: return nullptr;
  }
}

const AttentionKernels& attention_kernels() {
  // Every tier active_isa() can name has its table in this build (null only for another architecture's tiers).
  const AttentionKernels* k = attention_kernels_for(active_isa());
  return k ? *k : kScalar;
}

}  // namespace bluelm::runtime

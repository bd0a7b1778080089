#pragma once
// Element-wise and row-wise operations of the engine's transformer layers (float32, scalar C++ the compiler
// vectorizes; the heavy products live in linear.h and csrc/kernels).
#include <cstdint>
#include <memory>
#include <vector>

namespace bluelm::runtime {

// y[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * w, rows of d floats. x, y: [rows, d]; w: [d]. y may alias x.
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t d, float eps);
// LayerNorm over the last dimension (biased variance, as torch): x, y: [rows, d]; gamma, beta: [d] or null.
void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t d, float eps);
// In place over n floats.
void gelu_erf(float* x, int64_t n);
void gelu_tanh(float* x, int64_t n);
// g[i] = silu(g[i]) * u[i] over n floats.
void silu_mul(float* g, const float* u, int64_t n);
// out[r, i] = silu(gu[r, i]) * gu[r, f + i] for t rows of gate and up side by side (gu [t, 2f], out [t, f]):
// silu_mul on the output of a stacked gate/up product, the same arithmetic.
void swiglu_rows(const float* gu, int64_t t, int64_t f, float* out);
// x[i] += y[i].
void add_inplace(float* x, const float* y, int64_t n);
// In place softmax over n floats; returns nothing. Max-subtracted, float32 accumulation.
void softmax(float* x, int64_t n);

// Scaled RoPE frequencies (HF rope_parameters; bluelm_v.models.llm.scale_frequencies): "linear" divides every
// frequency by factor; "llama3" divides those of wavelength above old_context / low_freq by factor, keeps those
// below old_context / high_freq, and blends in between.
struct RopeScaling {
  enum class Type { none, linear, llama3 } type = Type::none;
  float factor = 1.0f, low_freq = 1.0f, high_freq = 4.0f, old_context = 0.0f;
};

// RoPE tables for HF's rotate_half layout: cos/sin [positions, head_dim / 2] computed as the reference does
// (inv_freq = 1 / theta^(2i / hd) in float32, scaled, angle = position * inv_freq in float32).
class Rope {
 public:
  Rope() = default;
  Rope(int64_t head_dim, double theta, int64_t positions, const RopeScaling& scaling = {});
  // inv_freq [head_dim / 2] after scaling (for tests).
  static std::vector<float> frequencies(int64_t head_dim, double theta, const RopeScaling& scaling);
  // x: [heads, head_dim] of one position p (pairs i and i + hd/2 rotate), in place.
  void apply(float* x, int64_t heads, int64_t p) const;
  int64_t positions() const { return positions_; }

 private:
  int64_t half_ = 0, positions_ = 0;
  float* cos_ = nullptr;  // into table_
  float* sin_ = nullptr;
  struct Table;
  std::shared_ptr<float> table_;
};

}  // namespace bluelm::runtime

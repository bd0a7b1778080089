#include "runtime/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/isa.h"
#include "common/threadpool.h"
#include "kernels/kernels.h"
#include "runtime/attention_isa.h"

namespace bluelm::runtime {

namespace {
// [0, n) in pieces of `grain` on the thread pool once `work` (values touched) is large enough to pay for waking it
// (a ViT batch's MLP activations are 4 x 729 x 4304 values); below that, on the calling thread. fn(begin, end)
// computes each index the same way whatever the split, so results do not depend on the thread count.
constexpr int64_t kMinParallelWork = int64_t(1) << 16;
template <class Fn>
void for_range(int64_t n, int64_t grain, int64_t work, Fn&& fn) {
  if (work < kMinParallelWork) {
    fn(int64_t(0), n);
    return;
  }
  ThreadPool::global().run((n + grain - 1) / grain, [&](int64_t b, int64_t e, int) {
    fn(b * grain, std::min(n, e * grain));
  });
}
template <class Fn>
void for_elements(int64_t n, Fn&& fn) { for_range(n, 4096, n, fn); }
}  // namespace

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t d, float eps) {
  const AttentionKernels& K = attention_kernels();
  for_range(rows, 1, rows * d, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) K.rms_norm_row(x + r * d, w, y + r * d, d, eps);
  });
}

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t d, float eps) {
  for_range(rows, 1, rows * d, [&](int64_t r0, int64_t r1) {
    kernels::layer_norm_rows(x + r0 * d, r1 - r0, d, gamma, beta, eps, y + r0 * d);
  });
}

void gelu_erf(float* x, int64_t n) {
  for_elements(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
  });
}

void gelu_tanh(float* x, int64_t n) {
  const AttentionKernels& K = attention_kernels();
  for_elements(n, [&](int64_t b, int64_t e) { K.gelu_tanh(x + b, e - b); });
}

void silu_mul(float* g, const float* u, int64_t n) {
  const AttentionKernels& K = attention_kernels();
  for_elements(n, [&](int64_t b, int64_t e) { K.silu_mul(g + b, u + b, g + b, e - b); });
}

void swiglu_rows(const float* gu, int64_t t, int64_t f, float* out) {
  const AttentionKernels& K = attention_kernels();
  for_elements(t * f, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e;) {
      const int64_t r = i / f, j0 = i - r * f, j1 = std::min(f, j0 + (e - i));
      const float* g = gu + r * 2 * f;
      K.silu_mul(g + j0, g + f + j0, out + r * f + j0, j1 - j0);
      i += j1 - j0;
    }
  });
}

void add_inplace(float* x, const float* y, int64_t n) {
  for_elements(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] += y[i];
  });
}

void softmax(float* x, int64_t n) {
  if (n < 1) return;
  const AttentionKernels& K = attention_kernels();
  const float m = K.row_max(x, n);
  const float inv = 1.0f / K.exp_sum(x, n, m);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

std::vector<float> Rope::frequencies(int64_t head_dim, double theta, const RopeScaling& sc) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float expo = float(2 * i) / float(head_dim);
    inv[size_t(i)] = 1.0f / std::pow(float(theta), expo);
  }
  if (sc.type == RopeScaling::Type::linear)
    for (float& f : inv) f /= sc.factor;
  if (sc.type == RopeScaling::Type::llama3) {
    // float32 throughout, in the reference's order of operations
    const float long_wave = float(double(sc.old_context) / double(sc.low_freq));
    const float short_wave = float(double(sc.old_context) / double(sc.high_freq));
    const float span = float(double(sc.high_freq) - double(sc.low_freq));
    for (float& f : inv) {
      const float wavelen = float(6.283185307179586) * (1.0f / f);
      const float scaled = wavelen > long_wave ? f / sc.factor : f;
      if (wavelen >= short_wave && wavelen <= long_wave) {
        const float smooth = (sc.old_context * (1.0f / wavelen) - sc.low_freq) / span;
        f = (1.0f - smooth) * scaled / sc.factor + smooth * scaled;
      } else {
        f = scaled;
      }
    }
  }
  return inv;
}

Rope::Rope(int64_t head_dim, double theta, int64_t positions, const RopeScaling& scaling)
    : half_(head_dim / 2), positions_(positions) {
  if (head_dim < 2 || head_dim % 2) throw InvalidArgument(cat("RoPE head_dim ", head_dim, " must be even"));
  if (scaling.type != RopeScaling::Type::none && !(scaling.factor > 0.0f))
    throw InvalidArgument(cat("RoPE scaling factor ", scaling.factor, " must be positive"));
  if (scaling.type == RopeScaling::Type::llama3 &&
      !(scaling.high_freq > scaling.low_freq && scaling.low_freq > 0.0f && scaling.old_context > 0.0f))
    throw InvalidArgument("llama3 RoPE scaling needs 0 < low_freq < high_freq and a positive original context");
  const size_t n = size_t(positions) * size_t(half_);
  table_ = std::shared_ptr<float>(new float[2 * n], std::default_delete<float[]>());
  cos_ = table_.get();
  sin_ = cos_ + n;
  const std::vector<float> inv = frequencies(head_dim, theta, scaling);
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < half_; ++i) {
      const float a = float(p) * inv[size_t(i)];
      cos_[p * half_ + i] = std::cos(a);
      sin_[p * half_ + i] = std::sin(a);
    }
}

void Rope::apply(float* x, int64_t heads, int64_t p) const {
  const float* c = cos_ + p * half_;
  const float* s = sin_ + p * half_;
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * 2 * half_;
    for (int64_t i = 0; i < half_; ++i) {
      const float a = v[i], b = v[i + half_];
      v[i] = a * c[i] - b * s[i];
      v[i + half_] = b * c[i] + a * s[i];
    }
  }
}

}  // namespace bluelm::runtime

#include "runtime/linear.h"

#include <Eigen/Core>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/threadpool.h"

namespace bluelm::runtime {

namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
}  // namespace

Activations parse_activations(const std::string& s) {
  if (s == "int8") return Activations::int8;
  if (s == "int16") return Activations::int16;
  throw InvalidArgument(cat("unknown activation precision '", s, "': expected 'int8' or 'int16'"));
}

std::shared_ptr<WeightArena> weight_arena(const model::Package& pkg, const std::string& prefix) {
  size_t bytes = 0;
  for (const auto& [name, t] : pkg.tensors()) {
    if (t.is_f32 || t.shape.size() != 2 || name.rfind(prefix, 0) != 0) continue;
    if (t.stored_k % quant::format_info(t.format).group != 0) continue;
    bytes += size_t(kernels::packed_bytes(t.format, t.rows(), t.stored_k)) + 64;
  }
  return std::make_shared<WeightArena>(bytes);
}

namespace {
// A bias tensor [n], which must be f32 (the package stores biases unquantized).
const float* f32_bias(const model::Package& pkg, const std::string& name, int64_t n) {
  const model::TensorInfo& b = pkg.tensor(name, {n});
  if (!b.is_f32 || b.shape.size() != 1)
    throw FormatError(cat(pkg.dir(), "/manifest.json: tensor '", name, "' must be an f32 vector of ", n,
                          " values, is ", b.describe()));
  return b.f32();
}
}  // namespace

Linear::Linear(const model::Package& pkg, const std::string& weight, int64_t n, int64_t k, const std::string& bias,
               std::shared_ptr<WeightArena> arena)
    : n_(n), k_(k) {
  const model::TensorInfo& w = pkg.tensor(weight, {n, k});
  quantized_ = !w.is_f32;
  kp_ = w.stored_k;
  if (quantized_) {
    packed_ = kernels::PackedMatrix(w.format, w.data, n, kp_, std::move(arena));
    // The packed copy is what the kernels read: drop the file's pages from this process (they come back on demand,
    // e.g. the rows of a tied embedding table), or the weights would count twice in its resident memory.
    pkg.mapping().release(w.offset, w.bytes);
  } else {
    w_ = w.f32();
  }
  if (!bias.empty()) bias_ = f32_bias(pkg, bias, n);
}

bool Linear::can_stack(const model::Package& pkg, const std::vector<std::string>& weights,
                       const std::vector<int64_t>& ns, int64_t k) {
  const char* env = std::getenv("BLUELM_STACK");
  if (env && std::string(env) == "0") return false;
  if (weights.empty() || weights.size() != ns.size()) return false;
  const model::TensorInfo& first = pkg.tensor(weights[0], {ns[0], k});
  for (size_t i = 0; i < weights.size(); ++i) {
    const model::TensorInfo& w = pkg.tensor(weights[i], {ns[i], k});
    if (w.is_f32 || w.format != first.format || w.stored_k != first.stored_k) return false;
    if (i + 1 < weights.size() && ns[i] % kernels::kPanelRows != 0) return false;
  }
  return true;
}

Linear::Linear(const model::Package& pkg, const std::vector<std::string>& weights, const std::vector<int64_t>& ns,
               int64_t k, std::shared_ptr<WeightArena> arena, const std::vector<std::string>& biases)
    : k_(k), quantized_(true) {
  if (!can_stack(pkg, weights, ns, k))
    throw InvalidArgument(cat("weights ", weights.empty() ? std::string("(none)") : weights[0],
                              "... cannot be stacked into one product"));
  std::vector<const model::TensorInfo*> ws;
  std::vector<const uint8_t*> parts;
  for (size_t i = 0; i < weights.size(); ++i) {
    ws.push_back(&pkg.tensor(weights[i], {ns[i], k}));
    parts.push_back(ws.back()->data);
    n_ += ns[i];
  }
  kp_ = ws[0]->stored_k;
  packed_ = kernels::PackedMatrix(ws[0]->format, parts, ns, kp_, std::move(arena));
  for (const model::TensorInfo* w : ws) pkg.mapping().release(w->offset, w->bytes);
  if (biases.empty()) return;
  if (biases.size() != weights.size())
    throw InvalidArgument(cat(biases.size(), " biases for ", weights.size(), " stacked weights"));
  stacked_bias_ = std::make_shared<std::vector<float>>();
  for (size_t i = 0; i < biases.size(); ++i) {
    const float* b = f32_bias(pkg, biases[i], ns[i]);
    stacked_bias_->insert(stacked_bias_->end(), b, b + ns[i]);
  }
  bias_ = stacked_bias_->data();
}

int64_t Linear::resident_bytes() const {
  return quantized_ ? kernels::packed_bytes(packed_.format(), n_, kp_) : 0;
}

int64_t Linear::weight_bytes() const {
  const int64_t w = quantized_ ? resident_bytes() : n_ * k_ * int64_t(sizeof(float));
  return w + (bias_ ? n_ * int64_t(sizeof(float)) : 0);
}

std::string Linear::format_name() const {
  if (n_ == 0) return "";
  return quantized_ ? quant::format_info(packed_.format()).name : "f32";
}

void Linear::forward_int16(const float* x, int64_t t, int64_t ldx, float* y, int64_t ldy) const {
  thread_local std::vector<float> xx, yy;
  thread_local kernels::Scratch s1, s2;
  const quant::Format f = packed_.format();
  const bool one_pass = kernels::int16_one_pass() && kernels::gemm_i16_pays(f, t);  // kernels.h says when it pays
  if (one_pass && kp_ == k_) return kernels::gemm_i16(packed_.view(), x, t, ldx, y, ldy, bias_, &s1);
  // Rows 0..t-1: x zero-padded to kp (the kernels read rows of kp values); for two passes, rows t..2t-1 then hold
  // the residual of x's int8 quantization.
  xx.resize(size_t((one_pass ? 1 : 2) * t * kp_));
  for (int64_t r = 0; r < t; ++r) {
    std::memcpy(xx.data() + r * kp_, x + r * ldx, size_t(k_) * sizeof(float));
    std::fill(xx.data() + r * kp_ + k_, xx.data() + (r + 1) * kp_, 0.0f);
  }
  if (one_pass) return kernels::gemm_i16(packed_.view(), xx.data(), t, kp_, y, ldy, bias_, &s1);
  const int64_t g = quant::format_info(f).group, nb = kp_ / g;
  const kernels::QuantizedActs a1 = kernels::quantize_activations(f, xx.data(), t, kp_, kp_, s1);
  for (int64_t r = 0; r < t; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const float d = a1.d[r * nb + b];
      const float* xs = xx.data() + r * kp_ + b * g;
      const int8_t* q = a1.q + r * kp_ + b * g;
      float* res = xx.data() + (t + r) * kp_ + b * g;
      for (int64_t i = 0; i < g; ++i) res[i] = xs[i] - float(q[i]) * d;
    }
  const kernels::QuantizedActs a2 = kernels::quantize_activations(f, xx.data(), 2 * t, kp_, kp_, s2);
  yy.resize(size_t(2 * t * n_));
  kernels::gemm_quantized(packed_.view(), a2, yy.data(), n_, nullptr);
  for (int64_t r = 0; r < t; ++r) {
    const float* y1 = yy.data() + r * n_;
    const float* y2 = yy.data() + (t + r) * n_;
    float* out = y + r * ldy;
    for (int64_t j = 0; j < n_; ++j) out[j] = y1[j] + y2[j] + (bias_ ? bias_[j] : 0.0f);
  }
}

void Linear::forward(const float* x, int64_t t, int64_t ldx, float* y, int64_t ldy, kernels::Scratch& scratch,
                     Activations act) const {
  if (t < 1) return;
  if (quantized_ && act == Activations::int16) {
    forward_int16(x, t, ldx, y, ldy);
    return;
  }
  if (!quantized_) {
    const ConstMap X(x, t, k_, Eigen::OuterStride<>(ldx));
    const ConstMap W(w_, n_, k_, Eigen::OuterStride<>(k_));
    const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), n_ / 16));
    ThreadPool::global().run(blocks, [&](int64_t b0, int64_t b1, int) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t lo = n_ * b / blocks, hi = n_ * (b + 1) / blocks;
        Map Y(y + lo, t, hi - lo, Eigen::OuterStride<>(ldy));
        Y.noalias() = X * W.middleRows(lo, hi - lo).transpose();
        if (bias_)
          for (int64_t r = 0; r < t; ++r)
            for (int64_t j = lo; j < hi; ++j) y[r * ldy + j] += bias_[j];
      }
    });
    return;
  }
  // The kernels read contiguous rows of kp floats.
  const float* in = x;
  if (kp_ != k_ || ldx != kp_) {
    float* buf = static_cast<float*>(scratch.get(int64_t(sizeof(float)) * t * kp_ +
                                                 kernels::act_scratch_bytes(packed_.format(), t, kp_)));
    for (int64_t r = 0; r < t; ++r) {
      std::memcpy(buf + r * kp_, x + r * ldx, size_t(k_) * sizeof(float));
      std::fill(buf + r * kp_ + k_, buf + (r + 1) * kp_, 0.0f);
    }
    in = buf;
    // The kernels take their own scratch after the padded copy: use a second Scratch to keep it valid.
    thread_local kernels::Scratch inner;
    if (t == 1 && ldy == n_) {
      kernels::gemv(packed_.view(), in, y, bias_, &inner);
    } else if (ldy == n_) {
      kernels::gemm(packed_.view(), in, t, y, bias_, &inner);
    } else {
      const kernels::QuantizedActs a = kernels::quantize_activations(packed_.format(), in, t, kp_, kp_, inner);
      kernels::gemm_quantized(packed_.view(), a, y, ldy, bias_);
    }
    return;
  }
  if (t == 1 && ldy == n_) {
    kernels::gemv(packed_.view(), in, y, bias_, &scratch);
  } else if (ldy == n_) {
    kernels::gemm(packed_.view(), in, t, y, bias_, &scratch);
  } else {
    const kernels::QuantizedActs a = kernels::quantize_activations(packed_.format(), in, t, kp_, kp_, scratch);
    kernels::gemm_quantized(packed_.view(), a, y, ldy, bias_);
  }
}

}  // namespace bluelm::runtime

#pragma once
// y = x W^T (+ b) for one weight of a model package: quantized weights are repacked into the kernels' panel
// layout at load (csrc/kernels: int8 activations, integer dot products); float32 weights stay in the mapping and
// go through Eigen, split over the thread pool by output rows. Columns stored padded to the quantization group
// (stored_k > k) are handled here: the input is copied into a zero-padded buffer.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/memory.h"
#include "kernels/kernels.h"
#include "model/package.h"

namespace bluelm::runtime {

// Activation precision of the quantized products: int8 (one int8 quantization per group, as llama.cpp's q8
// activations) or int16 (two passes: x ~ deq(q1) + deq(q2) with q2 quantizing the residual x - deq(q1), so the
// activation error shrinks ~127x; both passes run as one GEMM of 2t rows, so the weights are streamed once).
enum class Activations { int8, int16 };
Activations parse_activations(const std::string& s);  // "int8" | "int16"

// An arena (common/memory.h) with room for the packed copies of every quantized matrix of `pkg` whose name starts
// with `prefix`, for Linear layers built in the order a forward pass reads them.
std::shared_ptr<WeightArena> weight_arena(const model::Package& pkg, const std::string& prefix);

class Linear {
 public:
  Linear() = default;
  // weight [n, k] (f32 or quantized), bias [n] f32 or none. A quantized weight is packed into `arena` when it has
  // room (common/memory.h), else into an allocation of its own.
  Linear(const model::Package& pkg, const std::string& weight, int64_t n, int64_t k, const std::string& bias = "",
         std::shared_ptr<WeightArena> arena = nullptr);
  // Several weights [ns[i], k] stacked into one product (Q, K and V; gate and up): output row = the parts' outputs
  // side by side. One call splits all their rows over the threads (the small K and V of a decode step no longer run
  // on one thread) and wakes the pool once. Only where can_stack() holds. `biases`: none, or one f32 [ns[i]] name
  // per weight (Qwen2's Q/K/V), copied side by side.
  Linear(const model::Package& pkg, const std::vector<std::string>& weights, const std::vector<int64_t>& ns, int64_t k,
         std::shared_ptr<WeightArena> arena = nullptr, const std::vector<std::string>& biases = {});
  // All quantized, of one format and stored K, every part but the last of whole 8-row panels, and stacking not
  // turned off (BLUELM_STACK=0, read here, for A/B runs). Shapes are checked as the single-weight constructor does.
  static bool can_stack(const model::Package& pkg, const std::vector<std::string>& weights,
                        const std::vector<int64_t>& ns, int64_t k);
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  int64_t stored_k() const { return kp_; }
  bool quantized() const { return quantized_; }
  const kernels::PackedView packed() const { return packed_.view(); }
  const float* bias() const { return bias_; }
  // Bytes this layer holds in memory beyond the mapping (the packed copy).
  int64_t resident_bytes() const;
  // Bytes one product reads: the packed copy, or the f32 weights in the mapping (and the bias).
  int64_t weight_bytes() const;
  // The weights' format name in the registry ("q4_k", "q8_0", ...), or "f32"; "" for an empty layer.
  std::string format_name() const;

  // x [t, k] (rows ldx floats apart) -> y [t, n] (rows ldy floats apart).
  void forward(const float* x, int64_t t, int64_t ldx, float* y, int64_t ldy, kernels::Scratch& scratch,
               Activations act = Activations::int8) const;

 private:
  void forward_int16(const float* x, int64_t t, int64_t ldx, float* y, int64_t ldy) const;
  int64_t n_ = 0, k_ = 0, kp_ = 0;
  bool quantized_ = false;
  kernels::PackedMatrix packed_;
  const float* w_ = nullptr;  // f32 [n, k] in the mapping
  const float* bias_ = nullptr;
  std::shared_ptr<std::vector<float>> stacked_bias_;  // a stacked product's biases side by side (bias_ points here)
};

}  // namespace bluelm::runtime

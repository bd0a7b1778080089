#pragma once
// The vision side of the engine: SigLIP ViT (HF SiglipVisionModel numerics) on batches of tiles, then the 2x2
// token down-sampler fused with the projector's LayerNorm and first linear layer (kernels::downsample_linear when
// that layer is quantized), GELU and the second linear layer. Weights: the ViT's linear layers as the package
// stores them (q8_0 in the paper's deployment, or f32), the patch embedding and position table in f32.
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"
#include "model/package.h"
#include "runtime/linear.h"

namespace bluelm::runtime {

class VisionEncoder {
 public:
  explicit VisionEncoder(const model::Package& pkg, Activations act = Activations::int8);
  int64_t tokens_per_tile() const { return tokens_out_; }
  int64_t out_dim() const { return d_llm_; }
  int64_t resident_bytes() const;
  // tiles [b, 3, S, S] normalized -> out [b, tokens_per_tile, d_llm].
  void encode(const float* tiles, int64_t b, float* out);

 private:
  struct Layer {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    Linear q, k, v, o, fc1, fc2;
  };
  void attention(int64_t b, int64_t n);

  model::VisionConfig cfg_;
  model::ProjectorConfig proj_;
  int64_t d_llm_ = 0, tokens_out_ = 0;
  Linear patch_;
  const float* pos_ = nullptr;
  std::vector<Layer> layers_;
  const float *post_w_ = nullptr, *post_b_ = nullptr;
  const float *pn_w_ = nullptr, *pn_b_ = nullptr;
  Linear l1_, l2_;
  // Working memory, grown to the largest batch seen.
  std::vector<float> patches_, x_, xn_, q_, k_, v_, att_, tmp_, mlp_, ds_, p1_, scores_;
  kernels::Scratch scratch_;
  Activations act_ = Activations::int8;
};

}  // namespace bluelm::runtime

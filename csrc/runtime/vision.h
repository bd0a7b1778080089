#pragma once
// The vision side of the engine: SigLIP ViT (HF SiglipVisionModel numerics; InternViT through the config's flags:
// class token, layer scale, RMSNorm, QK norm, no Q/K/V biases) on batches of tiles, then the token merge
// (merge x merge blocks; 2x2 fused with the projector's LayerNorm and first linear layer by
// kernels::downsample_linear when that layer is quantized at int8 activations) and the projector (MLP: act and the
// second linear layer; linear: the first alone). Weights: the ViT's linear layers as the package stores them (q8_0
// in the paper's deployment, or f32), the patch embedding, position table and norms in f32.
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
  // LLaVA-OneVision's learned end-of-row embedding [d_llm] (image_layout anyres_unpad), else null.
  const float* newline() const { return newline_; }
  // tiles [b, 3, S, S] normalized -> out [b, tokens_per_tile, d_llm].
  void encode(const float* tiles, int64_t b, float* out);

 private:
  struct Layer {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;  // biases null for RMSNorm
    Linear q, k, v, o, fc1, fc2;
    const float *q_norm = nullptr, *k_norm = nullptr, *scale1 = nullptr, *scale2 = nullptr;
  };
  void attention(int64_t b, int64_t n);
  void norm(const float* x, const float* w, const float* b, float* y, int64_t rows) const;
  void project(const float* feat, float* out);  // one tile's features [grid*grid, C] -> [tokens_per_tile, d_llm]

  model::VisionConfig cfg_;
  model::ProjectorConfig proj_;
  int64_t d_llm_ = 0, tokens_out_ = 0;
  Linear patch_;
  const float* pos_ = nullptr;
  const float* cls_ = nullptr;
  const float* newline_ = nullptr;
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

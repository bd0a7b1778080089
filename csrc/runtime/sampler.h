#pragma once
// Next-token selection: greedy (temperature 0: the first largest logit), or temperature, then top-k, then top-p
// (keep the most probable tokens whose preceding mass is below p, as bluelm_v/models/generate.py does).
#include <cstdint>
#include <random>
#include <vector>

namespace bluelm::runtime {

struct SamplingOptions {
  float temperature = 0.0f;
  int64_t top_k = 0;   // 0: off
  float top_p = 1.0f;  // 1: off
  uint64_t seed = 0;
  void validate() const;  // InvalidArgument naming the bad field
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opt);
  // logits [n] -> token id in [0, n).
  int32_t sample(const float* logits, int64_t n);

 private:
  SamplingOptions opt_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace bluelm::runtime

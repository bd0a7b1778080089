#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace bluelm::runtime {

void SamplingOptions::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    throw InvalidArgument(cat("temperature must be a finite number >= 0, got ", temperature));
  if (top_k < 0) throw InvalidArgument(cat("top_k must be >= 0, got ", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) throw InvalidArgument(cat("top_p must be in (0, 1], got ", top_p));
}

Sampler::Sampler(const SamplingOptions& opt) : opt_(opt), rng_(opt.seed) { opt.validate(); }

int32_t Sampler::sample(const float* logits, int64_t n) {
  if (n < 1) throw InvalidArgument("cannot sample from an empty vocabulary");
  if (opt_.temperature == 0.0f) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; ++i)
      if (logits[i] > logits[best]) best = i;
    return int32_t(best);
  }
  cand_.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) cand_[size_t(i)] = {logits[i] / opt_.temperature, int32_t(i)};
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = size_t(n);
  if (opt_.top_k > 0 && opt_.top_k < n) {
    // Ties with the k-th logit stay in, as the reference's `z < kth` mask keeps them.
    std::nth_element(cand_.begin(), cand_.begin() + (opt_.top_k - 1), cand_.end(), by_logit);
    const float kth = cand_[size_t(opt_.top_k - 1)].first;
    keep = size_t(std::partition(cand_.begin(), cand_.end(), [&](const auto& c) { return c.first >= kth; }) - cand_.begin());
  }
  std::sort(cand_.begin(), cand_.begin() + long(keep), by_logit);
  const float top = cand_[0].first;
  double total = 0.0;
  std::vector<double> p(keep);
  for (size_t i = 0; i < keep; ++i) total += (p[i] = std::exp(double(cand_[i].first - top)));
  if (opt_.top_p < 1.0f) {
    double before = 0.0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      if (before / total >= double(opt_.top_p)) {
        cut = i;
        break;
      }
      before += p[i];
    }
    keep = std::max<size_t>(1, cut);
    total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += p[i];
  }
  std::uniform_real_distribution<double> u(0.0, total);
  double r = u(rng_), acc = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (r < acc) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

}  // namespace bluelm::runtime

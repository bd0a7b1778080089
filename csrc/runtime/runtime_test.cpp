// Engine building blocks: sampling rules, RoPE.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/testing.h"
#include "runtime/llm.h"
#include "runtime/ops.h"
#include "runtime/sampler.h"

using namespace bluelm;
using namespace bluelm::runtime;

BLUELM_TEST(sampler_rules) {
  const std::vector<float> logits = {0.1f, 2.0f, 1.9f, -3.0f, 2.0f};
  Sampler greedy(SamplingOptions{});
  CHECK_EQ(greedy.sample(logits.data(), 5), 1);  // first of the tied maxima
  SamplingOptions k1;
  k1.temperature = 1.0f;
  k1.top_k = 1;
  k1.seed = 7;
  Sampler s1(k1);
  bool saw1 = false, saw4 = false;
  for (int i = 0; i < 200; ++i) {  // the tie at the k-th logit stays in (as the reference's mask keeps it)
    const int32_t x = s1.sample(logits.data(), 5);
    CHECK(x == 1 || x == 4);
    saw1 |= x == 1, saw4 |= x == 4;
  }
  CHECK(saw1 && saw4);
  SamplingOptions p;
  p.temperature = 1.0f;
  p.top_p = 0.01f;
  p.seed = 3;
  Sampler sp(p);
  for (int i = 0; i < 20; ++i) CHECK_EQ(sp.sample(logits.data(), 5), 1);  // only the first-sorted token
  // Same seed, same draws; the drawn frequencies follow softmax.
  SamplingOptions t;
  t.temperature = 1.0f;
  t.seed = 11;
  Sampler a(t), b(t);
  std::vector<int> count(5, 0);
  for (int i = 0; i < 4000; ++i) {
    const int32_t x = a.sample(logits.data(), 5);
    CHECK_EQ(x, b.sample(logits.data(), 5));
    ++count[size_t(x)];
  }
  double z = 0;
  for (float l : logits) z += std::exp(double(l));
  for (int i = 0; i < 5; ++i) CHECK_NEAR(count[size_t(i)] / 4000.0, std::exp(double(logits[size_t(i)])) / z, 0.03);
  SamplingOptions bad;
  bad.top_p = 0.0f;
  CHECK_THROWS(bad.validate(), InvalidArgument);
  bad = {};
  bad.temperature = -1.0f;
  CHECK_THROWS(bad.validate(), InvalidArgument);
}

BLUELM_TEST(rope_rotates_pairs) {
  const int64_t hd = 8;
  Rope rope(hd, 10000.0, 16);
  std::vector<float> x(hd);
  for (int64_t i = 0; i < hd; ++i) x[size_t(i)] = float(i + 1);
  std::vector<float> y = x;
  rope.apply(y.data(), 1, 5);
  for (int64_t i = 0; i < hd / 2; ++i) {
    const double f = 1.0 / std::pow(10000.0, double(2 * i) / double(hd)), a = 5 * f;
    CHECK_NEAR(y[size_t(i)], x[size_t(i)] * std::cos(a) - x[size_t(i + hd / 2)] * std::sin(a), 1e-4);
    CHECK_NEAR(y[size_t(i + hd / 2)], x[size_t(i + hd / 2)] * std::cos(a) + x[size_t(i)] * std::sin(a), 1e-4);
  }
  std::vector<float> z = x;
  rope.apply(z.data(), 1, 0);  // position 0: identity
  for (int64_t i = 0; i < hd; ++i) CHECK_NEAR(z[size_t(i)], x[size_t(i)], 0.0);
}

BLUELM_TEST(rope_scaling_frequency_bands) {
  // hd 16, theta 500000: wavelengths 2 pi theta^(2i/16) = 6.3, 32.5, 168, ... The llama3 bands with an original
  // context of 64 (low 1, high 4): below 16 kept, above 64 divided by the factor, in between a blend of the two.
  const int64_t hd = 16;
  const double theta = 500000.0;
  const std::vector<float> plain = Rope::frequencies(hd, theta, {});
  RopeScaling lin;
  lin.type = RopeScaling::Type::linear;
  lin.factor = 4.0f;
  const std::vector<float> l = Rope::frequencies(hd, theta, lin);
  for (size_t i = 0; i < plain.size(); ++i) CHECK_NEAR(l[i], plain[i] / 4.0f, 0.0);
  RopeScaling l3;
  l3.type = RopeScaling::Type::llama3;
  l3.factor = 8.0f;
  l3.old_context = 64.0f;
  const std::vector<float> s = Rope::frequencies(hd, theta, l3);
  CHECK_NEAR(s[0], plain[0], 0.0);  // wavelength 6.3 < 16: kept
  CHECK(s[1] < plain[1] && s[1] > plain[1] / 8.0f);  // 32.5: blended
  for (size_t i = 2; i < plain.size(); ++i) CHECK_NEAR(s[i], plain[i] / 8.0f, 1e-12);  // >= 168 > 64: scaled
  // The blend at wavelength w: (1 - m) f / factor + m f with m = (64 / w - 1) / 3 (the reference's formula).
  const double w = 6.283185307179586 / double(plain[1]), m = (64.0 / w - 1.0) / 3.0;
  CHECK_NEAR(s[1], (1 - m) * plain[1] / 8.0 + m * plain[1], 1e-6 * plain[1]);
  RopeScaling bad = l3;
  bad.high_freq = 1.0f;  // no band between low and high
  CHECK_THROWS(Rope(hd, theta, 8, bad), InvalidArgument);
  bad = lin;
  bad.factor = 0.0f;
  CHECK_THROWS(Rope(hd, theta, 8, bad), InvalidArgument);
}

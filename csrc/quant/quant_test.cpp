#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/testing.h"
#include "quant/quant.h"

using namespace bluelm;
using namespace bluelm::quant;

BLUELM_TEST(quant_fp16_round_trip_every_half) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_fp32(uint16_t(h));
    if (std::isnan(f)) {
      CHECK(std::isnan(fp16_to_fp32(fp32_to_fp16(f))));
      continue;
    }
    CHECK_EQ(uint32_t(fp32_to_fp16(f)), h);
  }
}

BLUELM_TEST(quant_fp16_rounding_rules) {
  CHECK_EQ(fp32_to_fp16(65504.0f), uint16_t(0x7BFF));
  CHECK_EQ(fp32_to_fp16(65519.99f), uint16_t(0x7BFF));
  CHECK_EQ(fp32_to_fp16(65520.0f), uint16_t(0x7C00));  // ties to even: rounds up to infinity
  CHECK_EQ(fp32_to_fp16(-1e10f), uint16_t(0xFC00));
  CHECK_EQ(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)), uint16_t(0x3C00));      // tie -> even (1.0)
  CHECK_EQ(fp32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), uint16_t(0x3C02));  // tie -> even (up)
  CHECK_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), uint16_t(0x0000));             // half the smallest subnormal
  CHECK_EQ(fp32_to_fp16(3 * std::ldexp(1.0f, -25)), uint16_t(0x0002));
  CHECK_EQ(fp32_to_fp16(std::ldexp(1.0f, -14)), uint16_t(0x0400));             // smallest normal
  CHECK_EQ(fp32_to_fp16(std::ldexp(1023.5f, -24)), uint16_t(0x0400));          // subnormal rounding into normal
  CHECK_EQ(fp32_to_fp16(-0.0f), uint16_t(0x8000));
}

BLUELM_TEST(quant_registry_consistent) {
  CHECK_EQ(int(formats().size()), kFormatCount);
  for (const FormatInfo& fi : formats()) {
    CHECK(parse_format(fi.name) == fi.format);
    const int payload = fi.weight_bits == 4 ? fi.group / 2 : fi.group;
    CHECK_EQ(fi.block_bytes, fi.scale_offset_bytes + payload);
    CHECK_NEAR(fi.bits_per_weight, fi.block_bytes * 8.0 / fi.group, 1e-12);
    CHECK_EQ(row_bytes(fi.format, 4 * fi.group), int64_t(4 * fi.block_bytes));
    CHECK_THROWS(row_bytes(fi.format, fi.group + 1), InvalidArgument);
    CHECK_THROWS(row_bytes(fi.format, 0), InvalidArgument);
  }
  CHECK_EQ(format_info(Format::q4_0).block_bytes, int(sizeof(BlockQ4_0)));
  CHECK_EQ(format_info(Format::q4_1).block_bytes, int(sizeof(BlockQ4_1)));
  CHECK_EQ(format_info(Format::q8_0).block_bytes, int(sizeof(BlockQ8_0)));
  CHECK_THROWS(parse_format("q5_k"), InvalidArgument);
}

// |x - dequant(quant(x))| within each format's step, for random and adversarial blocks.
BLUELM_TEST(quant_round_trip_error_bounds) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const FormatInfo& fi : formats()) {
    const int64_t k = 4 * fi.group, rows = 5;
    std::vector<float> x(size_t(rows * k));
    for (auto& v : x) v = nd(rng);
    for (int i = 0; i < fi.group; ++i) x[size_t(k + i)] = 3.0f;            // a constant block
    for (int i = 0; i < fi.group; ++i) x[size_t(2 * k + i)] = 0.0f;        // an all-zero block
    x[size_t(3 * k)] = -50.0f;                                             // one outlier
    std::vector<uint8_t> q(size_t(rows * row_bytes(fi.format, k)));
    quantize_rows(fi.format, x.data(), rows, k, q.data());
    std::vector<float> y(x.size());
    dequantize_rows(fi.format, q.data(), rows, k, y.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < k / fi.group; ++b) {
        const uint8_t* blk = q.data() + r * row_bytes(fi.format, k) + b * fi.block_bytes;
        uint16_t dh, mh = 0;
        std::memcpy(&dh, blk, 2);
        const float d = std::fabs(fp16_to_fp32(dh));
        float m = 0.0f;
        if (fi.kind == Kind::int4_asym) std::memcpy(&mh, blk + 2, 2), m = std::fabs(fp16_to_fp32(mh));
        // symmetric int4 clips the far end of the range to 7d: an error of up to one step there
        const float step = fi.kind == Kind::int4_sym ? d : d / 2;
        const float tol = step + d * (fi.kind == Kind::int8_sym ? 127 : 16) * std::ldexp(1.0f, -11) + m * 1e-3f + 1e-6f;
        for (int i = 0; i < fi.group; ++i) {
          const size_t at = size_t(r * k + b * fi.group + i);
          CHECK(std::fabs(x[at] - y[at]) <= tol);
        }
      }
    // all-zero block dequantizes to zeros; a constant block exactly (asymmetric) or within a step
    for (int i = 0; i < fi.group; ++i) CHECK_EQ(y[size_t(2 * k + i)], 0.0f);
  }
}

BLUELM_TEST(quant_refuses_non_finite) {
  std::vector<float> x(32, 1.0f);
  x[17] = std::nanf("");
  std::vector<uint8_t> q(64);
  CHECK_THROWS(quantize_rows(Format::q4_0, x.data(), 1, 32, q.data()), InvalidArgument);
  x[17] = INFINITY;
  CHECK_THROWS(quantize_rows(Format::q8_0, x.data(), 1, 32, q.data()), InvalidArgument);
}

BLUELM_TEST(quant_q4_0_known_block) {
  // x = -8..7 scaled by 0.5: d = max/-8 with max = -4 -> d = 0.5, q = x/d + 8 = 0..15 exactly
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = 0.5f * float((i % 16) - 8);
  uint8_t q[18];
  quantize_rows(Format::q4_0, x, 1, 32, q);
  CHECK_EQ(int(q[0] | (q[1] << 8)), int(fp32_to_fp16(0.5f)));
  for (int i = 0; i < 16; ++i) CHECK_EQ(int(q[2 + i]), i | (i << 4));
}

#include <cmath>
#include <cstddef>
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
    CHECK(fi.super_block == is_k_quant(fi.kind));
    // Q5: 4 bytes of fifth bits beside the nibbles
    const int payload = fi.super_block ? 0 : fi.weight_bits == 4 ? fi.group / 2 : fi.weight_bits == 5 ? 20 : fi.group;
    if (!fi.super_block) CHECK_EQ(fi.block_bytes, fi.scale_offset_bytes + payload);
    CHECK_NEAR(fi.bits_per_weight, fi.block_bytes * 8.0 / fi.group, 1e-12);
    CHECK_EQ(row_bytes(fi.format, 4 * fi.group), int64_t(4 * fi.block_bytes));
    CHECK_THROWS(row_bytes(fi.format, fi.group + 1), InvalidArgument);
    CHECK_THROWS(row_bytes(fi.format, 0), InvalidArgument);
  }
  CHECK_EQ(format_info(Format::q4_0).block_bytes, int(sizeof(BlockQ4_0)));
  CHECK_EQ(format_info(Format::q4_1).block_bytes, int(sizeof(BlockQ4_1)));
  CHECK_EQ(format_info(Format::q8_0).block_bytes, int(sizeof(BlockQ8_0)));
  CHECK_EQ(format_info(Format::q4_k).block_bytes, int(sizeof(BlockQ4_K)));
  CHECK_EQ(format_info(Format::q5_k).block_bytes, int(sizeof(BlockQ5_K)));
  CHECK_EQ(format_info(Format::q6_k).block_bytes, int(sizeof(BlockQ6_K)));
  CHECK_EQ(format_info(Format::q8_k).block_bytes, int(sizeof(BlockQ8_K)));
  CHECK_EQ(format_info(Format::q5_0).block_bytes, int(sizeof(BlockQ5_0)));
  CHECK_EQ(format_info(Format::q5_1).block_bytes, int(sizeof(BlockQ5_1)));
  CHECK_EQ(format_info(Format::q5_1).fp16_at[1], int(offsetof(BlockQ5_1, m)));
  CHECK_EQ(format_info(Format::q6_k).fp16_at[0], int(offsetof(BlockQ6_K, d)));
  CHECK_THROWS(parse_format("q3_k"), InvalidArgument);
}

// |x - dequant(quant(x))| within each format's step, for random and adversarial blocks.
BLUELM_TEST(quant_round_trip_error_bounds) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const FormatInfo& fi : formats()) {
    if (fi.super_block) continue;  // quant_k_round_trip_error_bounds
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
        const bool asym = fi.kind == Kind::int4_asym || fi.kind == Kind::int5_asym;
        if (asym) std::memcpy(&mh, blk + 2, 2), m = std::fabs(fp16_to_fp32(mh));
        // symmetric int4 / int5 clip the far end of the range to 7d / 15d: an error of up to one step there
        const bool sym45 = fi.kind == Kind::int4_sym || fi.kind == Kind::int5_sym;
        const float step = sym45 ? d : d / 2;
        const int levels = fi.kind == Kind::int8_sym ? 127 : fi.weight_bits == 5 ? 32 : 16;
        const float tol = step + d * levels * std::ldexp(1.0f, -11) + m * 1e-3f + 1e-6f;
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

// K-quants: every element within half a sub-block step of its value, for the step the stored scales give
// (d * sc), plus the rounding of the stored minimum (Q4_K / Q5_K), for random, constant, zero and outlier blocks.
BLUELM_TEST(quant_k_round_trip_error_bounds) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (Format f : {Format::q4_k, Format::q5_k, Format::q6_k, Format::q8_k}) {
    const int64_t k = 3 * 256, rows = 4;
    std::vector<float> x(size_t(rows * k));
    for (auto& v : x) v = nd(rng);
    for (int i = 0; i < 256; ++i) x[size_t(k + i)] = 3.0f, x[size_t(k + 256 + i)] = 0.0f;
    x[size_t(2 * k + 7)] = -50.0f;
    std::vector<uint8_t> q(size_t(rows * row_bytes(f, k)));
    quantize_rows(f, x.data(), rows, k, q.data());
    std::vector<float> y(x.size());
    dequantize_rows(f, q.data(), rows, k, y.data());
    for (int i = 0; i < 256; ++i) CHECK_EQ(y[size_t(k + 256 + i)], 0.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < k / 256; ++b) {
        const float* xb = x.data() + r * k + b * 256;
        const float* yb = y.data() + r * k + b * 256;
        float amax = 0.0f;
        for (int i = 0; i < 256; ++i) amax = std::max(amax, std::fabs(xb[i]));
        // Largest element error allowed: one level of the coarsest sub-block (levels 15 / 31 / 32 / 127 of
        // the block's range, 6-bit scales round by up to 1/63 of the largest) plus fp16 rounding of d.
        const float levels = f == Format::q4_k ? 15.0f : f == Format::q5_k ? 31.0f : f == Format::q6_k ? 32.0f : 127.0f;
        const float step = (f == Format::q4_k || f == Format::q5_k ? 2.0f : 1.0f) * amax / levels;
        float worst = 0.0f;
        for (int i = 0; i < 256; ++i) worst = std::max(worst, std::fabs(xb[i] - yb[i]));
        CHECK(worst <= step * (f == Format::q8_k ? 0.5f : 1.0f) * 1.02f + 1e-6f);
      }
  }
}

BLUELM_TEST(quant_k_known_bytes) {
  // Q8_K of 0..255 / 255 * -1: max |x| is x[255] = -1, scale 1/127, q_i = round(-127 x_i); bsums are the sums.
  float x[256];
  for (int i = 0; i < 256; ++i) x[i] = -float(i) / 255.0f;
  BlockQ8_K b;
  quantize_rows(Format::q8_k, x, 1, 256, reinterpret_cast<uint8_t*>(&b));
  CHECK_EQ(b.d, 1.0f / 127.0f);
  for (int i = 0; i < 256; ++i) CHECK_EQ(int(b.qs[i]), -int(std::nearbyint(127.0f * float(i) / 255.0f)));
  for (int j = 0; j < 16; ++j) {
    int sum = 0;
    for (int i = 0; i < 16; ++i) sum += b.qs[16 * j + i];
    CHECK_EQ(int(b.bsums[j]), sum);
  }
  // Q6_K of an all-zero block: every byte 0.
  std::vector<float> z(256, 0.0f);
  BlockQ6_K q6;
  std::memset(&q6, 0xAB, sizeof q6);
  quantize_rows(Format::q6_k, z.data(), 1, 256, reinterpret_cast<uint8_t*>(&q6));
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&q6);
  for (size_t i = 0; i < sizeof q6; ++i) CHECK_EQ(int(bytes[i]), 0);
}

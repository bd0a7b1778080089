// Quantize / dequantize rows (load-time work, portable C++). Arithmetic follows the gguf package's reference
// quantizers step by step in float32; the build uses -ffp-contract=off so no FMA changes a rounding.
#include "quant/quant.h"

#include <cmath>

#include "common/error.h"
#include "common/threadpool.h"

namespace bluelm::quant {
namespace {

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

const std::vector<FormatInfo>& registry() {
  // name, kind, group, block bytes, bits, bits/weight, GGML type id, scale bytes, fp16 fields, super-block
  static const std::vector<FormatInfo> r = {
      {Format::q4_0, "q4_0", Kind::int4_sym, 32, 18, 4, 4.5, 2, 2, {0, -1}, false},
      {Format::q4_1, "q4_1", Kind::int4_asym, 32, 20, 4, 5.0, 3, 4, {0, 2}, false},
      {Format::q8_0, "q8_0", Kind::int8_sym, 32, 34, 8, 8.5, 8, 2, {0, -1}, false},
      {Format::q4_0_g64, "q4_0_g64", Kind::int4_sym, 64, 34, 4, 4.25, -1, 2, {0, -1}, false},
      {Format::q4_0_g128, "q4_0_g128", Kind::int4_sym, 128, 66, 4, 4.125, -1, 2, {0, -1}, false},
      {Format::q4_1_g64, "q4_1_g64", Kind::int4_asym, 64, 36, 4, 4.5, -1, 4, {0, 2}, false},
      {Format::q4_1_g128, "q4_1_g128", Kind::int4_asym, 128, 68, 4, 4.25, -1, 4, {0, 2}, false},
      {Format::q8_0_g64, "q8_0_g64", Kind::int8_sym, 64, 66, 8, 8.25, -1, 2, {0, -1}, false},
      {Format::q8_0_g128, "q8_0_g128", Kind::int8_sym, 128, 130, 8, 8.125, -1, 2, {0, -1}, false},
      {Format::q4_k, "q4_k", Kind::k4, 256, 144, 4, 4.5, 12, 0, {0, 2}, true},
      {Format::q5_k, "q5_k", Kind::k5, 256, 176, 5, 5.5, 13, 0, {0, 2}, true},
      {Format::q6_k, "q6_k", Kind::k6, 256, 210, 6, 6.5625, 14, 0, {208, -1}, true},
      {Format::q8_k, "q8_k", Kind::k8, 256, 292, 8, 9.125, 15, 0, {-1, -1}, true},
      {Format::q5_0, "q5_0", Kind::int5_sym, 32, 22, 5, 5.5, 6, 2, {0, -1}, false},
      {Format::q5_1, "q5_1", Kind::int5_asym, 32, 24, 5, 6.0, 7, 4, {0, 2}, false},
  };
  return r;
}

// One block of `g` floats -> block bytes, per kind.
void quantize_q5(Kind kind, const float* x, uint8_t* out) {
  int q[32];
  if (kind == Kind::int5_sym) {
    float amax = std::fabs(x[0]), vmax = x[0];
    for (int i = 1; i < 32; ++i)
      if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), vmax = x[i];
    const float d = vmax / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = fp32_to_fp16(d);
    std::memcpy(out, &dh, 2);
    for (int i = 0; i < 32; ++i) {
      const float a = std::trunc(x[i] * id + 16.5f);
      q[i] = a < 0.0f ? 0 : a > 31.0f ? 31 : int(a);
    }
    q5_store_levels(Kind::int5_sym, q, out);
  } else {
    float vmin = x[0], vmax = x[0];
    for (int i = 1; i < 32; ++i) vmin = std::min(vmin, x[i]), vmax = std::max(vmax, x[i]);
    const float d = (vmax - vmin) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = fp32_to_fp16(d), mh = fp32_to_fp16(vmin);
    std::memcpy(out, &dh, 2);
    std::memcpy(out + 2, &mh, 2);
    for (int i = 0; i < 32; ++i) {
      const float a = std::trunc((x[i] - vmin) * id + 0.5f);
      q[i] = a < 0.0f ? 0 : a > 31.0f ? 31 : int(a);
    }
    q5_store_levels(Kind::int5_asym, q, out);
  }
}

void quantize_block(Kind kind, int g, const float* x, uint8_t* out) {
  if (is_k_quant(kind)) {
    quantize_super_block(kind, x, out);
  } else if (is_int5(kind)) {
    quantize_q5(kind, x, out);
  } else if (kind == Kind::int4_sym) {
    float amax = std::fabs(x[0]), vmax = x[0];  // numpy argmax: the first element of largest |x|
    for (int i = 1; i < g; ++i)
      if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), vmax = x[i];
    const float d = vmax / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = fp32_to_fp16(d);
    std::memcpy(out, &dh, 2);
    uint8_t* qs = out + 2;
    const int h = g / 2;
    for (int i = 0; i < h; ++i) {
      const float a = std::trunc(x[i] * id + 8.5f), b = std::trunc(x[i + h] * id + 8.5f);
      const int qa = a < 0.0f ? 0 : a > 15.0f ? 15 : int(a);
      const int qb = b < 0.0f ? 0 : b > 15.0f ? 15 : int(b);
      qs[i] = uint8_t(qa | (qb << 4));
    }
  } else if (kind == Kind::int4_asym) {
    float vmin = x[0], vmax = x[0];
    for (int i = 1; i < g; ++i) vmin = std::min(vmin, x[i]), vmax = std::max(vmax, x[i]);
    const float d = (vmax - vmin) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = fp32_to_fp16(d), mh = fp32_to_fp16(vmin);
    std::memcpy(out, &dh, 2);
    std::memcpy(out + 2, &mh, 2);
    uint8_t* qs = out + 4;
    const int h = g / 2;
    for (int i = 0; i < h; ++i) {
      const float a = std::trunc((x[i] - vmin) * id + 0.5f), b = std::trunc((x[i + h] - vmin) * id + 0.5f);
      const int qa = a < 0.0f ? 0 : a > 15.0f ? 15 : int(a);
      const int qb = b < 0.0f ? 0 : b > 15.0f ? 15 : int(b);
      qs[i] = uint8_t(qa | (qb << 4));
    }
  } else {
    float amax = 0.0f;
    for (int i = 0; i < g; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t dh = fp32_to_fp16(d);
    std::memcpy(out, &dh, 2);
    int8_t* qs = reinterpret_cast<int8_t*>(out + 2);
    for (int i = 0; i < g; ++i) {
      const float r = std::round(x[i] * id);  // half away from zero, as ggml's roundf
      qs[i] = int8_t(r < -127.0f ? -127 : r > 127.0f ? 127 : int(r));
    }
  }
}

void dequantize_block(Kind kind, int g, const uint8_t* in, float* y) {
  if (is_k_quant(kind)) return dequantize_super_block(kind, in, y);
  const float d = fp16_to_fp32(load_u16(in));
  if (is_int5(kind)) {
    int q[32];
    q5_levels(in, kind, q);
    const float m = kind == Kind::int5_asym ? fp16_to_fp32(load_u16(in + 2)) : 0.0f;
    for (int i = 0; i < 32; ++i) y[i] = kind == Kind::int5_sym ? float(q[i] - 16) * d : d * float(q[i]) + m;
  } else if (kind == Kind::int4_sym) {
    const uint8_t* qs = in + 2;
    for (int i = 0; i < g / 2; ++i) {
      y[i] = float(int(qs[i] & 0x0F) - 8) * d;
      y[i + g / 2] = float(int(qs[i] >> 4) - 8) * d;
    }
  } else if (kind == Kind::int4_asym) {
    const float m = fp16_to_fp32(load_u16(in + 2));
    const uint8_t* qs = in + 4;
    for (int i = 0; i < g / 2; ++i) {
      y[i] = d * float(qs[i] & 0x0F) + m;
      y[i + g / 2] = d * float(qs[i] >> 4) + m;
    }
  } else {
    const int8_t* qs = reinterpret_cast<const int8_t*>(in + 2);
    for (int i = 0; i < g; ++i) y[i] = float(qs[i]) * d;
  }
}

int resolve_threads(int threads) { return threads <= 0 ? num_threads() : threads; }

}  // namespace

void q5_store_levels(Kind kind, const int* q, uint8_t* block) {
  uint8_t* qh = block + (kind == Kind::int5_asym ? 4 : 2);
  uint32_t h = 0;
  for (int i = 0; i < 32; ++i) h |= uint32_t(q[i] >> 4 & 1) << i;
  for (int i = 0; i < 4; ++i) qh[i] = uint8_t(h >> (8 * i));  // little-endian, whatever the host
  for (int i = 0; i < 16; ++i) qh[4 + i] = uint8_t((q[i] & 0x0F) | ((q[i + 16] & 0x0F) << 4));
}

void q5_levels(const uint8_t* block, Kind kind, int* q) {
  const uint8_t* qh = block + (kind == Kind::int5_asym ? 4 : 2);
  const uint8_t* qs = qh + 4;
  const uint32_t h = uint32_t(qh[0]) | uint32_t(qh[1]) << 8 | uint32_t(qh[2]) << 16 | uint32_t(qh[3]) << 24;
  for (int i = 0; i < 16; ++i) {
    q[i] = (qs[i] & 0x0F) | int((h >> i) & 1u) << 4;
    q[i + 16] = (qs[i] >> 4) | int((h >> (i + 16)) & 1u) << 4;
  }
}

uint16_t fp32_to_fp16(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) return uint16_t(sign | 0x7C00u | (ax > 0x7F800000u ? 0x0200u : 0u));  // inf, NaN
  if (ax >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // >= 65520 rounds to infinity
  if (ax < 0x38800000u) {
    // Below 2^-14: a subnormal half. x * 2^24 is exact; nearbyint rounds half to even (default mode).
    const float m = std::nearbyint(bits_float(ax) * 16777216.0f);
    return uint16_t(sign | uint16_t(m));  // m == 1024 becomes the smallest normal, as it should
  }
  uint32_t r = ax - 0x38000000u;                 // rebias exponent 127 -> 15
  r = (r + 0x0FFFu + ((r >> 13) & 1u)) >> 13;    // round 23 -> 10 mantissa bits, ties to even
  return uint16_t(sign | r);
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0) {
    const float v = float(mant) * 5.9604644775390625e-8f;  // mant * 2^-24, exact
    return bits_float(float_bits(v) | sign);
  }
  if (exp == 31) return bits_float(sign | 0x7F800000u | (mant << 13));
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

const std::vector<FormatInfo>& formats() { return registry(); }

const FormatInfo& format_info(Format f) {
  const int i = static_cast<int>(f);
  if (i < 0 || i >= kFormatCount) throw InvalidArgument(cat("invalid quantization format id ", i));
  return registry()[size_t(i)];
}

Format parse_format(const std::string& name) {
  std::string known;
  for (const FormatInfo& fi : registry()) {
    if (name == fi.name) return fi.format;
    known += std::string(known.empty() ? "" : ", ") + fi.name;
  }
  throw InvalidArgument(cat("unknown quantization format '", name, "': expected one of ", known));
}

void check_k(Format f, int64_t k) {
  const FormatInfo& fi = format_info(f);
  if (k <= 0 || k % fi.group != 0)
    throw InvalidArgument(cat("K = ", k, " must be a positive multiple of the ", fi.name, " group size ", fi.group));
}

int64_t row_bytes(Format f, int64_t k) {
  check_k(f, k);
  const FormatInfo& fi = format_info(f);
  return k / fi.group * fi.block_bytes;
}

void quantize_rows(Format f, const float* x, int64_t rows, int64_t k, uint8_t* out, int threads) {
  const FormatInfo& fi = format_info(f);
  const int64_t rb = row_bytes(f, k);
  if (rows < 0) throw InvalidArgument(cat("rows = ", rows, " must be >= 0"));
  for (int64_t i = 0; i < rows * k; ++i)
    if (!std::isfinite(x[i]))
      throw InvalidArgument(cat("cannot quantize a non-finite value (", x[i], ") at row ", i / k, ", column ", i % k));
  ThreadPool::global().run(rows, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t blk = 0; blk < k / fi.group; ++blk)
        quantize_block(fi.kind, fi.group, x + r * k + blk * fi.group, out + r * rb + blk * fi.block_bytes);
  }, resolve_threads(threads));
}

void dequantize_rows(Format f, const uint8_t* in, int64_t rows, int64_t k, float* out, int threads) {
  const FormatInfo& fi = format_info(f);
  const int64_t rb = row_bytes(f, k);
  if (rows < 0) throw InvalidArgument(cat("rows = ", rows, " must be >= 0"));
  ThreadPool::global().run(rows, [&](int64_t b, int64_t e, int) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t blk = 0; blk < k / fi.group; ++blk)
        dequantize_block(fi.kind, fi.group, in + r * rb + blk * fi.block_bytes, out + r * k + blk * fi.group);
  }, resolve_threads(threads));
}

}  // namespace bluelm::quant

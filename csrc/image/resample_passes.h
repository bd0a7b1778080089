// The two passes of the Pillow-exact bicubic resampler, compiled once per instruction set: resample.cpp
// includes this file with BLUELM_PASS_NS=baseline, resample_avx2.cpp with BLUELM_PASS_NS=avx2 (and AVX2 flags,
// which lets the compiler vectorize the 32-bit multiply-adds). The arithmetic is integer and identical in both.
// No standard-library templates are used here, so no AVX2 copy of a shared inline function can leak into the
// baseline build.
#include <cstdint>

#ifndef BLUELM_PASS_NS
#error "define BLUELM_PASS_NS before including resample_passes.h"
#endif

namespace bluelm::image::BLUELM_PASS_NS {

constexpr int kPrecisionBits = 32 - 8 - 2;

static inline uint8_t clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return uint8_t(v >> kPrecisionBits);
}

// Rows [r0, r1) of `out` ([rows, dst_w, 3]) from source rows r + row0 ([.., src_w, 3]).
void horizontal_rows(const uint8_t* src, int64_t src_stride, int64_t row0, int64_t r0, int64_t r1, uint8_t* out,
                     int64_t out_stride, int64_t dst_w, const int32_t* kk, const int* first, const int* count,
                     int ksize) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* in = src + (r + row0) * src_stride;
    uint8_t* o = out + r * out_stride;
    for (int64_t xx = 0; xx < dst_w; ++xx) {
      const int32_t* k = kk + xx * ksize;
      const uint8_t* p = in + int64_t(first[xx]) * 3;
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      const int n = count[xx];
      for (int x = 0; x < n; ++x) {
        s0 += int32_t(p[3 * x + 0]) * k[x];
        s1 += int32_t(p[3 * x + 1]) * k[x];
        s2 += int32_t(p[3 * x + 2]) * k[x];
      }
      o[3 * xx + 0] = clip8(s0);
      o[3 * xx + 1] = clip8(s1);
      o[3 * xx + 2] = clip8(s2);
    }
  }
}

// Output rows [y0, y1) of `dst` from rows first[yy] + offset ... of `mid`; acc is scratch of width3 int32.
void vertical_rows(const uint8_t* mid, int64_t mid_stride, int64_t offset, int64_t y0, int64_t y1, int64_t width3,
                   uint8_t* dst, int64_t dst_stride, const int32_t* kk, const int* first, const int* count, int ksize,
                   int32_t* acc) {
  for (int64_t yy = y0; yy < y1; ++yy) {
    const int32_t* k = kk + yy * ksize;
    const int64_t row0 = first[yy] + offset;
    for (int64_t i = 0; i < width3; ++i) acc[i] = 1 << (kPrecisionBits - 1);
    const int n = count[yy];
    for (int y = 0; y < n; ++y) {
      const uint8_t* row = mid + (row0 + y) * mid_stride;
      const int32_t ky = k[y];
      for (int64_t i = 0; i < width3; ++i) acc[i] += int32_t(row[i]) * ky;
    }
    uint8_t* o = dst + yy * dst_stride;
    for (int64_t i = 0; i < width3; ++i) o[i] = clip8(acc[i]);
  }
}

}  // namespace bluelm::image::BLUELM_PASS_NS

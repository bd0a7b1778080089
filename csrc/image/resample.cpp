// Bicubic resampling with Pillow's arithmetic, so that tiles match what the PIL-based training and evaluation
// pipelines (LLaVA-NeXT, InternVL, SigLIP's image processor) feed the ViT, bit for bit.
//
// The algorithm: for each output coordinate, a window of input pixels around center = (i + 0.5) * scale gets
// weights from the bicubic kernel (a = -0.5), stretched by the scale when shrinking (antialiasing); weights are
// normalized in double, then rounded to 22-bit fixed point. The horizontal pass runs first over the rows the
// vertical pass needs, with results rounded and clamped to uint8, then the vertical pass.
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/isa.h"
#include "common/parallel.h"
#include "image/image.h"

#define BLUELM_PASS_NS baseline
#include "image/resample_passes.h"
#undef BLUELM_PASS_NS

namespace bluelm::image::avx2 {
void horizontal_rows(const uint8_t* src, int64_t src_stride, int64_t row0, int64_t r0, int64_t r1, uint8_t* out,
                     int64_t out_stride, int64_t dst_w, const int32_t* kk, const int* first, const int* count,
                     int ksize);
void vertical_rows(const uint8_t* mid, int64_t mid_stride, int64_t offset, int64_t y0, int64_t y1, int64_t width3,
                   uint8_t* dst, int64_t dst_stride, const int32_t* kk, const int* first, const int* count, int ksize,
                   int32_t* acc);
}  // namespace bluelm::image::avx2

namespace bluelm::image {

namespace {

using baseline::kPrecisionBits;

double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Coeffs {
  int ksize = 0;
  std::vector<int> first;   // [out] first input index
  std::vector<int> count;   // [out] taps used
  std::vector<int32_t> k;   // [out, ksize] fixed-point weights
};

Coeffs precompute(int64_t in_size, int64_t out_size) {
  const double scale = double(in_size) / double(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;
  Coeffs c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.first.resize(size_t(out_size));
  c.count.resize(size_t(out_size));
  c.k.assign(size_t(out_size) * size_t(c.ksize), 0);
  std::vector<double> w(size_t(c.ksize));
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (double(xx) + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int64_t xmin = int64_t(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = int64_t(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double total = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      const double v = bicubic((double(x + xmin) - center + 0.5) * ss);
      w[size_t(x)] = v;
      total += v;
    }
    int32_t* k = &c.k[size_t(xx) * size_t(c.ksize)];
    for (int64_t x = 0; x < xmax; ++x) {
      const double v = total != 0.0 ? w[size_t(x)] / total : w[size_t(x)];
      const double f = v * double(1 << kPrecisionBits);
      k[x] = int32_t(v < 0 ? -0.5 + f : 0.5 + f);
    }
    c.first[size_t(xx)] = int(xmin);
    c.count[size_t(xx)] = int(xmax);
  }
  return c;
}

struct Passes {
  decltype(&baseline::horizontal_rows) horizontal;
  decltype(&baseline::vertical_rows) vertical;
};

Passes passes() {
#if defined(__x86_64__)
  if (active_isa() == Isa::avx2 || active_isa() == Isa::avx512) return {avx2::horizontal_rows, avx2::vertical_rows};
#endif
  return {baseline::horizontal_rows, baseline::vertical_rows};
}

}  // namespace

void resize_bicubic(const uint8_t* src, int64_t src_w, int64_t src_h, int64_t src_stride, uint8_t* dst, int64_t dst_w,
                    int64_t dst_h, int64_t dst_stride, int threads) {
  if (src_w < 1 || src_h < 1 || dst_w < 1 || dst_h < 1)
    throw InvalidArgument(cat("resize from ", src_w, "x", src_h, " to ", dst_w, "x", dst_h, ": sizes must be >= 1"));
  if (src_stride < src_w * 3 || dst_stride < dst_w * 3) throw InvalidArgument("resize: row stride smaller than the row");
  const bool need_h = dst_w != src_w;
  const bool need_v = dst_h != src_h;
  if (!need_h && !need_v) {
    for (int64_t y = 0; y < src_h; ++y)
      std::copy(src + y * src_stride, src + y * src_stride + src_w * 3, dst + y * dst_stride);
    return;
  }
  const Passes impl = passes();
  const Coeffs cv = precompute(src_h, dst_h);
  // Rows of the source the vertical pass reads.
  const int64_t y_first = cv.first.front();
  const int64_t y_last = int64_t(cv.first.back()) + cv.count.back();

  std::vector<uint8_t> temp;
  const uint8_t* mid = src;
  int64_t mid_stride = src_stride;
  int64_t mid_offset = 0;  // row index in `mid` of source row y_first
  if (need_h) {
    const Coeffs ch = precompute(src_w, dst_w);
    const int64_t rows = y_last - y_first;
    temp.resize(size_t(rows) * size_t(dst_w) * 3);
    uint8_t* out = need_v ? temp.data() : dst;
    const int64_t out_stride = need_v ? dst_w * 3 : dst_stride;
    parallel_for(rows, threads, [&](int64_t r0, int64_t r1) {
      impl.horizontal(src, src_stride, y_first, r0, r1, out, out_stride, dst_w, ch.k.data(), ch.first.data(),
                      ch.count.data(), ch.ksize);
    });
    if (!need_v) return;
    mid = temp.data();
    mid_stride = dst_w * 3;
    mid_offset = -y_first;
  }
  const int64_t width3 = (need_h ? dst_w : src_w) * 3;
  parallel_for(dst_h, threads, [&](int64_t y0, int64_t y1) {
    std::vector<int32_t> acc(static_cast<size_t>(width3));
    impl.vertical(mid, mid_stride, mid_offset, y0, y1, width3, dst, dst_stride, cv.k.data(), cv.first.data(),
                  cv.count.data(), cv.ksize, acc.data());
  });
}

}  // namespace bluelm::image

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
#include "common/parallel.h"
#include "image/image.h"

namespace bluelm::image {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

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

inline uint8_t clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return uint8_t(v >> kPrecisionBits);
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
      for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* in = src + (r + y_first) * src_stride;
        uint8_t* o = out + r * out_stride;
        for (int64_t xx = 0; xx < dst_w; ++xx) {
          const int32_t* k = &ch.k[size_t(xx) * size_t(ch.ksize)];
          const uint8_t* p = in + int64_t(ch.first[size_t(xx)]) * 3;
          int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
          for (int x = 0; x < ch.count[size_t(xx)]; ++x) {
            s0 += int32_t(p[3 * x + 0]) * k[x];
            s1 += int32_t(p[3 * x + 1]) * k[x];
            s2 += int32_t(p[3 * x + 2]) * k[x];
          }
          o[3 * xx + 0] = clip8(s0);
          o[3 * xx + 1] = clip8(s1);
          o[3 * xx + 2] = clip8(s2);
        }
      }
    });
    if (!need_v) return;
    mid = temp.data();
    mid_stride = dst_w * 3;
    mid_offset = -y_first;
  }
  const int64_t width3 = (need_h ? dst_w : src_w) * 3;
  parallel_for(dst_h, threads, [&](int64_t y0, int64_t y1) {
    std::vector<int32_t> acc(static_cast<size_t>(width3));
    for (int64_t yy = y0; yy < y1; ++yy) {
      const int32_t* k = &cv.k[size_t(yy) * size_t(cv.ksize)];
      const int64_t first = cv.first[size_t(yy)] + mid_offset;
      std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
      for (int y = 0; y < cv.count[size_t(yy)]; ++y) {
        const uint8_t* row = mid + (first + y) * mid_stride;
        const int32_t ky = k[y];
        for (int64_t i = 0; i < width3; ++i) acc[size_t(i)] += int32_t(row[i]) * ky;
      }
      uint8_t* o = dst + yy * dst_stride;
      for (int64_t i = 0; i < width3; ++i) o[i] = clip8(acc[size_t(i)]);
    }
  });
}

}  // namespace bluelm::image

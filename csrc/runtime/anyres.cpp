#include "runtime/anyres.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/error.h"

namespace bluelm::runtime {

namespace {
// Python's int(round(x, 7)) for the non-negative sizes here: round to 7 decimals, then truncate.
int64_t round7_trunc(double x) { return int64_t(std::nearbyint(x * 1e7) / 1e7); }

void check_sizes(int64_t m, int64_t n, int64_t side, int64_t h, int64_t w, int64_t max_tiles) {
  if (m < 1 || n < 1 || side < 1 || h < 1 || w < 1 || max_tiles < 1)
    throw InvalidArgument(cat("anyres layout: grid ", m, "x", n, ", side ", side, ", image ", w, "x", h,
                              " and max_tiles ", max_tiles, " must all be positive"));
}
}  // namespace

AnyresShape anyres_shape(int64_t m, int64_t n, int64_t side, int64_t h, int64_t w, int64_t max_tiles) {
  check_sizes(m, n, side, h, w, max_tiles);
  int64_t rows = n * side, cols = m * side;
  // un-padding (unpadded_size): the canvas padded above and below when the image is wider than the grid
  if (double(w) / double(h) > double(cols) / double(rows)) {
    const int64_t kept = round7_trunc(double(h) * (double(cols) / double(w)));
    rows -= 2 * std::max<int64_t>(0, (rows - kept) / 2);
  } else {
    const int64_t kept = round7_trunc(double(w) * (double(rows) / double(h)));
    cols -= 2 * std::max<int64_t>(0, (cols - kept) / 2);
  }
  const double ratio = std::sqrt(double(rows) * double(cols) / (double(max_tiles) * double(side) * double(side)));
  if (ratio > 1.1) {  // Python's floor division of an int by a float
    rows = int64_t(std::floor(double(rows) / ratio));
    cols = int64_t(std::floor(double(cols) / ratio));
  }
  return {std::max<int64_t>(rows, 1), std::max<int64_t>(cols, 1)};
}

int64_t anyres_tokens(int64_t patches, int64_t m, int64_t n, int64_t side, int64_t h, int64_t w, int64_t max_tiles) {
  if (patches == 1) return side * side + 1;
  const AnyresShape s = anyres_shape(m, n, side, h, w, max_tiles);
  return side * side + s.rows * (s.cols + 1);
}

void pack_anyres(const float* features, int64_t patches, int64_t m, int64_t n, int64_t side, int64_t d, int64_t h,
                 int64_t w, int64_t max_tiles, const float* newline, float* out) {
  const int64_t tile_rows = side * side;
  std::memcpy(out, features, size_t(tile_rows * d) * sizeof(float));  // the base image
  out += tile_rows * d;
  if (patches == 1) {
    std::memcpy(out, newline, size_t(d) * sizeof(float));
    return;
  }
  check_sizes(m, n, side, h, w, max_tiles);
  if (patches != 1 + m * n)
    throw InvalidArgument(cat("anyres layout expects 1 + ", m, "x", n, " tiles, got ", patches));
  // the stitched map's (y, x) feature: tile (y / side, x / side), patch (y % side, x % side)
  const int64_t full_rows = n * side, full_cols = m * side;
  auto at = [&](int64_t y, int64_t x) {
    const int64_t tile = 1 + (y / side) * m + (x / side);
    return features + (tile * tile_rows + (y % side) * side + (x % side)) * d;
  };
  const AnyresShape un = [&] {  // un-padded, before any shrinking
    AnyresShape s = anyres_shape(m, n, side, h, w, int64_t(1) << 40);
    return s;
  }();
  const int64_t top = (full_rows - un.rows) / 2, left = (full_cols - un.cols) / 2;
  const AnyresShape fin = anyres_shape(m, n, side, h, w, max_tiles);
  if (fin.rows == un.rows && fin.cols == un.cols) {
    for (int64_t y = 0; y < fin.rows; ++y) {
      for (int64_t x = 0; x < fin.cols; ++x, out += d) std::memcpy(out, at(top + y, left + x), size_t(d) * sizeof(float));
      std::memcpy(out, newline, size_t(d) * sizeof(float));
      out += d;
    }
    return;
  }
  // bilinear, align_corners false: source = (dst + 0.5) * in / out - 0.5, clamped at 0
  auto source = [](int64_t dst, int64_t in, int64_t outn, int64_t& i0, int64_t& i1, float& frac) {
    const float scale = float(in) / float(outn);
    float s = std::max(0.0f, (float(dst) + 0.5f) * scale - 0.5f);
    i0 = std::min<int64_t>(int64_t(s), in - 1);
    i1 = std::min<int64_t>(i0 + 1, in - 1);
    frac = s - float(i0);
  };
  for (int64_t y = 0; y < fin.rows; ++y) {
    int64_t y0, y1;
    float fy;
    source(y, un.rows, fin.rows, y0, y1, fy);
    for (int64_t x = 0; x < fin.cols; ++x, out += d) {
      int64_t x0, x1;
      float fx;
      source(x, un.cols, fin.cols, x0, x1, fx);
      const float* a = at(top + y0, left + x0);
      const float* b = at(top + y0, left + x1);
      const float* c = at(top + y1, left + x0);
      const float* e = at(top + y1, left + x1);
      for (int64_t k = 0; k < d; ++k)
        out[k] = (1.0f - fy) * ((1.0f - fx) * a[k] + fx * b[k]) + fy * ((1.0f - fx) * c[k] + fx * e[k]);
    }
    std::memcpy(out, newline, size_t(d) * sizeof(float));
    out += d;
  }
}

}  // namespace bluelm::runtime

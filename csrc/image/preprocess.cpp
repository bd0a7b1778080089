#include <algorithm>
#include <array>

#include "common/error.h"
#include "common/parallel.h"
#include "image/image.h"

namespace bluelm::image {

namespace {

// Largest canvas we will allocate (4x4 at 384 is 2.4 MP; custom grids may go further, not without bound).
constexpr int64_t kMaxCanvasPixels = int64_t(1) << 28;

struct Lut {
  std::array<std::array<float, 256>, 3> v;
  explicit Lut(const Normalize& n) {
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < 256; ++i) v[size_t(c)][size_t(i)] = (float(i) / 255.0f - n.mean[c]) / n.std[c];
  }
};

// One tile of `tile` x `tile` RGB pixels at (x0, y0) of `img` -> [3, tile, tile] floats.
void write_tile(const uint8_t* img, int64_t stride, int64_t x0, int64_t y0, int tile, const Lut& lut, float* out) {
  const size_t plane = size_t(tile) * size_t(tile);
  for (int y = 0; y < tile; ++y) {
    const uint8_t* row = img + (y0 + y) * stride + x0 * 3;
    float* r = out + size_t(y) * size_t(tile);
    float* g = r + plane;
    float* b = g + plane;
    for (int x = 0; x < tile; ++x) {
      r[x] = lut.v[0][row[3 * x + 0]];
      g[x] = lut.v[1][row[3 * x + 1]];
      b[x] = lut.v[2][row[3 * x + 2]];
    }
  }
}

}  // namespace

TileSource prepare_tiles(const uint8_t* rgb, int64_t width, int64_t height, int64_t stride, const dynres::Plan& plan,
                         int tile, int threads) {
  if (width < 1 || height < 1) throw InvalidArgument(cat("image size ", width, "x", height, " must be >= 1"));
  if (plan.canvas_w != int64_t(tile) * plan.grid.m || plan.canvas_h != int64_t(tile) * plan.grid.n)
    throw InvalidArgument("tile_image: plan does not match the tile size");
  if (plan.canvas_w * plan.canvas_h > kMaxCanvasPixels)
    throw LimitError(cat("canvas ", plan.canvas_w, "x", plan.canvas_h, " exceeds ", kMaxCanvasPixels, " pixels"));
  TileSource src;
  src.plan = plan;
  src.tile = tile;
  // Canvas: black, with the resized content at its offset (fit_pad) or filling it (stretch).
  const int64_t cstride = plan.canvas_w * 3;
  src.canvas.assign(size_t(plan.canvas_h) * size_t(cstride), 0);
  resize_bicubic(rgb, width, height, stride, src.canvas.data() + plan.offset_y * cstride + plan.offset_x * 3,
                 plan.content_w, plan.content_h, cstride, threads);
  if (plan.patches > plan.local_patches) {
    src.thumb.resize(size_t(tile) * size_t(tile) * 3);
    resize_bicubic(rgb, width, height, stride, src.thumb.data(), tile, tile, int64_t(tile) * 3, threads);
  }
  return src;
}

namespace {
void extract_with(const TileSource& src, int64_t index, const Lut& lut, float* out) {
  const dynres::Plan& plan = src.plan;
  if (index < 0 || index >= plan.patches) throw InvalidArgument(cat("tile index ", index, " outside [0, ", plan.patches, ")"));
  const bool thumb = plan.patches > plan.local_patches;
  const int64_t thumb_slot = plan.thumbnail_first ? 0 : plan.local_patches;
  if (thumb && index == thumb_slot) {
    write_tile(src.thumb.data(), int64_t(src.tile) * 3, 0, 0, src.tile, lut, out);
    return;
  }
  const int64_t i = index - (thumb && plan.thumbnail_first ? 1 : 0);
  const int64_t ty = i / plan.grid.m, tx = i % plan.grid.m;
  write_tile(src.canvas.data(), plan.canvas_w * 3, tx * src.tile, ty * src.tile, src.tile, lut, out);
}

Lut make_lut(const Normalize& norm) {
  for (int c = 0; c < 3; ++c)
    if (!(norm.std[c] != 0.0f)) throw InvalidArgument("normalization std must be non-zero");
  return Lut(norm);
}
}  // namespace

void extract_tile(const TileSource& src, int64_t index, const Normalize& norm, float* out) {
  extract_with(src, index, make_lut(norm), out);
}

void tile_image(const uint8_t* rgb, int64_t width, int64_t height, int64_t stride, const dynres::Plan& plan, int tile,
                const Normalize& norm, float* out, int threads) {
  const Lut lut = make_lut(norm);
  const TileSource src = prepare_tiles(rgb, width, height, stride, plan, tile, threads);
  const size_t tile_floats = size_t(3) * size_t(tile) * size_t(tile);
  parallel_for(plan.patches, threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) extract_with(src, i, lut, out + size_t(i) * tile_floats);
  });
}

dynres::Plan preprocess(const uint8_t* rgb, int64_t width, int64_t height, int64_t stride, const dynres::Params& params,
                        const Normalize& norm, std::vector<float>& out, int threads) {
  const dynres::Plan plan = dynres::plan(width, height, params);
  out.resize(size_t(plan.patches) * 3 * size_t(params.tile) * size_t(params.tile));
  tile_image(rgb, width, height, stride, plan, params.tile, norm, out.data(), threads);
  return plan;
}

}  // namespace bluelm::image

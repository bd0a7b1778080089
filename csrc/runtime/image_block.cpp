#include "runtime/image_block.h"

#include "common/error.h"

namespace bluelm::runtime {

std::vector<int32_t> expand_image_block(const model::ImageBlock& b, model::ImageLayout layout, const ImageTiles& t,
                                        int64_t per_tile, int32_t image_id) {
  std::vector<int32_t> ids(b.open);
  auto add = [&ids](const std::vector<int32_t>& v) { ids.insert(ids.end(), v.begin(), v.end()); };
  auto run = [&ids, image_id](int64_t count) { ids.insert(ids.end(), size_t(count), image_id); };
  const int64_t local = t.patches - t.global;
  if (layout != model::ImageLayout::tiles || !b.per_tile()) {
    // One stretch of positions: the layout's rows (anyres), or every tile in order with nothing between
    if (layout == model::ImageLayout::tiles && t.global && local >= 1) {
      run(local * per_tile);
      add(b.global_open);
      run(per_tile);
      add(b.global_close);
    } else if (layout == model::ImageLayout::tiles && !t.global && local == 1) {
      add(b.global_open);  // the image's only tile
      run(t.positions);
      add(b.global_close);
    } else {
      run(t.positions);
    }
    add(b.close);
    return ids;
  }
  if (local < 1 || t.global < 0 || t.global > 1)
    throw InvalidArgument(cat("image of ", t.patches, " tiles: its global tile is unknown; the package's image block "
                              "places markers per tile (give the grid and the global tile)"));
  if (local == 1 && !t.global) {  // not split: the only tile is the whole image
    add(b.global_open);
    run(per_tile);
    add(b.global_close);
    add(b.close);
    return ids;
  }
  if (t.m * t.n != local)
    throw InvalidArgument(cat("image of ", local, " local tiles given with a ", t.m, "x", t.n,
                              " grid; the package's image block places markers per tile (give the grid)"));
  if (!b.tile_markers.empty() && (t.n > b.marker_rows || t.m > b.marker_cols))
    throw InvalidArgument(cat("the tiling gives ", t.n, " rows x ", t.m, " columns of tiles; the package's image "
                              "block has markers for up to ", b.marker_rows, " x ", b.marker_cols,
                              " (choose a smaller --grid)"));
  for (int64_t r = 0; r < t.n; ++r) {
    for (int64_t c = 0; c < t.m; ++c) {
      if (!b.tile_markers.empty()) add(b.tile_markers[size_t(r * b.marker_cols + c)]);
      run(per_tile);
    }
    add(r + 1 == t.n && t.global && !b.last_row_end.empty() ? b.last_row_end : b.row_end);
  }
  if (t.global) {
    add(b.global_open);
    run(per_tile);
    add(b.global_close);
  }
  add(b.close);
  return ids;
}

}  // namespace bluelm::runtime

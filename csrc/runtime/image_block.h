#pragma once
// One image's place in the prompt: the package's image block (model/config.h ImageBlock) expanded from the image's
// actual tiles, image positions as Session::kImageTokenId. The engine never hears a family's name: InternVL's
// <img> ... </img>, Idefics3's row/column tokens and global image, LLaVA-OneVision's bare run are all this data.
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace bluelm::runtime {

// What the tiler (or the caller of submit_tiles) made of one image.
struct ImageTiles {
  int64_t patches = 1;        // tiles encoded
  int64_t m = 1, n = 1;       // local grid, tiles across and down
  int64_t global = 0;         // 1: a whole-image tile beside the m*n local ones (patches == m*n + 1)
  int64_t positions = 0;      // image positions the layout gives (tiles: patches * tokens per tile)
};

// The block's ids for one image; `positions` image positions in all, per_tile of them per tile in the tiles layout.
// Throws InvalidArgument when the grid does not fit the block (more rows or columns than its markers, or a
// per-tile block without a known grid).
std::vector<int32_t> expand_image_block(const model::ImageBlock& block, model::ImageLayout layout,
                                        const ImageTiles& tiles, int64_t per_tile, int32_t image_id);

}  // namespace bluelm::runtime

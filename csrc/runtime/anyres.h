#pragma once
// LLaVA-OneVision's image layout ("anyres" with un-padding; bluelm_v/models/anyres.py is the reference): the local
// tiles' feature maps stitched into one map, the rows or columns the fit-and-pad canvas added cut off, the map
// shrunk bilinearly (torch's interpolate, align_corners false) when it holds more than max_tiles tiles' worth, and
// a learned newline embedding after every row; the base image's features come first, as they are.
#include <cstdint>

namespace bluelm::runtime {

struct AnyresShape {
  int64_t rows = 0, cols = 0;  // of the final map, before the newlines
};

// The map's shape for a grid of m tiles across and n down, each side x side features, of an image h x w.
// Throws InvalidArgument on non-positive sizes.
AnyresShape anyres_shape(int64_t m, int64_t n, int64_t side, int64_t h, int64_t w, int64_t max_tiles);
// Embedding rows of one image of `patches` tiles (1: the base alone, then one newline; else 1 + m * n).
int64_t anyres_tokens(int64_t patches, int64_t m, int64_t n, int64_t side, int64_t h, int64_t w, int64_t max_tiles);
// features [patches, side*side, d] (base first, then the m*n tiles row-major); newline [d] ->
// out [anyres_tokens(...), d]. Throws InvalidArgument when patches is neither 1 nor 1 + m*n.
void pack_anyres(const float* features, int64_t patches, int64_t m, int64_t n, int64_t side, int64_t d, int64_t h,
                 int64_t w, int64_t max_tiles, const float* newline, float* out);

}  // namespace bluelm::runtime

#pragma once
// Images for the vision tower: decode (JPEG/PNG/WebP bytes, base64), PIL-compatible bicubic resize, and the
// dynamic-resolution tiling into normalized [patches, 3, tile, tile] float32 arrays.
//
// Nothing here trusts the input: the container structure is walked with bounds checks before the decoder sees
// it (a truncated or corrupt file is refused with FormatError, an oversized one with LimitError before any
// pixel buffer is allocated).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dynres/dynres.h"

namespace bluelm::image {

// Default pixel limit: Pillow's decompression-bomb error threshold (2 x 89478485).
constexpr int64_t kDefaultMaxPixels = 178956970;
constexpr int64_t kDefaultMaxBytes = int64_t(512) << 20;

struct Limits {
  int64_t max_pixels = kDefaultMaxPixels;
  int64_t max_bytes = kDefaultMaxBytes;
};

enum class Format { png, jpeg, webp };
const char* format_name(Format f);

struct ImageInfo {
  Format format;
  int64_t width = 0;
  int64_t height = 0;
};

// Interleaved RGB, 8 bits per channel, rows packed: data.size() == width * height * 3.
struct Image {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> data;
};

// Reads the format and size from the header and checks that the container is whole (PNG chunks up to IEND,
// JPEG segments and scans up to EOI, RIFF size for WebP). Throws FormatError naming what is wrong.
ImageInfo probe(const uint8_t* bytes, size_t n);

// Standard base64 (RFC 4648), padding optional, ASCII whitespace ignored, an optional "data:...;base64,"
// prefix accepted. Throws FormatError naming the offending offset.
std::vector<uint8_t> base64_decode(const char* text, size_t n);
std::string base64_encode(const uint8_t* bytes, size_t n);

// Decodes to RGB. EXIF orientation is ignored and alpha dropped, as PIL's Image.open(...).convert("RGB") does.
Image decode(const uint8_t* bytes, size_t n, const Limits& limits = {});

// PIL-compatible bicubic resampling (Image.resize(size, BICUBIC): a = -0.5, antialiased when shrinking, 22-bit
// fixed-point coefficients, horizontal pass then vertical, uint8 between passes). Bit-exact with Pillow.
// src: [src_h, src_w, 3] with row stride src_stride bytes; dst: [dst_h, dst_w, 3] with row stride dst_stride.
void resize_bicubic(const uint8_t* src, int64_t src_w, int64_t src_h, int64_t src_stride, uint8_t* dst, int64_t dst_w,
                    int64_t dst_h, int64_t dst_stride, int threads = 1);

struct Normalize {
  float mean[3] = {0.5f, 0.5f, 0.5f};  // SigLIP: (x / 255 - 0.5) / 0.5
  float std[3] = {0.5f, 0.5f, 0.5f};
};

// Tiles of one image: out must hold plan.patches * 3 * tile * tile floats, written [patch][channel][y][x].
// Local tiles are row-major over the canvas; the thumbnail (the whole image squashed to tile x tile) comes first
// when plan.thumbnail_first (LLaVA-NeXT) and last otherwise.
// rgb: [height, width, 3] uint8 with row stride `stride` bytes.
void tile_image(const uint8_t* rgb, int64_t width, int64_t height, int64_t stride, const dynres::Plan& plan,
                int tile, const Normalize& norm, float* out, int threads = 1);

// Tiling in two steps, for pipelines that normalize tile i+1 while tile i is encoded: prepare_tiles resizes the
// image onto the canvas (and makes the thumbnail) once; extract_tile writes tile `index` of tile_image's order as
// [3, tile, tile] floats. tile_image is prepare_tiles followed by every extract_tile.
struct TileSource {
  dynres::Plan plan;
  int tile = 0;
  std::vector<uint8_t> canvas;  // [canvas_h, canvas_w, 3]
  std::vector<uint8_t> thumb;   // [tile, tile, 3] when the plan has a thumbnail
};
TileSource prepare_tiles(const uint8_t* rgb, int64_t width, int64_t height, int64_t stride, const dynres::Plan& plan,
                         int tile, int threads = 1);
void extract_tile(const TileSource& src, int64_t index, const Normalize& norm, float* out /*[3, tile, tile]*/);

// Plans and tiles in one call; returns the plan, fills `out` (resized to the needed size).
dynres::Plan preprocess(const uint8_t* rgb, int64_t width, int64_t height, int64_t stride, const dynres::Params& params,
                        const Normalize& norm, std::vector<float>& out, int threads = 1);

}  // namespace bluelm::image

#include <cstdio>
#include <cstdlib>

#include <jpeglib.h>
#include <png.h>
#include <webp/encode.h>

#include "common/error.h"
#include "common/testing.h"
#include "image/image.h"

using namespace bluelm;
using namespace bluelm::image;

namespace {
// A w x h RGB test pattern encoded with the codec libraries themselves (PNG, JPEG at quality 95, lossless WebP).
std::vector<uint8_t> encode(const std::string& ext, int w, int h) {
  std::vector<uint8_t> rgb(size_t(w) * size_t(h) * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &rgb[(size_t(y) * w + x) * 3];
      p[0] = uint8_t(x + y), p[1] = uint8_t(y * 5), p[2] = uint8_t(x * 7);
    }
  std::vector<uint8_t> out;
  if (ext == ".png") {
    png_image img{};
    img.version = PNG_IMAGE_VERSION;
    img.width = png_uint_32(w);
    img.height = png_uint_32(h);
    img.format = PNG_FORMAT_RGB;
    png_alloc_size_t size = 0;
    png_image_write_to_memory(&img, nullptr, &size, 0, rgb.data(), 0, nullptr);
    out.resize(size);
    if (!png_image_write_to_memory(&img, out.data(), &size, 0, rgb.data(), 0, nullptr)) std::abort();
    out.resize(size);
  } else if (ext == ".jpg") {
    jpeg_compress_struct c;
    jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char* mem = nullptr;
    unsigned long size = 0;
    jpeg_mem_dest(&c, &mem, &size);
    c.image_width = JDIMENSION(w);
    c.image_height = JDIMENSION(h);
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
      JSAMPROW row = &rgb[size_t(c.next_scanline) * w * 3];
      jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    out.assign(mem, mem + size);
    std::free(mem);
  } else {
    uint8_t* mem = nullptr;
    const size_t size = WebPEncodeLosslessRGB(rgb.data(), w, h, w * 3, &mem);
    if (size == 0) std::abort();
    out.assign(mem, mem + size);
    WebPFree(mem);
  }
  return out;
}
}  // namespace

BLUELM_TEST(image_base64_round_trip_and_errors) {
  const std::string text = "hello, tiles";
  const std::string enc = base64_encode(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  CHECK(enc == "aGVsbG8sIHRpbGVz");
  auto dec = base64_decode(enc.data(), enc.size());
  CHECK(std::string(dec.begin(), dec.end()) == text);
  const std::string url = "data:image/png;base64,aGVs\nbG8=";
  dec = base64_decode(url.data(), url.size());
  CHECK(std::string(dec.begin(), dec.end()) == "hello");
  CHECK_THROWS(base64_decode("aGVsb$8=", 8), FormatError);
  CHECK_THROWS(base64_decode("aGVsbG8=x", 9), FormatError);
  CHECK_THROWS(base64_decode("a", 1), FormatError);
}

BLUELM_TEST(image_probe_and_truncation) {
  for (const char* ext : {".png", ".jpg", ".webp"}) {
    auto bytes = encode(ext, 37, 21);
    ImageInfo info = probe(bytes.data(), bytes.size());
    CHECK_EQ(info.width, 37);
    CHECK_EQ(info.height, 21);
    Image img = decode(bytes.data(), bytes.size());
    CHECK_EQ(img.width, 37);
    CHECK_EQ(img.data.size(), size_t(37 * 21 * 3));
    for (size_t cut : {size_t(1), size_t(10), bytes.size() / 2, bytes.size() - 1}) {
      if (cut >= bytes.size()) continue;
      CHECK_THROWS(decode(bytes.data(), cut), FormatError);
    }
    Limits tight;
    tight.max_pixels = 37 * 21 - 1;
    CHECK_THROWS(decode(bytes.data(), bytes.size(), tight), LimitError);
  }
  const uint8_t junk[32] = {1, 2, 3};
  CHECK_THROWS(probe(junk, sizeof junk), FormatError);
  CHECK_THROWS(probe(junk, 0), FormatError);
}

BLUELM_TEST(image_resize_constant_and_identity) {
  std::vector<uint8_t> src(size_t(50 * 30 * 3), 77);
  std::vector<uint8_t> dst(size_t(17 * 91 * 3), 0);
  resize_bicubic(src.data(), 50, 30, 150, dst.data(), 17, 91, 51, 2);
  for (uint8_t v : dst) CHECK_EQ(int(v), 77);
  std::vector<uint8_t> same(src.size());
  resize_bicubic(src.data(), 50, 30, 150, same.data(), 50, 30, 150);
  CHECK(same == src);
}

BLUELM_TEST(image_tiles_count_and_padding) {
  std::vector<uint8_t> rgb(size_t(500 * 102 * 3), 255);
  dynres::Params p = dynres::default_params(dynres::Selection::bluelm);
  std::vector<float> out;
  dynres::Plan plan = preprocess(rgb.data(), 500, 102, 1500, p, Normalize{}, out);
  CHECK_EQ(plan.patches, 3);
  CHECK_EQ(out.size(), size_t(3 * 3 * 384 * 384));
  // Top-left pixel of tile 0 is padding (black -> -1); the thumbnail (last) is all white (+1).
  CHECK_NEAR(out[0], -1.0, 1e-6);
  CHECK_NEAR(out[2 * 3 * 384 * 384], 1.0, 1e-6);
}

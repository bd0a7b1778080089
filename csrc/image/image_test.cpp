#include <opencv2/imgcodecs.hpp>

#include "common/error.h"
#include "common/testing.h"
#include "image/image.h"

using namespace bluelm;
using namespace bluelm::image;

namespace {
std::vector<uint8_t> encode(const std::string& ext, int w, int h) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(uint8_t(x * 7), uint8_t(y * 5), uint8_t(x + y));
  std::vector<uint8_t> out;
  cv::imencode(ext, m, out);
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

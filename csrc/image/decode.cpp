#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common/error.h"
#include "image/image.h"

namespace bluelm::image {

namespace {
Image decode_gray16_png(const uint8_t* bytes, size_t n, const ImageInfo& info) {
  cv::Mat gray;
  try {
    const cv::Mat buf(1, int(n), CV_8UC1, const_cast<uint8_t*>(bytes));
    gray = cv::imdecode(buf, cv::IMREAD_ANYDEPTH | cv::IMREAD_GRAYSCALE);
  } catch (const cv::Exception& e) {
    throw FormatError(cat("corrupt PNG image: ", e.what()));
  }
  if (gray.empty()) throw FormatError("corrupt PNG image: the decoder could not read it");
  if (gray.cols != info.width || gray.rows != info.height || gray.type() != CV_16UC1)
    throw FormatError(cat("corrupt PNG image: header says ", info.width, "x", info.height, " 16-bit gray, decoder gave ",
                          gray.cols, "x", gray.rows, " of type ", gray.type()));
  Image out;
  out.width = gray.cols;
  out.height = gray.rows;
  out.data.resize(size_t(out.width) * size_t(out.height) * 3);
  uint8_t* o = out.data.data();
  for (int y = 0; y < gray.rows; ++y) {
    const uint16_t* row = gray.ptr<uint16_t>(y);
    for (int x = 0; x < gray.cols; ++x, o += 3) o[0] = o[1] = o[2] = uint8_t(row[x] > 255 ? 255 : row[x]);
  }
  return out;
}
}  // namespace

Image decode(const uint8_t* bytes, size_t n, const Limits& limits) {
  if (int64_t(n) > limits.max_bytes)
    throw LimitError(cat("image of ", n, " bytes exceeds max_bytes=", limits.max_bytes));
  const ImageInfo info = probe(bytes, n);
  if (info.width * info.height > limits.max_pixels)
    throw LimitError(cat(format_name(info.format), " image of ", info.width, "x", info.height, " (",
                         info.width * info.height, " pixels) exceeds max_pixels=", limits.max_pixels));
  // 16-bit grayscale PNG (IHDR bit depth 16, colour type 0; the probe checked that the 13-byte IHDR comes first):
  // Pillow opens it as mode I;16 and clips each value to 255 when converting to RGB, where OpenCV's colour read
  // rescales (v >> 8). Read the 16-bit values and clip, so both give the same pixels.
  if (info.format == Format::png && bytes[24] == 16 && bytes[25] == 0) return decode_gray16_png(bytes, n, info);
  cv::Mat bgr;
  try {
    const cv::Mat buf(1, int(n), CV_8UC1, const_cast<uint8_t*>(bytes));
    bgr = cv::imdecode(buf, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    throw FormatError(cat("corrupt ", format_name(info.format), " image: ", e.what()));
  }
  if (bgr.empty()) throw FormatError(cat("corrupt ", format_name(info.format), " image: the decoder could not read it"));
  if (bgr.cols != info.width || bgr.rows != info.height)
    throw FormatError(cat("corrupt ", format_name(info.format), " image: header says ", info.width, "x", info.height,
                          ", decoder gave ", bgr.cols, "x", bgr.rows));
  if (bgr.depth() != CV_8U || bgr.channels() != 3)
    throw FormatError(cat("unsupported ", format_name(info.format), " pixel layout"));
  Image out;
  out.width = bgr.cols;
  out.height = bgr.rows;
  out.data.resize(size_t(out.width) * size_t(out.height) * 3);
  cv::Mat rgb(bgr.rows, bgr.cols, CV_8UC3, out.data.data());
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return out;
}

}  // namespace bluelm::image

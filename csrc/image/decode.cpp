#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "common/error.h"
#include "image/image.h"

namespace bluelm::image {

Image decode(const uint8_t* bytes, size_t n, const Limits& limits) {
  if (int64_t(n) > limits.max_bytes)
    throw LimitError(cat("image of ", n, " bytes exceeds max_bytes=", limits.max_bytes));
  const ImageInfo info = probe(bytes, n);
  if (info.width * info.height > limits.max_pixels)
    throw LimitError(cat(format_name(info.format), " image of ", info.width, "x", info.height, " (",
                         info.width * info.height, " pixels) exceeds max_pixels=", limits.max_pixels));
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

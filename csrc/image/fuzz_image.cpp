// libFuzzer harness for every image reader: the container walkers, the decoder, base64 and tiling.
// Built by `make fuzz` (clang, -fsanitize=fuzzer,address,undefined); any input must end in a result or a
// bluelm exception, never a crash, a leak or undefined behaviour.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "image/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bluelm;
  try {
    image::Limits lim;
    lim.max_pixels = 1 << 22;  // keep each run small
    image::Image img = image::decode(data, size, lim);
    dynres::Params p = dynres::default_params(dynres::Selection::bluelm);
    p.tile = 28;
    p.candidates = dynres::square_grid(2, true);
    std::vector<float> out;
    image::preprocess(img.data.data(), img.width, img.height, img.width * 3, p, image::Normalize{}, out);
  } catch (const std::invalid_argument&) {
  }
  try {
    image::base64_decode(reinterpret_cast<const char*>(data), size);
  } catch (const std::invalid_argument&) {
  }
  return 0;
}

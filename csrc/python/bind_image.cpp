#include "common/error.h"
#include "image/image.h"
#include "python/bindings.h"

namespace bluelm::python {

namespace {
using namespace bluelm::image;

// [H, W, 3] uint8 with contiguous pixels (rows may be strided, as in a crop).
void check_rgb(const py::array_t<uint8_t>& a, const char* name) {
  if (a.ndim() != 3 || a.shape(2) != 3)
    throw InvalidArgument(cat(name, " must have shape [height, width, 3], got ndim=", a.ndim()));
  if (a.shape(0) < 1 || a.shape(1) < 1) throw InvalidArgument(cat(name, " is empty (", a.shape(1), "x", a.shape(0), ")"));
  if (a.strides(2) != 1 || a.strides(1) != 3 || a.strides(0) < a.shape(1) * 3)
    throw InvalidArgument(cat(name, " must have packed RGB pixels (use numpy.ascontiguousarray)"));
}

py::array_t<uint8_t> to_numpy(Image&& img) {
  auto* holder = new std::vector<uint8_t>(std::move(img.data));
  py::capsule owner(holder, [](void* p) { delete static_cast<std::vector<uint8_t>*>(p); });
  return py::array_t<uint8_t>({img.height, img.width, int64_t(3)}, {img.width * 3, int64_t(3), int64_t(1)},
                              holder->data(), owner);
}
}  // namespace

void bind_image(py::module_& m) {
  m.def(
      "probe_image",
      [](const py::buffer& data) {
        const py::buffer_info b = data.request();
        const ImageInfo info = probe(static_cast<const uint8_t*>(b.ptr), size_t(b.size * b.itemsize));
        return py::make_tuple(std::string(format_name(info.format)), info.width, info.height);
      },
      py::arg("data"));

  m.def(
      "decode_image",
      [](const py::buffer& data, int64_t max_pixels, int64_t max_bytes) {
        const py::buffer_info b = data.request();
        Limits lim;
        lim.max_pixels = max_pixels;
        lim.max_bytes = max_bytes;
        Image img;
        {
          py::gil_scoped_release release;
          img = decode(static_cast<const uint8_t*>(b.ptr), size_t(b.size * b.itemsize), lim);
        }
        return to_numpy(std::move(img));
      },
      py::arg("data"), py::arg("max_pixels") = kDefaultMaxPixels, py::arg("max_bytes") = kDefaultMaxBytes);

  m.def(
      "base64_decode",
      [](const py::object& text) {
        std::string s = py::isinstance<py::bytes>(text) ? text.cast<std::string>() : py::str(text).cast<std::string>();
        std::vector<uint8_t> out;
        {
          py::gil_scoped_release release;
          out = base64_decode(s.data(), s.size());
        }
        return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
      },
      py::arg("text"));

  m.def(
      "base64_encode",
      [](const py::buffer& data) {
        const py::buffer_info b = data.request();
        return base64_encode(static_cast<const uint8_t*>(b.ptr), size_t(b.size * b.itemsize));
      },
      py::arg("data"));

  m.def(
      "resize_bicubic",
      [](const py::array_t<uint8_t>& src, int64_t width, int64_t height, int threads) {
        check_rgb(src, "image");
        if (width < 1 || height < 1) throw InvalidArgument(cat("target size ", width, "x", height, " must be >= 1"));
        py::array_t<uint8_t> dst({height, width, int64_t(3)});
        const uint8_t* s = src.data();
        uint8_t* d = dst.mutable_data();
        const int64_t sw = src.shape(1), sh = src.shape(0), ss = src.strides(0);
        {
          py::gil_scoped_release release;
          resize_bicubic(s, sw, sh, ss, d, width, height, width * 3, threads);
        }
        return dst;
      },
      py::arg("image"), py::arg("width"), py::arg("height"), py::arg("threads") = 1);

  m.def(
      "tile_image",
      [](const py::array_t<uint8_t>& src, const dynres::Params& params, std::array<float, 3> mean,
         std::array<float, 3> std_, int threads) {
        check_rgb(src, "image");
        Normalize norm;
        for (int c = 0; c < 3; ++c) norm.mean[c] = mean[size_t(c)], norm.std[c] = std_[size_t(c)];
        const uint8_t* s = src.data();
        const int64_t sw = src.shape(1), sh = src.shape(0), ss = src.strides(0);
        const dynres::Plan plan = dynres::plan(sw, sh, params);
        const int64_t t = params.tile;
        py::array_t<float> out({plan.patches, int64_t(3), t, t});
        float* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          tile_image(s, sw, sh, ss, plan, params.tile, norm, o, threads);
        }
        return py::make_tuple(out, plan);
      },
      py::arg("image"), py::arg("params"), py::arg("mean") = std::array<float, 3>{0.5f, 0.5f, 0.5f},
      py::arg("std") = std::array<float, 3>{0.5f, 0.5f, 0.5f}, py::arg("threads") = 1);
}

}  // namespace bluelm::python

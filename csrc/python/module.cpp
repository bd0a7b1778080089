#include "common/error.h"
#include "python/bindings.h"

namespace bluelm::python {

void require_c_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw InvalidArgument(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
}

}  // namespace bluelm::python

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  using namespace bluelm::python;
  m.doc() = "bluelm-v native core (C++): dynamic resolution, image tiling, tokenizer, kernels, engine";
  // Subclasses of ValueError, so `except ValueError` still catches every bad-input error.
  py::register_exception<bluelm::FormatError>(m, "FormatError", PyExc_ValueError);
  py::register_exception<bluelm::LimitError>(m, "LimitError", PyExc_ValueError);
  bind_common(m);
  bind_dynres(m);
  bind_image(m);
  bind_tokenizer(m);
  bind_engine(m);
  bind_kernels(m);
}

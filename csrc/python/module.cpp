#include <cstring>

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
  static PyObject* format_error = py::register_exception<bluelm::FormatError>(m, "FormatError", PyExc_ValueError).ptr();
  static PyObject* limit_error = py::register_exception<bluelm::LimitError>(m, "LimitError", PyExc_ValueError).ptr();
  Py_INCREF(format_error);  // kept for the translator below, which outlives any reference the module holds
  Py_INCREF(limit_error);
  // Messages quote bytes from hostile files (a JSON parser's "last read" token, a file name): pybind11's default
  // translation decodes them as strict UTF-8 and raises UnicodeDecodeError in place of the real error, so invalid
  // bytes are shown as \x escapes instead. Registered last, so tried first.
  py::register_exception_translator([](std::exception_ptr p) {
    auto set = [](PyObject* type, const char* what) {
      PyObject* msg = PyUnicode_DecodeUTF8(what, Py_ssize_t(std::strlen(what)), "backslashreplace");
      if (!msg) return;  // the decode error is set instead; never happens with backslashreplace
      PyErr_SetObject(type, msg);
      Py_DECREF(msg);
    };
    try {
      if (p) std::rethrow_exception(p);
    } catch (const bluelm::FormatError& e) {
      set(format_error, e.what());
    } catch (const bluelm::LimitError& e) {
      set(limit_error, e.what());
    } catch (const std::invalid_argument& e) {
      set(PyExc_ValueError, e.what());
    }
  });
  bind_common(m);
  bind_dynres(m);
  bind_image(m);
  bind_tokenizer(m);
  bind_engine(m);
  bind_kernels(m);
}

#pragma once
// The pybind11 module is thin: each bind_*.cpp checks shapes and dtypes, takes numpy buffers without copying,
// releases the GIL around the work and calls the core. No logic lives here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace bluelm::python {
namespace py = pybind11;

void bind_common(py::module_& m);
void bind_dynres(py::module_& m);
void bind_image(py::module_& m);
void bind_tokenizer(py::module_& m);
void bind_engine(py::module_& m);
void bind_kernels(py::module_& m);

// Buffer checks shared by the bindings: throw ValueError naming the argument.
void require_c_contiguous(const py::array& a, const char* name);
}  // namespace bluelm::python

#include "common/error.h"
#include "common/isa.h"
#include "python/bindings.h"

namespace bluelm::python {

void bind_common(py::module_& m) {
  m.def("isa_supported", [](const std::string& name) { return isa_supported(parse_isa(name)); }, py::arg("name"));
  m.def("supported_isas", [] {
    std::vector<std::string> out;
    for (Isa i : supported_isas()) out.emplace_back(isa_name(i));
    return out;
  });
  m.def("best_isa", [] { return std::string(isa_name(best_isa())); });
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_active_isa", [](const std::string& name) { set_active_isa(parse_isa(name)); }, py::arg("name"));
  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["avx"] = f.avx, d["avx2"] = f.avx2, d["fma"] = f.fma, d["f16c"] = f.f16c, d["bmi2"] = f.bmi2;
    d["avx512f"] = f.avx512f, d["avx512bw"] = f.avx512bw, d["avx512vl"] = f.avx512vl, d["avx512dq"] = f.avx512dq;
    d["avx512vnni"] = f.avx512vnni, d["avx512bf16"] = f.avx512bf16, d["avxvnni"] = f.avxvnni;
    d["os_avx"] = f.os_avx, d["os_avx512"] = f.os_avx512;
    d["neon"] = f.neon, d["dotprod"] = f.dotprod, d["i8mm"] = f.i8mm;
    return d;
  });
}

}  // namespace bluelm::python

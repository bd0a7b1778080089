#include "common/error.h"
#include "dynres/dynres.h"
#include "python/bindings.h"

namespace bluelm::python {

namespace {
using namespace bluelm::dynres;

py::tuple grid_tuple(const Grid& g) { return py::make_tuple(g.m, g.n); }

std::vector<Grid> grids_from(const py::iterable& items) {
  std::vector<Grid> out;
  size_t i = 0;
  for (const py::handle& item : items) {
    const py::sequence s = py::reinterpret_borrow<py::sequence>(item);
    if (!py::isinstance<py::sequence>(item) || py::len(s) != 2)
      throw InvalidArgument(cat("candidate ", i, " must be a pair (m, n)"));
    out.push_back({s[0].cast<int>(), s[1].cast<int>()});
    ++i;
  }
  return out;
}
}  // namespace

void bind_dynres(py::module_& m) {
  py::class_<Params>(m, "DynresParams")
      .def(py::init([](const std::string& selection) { return default_params(parse_selection(selection)); }),
           py::arg("selection") = "bluelm")
      .def_property("selection", [](const Params& p) { return std::string(selection_name(p.selection)); },
                    [](Params& p, const std::string& s) { p.selection = parse_selection(s); })
      .def_property("candidates",
                    [](const Params& p) {
                      py::list out;
                      for (const Grid& g : effective_candidates(p)) out.append(grid_tuple(g));
                      return out;
                    },
                    [](Params& p, const py::iterable& c) { p.candidates = grids_from(c); })
      .def_readwrite("alpha", &Params::alpha)
      .def_property("clause2", [](const Params& p) { return std::string(clause2_name(p.clause2)); },
                    [](Params& p, const std::string& s) { p.clause2 = parse_clause2(s); })
      .def_readwrite("min_num", &Params::min_num)
      .def_readwrite("max_num", &Params::max_num)
      .def_property("thumbnail", [](const Params& p) { return std::string(thumbnail_name(p.thumbnail)); },
                    [](Params& p, const std::string& s) { p.thumbnail = parse_thumbnail(s); })
      .def_property("layout", [](const Params& p) { return std::string(layout_name(p.layout)); },
                    [](Params& p, const std::string& s) { p.layout = parse_layout(s); })
      .def_readwrite("tile", &Params::tile)
      .def_readwrite("vit_patch", &Params::vit_patch)
      .def_readwrite("max_pixels", &Params::max_pixels)
      .def("validate", [](const Params& p) { validate(p); });

  py::class_<Plan>(m, "Plan")
      .def_property_readonly("grid", [](const Plan& p) { return grid_tuple(p.grid); })
      .def_property_readonly("canvas", [](const Plan& p) { return py::make_tuple(p.canvas_w, p.canvas_h); })
      .def_property_readonly("content", [](const Plan& p) { return py::make_tuple(p.content_w, p.content_h); })
      .def_property_readonly("offset", [](const Plan& p) { return py::make_tuple(p.offset_x, p.offset_y); })
      .def_readonly("local_patches", &Plan::local_patches)
      .def_readonly("patches", &Plan::patches)
      .def_readonly("tokens_vit", &Plan::tokens_vit)
      .def_readonly("tokens_ds", &Plan::tokens_ds)
      .def_readonly("fallback", &Plan::fallback)
      .def_readonly("thumbnail_first", &Plan::thumbnail_first);

  m.def("plan", [](int64_t w, int64_t h, const Params& p) { return plan(w, h, p); }, py::arg("width"),
        py::arg("height"), py::arg("params"));

  m.def(
      "plan_batch",
      [](py::array_t<int64_t, py::array::c_style | py::array::forcecast> w,
         py::array_t<int64_t, py::array::c_style | py::array::forcecast> h, const Params& p, int threads) {
        if (w.ndim() != 1 || h.ndim() != 1 || w.shape(0) != h.shape(0))
          throw InvalidArgument("widths and heights must be 1-D arrays of the same length");
        const int64_t n = w.shape(0);
        const char* names[] = {"grid_m", "grid_n", "canvas_w", "canvas_h", "content_w", "content_h",
                               "local_patches", "patches", "tokens_vit", "tokens_ds"};
        std::vector<py::array_t<int64_t>> cols;
        std::vector<int64_t*> ptr;
        for (size_t c = 0; c < 10; ++c) {
          cols.emplace_back(n);
          ptr.push_back(cols.back().mutable_data());
        }
        py::array_t<bool> fb(n);
        bool* fbp = fb.mutable_data();
        const int64_t* wp = w.data();
        const int64_t* hp = h.data();
        {
          py::gil_scoped_release release;
          constexpr int64_t chunk = 1 << 16;
          std::vector<Plan> buf(size_t(std::min<int64_t>(n, chunk)));
          for (int64_t b = 0; b < n; b += chunk) {
            const int64_t e = std::min(n, b + chunk);
            plan_batch(wp + b, hp + b, e - b, p, buf.data(), threads);
            for (int64_t i = b; i < e; ++i) {
              const Plan& r = buf[size_t(i - b)];
              ptr[0][i] = r.grid.m, ptr[1][i] = r.grid.n, ptr[2][i] = r.canvas_w, ptr[3][i] = r.canvas_h;
              ptr[4][i] = r.content_w, ptr[5][i] = r.content_h, ptr[6][i] = r.local_patches;
              ptr[7][i] = r.patches, ptr[8][i] = r.tokens_vit, ptr[9][i] = r.tokens_ds;
              fbp[i] = r.fallback;
            }
          }
        }
        py::dict out;
        for (size_t c = 0; c < 10; ++c) out[names[c]] = cols[c];
        out["fallback"] = fb;
        return out;
      },
      py::arg("widths"), py::arg("heights"), py::arg("params"), py::arg("threads") = 0);
}

}  // namespace bluelm::python

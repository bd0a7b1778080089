// Thin bindings of csrc/quant and csrc/kernels: numpy buffers in and out without copies (the Python layer in
// bluelm_v/quant.py and bluelm_v/kernels.py accepts torch tensors through .numpy(), which shares memory). Every
// check names the argument, its dtype, shape or contiguity.
#include <memory>
#include <string>

#include "common/error.h"
#include "common/memory.h"
#include "common/threadpool.h"
#include "kernels/kernels.h"
#include "kernels/roofline.h"
#include "python/bindings.h"
#include "quant/quant.h"

namespace bluelm::python {

namespace {
using namespace bluelm::kernels;

template <class T>
const T* buffer(const py::array& a, const char* name, char kind, int ndim_min, int ndim_max) {
  const char want = kind;
  if (a.dtype().kind() != want || a.itemsize() != py::ssize_t(sizeof(T)))
    throw py::type_error(cat(name, " must be ", kind == 'f' ? "float32" : kind == 'u' ? "uint8" : "int8",
                             ", got ", std::string(py::str(a.dtype()))));
  if (a.ndim() < ndim_min || a.ndim() > ndim_max)
    throw InvalidArgument(cat(name, " must have ", ndim_min, ndim_min == ndim_max ? "" : cat(" to ", ndim_max),
                              " dimensions, got ", a.ndim()));
  require_c_contiguous(a, name);
  return static_cast<const T*>(a.data());
}

quant::Format fmt_of(const std::string& name) { return quant::parse_format(name); }

PackedView view_of(const py::array& packed, const std::string& fmt, int64_t n, int64_t k) {
  PackedView v;
  v.format = fmt_of(fmt);
  v.n = n;
  v.k = k;
  v.data = buffer<uint8_t>(packed, "packed", 'u', 1, 1);
  v.bytes = packed.shape(0);
  if (n < 1) throw InvalidArgument(cat("N = ", n, " must be >= 1"));
  quant::check_k(v.format, k);
  return v;
}

py::array_t<float> gemm_py(const py::array& x, const py::array& packed, const std::string& fmt, int64_t n, int64_t k,
                           const py::object& bias, bool int16_one_pass) {
  const float* xp = buffer<float>(x, "x", 'f', 1, 2);
  const int64_t t = x.ndim() == 2 ? x.shape(0) : 1;
  const int64_t xk = x.ndim() == 2 ? x.shape(1) : x.shape(0);
  const PackedView w = view_of(packed, fmt, n, k);
  if (xk != k) throw InvalidArgument(cat("x has K = ", xk, " columns, the weights K = ", k));
  if (t < 1) throw InvalidArgument("x has no rows");
  const float* bp = nullptr;
  if (!bias.is_none()) {
    const py::array b = py::array::ensure(bias);
    bp = buffer<float>(b, "bias", 'f', 1, 1);
    if (b.shape(0) != n) throw InvalidArgument(cat("bias has ", b.shape(0), " values, N = ", n));
  }
  py::array_t<float> y(x.ndim() == 2 ? std::vector<py::ssize_t>{t, n} : std::vector<py::ssize_t>{n});
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release release;
    if (int16_one_pass) gemm_i16(w, xp, t, k, yp, n, bp);
    else if (t == 1) gemv(w, xp, yp, bp);
    else gemm(w, xp, t, yp, bp);
  }
  return y;
}

}  // namespace

void bind_kernels(py::module_& m) {
  // ---- formats ----
  m.def("quant_formats", [] {
    py::list out;
    for (const quant::FormatInfo& f : quant::formats()) {
      py::dict d;
      d["name"] = f.name;
      static const char* const kinds[quant::kKindCount] = {"int4_sym", "int4_asym", "int8_sym", "k4", "k5", "k6", "k8",
                                                             "int5_sym", "int5_asym"};
      d["kind"] = kinds[static_cast<int>(f.kind)];
      d["group"] = f.group;
      d["block_bytes"] = f.block_bytes;
      d["weight_bits"] = f.weight_bits;
      d["bits_per_weight"] = f.bits_per_weight;
      d["gguf_type"] = f.gguf_type;
      d["super_block"] = f.super_block;
      out.append(d);
    }
    return out;
  });
  m.def("quant_row_bytes", [](const std::string& fmt, int64_t k) { return quant::row_bytes(fmt_of(fmt), k); });
  m.def(
      "quantize",
      [](const py::array& x, const std::string& fmt, int threads) {
        const float* xp = buffer<float>(x, "x", 'f', 2, 2);
        const quant::Format f = fmt_of(fmt);
        const int64_t rows = x.shape(0), k = x.shape(1);
        py::array_t<uint8_t> out({rows, py::ssize_t(quant::row_bytes(f, k))});
        uint8_t* op = out.mutable_data();
        py::gil_scoped_release release;
        quant::quantize_rows(f, xp, rows, k, op, threads);
        return out;
      },
      py::arg("x"), py::arg("fmt"), py::arg("threads") = 0);
  m.def(
      "dequantize",
      [](const py::array& q, const std::string& fmt, int64_t k, int threads) {
        const uint8_t* qp = buffer<uint8_t>(q, "q", 'u', 2, 2);
        const quant::Format f = fmt_of(fmt);
        const int64_t rows = q.shape(0);
        if (q.shape(1) != quant::row_bytes(f, k))
          throw InvalidArgument(cat("q rows hold ", q.shape(1), " bytes; ", fmt, " rows of K = ", k, " hold ",
                                    quant::row_bytes(f, k)));
        py::array_t<float> out({rows, py::ssize_t(k)});
        float* op = out.mutable_data();
        py::gil_scoped_release release;
        quant::dequantize_rows(f, qp, rows, k, op, threads);
        return out;
      },
      py::arg("q"), py::arg("fmt"), py::arg("k"), py::arg("threads") = 0);

  // ---- kernels ----
  m.def("packed_bytes", [](const std::string& fmt, int64_t n, int64_t k) { return packed_bytes(fmt_of(fmt), n, k); });
  py::class_<WeightArena, std::shared_ptr<WeightArena>>(m, "WeightArena")
      .def(py::init([](int64_t capacity) {
             if (capacity < 0) throw InvalidArgument(cat("arena capacity ", capacity, " must be >= 0 bytes"));
             return std::make_shared<WeightArena>(size_t(capacity));
           }),
           py::arg("capacity"))
      .def_property_readonly("capacity", &WeightArena::capacity)
      .def_property_readonly("used", &WeightArena::used);
  m.def(
      "pack_weights",
      [](const py::array& rows, const std::string& fmt, int64_t n, int64_t k, std::shared_ptr<WeightArena> arena) {
        const uint8_t* rp = buffer<uint8_t>(rows, "rows", 'u', 2, 2);
        const quant::Format f = fmt_of(fmt);
        if (rows.shape(0) != n || rows.shape(1) != quant::row_bytes(f, k))
          throw InvalidArgument(cat("rows must be [", n, ", ", quant::row_bytes(f, k), "] for a ", fmt, " matrix of ",
                                    n, " x ", k, ", got [", rows.shape(0), ", ", rows.shape(1), "]"));
        // A PackedMatrix, owned by the array's capsule: packed into the arena when it has room (the matrix then
        // keeps the arena alive), else into huge-page memory of its own (PackedMatrix decides, as in the engine).
        std::unique_ptr<PackedMatrix> pm;
        {
          py::gil_scoped_release release;
          pm = std::make_unique<PackedMatrix>(f, rp, n, k, std::move(arena));
        }
        const PackedView v = pm->view();
        py::capsule owner(pm.get(), [](void* p) { delete static_cast<PackedMatrix*>(p); });
        pm.release();  // the capsule owns it now
        // The bytes belong to this array alone (through the capsule), so it may expose them as writable.
        return py::array_t<uint8_t>(py::ssize_t(v.bytes), const_cast<uint8_t*>(v.data), owner);
      },
      py::arg("rows"), py::arg("fmt"), py::arg("n"), py::arg("k"), py::arg("arena") = nullptr);
  m.def(
      "unpack_weights",
      [](const py::array& packed, const std::string& fmt, int64_t n, int64_t k) {
        const PackedView w = view_of(packed, fmt, n, k);
        if (w.bytes != packed_bytes(w.format, n, k))
          throw InvalidArgument(cat("packed holds ", w.bytes, " bytes, expected ", packed_bytes(w.format, n, k)));
        py::array_t<uint8_t> out({py::ssize_t(n), py::ssize_t(quant::row_bytes(w.format, k))});
        uint8_t* op = out.mutable_data();
        py::gil_scoped_release release;
        unpack_weights(w.format, w.data, n, k, op);
        return out;
      },
      py::arg("packed"), py::arg("fmt"), py::arg("n"), py::arg("k"));
  m.def(
      "gemm_packed",
      [](const py::array& x, const py::array& packed, const std::string& fmt, int64_t n, int64_t k,
         const py::object& bias) { return gemm_py(x, packed, fmt, n, k, bias, false); },
      py::arg("x"), py::arg("packed"), py::arg("fmt"), py::arg("n"), py::arg("k"), py::arg("bias") = py::none());
  m.def(
      "gemm_i16_packed",
      [](const py::array& x, const py::array& packed, const std::string& fmt, int64_t n, int64_t k,
         const py::object& bias) { return gemm_py(x, packed, fmt, n, k, bias, true); },
      py::arg("x"), py::arg("packed"), py::arg("fmt"), py::arg("n"), py::arg("k"), py::arg("bias") = py::none(),
      "y = x W^T (+ bias) with x rounded to int16 per group and one pass over the widened weights "
      "(csrc/kernels/kernels.h: gemm_i16); the active tier must have it (has_gemm_i16)");
  m.def("has_gemm_i16", [](const std::string& fmt) { return has_gemm_i16(fmt_of(fmt)); }, py::arg("fmt"));
  m.def(
      "gemm_reference",
      [](const py::array& rows, const std::string& fmt, int64_t n, int64_t k, const py::array& x) {
        const uint8_t* rp = buffer<uint8_t>(rows, "rows", 'u', 2, 2);
        const float* xp = buffer<float>(x, "x", 'f', 2, 2);
        const quant::Format f = fmt_of(fmt);
        if (rows.shape(0) != n || rows.shape(1) != quant::row_bytes(f, k) || x.shape(1) != k)
          throw InvalidArgument("gemm_reference: rows must be [n, row_bytes(k)] and x [t, k]");
        py::array_t<float> y({x.shape(0), py::ssize_t(n)});
        float* yp = y.mutable_data();
        py::gil_scoped_release release;
        gemm_reference(f, rp, n, k, xp, x.shape(0), yp);
        return y;
      },
      py::arg("rows"), py::arg("fmt"), py::arg("n"), py::arg("k"), py::arg("x"));
  m.def("downsample_2x2", [](const py::array& x) {
    const float* xp = buffer<float>(x, "x", 'f', 3, 3);
    const int64_t h = x.shape(0), w = x.shape(1), c = x.shape(2);
    if (h < 1 || w < 1 || c < 1) throw InvalidArgument(cat("x [", h, ", ", w, ", ", c, "] must not be empty"));
    py::array_t<float> y({(h + 1) / 2, (w + 1) / 2, 4 * c});
    float* yp = y.mutable_data();
    py::gil_scoped_release release;
    downsample_2x2(xp, h, w, c, yp);
    return y;
  });
  m.def(
      "downsample_linear",
      [](const py::array& x, const py::array& packed, const std::string& fmt, int64_t n, bool layer_norm,
         const py::object& gamma, const py::object& beta, const py::object& bias, float eps) {
        const float* xp = buffer<float>(x, "x", 'f', 3, 3);
        const int64_t h = x.shape(0), w = x.shape(1), c = x.shape(2);
        const PackedView wt = view_of(packed, fmt, n, 4 * c);
        DownsampleLinear opt;
        opt.layer_norm = layer_norm;
        opt.eps = eps;
        auto vec = [&](const py::object& o, const char* name, int64_t len) -> const float* {
          if (o.is_none()) return nullptr;
          const py::array a = py::array::ensure(o);
          const float* p = buffer<float>(a, name, 'f', 1, 1);
          if (a.shape(0) != len) throw InvalidArgument(cat(name, " has ", a.shape(0), " values, expected ", len));
          return p;
        };
        opt.gamma = vec(gamma, "gamma", 4 * c);
        opt.beta = vec(beta, "beta", 4 * c);
        opt.bias = vec(bias, "bias", n);
        py::array_t<float> y({((h + 1) / 2) * ((w + 1) / 2), n});
        float* yp = y.mutable_data();
        py::gil_scoped_release release;
        downsample_linear(xp, h, w, c, wt, opt, yp);
        return y;
      },
      py::arg("x"), py::arg("packed"), py::arg("fmt"), py::arg("n"), py::arg("layer_norm") = true,
      py::arg("gamma") = py::none(), py::arg("beta") = py::none(), py::arg("bias") = py::none(),
      py::arg("eps") = 1e-6f);

  // ---- threads and this machine's limits ----
  m.def("set_num_threads", [](int n) {
    if (n < 0) throw InvalidArgument(cat("threads must be >= 0 (0: all cores), got ", n));
    set_num_threads(n);
  });
  m.def("get_num_threads", [] { return num_threads(); });
  m.def("set_int8_sign_trick", &set_int8_sign_trick, py::arg("on"),
        "A/B switch: the AVX-512 tier's int8 tiles use the sign trick (on) or unsigned weights w + 128 (off, the "
        "default); both give the same bytes (csrc/kernels/kernels.h)");
  m.def("int8_sign_trick", &int8_sign_trick);
  m.def("set_avx512_quads", &set_avx512_quads, py::arg("on"),
        "A/B switch: the AVX-512 tier's prefill of Q4_0 / Q4_1 / Q8_0 (and the widened Q5_0 / Q5_1) runs on four "
        "panels unpacked once per 128 tokens (on, the default) or on the decode's panel-pair tile (off); both give "
        "the same bytes (csrc/kernels/kernels.h)");
  m.def("avx512_quads", &avx512_quads);
  m.def("set_avx512_k45_decode", &set_avx512_k45_decode, py::arg("on"),
        "A/B switch: the AVX-512 tier's Q4_K / Q5_K decode of 2-3 tokens sums with vpdpbusd (on, the default) or "
        "runs the AVX2 tier's vpmaddubsw walk (off; one token always does); the same bytes either way "
        "(csrc/kernels/kernels.h)");
  m.def("avx512_k45_decode", &avx512_k45_decode);
  m.def("set_avx512_pair_decode", &set_avx512_pair_decode, py::arg("on"),
        "A/B switch: the AVX-512 tier's one-token Q4_0 and Q8_0 products run on its panel-pair tile (on) or on the "
        "AVX2 tier's one-panel tile (off); the default is off on AMD CPUs, on elsewhere (csrc/kernels/kernels.h)");
  m.def("avx512_pair_decode", &avx512_pair_decode);
  m.def("set_decode_scales_last", &set_decode_scales_last, py::arg("on"),
        "A/B switch: the AVX2 tier's one-token Q8_0 tile reads each panel front to back and applies its scales "
        "after its levels (on, K <= 3072; past that it prefetches the next panel's scales to L2) or reads each "
        "block's scales after its levels, with the software prefetch (off); the same bytes either way; on, the "
        "AVX-512 tier's one-token Q8_0 goes to that tile unless avx512_pair_decode; the default is on for AMD CPUs "
        "(csrc/kernels/kernels.h)");
  m.def("decode_scales_last", &decode_scales_last);
  m.def(
      "scales_last_fits", [](const std::string& fmt, int64_t k) { return scales_last_fits(fmt_of(fmt), k); },
      py::arg("fmt"), py::arg("k"),
      "Whether a one-token product of this format and K fits the scales-last walk of decode_scales_last (Q8_0, "
      "K <= 3072; past it the switch prefetches the next panel's scales instead), whatever the switch is now "
      "(csrc/kernels/kernels.h)");
  m.def("set_decode_prefetch_l2", &set_decode_prefetch_l2, py::arg("on"),
        "A/B switch: the x86 decode tiles' software prefetch puts its lines in L2 (on) or L1 (off); the default is "
        "L2 on AMD CPUs, L1 elsewhere, or BLUELM_DECODE_PREFETCH=l1|l2 (csrc/kernels/kernels.h)");
  m.def("decode_prefetch_l2", &decode_prefetch_l2);
  m.def("set_int16_one_pass", &set_int16_one_pass, py::arg("on"),
        "A/B switch: the engine's int16 products run in one pass where it pays (on, the default; kernels.h: "
        "gemm_i16_pays) or all as two int8 passes (off)");
  m.def("int16_one_pass", &int16_one_pass);
  m.def("hugepage_advice", &hugepage_advice_enabled,
        "Whether large buffers (packed weights, the bandwidth probe's) are advised as huge pages; "
        "BLUELM_HUGEPAGES=0 turns it off");
  m.def("read_bandwidth", &roofline::read_bandwidth, py::arg("bytes"), py::arg("threads") = 1, py::arg("reps") = 3,
        py::call_guard<py::gil_scoped_release>());
  m.def(
      "time_gemv_calls",
      [](const py::list& stack, const std::string& fmt, int64_t n, int64_t k, const py::array& x, int64_t calls) {
        std::vector<py::array> arrays;  // held while the GIL is released: a converted item would be a temporary
        std::vector<PackedView> ws;
        for (const py::handle& h : stack) {
          arrays.push_back(py::array::ensure(h));
          ws.push_back(view_of(arrays.back(), fmt, n, k));
        }
        const float* xp = buffer<float>(x, "x", 'f', 1, 1);
        if (x.shape(0) != k) throw InvalidArgument(cat("x has ", x.shape(0), " values, K = ", k));
        std::vector<double> times;
        {
          py::gil_scoped_release release;
          times = roofline::time_gemv_calls(ws, xp, calls);
        }
        return py::array_t<double>(py::ssize_t(times.size()), times.data());
      },
      py::arg("stack"), py::arg("fmt"), py::arg("n"), py::arg("k"), py::arg("x"), py::arg("calls"),
      "Seconds per GEMV, timed in C++ call by call over the packed matrices of `stack` in turn (the benchmark's "
      "stream rows)");
  m.def("roofline_peaks", [] {
    py::list out;
    for (const roofline::Peak& p : roofline::peaks()) {
      py::dict d;
      d["name"] = p.name;
      d["isa"] = p.isa;
      d["unit"] = p.unit;
      d["instructions"] = p.instructions;
      d["format"] = p.format;
      d["probe"] = p.probe;
      out.append(d);
    }
    return out;
  });
  m.def("measure_peak", &roofline::measure_peak, py::arg("name"), py::arg("threads") = 1, py::arg("reps") = 3,
        py::arg("seconds") = 0.1,
        py::call_guard<py::gil_scoped_release>());
}

}  // namespace bluelm::python

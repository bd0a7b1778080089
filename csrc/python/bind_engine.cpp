// Thin bindings of the native engine (csrc/runtime): bluelm_v/engine.py builds the Python API on these.
#include <chrono>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "python/bindings.h"
#include "runtime/attention.h"
#include "runtime/engine.h"

namespace bluelm::python {

namespace {
using namespace bluelm::runtime;

py::dict timing_dict(const Timing& t) {
  py::dict d;
  d["init_s"] = t.init_s;
  d["preprocess_s"] = t.preprocess_s;
  d["vit_s"] = t.vit_s;
  d["image_wait_s"] = t.image_wait_s;
  d["prefill_s"] = t.prefill_s;
  d["ttft_s"] = t.ttft_s;
  d["decode_s"] = t.decode_s;
  d["prompt_tokens"] = t.prompt_tokens;
  d["image_tokens"] = t.image_tokens;
  d["tiles"] = t.tiles;
  d["new_tokens"] = t.new_tokens;
  d["reused_tokens"] = t.reused_tokens;
  d["chunk"] = t.chunk;
  d["decode_tokens_per_s"] = t.decode_tokens_per_s();
  d["prefill_tokens_per_s"] = t.prefill_tokens_per_s();
  d["peak_rss_mb"] = t.peak_rss_mb;
  return d;
}

py::array_t<float> to_numpy(std::vector<float>&& v, std::vector<py::ssize_t> shape) {
  auto* heap = new std::vector<float>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<float>*>(p); });
  return py::array_t<float>(shape, heap->data(), owner);
}

// One layer's cache of n positions filled from k, v [n, kv_heads, hd], with a view per KV head: what the attention
// timing bindings run on.
struct FilledCache {
  KvCache cache;
  std::vector<KvHeadView> heads;
  FilledCache(const std::string& kv_cache, const float* k, const float* v, int64_t n, int64_t kvh, int64_t hd)
      : cache(parse_kv_type(kv_cache), 1, kvh, n, hd) {
    for (int64_t p = 0; p < n; ++p) cache.store(0, p, k + p * kvh * hd, v + p * kvh * hd);
    for (int64_t h = 0; h < kvh; ++h) heads.push_back(cache.head(0, h));
  }
};

}  // namespace

void bind_engine(py::module_& m) {
  py::class_<Session>(m, "EngineSession")
      .def("submit_image",
           [](Session& s, const py::bytes& data) {
             const std::string_view v = data;
             std::vector<uint8_t> bytes(v.begin(), v.end());
             py::gil_scoped_release release;
             s.submit_image(std::move(bytes));
           })
      .def(
          "submit_tiles",
          [](Session& s, const py::array_t<float, py::array::c_style | py::array::forcecast>& tiles, int64_t m,
             int64_t n, int64_t width, int64_t height, int64_t global) {
            if (tiles.ndim() != 4 || tiles.shape(1) != 3 || tiles.shape(2) != tiles.shape(3))
              throw InvalidArgument("tiles must be float32 [tiles, 3, side, side]");
            const float* p = tiles.data();
            const int64_t count = tiles.shape(0), side = tiles.shape(2);
            py::gil_scoped_release release;
            s.submit_tiles(p, count, side, {m, n, width, height, global});
          },
          py::arg("tiles"), py::arg("m") = 1, py::arg("n") = 1, py::arg("width") = 1, py::arg("height") = 1,
          py::arg("global_tiles") = -1)
      .def("submit_rgb",
           [](Session& s, const py::array& rgb) {
             if (rgb.dtype().kind() != 'u' || rgb.itemsize() != 1 || rgb.ndim() != 3 || rgb.shape(2) != 3)
               throw InvalidArgument("image array must be uint8 [height, width, 3]");
             require_c_contiguous(rgb, "image array");
             const auto* p = static_cast<const uint8_t*>(rgb.data());
             const int64_t h = rgb.shape(0), w = rgb.shape(1);
             py::gil_scoped_release release;
             s.submit_rgb(p, w, h);
           })
      .def_property_readonly("pending_images", &Session::pending_images)
      .def_property_readonly("cache_length", &Session::cache_length)
      .def("reset", &Session::reset)
      .def(
          "generate",
          [](Session& s, const std::string& prompt, int64_t max_new_tokens, float temperature, int64_t top_k,
             float top_p, uint64_t seed, std::vector<std::string> stop, bool chat, py::object on_text,
             const std::string& system, const std::vector<std::pair<std::string, std::string>>& history) {
            GenerateOptions opt;
            opt.max_new_tokens = max_new_tokens;
            opt.sampling.temperature = temperature;
            opt.sampling.top_k = top_k;
            opt.sampling.top_p = top_p;
            opt.sampling.seed = seed;
            opt.stop = std::move(stop);
            opt.chat = chat;
            opt.system = system;
            for (const auto& [role, content] : history) opt.history.push_back({role, content});
            TextCallback cb;
            if (!on_text.is_none())
              cb = [&on_text](const std::string& piece) {
                py::gil_scoped_acquire acquire;
                py::object r = on_text(py::str(piece.data(), piece.size()));
                return r.is_none() || r.cast<bool>();
              };
            Result res;
            {
              py::gil_scoped_release release;
              res = s.generate(prompt, opt, cb);
            }
            py::dict d;
            d["text"] = py::str(res.text.data(), res.text.size());
            d["tokens"] = res.tokens;
            d["finish_reason"] = res.finish_reason;
            d["timing"] = timing_dict(res.timing);
            return d;
          },
          py::arg("prompt"), py::arg("max_new_tokens") = 64, py::arg("temperature") = 0.0f, py::arg("top_k") = 0,
          py::arg("top_p") = 1.0f, py::arg("seed") = 0, py::arg("stop") = std::vector<std::string>{},
          py::arg("chat") = true, py::arg("on_text") = py::none(), py::arg("system") = "",
          py::arg("history") = std::vector<std::pair<std::string, std::string>>{})
      .def(
          "prefill",
          [](Session& s, const std::vector<int32_t>& ids, int64_t chunk, bool all_logits) {
            std::vector<float> out;
            int64_t vocab = 0;
            {
              py::gil_scoped_release release;
              out = s.prefill(ids, chunk, all_logits);
            }
            vocab = all_logits ? int64_t(out.size()) / int64_t(ids.size()) : int64_t(out.size());
            if (all_logits) return to_numpy(std::move(out), {py::ssize_t(ids.size()), py::ssize_t(vocab)});
            return to_numpy(std::move(out), {py::ssize_t(vocab)});
          },
          py::arg("ids"), py::arg("chunk"), py::arg("all_logits") = false)
      .def("start_profile", &Session::start_profile)
      .def("stop_profile",
           [](Session& s) {
             const StepProfile p = s.stop_profile();
             py::list ops;
             for (const OpProfile& o : p.ops) {
               py::dict d;
               d["op"] = o.op;
               d["format"] = o.format;
               d["calls"] = o.calls;
               d["seconds"] = o.seconds;
               d["bytes"] = o.bytes;
               ops.append(d);
             }
             py::dict d;
             d["steps"] = p.steps;
             d["seconds"] = p.seconds;
             d["ops"] = ops;
             return d;
           })
      .def("decode", [](Session& s, int32_t token) {
        std::vector<float> out;
        {
          py::gil_scoped_release release;
          out = s.decode(token);
        }
        const py::ssize_t n = py::ssize_t(out.size());
        return to_numpy(std::move(out), {n});
      });

  py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine")
      .def(py::init([](const std::string& path, int threads, int64_t chunk, int64_t tile_batch, const std::string& kv,
                       int64_t context, bool release_vit, const std::string& activations, const std::string& dynres) {
             EngineOptions o;
             o.threads = threads;
             o.chunk = chunk;
             o.tile_batch = tile_batch;
             o.kv_cache = kv;
             o.context = context;
             o.release_vit = release_vit;
             o.activations = activations;
             o.dynres = dynres;
             py::gil_scoped_release release;
             return Engine::load(path, o);
           }),
           py::arg("path"), py::arg("threads") = 0, py::arg("chunk") = 0, py::arg("tile_batch") = 0,
           py::arg("kv_cache") = "", py::arg("context") = 0, py::arg("release_vit") = true, py::arg("activations") = "",
           py::arg("dynres") = "")
      .def("session", &Engine::session)
      .def(
          "encode_tiles",
          [](Engine& e, const py::array_t<float, py::array::c_style | py::array::forcecast>& tiles) {
            // normalized tiles [P, 3, S, S] -> the ViT + projector's embeddings [P, tokens_per_tile, d] (no layout)
            const auto& c = e.config();
            if (!c.multimodal) throw InvalidArgument("this model is text-only and has no vision tower");
            const int64_t s = c.vision.image_size;
            if (tiles.ndim() != 4 || tiles.shape(1) != 3 || tiles.shape(2) != s || tiles.shape(3) != s)
              throw InvalidArgument(cat("tiles must be float32 [tiles, 3, ", s, ", ", s, "]"));
            const int64_t p = tiles.shape(0), per = c.image_tokens_per_tile(), d = c.llm.hidden;
            if (p < 1 || p > 4096) throw InvalidArgument(cat("tile count ", p, " is outside [1, 4096]"));
            std::vector<float> out(size_t(p * per * d));
            const float* src = tiles.data();
            {
              py::gil_scoped_release release;
              e.image_started();
              struct Done {
                Engine& e;
                ~Done() { e.image_done(); }
              } done{e};
              const int64_t batch = e.options().tile_batch;
              e.with_vision([&](VisionEncoder& vit) {
                for (int64_t i = 0; i < p; i += batch)
                  vit.encode(src + i * 3 * s * s, std::min(batch, p - i), out.data() + i * per * d);
              });
            }
            return to_numpy(std::move(out), {py::ssize_t(p), py::ssize_t(per), py::ssize_t(d)});
          },
          py::arg("tiles"))
      .def_property_readonly("init_s", &Engine::init_s)
      .def_property_readonly("vit_resident", &Engine::vit_resident)
      .def_property_readonly("chunk", [](const Engine& e) { return e.options().chunk; })
      .def_property_readonly("tile_batch", [](const Engine& e) { return e.options().tile_batch; })
      .def_property_readonly("context", [](const Engine& e) { return e.options().context; })
      .def_property_readonly("kv_cache", [](const Engine& e) { return e.options().kv_cache; })
      .def_property_readonly("activations", [](const Engine& e) { return e.options().activations; })
      .def_property_readonly("multimodal", [](const Engine& e) { return e.config().multimodal; })
      .def_property_readonly("image_tokens_per_tile", [](const Engine& e) { return e.config().image_tokens_per_tile(); })
      .def("image_block",
           [](const Engine& e, int64_t patches, int64_t m, int64_t n, int64_t global, int64_t positions) {
             return e.image_block(patches, m, n, global, positions);
           },
           py::arg("patches"), py::arg("m"), py::arg("n"), py::arg("global_tiles"), py::arg("positions"))
      .def_property_readonly("vocab", [](const Engine& e) { return e.config().llm.vocab; })
      .def_property_readonly("llm_resident_bytes", [](const Engine& e) { return e.llm().resident_bytes(); })
      .def_property_readonly("kv_bytes_per_token",
                             [](const Engine& e) {
                               const auto& c = e.config().llm;
                               return KvCache::bytes_per_token(e.kv_type(), c.layers, c.kv_heads, c.head_dim);
                             })
      .def_property_readonly("llm_stacked_products", [](const Engine& e) { return e.llm().stacked_products(); })
      .def("image_tokens", &Engine::image_tokens, py::arg("width"), py::arg("height"));

  m.def(
      "attention",
      [](const py::array_t<float, py::array::c_style | py::array::forcecast>& q,
         const py::array_t<float, py::array::c_style | py::array::forcecast>& k,
         const py::array_t<float, py::array::c_style | py::array::forcecast>& v, const std::string& kv_cache) {
        if (q.ndim() != 3 || k.ndim() != 3 || v.ndim() != 3)
          throw InvalidArgument("attention takes q [t, heads, hd], k and v [n, kv_heads, hd]");
        for (int d = 0; d < 3; ++d)
          if (k.shape(d) != v.shape(d)) throw InvalidArgument("attention: k and v shapes differ");
        if (q.shape(2) != k.shape(2)) throw InvalidArgument("attention: q and k head sizes differ");
        const KvType type = parse_kv_type(kv_cache);
        const int64_t t = q.shape(0), heads = q.shape(1), hd = q.shape(2), n = k.shape(0), kvh = k.shape(1);
        std::vector<float> out;
        {
          py::gil_scoped_release release;
          out = attend_sequence(type, q.data(), t, heads, k.data(), v.data(), n, kvh, hd);
        }
        return to_numpy(std::move(out), {py::ssize_t(t), py::ssize_t(heads), py::ssize_t(hd)});
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("kv_cache") = "int8");
  m.def(
      "set_decode_query",
      [](const std::string& kind) {
        if (kind != "int8" && kind != "f32")
          throw InvalidArgument("set_decode_query: kind is \"int8\" or \"f32\", not \"" + kind + "\"");
        set_decode_query_int8(kind == "int8");
      },
      py::arg("kind"));
  m.def("set_kv_prefetch", &set_kv_prefetch, py::arg("on"),
        "A/B switch (on by default): decode steps prefetch each layer's cached keys and values as the layer starts");
  m.def("kv_prefetch", &kv_prefetch);
  m.def(
      "time_decode_attention",
      [](const py::array_t<float, py::array::c_style | py::array::forcecast>& q,
         const py::array_t<float, py::array::c_style | py::array::forcecast>& k,
         const py::array_t<float, py::array::c_style | py::array::forcecast>& v, const std::string& kv_cache,
         int64_t calls) {
        if (q.ndim() != 2 || k.ndim() != 3 || v.ndim() != 3)
          throw InvalidArgument("time_decode_attention takes q [heads, hd], k and v [n, kv_heads, hd]");
        for (int d = 0; d < 3; ++d)
          if (k.shape(d) != v.shape(d)) throw InvalidArgument("time_decode_attention: k and v shapes differ");
        const int64_t heads = q.shape(0), hd = q.shape(1), n = k.shape(0), kvh = k.shape(1);
        if (k.shape(2) != hd || kvh <= 0 || heads % kvh) throw InvalidArgument("time_decode_attention: q [heads, hd] with heads a multiple of k's kv_heads and k's hd");
        if (n < 1 || calls < 1) throw InvalidArgument("time_decode_attention: n and calls must be >= 1");
        std::vector<double> times(static_cast<size_t>(calls));
        {
          py::gil_scoped_release release;
          FilledCache filled(kv_cache, k.data(), v.data(), n, kvh, hd);
          const KvHeadView* kv = filled.heads.data();
          std::vector<float> out(static_cast<size_t>(heads * hd));
          DecodeScratch ws;
          const float scale = 1.0f / std::sqrt(float(hd));
          for (auto& t : times) {
            const auto t0 = std::chrono::steady_clock::now();
            decode_attention(kv, kvh, heads / kvh, q.data(), scale, n, out.data(), ws);
            t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          }
        }
        return py::array_t<double>(py::ssize_t(times.size()), times.data());
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("kv_cache"), py::arg("calls"),
      "Seconds per decode-attention call (one layer's cache of n positions), timed in C++ call by call "
      "(benchmarks/attention.py)");
  m.def(
      "time_prefill_attention",
      [](const py::array_t<float, py::array::c_style | py::array::forcecast>& q,
         const py::array_t<float, py::array::c_style | py::array::forcecast>& k,
         const py::array_t<float, py::array::c_style | py::array::forcecast>& v, const std::string& kv_cache,
         int64_t calls) {
        if (q.ndim() != 3 || k.ndim() != 3 || v.ndim() != 3)
          throw InvalidArgument("time_prefill_attention takes q [t, heads, hd], k and v [n, kv_heads, hd]");
        for (int d = 0; d < 3; ++d)
          if (k.shape(d) != v.shape(d)) throw InvalidArgument("time_prefill_attention: k and v shapes differ");
        const int64_t t = q.shape(0), heads = q.shape(1), hd = q.shape(2), n = k.shape(0), kvh = k.shape(1);
        if (k.shape(2) != hd || kvh <= 0 || heads % kvh)
          throw InvalidArgument("time_prefill_attention: q [t, heads, hd] with heads a multiple of k's kv_heads and k's hd");
        if (t < 1 || t > n || calls < 1)
          throw InvalidArgument("time_prefill_attention: 1 <= t <= n (the chunk is the last t positions) and calls >= 1");
        std::vector<double> times(static_cast<size_t>(calls));
        {
          py::gil_scoped_release release;
          FilledCache filled(kv_cache, k.data(), v.data(), n, kvh, hd);
          const KvHeadView* kv = filled.heads.data();
          std::vector<float> out(static_cast<size_t>(t * heads * hd));
          const float scale = 1.0f / std::sqrt(float(hd));
          for (auto& s : times) {
            const auto t0 = std::chrono::steady_clock::now();
            prefill_attention(kv, kvh, heads / kvh, q.data(), heads * hd, scale, n - t, t, out.data(), heads * hd);
            s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          }
        }
        return py::array_t<double>(py::ssize_t(times.size()), times.data());
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("kv_cache"), py::arg("calls"),
      "Seconds per prefill-attention call (a chunk of the last t of n positions of one layer's cache), timed in C++ "
      "call by call (benchmarks/attention.py --prefill)");
  m.def("decode_query", [] { return std::string(decode_query_int8() ? "int8" : "f32"); });
  m.def("peak_rss_mb", &peak_rss_mb);
  m.def("current_rss_mb", &current_rss_mb);
}

}  // namespace bluelm::python

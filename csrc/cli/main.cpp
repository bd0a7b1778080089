// bluelm: the C++ command line, for machines without Python.
//   bluelm plan WxH|IMAGE [--scheme bluelm|llava_next|internvl] [--alpha A] [--grid K] [--clause2 "<"|"<="]
//                         [--max-num N] [--json]
//   bluelm isa            instruction sets this CPU can run and the one in use
//   bluelm run --model PKG [--image IMG]... --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]
//              [--top-p P] [--seed S] [--threads N] [--chunk T] [--tile-batch B] [--kv-cache int8|f16|f32]
//              [--activations int8|int16] [--system TEXT] [--context N] [--dynres JSON] [--profile]
//                              (--dynres: a tiling in place of the package's, e.g. '{"scheme": "bluelm", "alpha": 0.1}')
//                              the native engine: streams the answer, then prints the timing table
//                              (--profile: and where the decode steps' time went, op by op)
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "common/isa.h"
#include "dynres/dynres.h"
#include "image/image.h"
#include "runtime/engine.h"

using namespace bluelm;

namespace {

int usage() {
  std::cerr << "usage:\n"
               "  bluelm plan WxH|IMAGE [--scheme bluelm|llava_next|internvl] [--alpha A] [--grid K]\n"
               "                        [--clause2 '<'|'<='] [--max-num N] [--json]\n"
               "  bluelm isa\n"
               "  bluelm run --model PKG [--image IMG]... --prompt TEXT [--max-new-tokens N] [--temperature T]\n"
               "             [--top-k K] [--top-p P] [--seed S] [--threads N] [--chunk T] [--tile-batch B]\n"
               "             [--kv-cache int8|f16|f32] [--activations int8|int16] [--context N]\n"
               "             [--system TEXT] [--dynres JSON] [--profile]\n";
  return 2;
}

bool parse_size(const std::string& s, int64_t* w, int64_t* h) {
  const size_t x = s.find('x');
  if (x == std::string::npos || x == 0 || x + 1 >= s.size()) return false;
  try {
    size_t used = 0;
    *w = std::stoll(s.substr(0, x), &used);
    if (used != x) return false;
    *h = std::stoll(s.substr(x + 1), &used);
    return used == s.size() - x - 1;
  } catch (...) {
    return false;
  }
}

std::string need(int& i, int argc, char** argv) {
  if (i + 1 >= argc) throw InvalidArgument(cat(argv[i], " needs a value"));
  return argv[++i];
}

int cmd_plan(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string target = argv[2];
  dynres::Selection sel = dynres::Selection::bluelm;
  for (int i = 3; i < argc; ++i)
    if (std::strcmp(argv[i], "--scheme") == 0 && i + 1 < argc) sel = dynres::parse_selection(argv[i + 1]);
  dynres::Params p = dynres::default_params(sel);
  bool json = false;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--scheme") {
      ++i;
    } else if (a == "--alpha") {
      p.alpha = std::stod(need(i, argc, argv));
    } else if (a == "--clause2") {
      p.clause2 = dynres::parse_clause2(need(i, argc, argv));
    } else if (a == "--grid") {
      const int k = std::stoi(need(i, argc, argv));
      if (sel == dynres::Selection::internvl) {
        p.max_num = k * k;
      } else {
        p.candidates = dynres::square_grid(k, sel == dynres::Selection::bluelm);
      }
    } else if (a == "--max-num") {
      p.max_num = std::stoi(need(i, argc, argv));
    } else if (a == "--json") {
      json = true;
    } else {
      throw InvalidArgument(cat("unknown option ", a));
    }
  }
  int64_t w = 0, h = 0;
  if (!parse_size(target, &w, &h)) {
    std::ifstream f(target, std::ios::binary);
    if (!f) throw InvalidArgument(cat("'", target, "' is neither WxH nor a readable image file"));
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const image::ImageInfo info = image::probe(bytes.data(), bytes.size());
    w = info.width;
    h = info.height;
  }
  const dynres::Plan r = dynres::plan(w, h, p);
  if (json) {
    nlohmann::json j = {{"width", w},
                        {"height", h},
                        {"scheme", dynres::selection_name(sel)},
                        {"grid", {r.grid.m, r.grid.n}},
                        {"canvas", {r.canvas_w, r.canvas_h}},
                        {"content", {r.content_w, r.content_h}},
                        {"patches", r.patches},
                        {"tokens_vit", r.tokens_vit},
                        {"tokens_ds", r.tokens_ds},
                        {"fallback", r.fallback}};
    std::cout << j.dump() << "\n";
  } else {
    std::printf("%lldx%lld  scheme=%s  grid=%d:%d  canvas=%lldx%lld  content=%lldx%lld  patches=%lld  tokens=%lld/%lld%s\n",
                (long long)w, (long long)h, dynres::selection_name(sel), r.grid.m, r.grid.n, (long long)r.canvas_w,
                (long long)r.canvas_h, (long long)r.content_w, (long long)r.content_h, (long long)r.patches,
                (long long)r.tokens_vit, (long long)r.tokens_ds, r.fallback ? "  (fallback)" : "");
  }
  return 0;
}


std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InvalidArgument(cat("cannot open ", path));
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

int64_t to_int(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used == v.size()) return x;
  } catch (...) {
  }
  throw InvalidArgument(cat(flag, " needs an integer, got '", v, "'"));
}

double to_float(const std::string& flag, const std::string& v) {
  try {
    size_t used = 0;
    const double x = std::stod(v, &used);
    if (used == v.size()) return x;
  } catch (...) {
  }
  throw InvalidArgument(cat(flag, " needs a number, got '", v, "'"));
}

// The decode steps' op profile (runtime/llm.h StepProfile) as a table on stderr.
void print_profile(const runtime::StepProfile& p) {
  if (p.steps < 1) {
    std::fprintf(stderr, "profile: no decode step ran\n");
    return;
  }
  const double n = double(p.steps);
  std::fprintf(stderr, "decode profile: %lld steps, %.3f ms per step\n%-14s %-7s %10s %9s %7s %9s %7s\n",
               (long long)p.steps, 1e3 * p.seconds / n, "op", "format", "calls/step", "ms/step", "share", "MB/step",
               "GB/s");
  double timed = 0;
  for (const runtime::OpProfile& o : p.ops) {
    timed += o.seconds;
    const double gbps = o.bytes > 0 && o.seconds > 0 ? double(o.bytes) / o.seconds / 1e9 : 0.0;
    std::fprintf(stderr, "%-14s %-7s %10.1f %9.3f %7.3f %9.2f %7.1f\n", o.op.c_str(), o.format.c_str(),
                 double(o.calls) / n, 1e3 * o.seconds / n, o.seconds / p.seconds, double(o.bytes) / n / 1e6, gbps);
  }
  std::fprintf(stderr, "%-14s %-7s %10.1f %9.3f %7.3f\n", "other", "", 1.0, 1e3 * (p.seconds - timed) / n,
               (p.seconds - timed) / p.seconds);
}

int cmd_run(int argc, char** argv) {
  std::string model, prompt;
  std::vector<std::string> images;
  runtime::EngineOptions eo;
  runtime::GenerateOptions go;
  go.max_new_tokens = 128;
  bool profile = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model") model = need(i, argc, argv);
    else if (a == "--image") images.push_back(need(i, argc, argv));
    else if (a == "--prompt") prompt = need(i, argc, argv);
    else if (a == "--max-new-tokens") go.max_new_tokens = to_int(a, need(i, argc, argv));
    else if (a == "--temperature") go.sampling.temperature = float(to_float(a, need(i, argc, argv)));
    else if (a == "--top-k") go.sampling.top_k = to_int(a, need(i, argc, argv));
    else if (a == "--top-p") go.sampling.top_p = float(to_float(a, need(i, argc, argv)));
    else if (a == "--seed") go.sampling.seed = uint64_t(to_int(a, need(i, argc, argv)));
    else if (a == "--threads") eo.threads = int(to_int(a, need(i, argc, argv)));
    else if (a == "--chunk") eo.chunk = to_int(a, need(i, argc, argv));
    else if (a == "--tile-batch") eo.tile_batch = to_int(a, need(i, argc, argv));
    else if (a == "--kv-cache") eo.kv_cache = need(i, argc, argv);
    else if (a == "--activations") eo.activations = need(i, argc, argv);
    else if (a == "--system") go.system = need(i, argc, argv);
    else if (a == "--context") eo.context = to_int(a, need(i, argc, argv));
    else if (a == "--dynres") eo.dynres = need(i, argc, argv);
    else if (a == "--profile") profile = true;
    else throw InvalidArgument(cat("run: unknown option '", a, "'"));
  }
  if (model.empty() || prompt.empty()) throw InvalidArgument("run needs --model PKG and --prompt TEXT");
  auto engine = runtime::Engine::load(model, eo);
  runtime::Session s = engine->session();
  for (const std::string& path : images) s.submit_image(read_file(path));
  if (profile) s.start_profile();
  const runtime::Result r = s.generate(prompt, go, [](const std::string& piece) {
    std::cout << piece << std::flush;
    return true;
  });
  const runtime::Timing& t = r.timing;
  std::cout << "\n";
  std::fprintf(stderr,
               "finish: %s (%s activations, %s KV, chunk %lld)\n"
               "init (load)            %8.3f s\n"
               "preprocessing          %8.3f s  (%lld tiles)\n"
               "ViT + projector        %8.3f s  (%lld image tokens)\n"
               "waiting for images     %8.3f s\n"
               "LLM prefill            %8.3f s  (%lld tokens, %.1f tok/s)\n"
               "time to first token    %8.3f s\n"
               "decode                 %8.1f tok/s (%lld tokens)\n"
               "peak resident memory   %8.0f MB\n",
               r.finish_reason.c_str(), engine->options().activations.c_str(), engine->options().kv_cache.c_str(),
               (long long)t.chunk, t.init_s,
               t.preprocess_s, (long long)t.tiles, t.vit_s, (long long)t.image_tokens, t.image_wait_s, t.prefill_s,
               (long long)t.prompt_tokens, t.prefill_tokens_per_s(), t.ttft_s, t.decode_tokens_per_s(),
               (long long)t.new_tokens, t.peak_rss_mb);
  if (profile) print_profile(s.stop_profile());
  return 0;
}

int cmd_isa() {
  std::cout << "supported:";
  for (Isa i : supported_isas()) std::cout << " " << isa_name(i);
  std::cout << "\nactive: " << isa_name(active_isa()) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string cmd = argv[1];
  try {
    if (cmd == "plan") return cmd_plan(argc, argv);
    if (cmd == "isa") return cmd_isa();
    if (cmd == "run") return cmd_run(argc, argv);
    if (cmd == "-h" || cmd == "--help") {
      usage();
      return 0;
    }
    std::cerr << "bluelm: unknown command '" << cmd << "'\n";
    return usage();
  } catch (const std::exception& e) {
    std::cerr << "bluelm: error: " << e.what() << "\n";
    return 1;
  }
}

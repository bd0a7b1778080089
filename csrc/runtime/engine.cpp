#include "runtime/engine.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <thread>

#include "common/error.h"
#include "common/threadpool.h"
#include "image/image.h"
#include "runtime/anyres.h"
#include "runtime/image_block.h"
#include "tokenizer/tokenizer.h"

namespace bluelm::runtime {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
constexpr const char* kImageMarker = "<image>";
}  // namespace

double peak_rss_mb() {
  // VmHWM is the high-water mark of this address space. getrusage's ru_maxrss is not: Linux carries it over exec,
  // so a process started from a large parent (a notebook with torch loaded) would report the parent's size.
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    long kb = -1;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    std::fclose(f);
    if (kb >= 0) return double(kb) / 1024.0;
  }
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

double current_rss_mb() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  const int n = std::fscanf(f, "%ld %ld", &pages, &resident);
  std::fclose(f);
  return n == 2 ? double(resident) * double(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0) : 0;
}

// ---- Engine ------------------------------------------------------------------------------------------------

std::shared_ptr<Engine> Engine::load(const std::string& package_dir, const EngineOptions& opt) {
  const auto t0 = Clock::now();
  std::shared_ptr<Engine> e(new Engine());
  e->opt_ = opt;
  if (opt.threads < 0) throw InvalidArgument(cat("threads must be >= 0, got ", opt.threads));
  if (opt.chunk < 0 || opt.tile_batch < 0 || opt.context < 0)
    throw InvalidArgument("chunk, tile_batch and context must be >= 0 (0: the package's default)");
  if (opt.threads > 0) set_num_threads(opt.threads);
  e->pkg_ = model::Package::open(package_dir);
  const model::ModelConfig& cfg = e->pkg_->config();
  if (e->opt_.chunk == 0) e->opt_.chunk = cfg.deploy.chunk;
  if (e->opt_.tile_batch == 0) e->opt_.tile_batch = cfg.deploy.tile_batch;
  if (e->opt_.kv_cache.empty()) e->opt_.kv_cache = cfg.deploy.kv_cache;
  if (e->opt_.activations.empty()) e->opt_.activations = cfg.deploy.activations;
  e->kv_ = parse_kv_type(e->opt_.kv_cache);
  if (e->opt_.context == 0) e->opt_.context = std::min<int64_t>(cfg.llm.max_context, 4096);
  if (e->opt_.context > cfg.llm.max_context)
    throw InvalidArgument(cat("context ", e->opt_.context, " exceeds the model's max_context ", cfg.llm.max_context));
  e->act_ = parse_activations(e->opt_.activations);
  e->dynres_ = e->opt_.dynres.empty() ? cfg.dynres
                                      : model::parse_dynres_override(e->opt_.dynres, cfg, "engine option dynres");
  e->family_tiles_ = cfg.multimodal && cfg.family_splitting && e->opt_.dynres.empty();
  model::check_session_fits(cfg.llm, e->opt_.context, e->opt_.chunk,
                            cat(package_dir, ": chunk ", e->opt_.chunk, " with context ", e->opt_.context));
  e->llm_ = std::make_unique<Llm>(*e->pkg_, e->opt_.context, e->act_);
  if (cfg.multimodal && !e->opt_.release_vit) e->vit_ = std::make_unique<VisionEncoder>(*e->pkg_, e->act_);
  e->init_s_ = since(t0);
  return e;
}

bool Engine::vit_resident() const {
  std::lock_guard<std::mutex> lock(vit_mutex_);
  return vit_ != nullptr;
}

void Engine::check_own_tiling() const {
  if (family_tiles_)
    throw InvalidArgument(cat("this ", config().family, " package tiles images with its family's own splitting, "
                              "which the C++ core does not have: submit the family's tiles (the Python Engine "
                              "does), or give a tiling in its place (bluelm run --dynres JSON, EngineOptions::dynres, "
                              "bluelm-v run --scheme)"));
}

int64_t Engine::image_tokens(int64_t width, int64_t height) const {
  if (!config().multimodal) throw InvalidArgument("this model is text-only and cannot take images");
  check_own_tiling();
  const dynres::Plan plan = dynres::plan(width, height, dynres_);
  return layout_tokens(plan.patches, plan.grid.m, plan.grid.n, width, height);
}

int64_t Engine::layout_tokens(int64_t patches, int64_t m, int64_t n, int64_t width, int64_t height) const {
  const model::ModelConfig& c = config();
  if (c.image_layout == model::ImageLayout::tiles) return patches * c.image_tokens_per_tile();
  const int64_t side = (c.vision.grid() + c.projector.merge - 1) / c.projector.merge;
  return anyres_tokens(patches, m, n, side, height, width, c.anyres_max_tiles);
}

void Engine::with_vision(const std::function<void(VisionEncoder&)>& fn) {
  std::lock_guard<std::mutex> lock(vit_mutex_);
  if (!vit_) vit_ = std::make_unique<VisionEncoder>(*pkg_, act_);
  fn(*vit_);
}

void Engine::image_done() {
  std::lock_guard<std::mutex> lock(vit_mutex_);
  if (--images_pending_ == 0 && opt_.release_vit && vit_) {
    vit_.reset();
    for (const auto& [name, t] : pkg_->tensors())
      if (name.rfind("vision_tower.", 0) == 0 || name.rfind("mm_projector.", 0) == 0)
        pkg_->mapping().release(t.offset, t.bytes);
  }
}

std::vector<int32_t> Engine::image_block(int64_t patches, int64_t m, int64_t n, int64_t global, int64_t positions) const {
  const model::ModelConfig& c = config();
  std::vector<int32_t> ids = expand_image_block(c.image_block, c.image_layout, {patches, m, n, global, positions},
                                                c.image_tokens_per_tile(), Session::kImageTokenId);
  // Refused before any decoding or encoding: an image whose block alone outgrows the session's context
  if (int64_t(ids.size()) > opt_.context)
    throw InvalidArgument(cat("an image of ", patches, " tiles takes ", ids.size(), " prompt positions, more than the "
                              "context of ", opt_.context, " (a smaller --grid or a larger --context)"));
  return ids;
}

// ---- images ------------------------------------------------------------------------------------------------

struct Encoded {
  std::vector<float> embeds;  // [tokens, hidden]
  double preprocess_s = 0, vit_s = 0;
  int64_t tiles = 0;
};

struct Session::Image {
  dynres::Plan plan;
  int64_t tokens = 0;            // image positions
  std::vector<int32_t> block;    // the image's ids in the prompt (image_block expanded; kImageTokenId positions)
  std::string block_error;       // why the block is unknown (submit_tiles without the grid a per-tile block needs)
  std::shared_future<Encoded> result;
};

struct Session::State {
  std::shared_ptr<Engine> engine;
  KvCache cache;
  LlmWorkspace ws;
  std::deque<std::shared_ptr<Image>> images;
  std::shared_future<Encoded> last;
  std::vector<float> x1, logits;  // decode step buffers (reused: no allocation per token)
  std::vector<int32_t> cached_ids;  // the tokens whose KV entries generate() left in the cache, in order
  std::unique_ptr<StepProfile> profile;  // between start_profile() and stop_profile()
  State(std::shared_ptr<Engine> e)
      : engine(std::move(e)),
        cache(engine->llm().new_cache(engine->kv_type(), engine->options().context)),
        ws(engine->llm().new_workspace(engine->options().chunk)) {}
};

namespace {

// Where an image's embedding rows go (anyres_unpad: the grid and the image's size; tiles: nothing to do).
struct LayoutArgs {
  int64_t m = 1, n = 1, width = 1, height = 1;
  bool base_last = false;   // the tiler put the whole-image tile last; the anyres layout wants it first
  bool global_first = false;  // the tiler put it first; the image block wants it last (tiles layout)
};

// Tile embeddings [patches, tokens_per_tile, d] -> the image's rows in the package's image layout.
void lay_out(Engine& engine, const LayoutArgs& a, Encoded& out) {
  const model::ModelConfig& cfg = engine.config();
  if (cfg.image_layout == model::ImageLayout::tiles) {
    const int64_t row = cfg.image_tokens_per_tile() * cfg.llm.hidden;
    if (a.global_first && out.tiles > 1) std::rotate(out.embeds.begin(), out.embeds.begin() + row, out.embeds.end());
    return;
  }
  const int64_t per_tile = cfg.image_tokens_per_tile(), d = cfg.llm.hidden, p = out.tiles;
  const int64_t side = (cfg.vision.grid() + cfg.projector.merge - 1) / cfg.projector.merge;
  std::vector<float> tiles = std::move(out.embeds);
  if (a.base_last && p > 1) std::rotate(tiles.begin(), tiles.end() - per_tile * d, tiles.end());
  const float* newline = nullptr;
  engine.with_vision([&](VisionEncoder& vit) { newline = vit.newline(); });
  const int64_t rows = anyres_tokens(p, a.m, a.n, side, a.height, a.width, cfg.anyres_max_tiles);
  out.embeds.assign(size_t(rows * d), 0.0f);
  pack_anyres(tiles.data(), p, a.m, a.n, side, d, a.height, a.width, cfg.anyres_max_tiles, newline, out.embeds.data());
}

// Encode `patches` tiles; tile_at(i, out [3, S, S]) writes tile i normalized. Tiles are produced on a producer
// thread one batch ahead of the ViT.
Encoded encode_tiles(Engine& engine, int64_t patches, const std::function<void(int64_t, float*)>& tile_at,
                     int64_t batch) {
  const model::ModelConfig& cfg = engine.config();
  Encoded out;
  out.tiles = patches;
  const int tile = int(cfg.vision.image_size);
  const int64_t tile_floats = 3 * int64_t(tile) * tile, per_tile = cfg.image_tokens_per_tile(), d = cfg.llm.hidden;
  out.embeds.resize(size_t(patches * per_tile * d));
  const int64_t batches = (patches + batch - 1) / batch;
  std::vector<float> buf[2] = {std::vector<float>(size_t(batch * tile_floats)), std::vector<float>(size_t(batch * tile_floats))};
  std::mutex m;
  std::condition_variable cv;
  int64_t produced = 0, consumed = 0;
  bool failed = false;
  std::exception_ptr producer_error;
  double extract_s = 0;
  std::thread producer([&] {
    try {
      for (int64_t bi = 0; bi < batches; ++bi) {
        {
          std::unique_lock<std::mutex> lock(m);
          cv.wait(lock, [&] { return failed || bi - consumed < 2; });
          if (failed) return;
        }
        const auto te = Clock::now();
        const int64_t first = bi * batch, n = std::min(batch, patches - first);
        for (int64_t i = 0; i < n; ++i) tile_at(first + i, buf[bi % 2].data() + i * tile_floats);
        extract_s += since(te);
        std::lock_guard<std::mutex> lock(m);
        ++produced;
        cv.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(m);
      producer_error = std::current_exception();
      failed = true;
      cv.notify_all();
    }
  });
  const auto tv = Clock::now();
  try {
    engine.with_vision([&](VisionEncoder& vit) {
      for (int64_t bi = 0; bi < batches; ++bi) {
        {
          std::unique_lock<std::mutex> lock(m);
          cv.wait(lock, [&] { return failed || produced > bi; });
          if (failed) return;
        }
        const int64_t first = bi * batch, n = std::min(batch, patches - first);
        vit.encode(buf[bi % 2].data(), n, out.embeds.data() + first * per_tile * d);
        std::lock_guard<std::mutex> lock(m);
        ++consumed;
        cv.notify_all();
      }
    });
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(m);
      failed = true;
      cv.notify_all();
    }
    producer.join();
    throw;
  }
  producer.join();
  if (producer_error) std::rethrow_exception(producer_error);
  out.vit_s = since(tv);
  out.preprocess_s = extract_s;
  return out;
}

// Decode (when needed), tile and encode one image in the package's layout.
Encoded encode_image(Engine& engine, const image::Image& rgb, const dynres::Plan& plan, double decode_s,
                     int64_t batch) {
  const model::ModelConfig& cfg = engine.config();
  const auto t0 = Clock::now();
  const int tile = int(cfg.vision.image_size);
  const image::TileSource src = image::prepare_tiles(rgb.data.data(), rgb.width, rgb.height, rgb.width * 3, plan, tile,
                                                     std::max(1, num_threads()));
  const double prepare_s = since(t0);
  image::Normalize norm;
  for (int c = 0; c < 3; ++c) norm.mean[c] = cfg.vision.mean[size_t(c)], norm.std[c] = cfg.vision.std[size_t(c)];
  Encoded out = encode_tiles(engine, plan.patches, [&](int64_t i, float* dst) { image::extract_tile(src, i, norm, dst); },
                             batch);
  out.preprocess_s += decode_s + prepare_s;
  const bool global = plan.patches > plan.local_patches;
  lay_out(engine, {plan.grid.m, plan.grid.n, rgb.width, rgb.height, !plan.thumbnail_first,
                   global && plan.thumbnail_first && cfg.image_block.global_last}, out);
  return out;
}

}  // namespace

// ---- Session -----------------------------------------------------------------------------------------------

Session::Session(std::shared_ptr<Engine> engine) : s_(std::make_shared<State>(std::move(engine))) {}
Session::Session(Session&&) noexcept = default;

Session::~Session() {
  if (!s_) return;
  for (auto& img : s_->images)  // do not leave encoders running on a dead session
    if (img->result.valid()) img->result.wait();
}

int64_t Session::pending_images() const { return int64_t(s_->images.size()); }
int64_t Session::cache_length() const { return s_->cache.length(); }
void Session::reset() {
  s_->cache.set_length(0);
  s_->cached_ids.clear();
}

namespace {
struct Submitted {
  image::Image rgb;
  std::vector<uint8_t> encoded;
};
}  // namespace

void Session::submit_image(std::vector<uint8_t> encoded) {
  Engine& e = *s_->engine;
  if (!e.config().multimodal) throw InvalidArgument("this model is text-only and cannot take images");
  e.check_own_tiling();
  const image::ImageInfo info = image::probe(encoded.data(), encoded.size());
  auto in = std::make_shared<Submitted>();
  in->encoded = std::move(encoded);
  auto img = std::make_shared<Image>();
  img->plan = dynres::plan(info.width, info.height, e.dynres());
  img->tokens = e.layout_tokens(img->plan.patches, img->plan.grid.m, img->plan.grid.n, info.width, info.height);
  img->block = e.image_block(img->plan.patches, img->plan.grid.m, img->plan.grid.n,
                             img->plan.patches > img->plan.local_patches, img->tokens);
  std::shared_future<Encoded> prev = s_->last;
  std::shared_ptr<Engine> eng = s_->engine;
  const dynres::Plan plan = img->plan;
  const int64_t batch = e.options().tile_batch;
  eng->image_started();
  img->result = std::async(std::launch::async, [eng, in, plan, prev, batch]() -> Encoded {
                  struct Done {
                    Engine* e;
                    ~Done() { e->image_done(); }
                  } done{eng.get()};
                  if (prev.valid()) prev.wait();  // one image at a time, in order
                  const auto t0 = Clock::now();
                  in->rgb = image::decode(in->encoded.data(), in->encoded.size());
                  in->encoded = {};
                  const double decode_s = since(t0);
                  return encode_image(*eng, in->rgb, plan, decode_s, batch);
                }).share();
  s_->last = img->result;
  s_->images.push_back(img);
}

void Session::submit_rgb(const uint8_t* rgb, int64_t width, int64_t height) {
  Engine& e = *s_->engine;
  if (!e.config().multimodal) throw InvalidArgument("this model is text-only and cannot take images");
  e.check_own_tiling();
  if (width < 1 || height < 1) throw InvalidArgument(cat("image size ", width, "x", height, " must be >= 1"));
  auto in = std::make_shared<Submitted>();
  auto img = std::make_shared<Image>();
  img->plan = dynres::plan(width, height, e.dynres());  // refuses sizes over max_pixels
  img->tokens = e.layout_tokens(img->plan.patches, img->plan.grid.m, img->plan.grid.n, width, height);
  img->block = e.image_block(img->plan.patches, img->plan.grid.m, img->plan.grid.n,
                             img->plan.patches > img->plan.local_patches, img->tokens);
  in->rgb.width = width;
  in->rgb.height = height;
  in->rgb.data.assign(rgb, rgb + width * height * 3);
  std::shared_future<Encoded> prev = s_->last;
  std::shared_ptr<Engine> eng = s_->engine;
  const dynres::Plan plan = img->plan;
  const int64_t batch = e.options().tile_batch;
  eng->image_started();
  img->result = std::async(std::launch::async, [eng, in, plan, prev, batch]() -> Encoded {
                  struct Done {
                    Engine* e;
                    ~Done() { e->image_done(); }
                  } done{eng.get()};
                  if (prev.valid()) prev.wait();
                  return encode_image(*eng, in->rgb, plan, 0.0, batch);
                }).share();
  s_->last = img->result;
  s_->images.push_back(img);
}

void Session::submit_tiles(const float* tiles, int64_t patches, int64_t side, const TileLayout& layout) {
  Engine& e = *s_->engine;
  const model::ModelConfig& cfg = e.config();
  if (!cfg.multimodal) throw InvalidArgument("this model is text-only and cannot take images");
  const int64_t s = cfg.vision.image_size, tile_floats = 3 * s * s;
  if (patches < 1 || patches > 4096) throw InvalidArgument(cat("tile count ", patches, " is outside [1, 4096]"));
  if (side != s) throw InvalidArgument(cat("tiles of side ", side, " given; the ViT takes ", s));
  auto img = std::make_shared<Image>();
  img->plan.patches = patches;
  if (cfg.image_layout == model::ImageLayout::anyres_unpad) {
    if (patches > 1 && patches != 1 + layout.m * layout.n)
      throw InvalidArgument(cat("anyres layout: ", patches, " tiles for a ", layout.m, "x", layout.n,
                                " grid (1 + m*n expected, the base image first)"));
    img->tokens = e.layout_tokens(patches, layout.m, layout.n, layout.width, layout.height);
    img->block = e.image_block(patches, layout.m, layout.n, patches > 1 ? 1 : 0, img->tokens);
  } else {
    img->tokens = e.layout_tokens(patches, 1, 1, 1, 1);
    // The whole-image tile, when the caller does not say: the one beyond an m x n grid
    if (layout.m < 1 || layout.n < 1 || layout.m > 4096 || layout.n > 4096)
      throw InvalidArgument(cat("tile grid ", layout.m, "x", layout.n, " is outside [1, 4096]"));
    int64_t global = layout.global;
    if (global < 0) global = patches == layout.m * layout.n + 1 ? 1 : 0;
    if (global > 1) throw InvalidArgument(cat("global tile count ", global, " must be 0 or 1"));
    if (global == 1 && patches < 2) throw InvalidArgument("one tile given, and said to be beside a global tile");
    const bool single = patches == 1 || (patches == 2 && global == 1 && layout.m * layout.n == 1);
    if (cfg.image_block.per_tile() && !single && patches - global != layout.m * layout.n)
      // prefill() with the caller's own ids needs no block; generate() does, and says so
      img->block_error = cat("submit_tiles got ", patches, " tiles without their grid, and the package's image block "
                             "places markers per tile: give grid=(m, n) (and global_tile) to submit_tiles");
    else
      img->block = e.image_block(patches, layout.m, layout.n, global, img->tokens);
  }
  auto pixels = std::make_shared<std::vector<float>>(tiles, tiles + patches * tile_floats);
  std::shared_future<Encoded> prev = s_->last;
  std::shared_ptr<Engine> eng = s_->engine;
  const int64_t batch = e.options().tile_batch;
  const LayoutArgs args{layout.m, layout.n, layout.width, layout.height, false};
  eng->image_started();
  img->result = std::async(std::launch::async, [eng, pixels, patches, tile_floats, args, prev, batch]() -> Encoded {
                  struct Done {
                    Engine* e;
                    ~Done() { e->image_done(); }
                  } done{eng.get()};
                  if (prev.valid()) prev.wait();
                  Encoded out = encode_tiles(*eng, patches, [&](int64_t i, float* dst) {
                    std::memcpy(dst, pixels->data() + i * tile_floats, size_t(tile_floats) * sizeof(float));
                  }, batch);
                  lay_out(*eng, args, out);
                  return out;
                }).share();
  s_->last = img->result;
  s_->images.push_back(img);
}

namespace {

// Prefill ids (with image runs) in chunks; images are taken from `images` in order and waited for only when
// their first position is reached.
struct PrefillRun {
  const Llm& llm;
  KvCache& cache;
  LlmWorkspace& ws;
  std::vector<std::shared_ptr<Session::Image>> images;
  Timing& timing;
};

std::vector<float> run_prefill(PrefillRun& run, const std::vector<int32_t>& ids, int64_t chunk, bool all_logits) {
  const model::LlmConfig& c = run.llm.config();
  const int64_t total = int64_t(ids.size()), d = c.hidden;
  if (total < 1) throw InvalidArgument("the prompt has no tokens");
  if (chunk < 1) throw InvalidArgument(cat("prefill chunk must be positive, got ", chunk));
  if (chunk > run.ws.max_t) run.ws = run.llm.new_workspace(chunk);
  int64_t image_positions = 0;
  for (int32_t id : ids) image_positions += id == Session::kImageTokenId;
  int64_t want = 0;
  for (const auto& img : run.images) want += img->tokens;
  if (image_positions != want)
    throw InvalidArgument(cat("the prompt has ", image_positions, " image positions but the submitted images need ", want));
  if (run.cache.length() + total > run.cache.capacity())
    throw InvalidArgument(cat("prompt of ", total, " tokens does not fit the context of ", run.cache.capacity(),
                              " positions (", run.cache.length(), " in use)"));
  std::vector<float> x(size_t(chunk * d)), logits(size_t(c.vocab)), all;
  if (all_logits) all.resize(size_t(total * c.vocab));
  size_t img_i = 0;
  int64_t img_row = 0;
  const Encoded* enc = nullptr;
  for (int64_t s = 0; s < total; s += chunk) {
    const int64_t t = std::min(chunk, total - s);
    for (int64_t r = 0; r < t; ++r) {
      const int32_t id = ids[size_t(s + r)];
      if (id != Session::kImageTokenId) {
        run.llm.embed(&id, 1, x.data() + r * d);
        continue;
      }
      if (!enc) {
        const auto tw = Clock::now();
        enc = &run.images[img_i]->result.get();  // rethrows an encoding error
        run.timing.image_wait_s += since(tw);
        run.timing.preprocess_s += enc->preprocess_s;
        run.timing.vit_s += enc->vit_s;
        run.timing.tiles += enc->tiles;
      }
      std::memcpy(x.data() + r * d, enc->embeds.data() + img_row * d, size_t(d) * sizeof(float));
      if (++img_row == run.images[img_i]->tokens) enc = nullptr, img_row = 0, ++img_i;
    }
    const auto tp = Clock::now();
    const bool last = s + t >= total;
    run.llm.forward(x.data(), t, run.cache, run.ws, last ? logits.data() : nullptr,
                    all_logits ? all.data() + s * c.vocab : nullptr);
    run.timing.prefill_s += since(tp);
  }
  run.timing.prompt_tokens += total;
  run.timing.image_tokens += image_positions;
  return all_logits ? all : logits;
}

// Text safe to emit, text held back, stopped: the reference's rule (bluelm_v/models/generate.py).
bool split_stop(const std::vector<std::string>& stops, std::string& pending, std::string& emit) {
  emit.clear();
  if (stops.empty()) {
    emit.swap(pending);
    return false;
  }
  size_t cut = std::string::npos;
  for (const std::string& s : stops) {
    const size_t i = s.empty() ? std::string::npos : pending.find(s);
    if (i != std::string::npos) cut = std::min(cut, i);
  }
  if (cut != std::string::npos) {
    emit = pending.substr(0, cut);
    pending.clear();
    return true;
  }
  size_t hold = 0;
  for (const std::string& s : stops)
    for (size_t n = std::min(s.size() - 1, pending.size()); n > 0; --n)
      if (pending.compare(pending.size() - n, n, s, 0, n) == 0) {
        hold = std::max(hold, n);
        break;
      }
  emit = pending.substr(0, pending.size() - hold);
  pending.erase(0, pending.size() - hold);
  return false;
}

}  // namespace

std::vector<float> Session::prefill(const std::vector<int32_t>& ids, int64_t chunk, bool all_logits) {
  Timing timing;
  PrefillRun run{s_->engine->llm(), s_->cache, s_->ws, {s_->images.begin(), s_->images.end()}, timing};
  s_->images.clear();
  s_->cached_ids.clear();
  return run_prefill(run, ids, chunk, all_logits);
}

const std::vector<float>& Session::decode_step(int32_t token) {
  const Llm& llm = s_->engine->llm();
  s_->x1.resize(size_t(llm.config().hidden));
  s_->logits.resize(size_t(llm.config().vocab));
  s_->cached_ids.clear();  // a decode outside generate(); generate() sets the record again after its steps
  const auto t0 = Clock::now();
  StepProfile* prof = s_->profile.get();
  // The profile is attached for this step only (so prefill never records into it), and detached on an error too.
  struct Attach {
    LlmWorkspace& ws;
    Attach(LlmWorkspace& w, StepProfile* p) : ws(w) { ws.profile = p; }
    ~Attach() { ws.profile = nullptr; }
  } attach(s_->ws, prof);
  llm.embed(&token, 1, s_->x1.data());
  llm.forward(s_->x1.data(), 1, s_->cache, s_->ws, s_->logits.data(), nullptr, /*decoding=*/true);
  if (prof) {
    ++prof->steps;
    prof->seconds += since(t0);
  }
  return s_->logits;
}

void Session::start_profile() { s_->profile = std::make_unique<StepProfile>(); }

StepProfile Session::stop_profile() {
  if (!s_->profile) throw InvalidArgument("stop_profile() without start_profile()");
  StepProfile p = std::move(*s_->profile);
  s_->profile.reset();
  return p;
}

std::vector<float> Session::decode(int32_t token) { return decode_step(token); }

Result Session::generate(const std::string& prompt, const GenerateOptions& opt, const TextCallback& on_text) {
  const auto t_call = Clock::now();
  Engine& e = *s_->engine;
  const model::Package& pkg = e.package();
  const tokenizer::Tokenizer& tok = pkg.tokenizer();
  opt.sampling.validate();
  if (opt.max_new_tokens < 0) throw InvalidArgument(cat("max_new_tokens must be >= 0, got ", opt.max_new_tokens));
  if (prompt.find(kImageMarker) != std::string::npos)
    throw InvalidArgument(cat("the prompt must not contain the image marker ", kImageMarker, " (submit images instead)"));
  // A family package written before model.image_block: its prompt layout is unknown here (never guess BlueLM-V's)
  if (!s_->images.empty() && !e.config().image_block.present && e.config().family != "bluelm_v")
    throw InvalidArgument(cat("the package has no model.image_block, so the '", e.config().family, "' prompt layout "
                              "of its images is unknown: package the model again with this version, or give the "
                              "family's ids to Session::prefill"));
  for (const auto& img : s_->images)
    if (!img->block_error.empty()) throw InvalidArgument(img->block_error);
  std::vector<std::shared_ptr<Image>> images(s_->images.begin(), s_->images.end());
  s_->images.clear();
  std::string content;
  for (size_t i = 0; i < images.size(); ++i) content += std::string(kImageMarker) + "\n";
  content += prompt;
  if (!opt.chat && (!opt.system.empty() || !opt.history.empty()))
    throw InvalidArgument("a system turn and earlier turns need chat = true");
  std::vector<tokenizer::ChatMessage> messages;
  if (!opt.system.empty()) messages.push_back({"system", opt.system});
  for (size_t i = 0; i < opt.history.size(); ++i) {
    const tokenizer::ChatMessage& m = opt.history[i];
    if (m.role != "user" && m.role != "assistant")
      throw InvalidArgument(cat("history turn ", i, " has role '", m.role, "': expected 'user' or 'assistant'"));
    if (m.content.find(kImageMarker) != std::string::npos)
      throw InvalidArgument(cat("history turn ", i, " must not contain the image marker ", kImageMarker));
    messages.push_back(m);
  }
  messages.push_back({"user", content});
  const std::string text = opt.chat ? tokenizer::format_chat(pkg.chat(), messages, true) : content;
  // Split at the image markers; each becomes its image's run of placeholder positions.
  std::vector<int32_t> ids;
  if (pkg.add_bos() && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
  size_t pos = 0, image_i = 0;
  while (true) {
    const size_t at = text.find(kImageMarker, pos);
    const std::vector<int32_t> piece = tok.encode(text.substr(pos, at == std::string::npos ? std::string::npos : at - pos),
                                                  {false, true});
    ids.insert(ids.end(), piece.begin(), piece.end());
    if (at == std::string::npos) break;
    if (image_i >= images.size()) throw InvalidArgument("the chat format produced more image markers than images");
    const std::vector<int32_t>& block = images[image_i++]->block;
    ids.insert(ids.end(), block.begin(), block.end());
    pos = at + std::strlen(kImageMarker);
  }
  const int64_t capacity = s_->cache.capacity();
  if (int64_t(ids.size()) + opt.max_new_tokens > capacity)
    throw InvalidArgument(cat("prompt of ", ids.size(), " tokens + max_new_tokens ", opt.max_new_tokens,
                              " exceeds the context of ", capacity, " positions"));
  Result res;
  res.timing.init_s = e.init_s();
  res.timing.chunk = e.options().chunk;
  // Keep the KV entries of the text prefix shared with what the cache holds (never image positions, whose entries
  // depend on the image), and prefill at least the last position, whose logits start the answer.
  std::vector<int32_t>& kept = s_->cached_ids;
  size_t common = 0;
  while (common < kept.size() && common + 1 < ids.size() && kept[common] == ids[common] &&
         ids[common] != kImageTokenId)
    ++common;
  if (int64_t(common) > s_->cache.length()) common = size_t(s_->cache.length());
  s_->cache.set_length(int64_t(common));
  kept.clear();
  if (opt.max_new_tokens == 0) {
    for (auto& img : images) img->result.wait();
    res.finish_reason = "length";
    res.timing.peak_rss_mb = peak_rss_mb();
    return res;
  }
  res.timing.reused_tokens = int64_t(common);
  PrefillRun run{e.llm(), s_->cache, s_->ws, images, res.timing};
  std::vector<float> first =
      run_prefill(run, std::vector<int32_t>(ids.begin() + std::ptrdiff_t(common), ids.end()), e.options().chunk, false);
  std::vector<int32_t> in_cache = ids;  // what the cache holds, position by position
  const float* logits = first.data();
  const int64_t n_vocab = std::min<int64_t>(tok.n_vocab(), e.llm().config().vocab);
  Sampler sampler(opt.sampling);
  tokenizer::StreamDecoder decoder(tok, true);
  std::vector<int32_t> eos = pkg.eos_ids();
  std::string pending, emit;
  Clock::time_point t_decode;
  res.finish_reason = "length";
  for (int64_t step = 0; step < opt.max_new_tokens; ++step) {
    const int32_t token = sampler.sample(logits, n_vocab);
    res.tokens.push_back(token);
    if (step == 0) {
      res.timing.ttft_s = since(t_call);
      t_decode = Clock::now();
    }
    if (std::find(eos.begin(), eos.end(), token) != eos.end()) {
      res.finish_reason = "eos";
      break;
    }
    pending += decoder.push(token);
    const bool stopped = split_stop(opt.stop, pending, emit);
    if (!emit.empty()) {
      res.text += emit;
      if (on_text && !on_text(emit)) {
        res.finish_reason = "cancelled";
        break;
      }
    }
    if (stopped) {
      res.finish_reason = "stop";
      break;
    }
    if (step + 1 < opt.max_new_tokens) {
      logits = decode_step(token).data();
      in_cache.push_back(token);
    }
  }
  s_->cached_ids = std::move(in_cache);
  res.timing.new_tokens = int64_t(res.tokens.size());
  if (!res.tokens.empty()) res.timing.decode_s = since(t_decode);
  if (res.finish_reason != "stop" && res.finish_reason != "cancelled") {
    pending += decoder.flush();
    if (!pending.empty()) {
      res.text += pending;
      if (on_text) on_text(pending);
    }
  }
  res.timing.peak_rss_mb = peak_rss_mb();
  return res;
}

}  // namespace bluelm::runtime

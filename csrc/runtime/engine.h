#pragma once
// The native engine (docs/engine.md): a model package loaded once, and sessions that take images and prompts.
//
//   auto engine = Engine::load("pkg/", {});
//   Session s = engine->session();
//   s.submit_image(jpeg_bytes);                  // returns at once; decoding, tiling and the ViT run behind
//   Result r = s.generate("What is in it?", {}, on_text);   // prefills the text before the image while it is
//                                                            // encoded, waits only for the image's positions
//
// Image encoding is pipelined: a producer thread normalizes the next batch of tiles while the ViT encodes the
// current one (batches of `tile_batch` tiles); images are encoded one after the other in submission order. With
// release_vit, the ViT's packed weights are freed (and its mapped pages dropped) once no image is pending.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "model/package.h"
#include "runtime/llm.h"
#include "runtime/sampler.h"
#include "runtime/vision.h"

namespace bluelm::runtime {

struct EngineOptions {
  int threads = 0;            // kernel thread pool size (0: leave as is)
  int64_t chunk = 0;          // prefill chunk t (0: the package's deploy.chunk)
  int64_t tile_batch = 0;     // ViT batch B (0: the package's deploy.tile_batch)
  std::string kv_cache;       // "int8" | "f16" | "f32" ("": the package's deploy.kv_cache)
  int64_t context = 0;        // KV capacity per session (0: min(max_context, 4096))
  bool release_vit = true;    // free the ViT weights when no image is pending
  std::string activations;    // "int8" | "int16" (two int8 passes; linear.h) ("": the package's deploy.activations)
  std::string dynres;         // JSON object replacing the package's model.dynres ("": the package's tiling)
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  std::vector<std::string> stop;  // generation ends before the first occurrence of any of these
  bool chat = true;               // wrap the prompt (and images) in the package's chat format
  // With chat: a system turn first ("": none, or the format's default system turn), then the earlier turns of the
  // conversation (roles "user" / "assistant", text only), then the prompt as the last user turn.
  std::string system;
  std::vector<tokenizer::ChatMessage> history;
};

// Per-request timing in the paper's terms (seconds unless named otherwise).
struct Timing {
  double init_s = 0;           // engine load (mapping, checks, weight packing)
  double preprocess_s = 0;     // image decode + resize + tiling (all images of the request)
  double vit_s = 0;            // ViT + down-sampler + projector
  double image_wait_s = 0;     // time generate() spent waiting for image embeddings
  double prefill_s = 0;        // LLM prefill (chunks), excluding the waits
  double ttft_s = 0;           // generate() call to the first sampled token
  double decode_s = 0;         // after the first token
  int64_t prompt_tokens = 0, image_tokens = 0, tiles = 0, new_tokens = 0, chunk = 0;
  // prompt_tokens counts the positions prefilled; reused_tokens those of the prompt whose KV entries the session kept
  // from its previous generate (the prompt is their sum).
  int64_t reused_tokens = 0;
  double peak_rss_mb = 0;
  double decode_tokens_per_s() const { return decode_s > 0 && new_tokens > 1 ? double(new_tokens - 1) / decode_s : 0; }
  double prefill_tokens_per_s() const { return prefill_s > 0 ? double(prompt_tokens) / prefill_s : 0; }
};

struct Result {
  std::string text;
  std::vector<int32_t> tokens;
  std::string finish_reason;  // "eos" | "stop" | "length" | "cancelled"
  Timing timing;
};

// Called with each piece of text as it is decoded; return false to stop generation ("cancelled").
using TextCallback = std::function<bool(const std::string&)>;

class Engine;

class Session {
 public:
  explicit Session(std::shared_ptr<Engine> engine);
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) = delete;

  // An encoded image (JPEG/PNG/WebP bytes). The header is checked and the tiling planned now (so a bad image
  // fails here, and the number of image tokens is known); decoding and encoding run in the background.
  void submit_image(std::vector<uint8_t> encoded);
  // An RGB image [height, width, 3] uint8 (copied).
  void submit_rgb(const uint8_t* rgb, int64_t width, int64_t height);
  // Tiles already normalized [patches, 3, side, side] (side must be the ViT's S) (a family's own preprocessing; copied), encoded in the background
  // like an image. layout: the anyres_unpad layout's grid (m across, n down; the base image first, then m*n tiles)
  // and the image's size; unused for the tiles layout.
  // tiles layout: m x n local tiles and `global` whole-image tiles after them (-1: 1 when patches == m*n + 1), which
  // the package's image block places.
  struct TileLayout {
    int64_t m = 1, n = 1, width = 1, height = 1, global = -1;
  };
  void submit_tiles(const float* tiles, int64_t patches, int64_t side, const TileLayout& layout);
  int64_t pending_images() const;

  // Answers `prompt` about the submitted images (which it consumes); the text streams to on_text. The KV entries of
  // the longest text prefix this request shares with the previous generate's prompt and answer are kept (a chat's
  // earlier turns are not prefilled again); prefill(), decode() and reset() forget that prefix.
  Result generate(const std::string& prompt, const GenerateOptions& opt = {}, const TextCallback& on_text = {});

  // Lower level (tests, benchmarks): prompt ids (image_token_id marks image positions, which must match the
  // submitted images' token counts) -> logits of the last position after prefill in chunks of `chunk`;
  // all_logits [T, vocab] when asked.
  std::vector<float> prefill(const std::vector<int32_t>& ids, int64_t chunk, bool all_logits = false);
  // One decode step after prefill: token -> logits [vocab].
  std::vector<float> decode(int32_t token);
  const std::vector<float>& decode_step(int32_t token);  // the same into a buffer the session reuses
  // Time every op of the decode steps that follow (decode, decode_step and generate's steps; not prefill) until
  // stop_profile(), which returns what they took (runtime/llm.h, StepProfile). Starting again starts from zero.
  void start_profile();
  StepProfile stop_profile();  // InvalidArgument when no profile was started
  void reset();  // forget the KV cache (images still pending stay pending)
  int64_t cache_length() const;

  static constexpr int32_t kImageTokenId = -200;

  struct Image;  // implementation details (engine.cpp)
  struct State;

 private:
  std::shared_ptr<State> s_;
};

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  static std::shared_ptr<Engine> load(const std::string& package_dir, const EngineOptions& opt = {});
  Session session() { return Session(shared_from_this()); }

  const model::Package& package() const { return *pkg_; }
  const model::ModelConfig& config() const { return pkg_->config(); }
  const EngineOptions& options() const { return opt_; }
  // The image tiling in use: the package's model.dynres, or EngineOptions::dynres in its place.
  const dynres::Params& dynres() const { return dynres_; }
  // Throws InvalidArgument when the package's family tiles its own images (model.image_splitting "family") and no
  // scheme was given in its place: the engine would otherwise tile them in a way nobody asked for.
  void check_own_tiling() const;
  const Llm& llm() const { return *llm_; }
  KvType kv_type() const { return kv_; }
  double init_s() const { return init_s_; }
  bool vit_resident() const;
  // Image tokens of one image of width x height (the dynamic-resolution plan's tiles * tokens per tile).
  int64_t image_tokens(int64_t width, int64_t height) const;
  // Embedding rows of an image of `patches` tiles in the package's image layout (anyres_unpad: grid m x n of an
  // image width x height).
  int64_t layout_tokens(int64_t patches, int64_t m, int64_t n, int64_t width, int64_t height) const;
  // The prompt ids of one image (the package's image block expanded; kImageTokenId at its `positions` image
  // positions): patches tiles, m x n of them local, `global` whole-image tile. Throws when it cannot fit the context.
  std::vector<int32_t> image_block(int64_t patches, int64_t m, int64_t n, int64_t global, int64_t positions) const;

  // Used by sessions: runs fn with the ViT (created on first use), and counts images in flight (the ViT is
  // released when the count drops to 0 and release_vit is set).
  void with_vision(const std::function<void(VisionEncoder&)>& fn);
  void image_started() { ++images_pending_; }
  void image_done();

 private:
  Engine() = default;

  std::shared_ptr<model::Package> pkg_;
  EngineOptions opt_;
  std::unique_ptr<Llm> llm_;
  KvType kv_ = KvType::int8;
  Activations act_ = Activations::int8;
  dynres::Params dynres_;
  bool family_tiles_ = false;  // the package's family tiles its own images and no scheme replaced it
  double init_s_ = 0;
  mutable std::mutex vit_mutex_;
  std::unique_ptr<VisionEncoder> vit_;
  std::atomic<int> images_pending_{0};
};

double peak_rss_mb();     // this process's peak resident set (VmHWM; getrusage where /proc is missing)
double current_rss_mb();  // /proc/self/statm

}  // namespace bluelm::runtime

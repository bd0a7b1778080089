#pragma once
// The model config as the engine needs it: the fields of configs/models/*.json (bluelm_v/models/config.py),
// parsed from a manifest's "model" object with every field checked.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "dynres/dynres.h"

namespace nlohmann {
template <typename, typename, typename...>
struct adl_serializer;
}

namespace bluelm::model {

struct LlmConfig {
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, max_context = 0;
  int64_t head_dim = 0;  // resolved (hidden / heads when the config leaves it out)
  double rope_theta = 10000.0, rms_norm_eps = 1e-5;
  bool tie_embeddings = true;
  bool qkv_bias = false;  // Qwen2: biases on the Q, K and V projections (f32 tensors q/k/v_proj.bias)
  // RoPE frequency scaling (HF rope_parameters): "default" (none), "linear" (every frequency / factor) or "llama3"
  // (long wavelengths / factor, short kept, a smooth blend between old_context / low and old_context / high).
  std::string rope_type = "default";
  double rope_factor = 1.0, rope_low_freq_factor = 1.0, rope_high_freq_factor = 4.0;
  int64_t rope_original_context = 0;  // llama3: original_max_position_embeddings
  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
};

enum class Activation { gelu, gelu_tanh };

enum class Norm { layer_norm, rms_norm };

// SigLIP; InternViT ("intern_vit") is the same encoder with the flags below (bluelm_v/models/vision.py).
struct VisionConfig {
  int64_t image_size = 0, patch_size = 0, hidden = 0, intermediate = 0, layers = 0, heads = 0, channels = 3;
  double layer_norm_eps = 1e-6;
  Activation act = Activation::gelu_tanh;
  int64_t select_layer = -1;
  bool post_layernorm = true;
  std::array<float, 3> mean{0.5f, 0.5f, 0.5f}, std{0.5f, 0.5f, 0.5f};
  bool class_token = false;   // a learned token before the patches (position row 0), dropped from the features
  bool layer_scale = false;   // per-channel scales on the attention and MLP outputs (layer_scale1/2)
  Norm norm = Norm::layer_norm;  // of the encoder layers (rms_norm: weight only)
  bool qk_norm = false;       // RMSNorm (eps 1e-6) over the whole q and k before the head split
  bool qkv_bias = true;
  int64_t grid() const { return image_size / patch_size; }
  int64_t tokens() const { return grid() * grid(); }       // patch features per tile
  int64_t positions() const { return tokens() + (class_token ? 1 : 0); }
  int64_t layers_used() const { return ((select_layer % layers) + layers) % layers + 1; }
  bool apply_post_layernorm() const { return post_layernorm && layers_used() == layers; }
};

enum class ProjectorKind { mlp, linear };

// Token merge (merge x merge blocks, row-major, [dy][dx] channel order, zero-padded) then the projector:
// mlp = [LayerNorm] -> linear_1 -> act -> linear_2; linear = linear_1 alone (Idefics3's connector).
struct ProjectorConfig {
  int64_t merge = 2;
  bool layer_norm = true;
  Activation act = Activation::gelu;
  double layer_norm_eps = 1e-5;
  ProjectorKind kind = ProjectorKind::mlp;
  bool bias = true;
};

// How tile embeddings become an image's rows: tile after tile, or LLaVA-OneVision's stitched, un-padded map with
// a newline embedding after every row (runtime/anyres.h).
enum class ImageLayout { tiles, anyres_unpad };

// Where one image's positions sit in the prompt, as token ids (manifest "model.image_block"; absent: one run of image
// positions, BlueLM-V's). The engine expands it from each image's actual tiles (runtime/image_block.h):
//   open, then, for an image split into m x n local tiles: tile_markers[r * marker_cols + c] + the tile's positions,
//   row_end after each row (last_row_end after the last one when a whole-image tile follows, for tokenizers that
//   merge the two), then global_open + the whole-image tile's positions + global_close; for an image of one tile:
//   global_open + its positions + global_close; then close. Every id is checked against the vocabulary at load.
struct ImageBlock {
  bool present = false;
  std::vector<int32_t> open, close, row_end, last_row_end, global_open, global_close;
  int64_t marker_rows = 0, marker_cols = 0;          // the grid the tile_markers table covers
  std::vector<std::vector<int32_t>> tile_markers;    // [marker_rows * marker_cols], row-major
  bool global_last = false;  // the whole-image tile goes after the local tiles (a tiler's thumbnail-first is moved)
  // Markers that depend on the grid: the engine must know each image's m x n to place them.
  bool per_tile() const { return !tile_markers.empty() || !row_end.empty() || !last_row_end.empty(); }
};

struct DeployConfig {
  std::string kv_cache = "f16";       // "int8" | "f16" | "f32"
  std::string activations = "int16";  // of the quantized products: "int8" | "int16" (runtime/linear.h)
  int64_t tile_batch = 4, chunk = 128;
};

struct ModelConfig {
  std::string name;
  LlmConfig llm;
  bool multimodal = false;
  VisionConfig vision;
  ProjectorConfig projector;
  ImageLayout image_layout = ImageLayout::tiles;
  int64_t anyres_max_tiles = 9;
  // The checkpoint family the package came from (for messages); the prompt layout is image_block's.
  std::string family = "bluelm_v";
  // model.image_splitting: "scheme" (default) when model.dynres tiles the images; "family" when the family tiles them
  // in its own way that csrc/image does not have (Idefics3's LANCZOS splitting, done in Python): the engine then
  // refuses to tile an image itself unless a scheme is given in place of the package's (EngineOptions::dynres).
  bool family_splitting = false;
  ImageBlock image_block;
  dynres::Params dynres;
  DeployConfig deploy;
  int64_t image_tokens_per_tile() const;  // ceil(grid / merge)^2
};

// Upper bound of the bytes one engine session allocates: the KV cache for `context` positions and the prefill
// workspace for `chunk` tokens.
int64_t session_bytes(const LlmConfig& c, int64_t context, int64_t chunk);
// LimitError starting with `what` when session_bytes exceeds what this process may allocate (memory_budget_bytes).
void check_session_fits(const LlmConfig& c, int64_t context, int64_t chunk, const std::string& what);

// text: the manifest's "model" object as JSON text; where: the file name for messages. Throws FormatError.
ModelConfig parse_model_config(const std::string& json_text, const std::string& where);

// One of the dynamic-resolution schemes in place of the package's own (`--scheme/--alpha/--grid`): a JSON object
// with the keys of the manifest's "model.dynres" (scheme, alpha, candidates, max_num, ...), read as that object is;
// the tile must be the ViT's. Throws FormatError naming `where` and the key.
dynres::Params parse_dynres_override(const std::string& json_text, const ModelConfig& base, const std::string& where);

}  // namespace bluelm::model

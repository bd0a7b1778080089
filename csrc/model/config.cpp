#include "model/config.h"

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/guard.h"

namespace bluelm::model {

namespace {
using nlohmann::json;

struct Reader {
  const json& obj;
  std::string path;  // "model.llm" for messages
  const std::string& where;

  const json* find(const char* key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void fail(const char* key, const std::string& what) const {
    throw FormatError(cat(where, ": ", path, ".", key, " ", what));
  }
  int64_t integer(const char* key, int64_t lo, int64_t hi, const int64_t* fallback = nullptr) const {
    const json* v = find(key);
    if (!v) {
      if (fallback) return *fallback;
      fail(key, "is missing");
    }
    if (!v->is_number_integer()) fail(key, "must be an integer");
    const int64_t x = v->get<int64_t>();
    if (x < lo || x > hi) fail(key, cat("= ", x, " is outside [", lo, ", ", hi, "]"));
    return x;
  }
  int64_t integer_or(const char* key, int64_t lo, int64_t hi, int64_t fallback) const {
    return integer(key, lo, hi, &fallback);
  }
  double number(const char* key, double lo, double hi, double fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_number()) fail(key, "must be a number");
    const double x = v->get<double>();
    if (!(x >= lo && x <= hi)) fail(key, cat("= ", x, " is outside [", lo, ", ", hi, "]"));
    return x;
  }
  bool boolean(const char* key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) fail(key, "must be true or false");
    return v->get<bool>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_string()) fail(key, "must be a string");
    return v->get<std::string>();
  }
  Reader sub(const char* key) const {
    const json* v = find(key);
    if (!v || !v->is_object()) fail(key, "must be an object");
    return Reader{*v, path + "." + key, where};
  }
};

constexpr int64_t kMaxDim = int64_t(1) << 20;  // no layer of any model we run is wider than a million

Activation parse_act(const Reader& r, const char* key, const std::string& fallback) {
  const std::string s = r.string(key, fallback);
  if (s == "gelu") return Activation::gelu;
  if (s == "gelu_pytorch_tanh") return Activation::gelu_tanh;
  r.fail(key, cat("= '", s, "' is not 'gelu' or 'gelu_pytorch_tanh'"));
}

// model.llm.rope_scaling (HF's rope_parameters as bluelm_v/models/config.py keeps them); {} means plain RoPE.
void parse_rope_scaling(const Reader& r, LlmConfig& c) {
  c.rope_type = r.string("rope_type", "default");
  if (c.rope_type == "default") return;
  if (c.rope_type != "linear" && c.rope_type != "llama3")
    r.fail("rope_type", cat("= '", c.rope_type, "' is not 'default', 'linear' or 'llama3'"));
  if (!r.find("factor")) r.fail("factor", "is missing");
  c.rope_factor = r.number("factor", 1e-3, 1e6, 1.0);
  if (c.rope_type == "llama3") {
    c.rope_low_freq_factor = r.number("low_freq_factor", 1e-3, 1e6, 1.0);
    c.rope_high_freq_factor = r.number("high_freq_factor", 1e-3, 1e6, 4.0);
    // The blend divides by high - low and the bands need old_context / high < old_context / low.
    if (!(c.rope_high_freq_factor > c.rope_low_freq_factor))
      r.fail("high_freq_factor", cat("= ", c.rope_high_freq_factor, " must exceed low_freq_factor = ",
                                     c.rope_low_freq_factor));
    c.rope_original_context = r.integer("original_max_position_embeddings", 1, int64_t(1) << 22);
  }
}

LlmConfig parse_llm(const Reader& r) {
  LlmConfig c;
  // Qwen2 is the LLaMA decoder with Q/K/V biases: the engine branches on qkv_bias, the arch is only checked.
  const std::string arch = r.string("arch", "llama");
  if (arch != "llama" && arch != "qwen2") r.fail("arch", cat("= '", arch, "' is not 'llama' or 'qwen2'"));
  c.hidden = r.integer("hidden", 1, kMaxDim);
  c.intermediate = r.integer("intermediate", 1, kMaxDim);
  c.layers = r.integer("layers", 1, 4096);
  c.heads = r.integer("heads", 1, 4096);
  c.kv_heads = r.integer("kv_heads", 1, c.heads);
  if (c.heads % c.kv_heads) r.fail("kv_heads", cat("= ", c.kv_heads, " does not divide heads = ", c.heads));
  c.vocab = r.integer("vocab", 1, int64_t(1) << 24);
  c.max_context = r.integer("max_context", 1, int64_t(1) << 22);
  if (!r.find("head_dim") && c.hidden % c.heads) r.fail("hidden", "is not a multiple of heads (give head_dim)");
  c.head_dim = r.integer_or("head_dim", 2, 1024, c.hidden / c.heads);
  if (c.head_dim % 2) r.fail("head_dim", "must be even (RoPE rotates pairs)");
  c.rope_theta = r.number("rope_theta", 1.0, 1e12, 10000.0);
  c.rms_norm_eps = r.number("rms_norm_eps", 0.0, 1.0, 1e-5);
  c.tie_embeddings = r.boolean("tie_embeddings", true);
  c.qkv_bias = r.boolean("qkv_bias", false);
  if (r.find("rope_scaling")) parse_rope_scaling(r.sub("rope_scaling"), c);
  return c;
}

VisionConfig parse_vision(const Reader& r) {
  VisionConfig c;
  const std::string arch = r.string("arch", "siglip");
  if (arch != "siglip" && arch != "intern_vit") r.fail("arch", "must be 'siglip' or 'intern_vit'");
  c.image_size = r.integer("image_size", 1, 8192);
  c.patch_size = r.integer("patch_size", 1, c.image_size);
  c.hidden = r.integer("hidden", 1, kMaxDim);
  c.intermediate = r.integer("intermediate", 1, kMaxDim);
  c.layers = r.integer("layers", 1, 4096);
  c.heads = r.integer("heads", 1, c.hidden);
  if (c.hidden % c.heads) r.fail("heads", "does not divide hidden");
  c.channels = r.integer_or("channels", 3, 3, 3);
  c.layer_norm_eps = r.number("layer_norm_eps", 0.0, 1.0, 1e-6);
  c.act = parse_act(r, "act", "gelu_pytorch_tanh");
  c.select_layer = r.integer_or("select_layer", -c.layers, c.layers - 1, -1);
  c.post_layernorm = r.boolean("post_layernorm", true);
  c.class_token = r.boolean("class_token", false);
  c.layer_scale = r.boolean("layer_scale", false);
  const std::string norm = r.string("norm", "layer_norm");
  if (norm != "layer_norm" && norm != "rms_norm") r.fail("norm", "must be 'layer_norm' or 'rms_norm'");
  c.norm = norm == "rms_norm" ? Norm::rms_norm : Norm::layer_norm;
  c.qk_norm = r.boolean("qk_norm", false);
  c.qkv_bias = r.boolean("qkv_bias", true);
  for (const char* key : {"mean", "std"}) {
    const json* v = r.find(key);
    if (!v) continue;
    if (!v->is_array() || v->size() != 3) r.fail(key, "must be a list of 3 numbers");
    for (size_t i = 0; i < 3; ++i) {
      if (!(*v)[i].is_number()) r.fail(key, "must be a list of 3 numbers");
      (std::string(key) == "mean" ? c.mean : c.std)[i] = (*v)[i].get<float>();
    }
  }
  for (float s : c.std)
    if (!(s != 0.0f)) r.fail("std", "must be non-zero");
  return c;
}

ProjectorConfig parse_projector(const Reader& r, const VisionConfig& v) {
  ProjectorConfig c;
  // merge x merge patches fold into one token of merge^2 * hidden channels: at most the grid, and that width bounded
  c.merge = r.integer_or("merge", 1, v.grid(), 2);
  if (c.merge * c.merge * v.hidden > kMaxDim)
    r.fail("merge", cat("= ", c.merge, " folds ", c.merge * c.merge * v.hidden, " channels, more than ", kMaxDim));
  const std::string kind = r.string("kind", "mlp");
  if (kind != "mlp" && kind != "linear") r.fail("kind", "must be 'mlp' or 'linear'");
  c.kind = kind == "linear" ? ProjectorKind::linear : ProjectorKind::mlp;
  c.bias = r.boolean("bias", true);
  c.layer_norm = r.boolean("layer_norm", true);
  if (c.kind == ProjectorKind::linear && c.layer_norm) r.fail("layer_norm", "must be false for a linear projector");
  c.act = parse_act(r, "act", "gelu");
  if (r.string("order", "row_major") != "row_major")
    r.fail("order", "must be 'row_major' (the native engine emits down-sampled tokens row by row)");
  c.layer_norm_eps = r.number("layer_norm_eps", 0.0, 1.0, 1e-5);
  return c;
}

dynres::Params parse_dynres(const Reader& r, int64_t tile) {
  dynres::Params p = dynres::default_params(dynres::parse_selection(r.string("scheme", "bluelm")));
  p.alpha = r.number("alpha", 0.0, 1e6, p.alpha);
  if (r.find("clause2")) p.clause2 = dynres::parse_clause2(r.string("clause2", "<"));
  p.min_num = int(r.integer_or("min_num", 1, 1024, p.min_num));
  p.max_num = int(r.integer_or("max_num", 1, 1024, p.max_num));
  if (r.find("thumbnail")) p.thumbnail = dynres::parse_thumbnail(r.string("thumbnail", ""));
  if (r.find("layout")) p.layout = dynres::parse_layout(r.string("layout", ""));
  p.tile = int(r.integer_or("tile", 1, 8192, tile));
  if (p.tile != tile) r.fail("tile", cat("= ", p.tile, " differs from the ViT's image_size ", tile));
  p.vit_patch = int(r.integer_or("vit_patch", 1, 8192, p.vit_patch));
  p.max_pixels = r.integer_or("max_pixels", 1, int64_t(1) << 40, p.max_pixels);
  if (const json* c = r.find("candidates")) {
    if (!c->is_array() || c->empty()) r.fail("candidates", "must be a non-empty list of [m, n] pairs");
    for (const json& g : *c) {
      if (!g.is_array() || g.size() != 2 || !g[0].is_number_integer() || !g[1].is_number_integer())
        r.fail("candidates", "must be a non-empty list of [m, n] pairs");
      p.candidates.push_back({g[0].get<int>(), g[1].get<int>()});
    }
  }
  try {
    dynres::validate(p);
  } catch (const InvalidArgument& e) {
    throw FormatError(cat(r.where, ": ", r.path, ": ", e.what()));
  }
  return p;
}

constexpr int64_t kMaxMarkerIds = 64;      // ids in one marker list (Idefics3's are 2)
constexpr int64_t kMaxMarkerGrid = 64;     // rows and columns of the tile-marker table

std::vector<int32_t> token_ids(const Reader& r, const char* key, int64_t vocab) {
  std::vector<int32_t> out;
  const json* v = r.find(key);
  if (!v) return out;
  if (!v->is_array()) r.fail(key, "must be a list of token ids");
  if (int64_t(v->size()) > kMaxMarkerIds) r.fail(key, cat("has ", v->size(), " ids, more than ", kMaxMarkerIds));
  for (const json& id : *v) {
    if (!id.is_number_integer()) r.fail(key, "must be a list of token ids");
    const int64_t x = id.get<int64_t>();
    if (x < 0 || x >= vocab) r.fail(key, cat("holds token id ", x, ", outside the vocabulary [0, ", vocab, ")"));
    out.push_back(int32_t(x));
  }
  return out;
}

ImageBlock parse_image_block(const Reader& r, int64_t vocab, ImageLayout layout) {
  ImageBlock b;
  b.present = true;
  b.open = token_ids(r, "open", vocab);
  b.close = token_ids(r, "close", vocab);
  b.row_end = token_ids(r, "row_end", vocab);
  b.last_row_end = token_ids(r, "last_row_end", vocab);
  b.global_open = token_ids(r, "global_open", vocab);
  b.global_close = token_ids(r, "global_close", vocab);
  b.global_last = r.boolean("global_last", false);
  if (r.find("tile_markers")) {
    const Reader t = r.sub("tile_markers");
    b.marker_rows = t.integer("rows", 1, kMaxMarkerGrid);
    b.marker_cols = t.integer("cols", 1, kMaxMarkerGrid);
    const json* ids = t.find("ids");
    if (!ids || !ids->is_array() || int64_t(ids->size()) != b.marker_rows * b.marker_cols)
      t.fail("ids", cat("must be a list of rows * cols = ", b.marker_rows * b.marker_cols, " lists of token ids"));
    for (size_t i = 0; i < ids->size(); ++i) {
      const json one = json{{"entry", (*ids)[i]}};
      b.tile_markers.push_back(token_ids(Reader{one, cat(t.path, ".ids[", i, "]"), r.where}, "entry", vocab));
    }
  }
  // The anyres layout stitches the tiles into one map with its own row ends: only the whole image is wrapped.
  if (layout == ImageLayout::anyres_unpad &&
      (b.per_tile() || !b.global_open.empty() || !b.global_close.empty() || b.global_last))
    throw FormatError(cat(r.where, ": ", r.path, ": the anyres_unpad layout places the image's rows itself; only "
                          "open and close are taken (tile_markers, row_end, global_* given)"));
  return b;
}

}  // namespace

int64_t session_bytes(const LlmConfig& c, int64_t context, int64_t chunk) {
  // Prefill workspace (llm.cpp new_workspace), at most float rows of 3 hidden, 3 q, 4 kv and 4 intermediate;
  // KV cache: keys and values of every layer, at most 4 bytes a value. All factors are bounded by the parser
  // (dimensions <= 2^20, layers <= 4096, context <= 2^22), so the sums fit in a double exactly enough.
  const double per_token = 4.0 * double(3 * c.hidden + 3 * c.q_dim() + 4 * c.kv_dim() + 4 * c.intermediate);
  const double kv = 4.0 * 2.0 * double(c.layers) * double(c.kv_dim()) * double(context);
  const double total = per_token * double(chunk) + kv;
  return total >= 9.0e18 ? INT64_MAX : int64_t(total);
}

void check_session_fits(const LlmConfig& c, int64_t context, int64_t chunk, const std::string& what) {
  const int64_t need = session_bytes(c, context, chunk), have = memory_budget_bytes();
  if (need > have)
    throw LimitError(cat(what, ": a session needs about ", need >> 20, " MiB (KV cache for ", context,
                         " positions and a prefill workspace for ", chunk, " tokens), more than the ", have >> 20,
                         " MiB this process may use"));
}

int64_t ModelConfig::image_tokens_per_tile() const {
  // A text-only model's vision section is unset (patch size 0): asking it for image tokens is an error, not a division.
  if (!multimodal || vision.patch_size < 1 || projector.merge < 1)
    throw InvalidArgument(cat("model ", name, " is text-only: it has no image tokens per tile"));
  const int64_t side = (vision.grid() + projector.merge - 1) / projector.merge;
  return side * side;
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& where) {
  check_json_text(json_text, where);
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw FormatError(cat(where, ": model config is not valid JSON (", e.what(), ")"));
  }
  if (!j.is_object()) throw FormatError(cat(where, ": model config must be a JSON object"));
  const Reader r{j, "model", where};
  ModelConfig c;
  c.name = r.string("name", "model");
  c.llm = parse_llm(r.sub("llm"));
  c.multimodal = r.find("vision") != nullptr;
  if (c.multimodal != (r.find("projector") != nullptr))
    throw FormatError(cat(where, ": model.vision and model.projector must be given together"));
  if (c.multimodal) {
    c.vision = parse_vision(r.sub("vision"));
    c.projector = parse_projector(r.sub("projector"), c.vision);
    const std::string layout = r.string("image_layout", "tiles");
    if (layout != "tiles" && layout != "anyres_unpad")
      throw FormatError(cat(where, ": model.image_layout = '", layout, "' is not 'tiles' or 'anyres_unpad'"));
    c.image_layout = layout == "anyres_unpad" ? ImageLayout::anyres_unpad : ImageLayout::tiles;
    c.anyres_max_tiles = r.integer_or("anyres_max_tiles", 1, 1024, 9);
    c.family = r.string("family", "bluelm_v");
    const std::string splitting = r.string("image_splitting", "scheme");
    if (splitting != "scheme" && splitting != "family")
      throw FormatError(cat(where, ": model.image_splitting = '", splitting, "' is not 'scheme' or 'family'"));
    c.family_splitting = splitting == "family";
    if (r.find("image_block")) c.image_block = parse_image_block(r.sub("image_block"), c.llm.vocab, c.image_layout);
    const json* d = r.find("dynres");
    c.dynres = d ? parse_dynres(r.sub("dynres"), c.vision.image_size)
                 : parse_dynres(Reader{json::object(), "model.dynres", where}, c.vision.image_size);
    c.dynres.vit_patch = int(c.vision.patch_size);
  }
  if (const json* d = r.find("deploy")) {
    (void)d;
    const Reader dr = r.sub("deploy");
    c.deploy.kv_cache = dr.string("kv_cache", "f16");
    if (c.deploy.kv_cache != "int8" && c.deploy.kv_cache != "f32" && c.deploy.kv_cache != "f16")
      dr.fail("kv_cache", "must be 'int8', 'f16' or 'f32'");
    c.deploy.activations = dr.string("activations", "int16");
    if (c.deploy.activations != "int8" && c.deploy.activations != "int16")
      dr.fail("activations", "must be 'int8' or 'int16'");
    c.deploy.tile_batch = dr.integer_or("tile_batch", 1, 1024, 4);
    c.deploy.chunk = dr.integer_or("chunk", 1, int64_t(1) << 20, 128);
    // A chunk longer than the context can never be filled, and the prefill workspace is sized by it.
    if (dr.find("chunk") && c.deploy.chunk > c.llm.max_context)
      throw LimitError(cat(where, ": model.deploy.chunk = ", c.deploy.chunk, " exceeds model.llm.max_context = ",
                           c.llm.max_context));
    check_session_fits(c.llm, std::min<int64_t>(c.llm.max_context, 4096), c.deploy.chunk,
                       cat(where, ": model.deploy.chunk = ", c.deploy.chunk));
  }
  return c;
}

dynres::Params parse_dynres_override(const std::string& json_text, const ModelConfig& base, const std::string& where) {
  if (!base.multimodal) throw FormatError(cat(where, ": the model is text-only; it has no image tiling to replace"));
  check_json_text(json_text, where);
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw FormatError(cat(where, ": not valid JSON (", e.what(), ")"));
  }
  if (!j.is_object()) throw FormatError(cat(where, ": must be a JSON object of dynres parameters"));
  dynres::Params p = parse_dynres(Reader{j, "dynres", where}, base.vision.image_size);
  p.vit_patch = int(base.vision.patch_size);
  return p;
}

}  // namespace bluelm::model

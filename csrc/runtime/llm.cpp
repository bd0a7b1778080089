#include "runtime/llm.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/threadpool.h"
#include "quant/quant.h"
#include "runtime/attention_isa.h"

namespace bluelm::runtime {

void StepProfile::add(const char* op, const std::string& format, double s, int64_t bytes) {
  for (OpProfile& o : ops)
    if (o.op == op && o.format == format) {
      ++o.calls, o.seconds += s, o.bytes += bytes;
      return;
    }
  ops.push_back(OpProfile{op, format, 1, s, bytes});
}

namespace {

// Times the consecutive ops of a forward pass into a StepProfile: each lap() closes the op that ran since the last
// one. Does nothing (one branch) without a profile.
class OpClock {
 public:
  using Clock = std::chrono::steady_clock;
  explicit OpClock(StepProfile* p) : p_(p) {
    if (p_) t_ = Clock::now();
  }
  void lap(const char* op, const std::string& format = {}, int64_t bytes = 0) {
    if (!p_) return;
    const Clock::time_point now = Clock::now();
    p_->add(op, format, std::chrono::duration<double>(now - t_).count(), bytes);
    t_ = now;
  }
  void lap(const char* op, const Linear& l) {
    if (p_) lap(op, l.format_name(), l.weight_bytes());
  }

 private:
  StepProfile* p_;
  Clock::time_point t_;
};

}  // namespace

Llm::Llm(const model::Package& pkg, int64_t max_positions, Activations act) : cfg_(pkg.config().llm), act_(act) {
  const std::string p = pkg.config().multimodal ? "language_model." : "";
  const int64_t d = cfg_.hidden, f = cfg_.intermediate, qd = cfg_.q_dim(), kvd = cfg_.kv_dim();
  embed_ = &pkg.tensor(p + "model.embed_tokens.weight", {cfg_.vocab, d});
  layers_.resize(size_t(cfg_.layers));
  // The packed weights back to back in the order a decode step reads them (layer by layer, the head last).
  const std::shared_ptr<WeightArena> arena = weight_arena(pkg, p);
  for (int64_t i = 0; i < cfg_.layers; ++i) {
    const std::string l = cat(p, "model.layers.", i, ".");
    Layer& L = layers_[size_t(i)];
    L.attn_norm = pkg.tensor(l + "input_layernorm.weight", {d}).f32();
    L.mlp_norm = pkg.tensor(l + "post_attention_layernorm.weight", {d}).f32();
    const std::vector<std::string> qkv = {l + "self_attn.q_proj.weight", l + "self_attn.k_proj.weight",
                                          l + "self_attn.v_proj.weight"};
    const std::vector<std::string> gu = {l + "mlp.gate_proj.weight", l + "mlp.up_proj.weight"};
    // Qwen2: f32 biases [q_dim], [kv_dim], [kv_dim]; a package without the flag must not carry them either.
    std::vector<std::string> bias = {l + "self_attn.q_proj.bias", l + "self_attn.k_proj.bias",
                                     l + "self_attn.v_proj.bias"};
    for (const std::string& b : bias)
      if (!cfg_.qkv_bias && pkg.tensors().count(b))
        throw FormatError(cat(pkg.dir(), "/manifest.json: tensor '", b, "' is present but model.llm.qkv_bias is false"));
    if (!cfg_.qkv_bias) bias.clear();
    L.stacked_qkv = Linear::can_stack(pkg, qkv, {qd, kvd, kvd}, d);
    if (L.stacked_qkv) {
      L.qkv = Linear(pkg, qkv, {qd, kvd, kvd}, d, arena, bias);
    } else {
      L.q = Linear(pkg, qkv[0], qd, d, bias.empty() ? "" : bias[0], arena);
      L.k = Linear(pkg, qkv[1], kvd, d, bias.empty() ? "" : bias[1], arena);
      L.v = Linear(pkg, qkv[2], kvd, d, bias.empty() ? "" : bias[2], arena);
    }
    L.o = Linear(pkg, l + "self_attn.o_proj.weight", d, qd, "", arena);
    L.stacked_gate_up = Linear::can_stack(pkg, gu, {f, f}, d);
    if (L.stacked_gate_up) {
      L.gate_up = Linear(pkg, gu, {f, f}, d, arena);
    } else {
      L.gate = Linear(pkg, gu[0], f, d, "", arena);
      L.up = Linear(pkg, gu[1], f, d, "", arena);
    }
    L.down = Linear(pkg, l + "mlp.down_proj.weight", d, f, "", arena);
  }
  for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight"})
    for (int64_t i = 0; i < cfg_.layers; ++i)
      if (!pkg.tensor(cat(p, "model.layers.", i, ".", n)).is_f32) throw FormatError(cat(n, " must be f32"));
  norm_ = pkg.tensor(p + "model.norm.weight", {d}).f32();
  lm_head_ = Linear(pkg, cfg_.tie_embeddings ? p + "model.embed_tokens.weight" : p + "lm_head.weight", cfg_.vocab, d,
                    "", arena);
  RopeScaling rs;
  if (cfg_.rope_type != "default") {  // the manifest parser admits only "linear" and "llama3" besides
    rs.type = cfg_.rope_type == "linear" ? RopeScaling::Type::linear : RopeScaling::Type::llama3;
    rs.factor = float(cfg_.rope_factor);
    rs.low_freq = float(cfg_.rope_low_freq_factor);
    rs.high_freq = float(cfg_.rope_high_freq_factor);
    rs.old_context = float(cfg_.rope_original_context);
  }
  rope_ = Rope(cfg_.head_dim, cfg_.rope_theta, std::min(max_positions, cfg_.max_context), rs);
}

KvCache Llm::new_cache(KvType type, int64_t capacity) const {
  capacity = std::min(capacity, rope_.positions());
  return KvCache(type, cfg_.layers, cfg_.kv_heads, capacity, cfg_.head_dim);
}

LlmWorkspace Llm::new_workspace(int64_t max_t) const {
  LlmWorkspace ws;
  ws.max_t = max_t;
  const size_t t = size_t(max_t);
  ws.h.resize(t * size_t(cfg_.hidden));
  ws.xn.resize(t * size_t(cfg_.hidden));
  ws.tmp.resize(t * size_t(cfg_.hidden));
  ws.att.resize(t * size_t(cfg_.q_dim()));
  ws.gate.resize(t * size_t(cfg_.intermediate));
  // Buffers for the stacked products where some layer has them, for the separate ones where some layer has those.
  bool any_qkv = false, any_gu = false, any_split_qkv = false, any_split_gu = false;
  for (const Layer& L : layers_) {
    any_qkv = any_qkv || L.stacked_qkv;
    any_gu = any_gu || L.stacked_gate_up;
    any_split_qkv = any_split_qkv || !L.stacked_qkv;
    any_split_gu = any_split_gu || !L.stacked_gate_up;
  }
  if (any_qkv) ws.qkv.resize(t * size_t(cfg_.q_dim() + 2 * cfg_.kv_dim()));
  if (any_split_qkv) {
    ws.q.resize(t * size_t(cfg_.q_dim()));
    ws.k.resize(t * size_t(cfg_.kv_dim()));
    ws.v.resize(t * size_t(cfg_.kv_dim()));
  }
  if (any_gu) ws.gate_up.resize(t * size_t(2 * cfg_.intermediate));
  if (any_split_gu) ws.up.resize(t * size_t(cfg_.intermediate));
  ws.logits_row.resize(size_t(cfg_.hidden));
  return ws;
}

int64_t Llm::stacked_products() const {
  int64_t n = 0;
  for (const Layer& L : layers_) n += int64_t(L.stacked_qkv) + int64_t(L.stacked_gate_up);
  return n;
}

int64_t Llm::resident_bytes() const {
  int64_t b = lm_head_.resident_bytes();
  for (const Layer& L : layers_)
    for (const Linear* l : {&L.q, &L.k, &L.v, &L.qkv, &L.o, &L.gate, &L.up, &L.gate_up, &L.down})
      b += l->resident_bytes();
  return b;
}

void Llm::embed(const int32_t* ids, int64_t t, float* out) const {
  const int64_t d = cfg_.hidden;
  for (int64_t r = 0; r < t; ++r) {
    const int32_t id = ids[r];
    if (id < 0 || id >= cfg_.vocab) throw InvalidArgument(cat("token id ", id, " is outside [0, ", cfg_.vocab, ")"));
    if (embed_->is_f32) {
      std::memcpy(out + r * d, embed_->f32() + int64_t(id) * d, size_t(d) * sizeof(float));
    } else {
      const int64_t rb = quant::row_bytes(embed_->format, embed_->stored_k);
      std::vector<float> row(size_t(embed_->stored_k));
      quant::dequantize_rows(embed_->format, embed_->data + int64_t(id) * rb, 1, embed_->stored_k, row.data());
      std::memcpy(out + r * d, row.data(), size_t(d) * sizeof(float));
    }
  }
}

void Llm::attention(int64_t layer, int64_t start, int64_t t, const float* qp, int64_t ldq, const KvCache& cache,
                    LlmWorkspace& ws, bool decoding) const {
  const int64_t hd = cfg_.head_dim, kvh_n = cfg_.kv_heads, groups = cfg_.heads / kvh_n;
  std::vector<KvHeadView> kv(static_cast<size_t>(kvh_n));
  for (int64_t h = 0; h < kvh_n; ++h) kv[size_t(h)] = cache.head(layer, h);
  const float scale = 1.0f / std::sqrt(float(hd));
  // Over the int8 cache both compute in integers (int8 queries, int16 weights of the values), so a one-position
  // prefill chunk (decode_attention) rounds as a longer one (prefill_attention) and as a generation step.
  (void)decoding;
  if (t == 1) decode_attention(kv.data(), kvh_n, groups, qp, scale, start + 1, ws.att.data(), ws.decode, true);
  else prefill_attention(kv.data(), kvh_n, groups, qp, ldq, scale, start, t, ws.att.data(), cfg_.q_dim(), true);
}

void Llm::forward(const float* x, int64_t t, KvCache& cache, LlmWorkspace& ws, float* logits, float* all_logits,
                  bool decoding) const {
  const int64_t d = cfg_.hidden, f = cfg_.intermediate, qd = cfg_.q_dim(), kvd = cfg_.kv_dim();
  const int64_t start = cache.length();
  if (t < 1) throw InvalidArgument("an LLM chunk needs at least one position");
  if (t > ws.max_t) throw InvalidArgument(cat("chunk of ", t, " positions exceeds the workspace's ", ws.max_t));
  if (cache.layers() != cfg_.layers || cache.kv_heads() != cfg_.kv_heads || cache.head_dim() != cfg_.head_dim)
    throw InvalidArgument(cat("a KV cache of ", cache.layers(), " layers x ", cache.kv_heads(), " heads x ",
                              cache.head_dim(), " does not fit this model's ", cfg_.layers, " x ", cfg_.kv_heads,
                              " x ", cfg_.head_dim));
  if (start + t > cache.capacity())
    throw InvalidArgument(cat("positions ", start, "..", start + t - 1, " exceed the KV cache capacity of ",
                              cache.capacity(), " (model context ", cfg_.max_context, ")"));
  const float eps = float(cfg_.rms_norm_eps);
  float* h = ws.h.data();
  std::memcpy(h, x, size_t(t * d) * sizeof(float));
  OpClock clock(ws.profile);
  // Attention reads every cached position of the layer's KV heads (keys, values and their scales).
  const int64_t kv_layer_bytes = KvCache::bytes_per_token(cache.type(), 1, cfg_.kv_heads, cfg_.head_dim);
  for (int64_t li = 0; li < cfg_.layers; ++li) {
    const Layer& L = layers_[size_t(li)];
    if (t == 1 && kv_prefetch()) cache.prefetch(li, start);  // read by attention(), after the q / k / v products
    rms_norm(h, L.attn_norm, ws.xn.data(), t, d, eps);
    clock.lap("rms_norm");
    float *q, *k, *v;
    int64_t ldq, ldkv;
    if (L.stacked_qkv) {
      ldq = ldkv = qd + 2 * kvd;
      L.qkv.forward(ws.xn.data(), t, d, ws.qkv.data(), ldq, ws.scratch, act_);
      clock.lap("qkv", L.qkv);
      q = ws.qkv.data(), k = q + qd, v = k + kvd;
    } else {
      ldq = qd, ldkv = kvd;
      q = ws.q.data(), k = ws.k.data(), v = ws.v.data();
      L.q.forward(ws.xn.data(), t, d, q, qd, ws.scratch, act_);
      clock.lap("q", L.q);
      L.k.forward(ws.xn.data(), t, d, k, kvd, ws.scratch, act_);
      clock.lap("k", L.k);
      L.v.forward(ws.xn.data(), t, d, v, kvd, ws.scratch, act_);
      clock.lap("v", L.v);
    }
    for (int64_t r = 0; r < t; ++r) {
      rope_.apply(q + r * ldq, cfg_.heads, start + r);
      rope_.apply(k + r * ldkv, cfg_.kv_heads, start + r);
      cache.store(li, start + r, k + r * ldkv, v + r * ldkv);
    }
    clock.lap("rope_kv_store");
    attention(li, start, t, q, ldq, cache, ws, decoding);
    clock.lap("attention", "", kv_layer_bytes * (start + t));
    L.o.forward(ws.att.data(), t, qd, ws.tmp.data(), d, ws.scratch, act_);
    clock.lap("o", L.o);
    add_inplace(h, ws.tmp.data(), t * d);
    clock.lap("residual");
    rms_norm(h, L.mlp_norm, ws.xn.data(), t, d, eps);
    clock.lap("rms_norm");
    if (L.stacked_gate_up) {
      L.gate_up.forward(ws.xn.data(), t, d, ws.gate_up.data(), 2 * f, ws.scratch, act_);
      clock.lap("gate_up", L.gate_up);
      swiglu_rows(ws.gate_up.data(), t, f, ws.gate.data());
    } else {
      L.gate.forward(ws.xn.data(), t, d, ws.gate.data(), f, ws.scratch, act_);
      clock.lap("gate", L.gate);
      L.up.forward(ws.xn.data(), t, d, ws.up.data(), f, ws.scratch, act_);
      clock.lap("up", L.up);
      silu_mul(ws.gate.data(), ws.up.data(), t * f);
    }
    clock.lap("swiglu");
    L.down.forward(ws.gate.data(), t, f, ws.tmp.data(), d, ws.scratch, act_);
    clock.lap("down", L.down);
    add_inplace(h, ws.tmp.data(), t * d);
    clock.lap("residual");
  }
  cache.length_ = start + t;
  if (all_logits) {
    rms_norm(h, norm_, ws.xn.data(), t, d, eps);
    clock.lap("rms_norm");
    lm_head_.forward(ws.xn.data(), t, d, all_logits, cfg_.vocab, ws.scratch, act_);
    clock.lap("head", lm_head_);
  }
  if (logits) {
    rms_norm(h + (t - 1) * d, norm_, ws.logits_row.data(), 1, d, eps);
    clock.lap("rms_norm");
    lm_head_.forward(ws.logits_row.data(), 1, d, logits, cfg_.vocab, ws.scratch, act_);
    clock.lap("head", lm_head_);
  }
}

}  // namespace bluelm::runtime

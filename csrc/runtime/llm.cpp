#include "runtime/llm.h"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/threadpool.h"
#include "runtime/attention_isa.h"

namespace bluelm::runtime {

KvType parse_kv_type(const std::string& s) {
  if (s == "int8") return KvType::int8;
  if (s == "f32") return KvType::f32;
  throw InvalidArgument(cat("unknown KV cache type '", s, "': expected 'int8' or 'f32'"));
}

KvCache::KvCache(KvType type, int64_t layers, int64_t kv_heads, int64_t capacity, int64_t head_dim)
    : type_(type), layers_(layers), kv_heads_(kv_heads), capacity_(capacity), hd_(head_dim) {
  if (capacity < 1) throw InvalidArgument(cat("KV cache capacity must be positive, got ", capacity));
  const size_t slots = size_t(layers) * size_t(kv_heads) * size_t(capacity);
  gs_ = head_dim % kKvGroup == 0 ? kKvGroup : head_dim;
  groups_ = head_dim / gs_;
  if (type == KvType::int8) {
    k8_.assign(slots * size_t(hd_), 0);
    v8_.assign(slots * size_t(hd_), 0);
    ks_.assign(slots * size_t(groups_), 0.0f);
    vs_.assign(slots * size_t(groups_), 0.0f);
  } else {
    kf_.assign(slots * size_t(hd_), 0.0f);
    vf_.assign(slots * size_t(hd_), 0.0f);
  }
}

void KvCache::set_length(int64_t n) {
  if (n < 0 || n > length_) throw InvalidArgument(cat("cannot set a KV cache of length ", length_, " to ", n));
  length_ = n;
}

int64_t KvCache::bytes() const {
  return int64_t(k8_.size() + v8_.size()) + int64_t(sizeof(float)) * int64_t(kf_.size() + vf_.size() + ks_.size() + vs_.size());
}

namespace {
void quantize_row_i8(const float* x, int64_t n, int8_t* q, float* d) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  const float scale = m / 127.0f;
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  for (int64_t i = 0; i < n; ++i) q[i] = int8_t(std::nearbyint(x[i] * inv));
  *d = scale;
}
}  // namespace

void KvCache::store(int64_t layer, int64_t pos, const float* k, const float* v) {
  for (int64_t h = 0; h < kv_heads_; ++h) {
    const size_t s = slot(layer, h, pos);
    if (type_ == KvType::int8) {
      for (int64_t g = 0; g < groups_; ++g) {
        const int64_t o = g * gs_;
        quantize_row_i8(k + h * hd_ + o, gs_, &k8_[s * size_t(hd_) + size_t(o)], &ks_[s * size_t(groups_) + size_t(g)]);
        quantize_row_i8(v + h * hd_ + o, gs_, &v8_[s * size_t(hd_) + size_t(o)], &vs_[s * size_t(groups_) + size_t(g)]);
      }
    } else {
      std::memcpy(&kf_[s * size_t(hd_)], k + h * hd_, size_t(hd_) * sizeof(float));
      std::memcpy(&vf_[s * size_t(hd_)], v + h * hd_, size_t(hd_) * sizeof(float));
    }
  }
}

void KvCache::attend(int64_t layer, int64_t kvh, const float* q, int64_t n, float* scores, float* out) const {
  const size_t s0 = slot(layer, kvh, 0);
  const int64_t hd = hd_;
  if (type_ == KvType::int8) {
    const AttentionKernels& ak = attention_kernels();
    const bool simd = gs_ % 8 == 0;
    const int8_t* K = &k8_[s0 * size_t(hd)];
    const float* ks = &ks_[s0 * size_t(groups_)];
    for (int64_t j = 0; j < n; ++j) {
      const int8_t* kr = K + j * hd;
      float acc = 0.0f;
      for (int64_t g = 0; g < groups_; ++g) {
        float part = 0.0f;
        if (simd) {
          part = ak.dot_f32_i8(q + g * gs_, kr + g * gs_, gs_);
        } else {
          for (int64_t i = g * gs_; i < (g + 1) * gs_; ++i) part += q[i] * float(kr[i]);
        }
        acc += part * ks[j * groups_ + g];
      }
      scores[j] = acc;
    }
    softmax(scores, n);
    const int8_t* V = &v8_[s0 * size_t(hd)];
    const float* vs = &vs_[s0 * size_t(groups_)];
    std::fill(out, out + hd, 0.0f);
    for (int64_t j = 0; j < n; ++j) {
      const int8_t* vr = V + j * hd;
      for (int64_t g = 0; g < groups_; ++g) {
        const float p = scores[j] * vs[j * groups_ + g];
        if (simd) {
          ak.axpy_i8(p, vr + g * gs_, out + g * gs_, gs_);
        } else {
          for (int64_t i = g * gs_; i < (g + 1) * gs_; ++i) out[i] += p * float(vr[i]);
        }
      }
    }
  } else {
    const float* K = &kf_[s0 * size_t(hd)];
    for (int64_t j = 0; j < n; ++j) {
      const float* kr = K + j * hd;
      float acc = 0.0f;
      for (int64_t i = 0; i < hd; ++i) acc += q[i] * kr[i];
      scores[j] = acc;
    }
    softmax(scores, n);
    const float* V = &vf_[s0 * size_t(hd)];
    std::fill(out, out + hd, 0.0f);
    for (int64_t j = 0; j < n; ++j) {
      const float p = scores[j];
      const float* vr = V + j * hd;
      for (int64_t i = 0; i < hd; ++i) out[i] += p * vr[i];
    }
  }
}

void KvCache::read(int64_t layer, int64_t kvh, int64_t n, float* k, float* v) const {
  const size_t s0 = slot(layer, kvh, 0);
  if (type_ == KvType::f32) {
    std::memcpy(k, &kf_[s0 * size_t(hd_)], size_t(n * hd_) * sizeof(float));
    std::memcpy(v, &vf_[s0 * size_t(hd_)], size_t(n * hd_) * sizeof(float));
    return;
  }
  const int8_t* K = &k8_[s0 * size_t(hd_)];
  const int8_t* V = &v8_[s0 * size_t(hd_)];
  const float* ks = &ks_[s0 * size_t(groups_)];
  const float* vs = &vs_[s0 * size_t(groups_)];
  for (int64_t j = 0; j < n; ++j)
    for (int64_t g = 0; g < groups_; ++g) {
      const float dk = ks[j * groups_ + g], dv = vs[j * groups_ + g];
      for (int64_t i = g * gs_; i < (g + 1) * gs_; ++i) {
        k[j * hd_ + i] = float(K[j * hd_ + i]) * dk;
        v[j * hd_ + i] = float(V[j * hd_ + i]) * dv;
      }
    }
}

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
    L.stacked_qkv = Linear::can_stack(pkg, qkv, {qd, kvd, kvd}, d);
    if (L.stacked_qkv) {
      L.qkv = Linear(pkg, qkv, {qd, kvd, kvd}, d, arena);
    } else {
      L.q = Linear(pkg, qkv[0], qd, d, "", arena);
      L.k = Linear(pkg, qkv[1], kvd, d, "", arena);
      L.v = Linear(pkg, qkv[2], kvd, d, "", arena);
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
  rope_ = Rope(cfg_.head_dim, cfg_.rope_theta, std::min(max_positions, cfg_.max_context));
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
  ws.scores.resize(size_t(std::max(1, num_threads())) * size_t(rope_.positions()));
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
                    LlmWorkspace& ws) const {
  const int64_t heads = cfg_.heads, hd = cfg_.head_dim, groups = cfg_.heads / cfg_.kv_heads;
  const int64_t qd = cfg_.q_dim(), cap = rope_.positions();
  const float scale = 1.0f / std::sqrt(float(hd));
  if (t == 1) {
    // Decode: one query per head, read straight from the (int8) cache.
    const size_t need = size_t(std::max(1, num_threads())) * size_t(cap);
    if (ws.scores.size() < need) ws.scores.resize(need);
    ThreadPool::global().run(heads, [&](int64_t b, int64_t e, int worker) {
      float* scores = ws.scores.data() + size_t(worker) * size_t(cap);
      thread_local std::vector<float> qs;
      qs.resize(size_t(hd));
      for (int64_t h = b; h < e; ++h) {
        const float* q = qp + h * hd;
        for (int64_t i = 0; i < hd; ++i) qs[size_t(i)] = q[i] * scale;
        cache.attend(layer, h / groups, qs.data(), start + 1, scores, ws.att.data() + h * hd);
      }
    });
    return;
  }
  // A prefill chunk: per KV head, the cache's keys and values as float, then two matrix products per query head
  // (scores = Q K^T over positions [0, start + t), causal mask inside the chunk, softmax, out = P V).
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
  using MMap = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
  const int64_t n = start + t;
  ThreadPool::global().run(cfg_.kv_heads * groups, [&](int64_t b, int64_t e, int) {
    thread_local std::vector<float> kbuf, vbuf, sbuf;
    kbuf.resize(size_t(n * hd));
    vbuf.resize(size_t(n * hd));
    sbuf.resize(size_t(t * n));
    int64_t loaded = -1;
    for (int64_t task = b; task < e; ++task) {
      const int64_t kvh = task / groups, h = kvh * groups + task % groups;
      if (kvh != loaded) {
        cache.read(layer, kvh, n, kbuf.data(), vbuf.data());
        loaded = kvh;
      }
      const CMap Q(qp + h * hd, t, hd, Eigen::OuterStride<>(ldq));
      const CMap K(kbuf.data(), n, hd, Eigen::OuterStride<>(hd));
      const CMap V(vbuf.data(), n, hd, Eigen::OuterStride<>(hd));
      MMap S(sbuf.data(), t, n, Eigen::OuterStride<>(n));
      S.noalias() = Q * K.transpose();
      for (int64_t r = 0; r < t; ++r) {
        float* row = sbuf.data() + r * n;
        const int64_t valid = start + r + 1;
        for (int64_t j = 0; j < valid; ++j) row[j] *= scale;
        softmax(row, valid);
        std::fill(row + valid, row + n, 0.0f);
      }
      MMap O(ws.att.data() + h * hd, t, hd, Eigen::OuterStride<>(qd));
      O.noalias() = S * V;
    }
  }, 0);
}

void Llm::forward(const float* x, int64_t t, KvCache& cache, LlmWorkspace& ws, float* logits, float* all_logits) const {
  const int64_t d = cfg_.hidden, f = cfg_.intermediate, qd = cfg_.q_dim(), kvd = cfg_.kv_dim();
  const int64_t start = cache.length();
  if (t < 1) throw InvalidArgument("an LLM chunk needs at least one position");
  if (t > ws.max_t) throw InvalidArgument(cat("chunk of ", t, " positions exceeds the workspace's ", ws.max_t));
  if (start + t > cache.capacity())
    throw InvalidArgument(cat("positions ", start, "..", start + t - 1, " exceed the KV cache capacity of ",
                              cache.capacity(), " (model context ", cfg_.max_context, ")"));
  const float eps = float(cfg_.rms_norm_eps);
  float* h = ws.h.data();
  std::memcpy(h, x, size_t(t * d) * sizeof(float));
  for (int64_t li = 0; li < cfg_.layers; ++li) {
    const Layer& L = layers_[size_t(li)];
    rms_norm(h, L.attn_norm, ws.xn.data(), t, d, eps);
    float *q, *k, *v;
    int64_t ldq, ldkv;
    if (L.stacked_qkv) {
      ldq = ldkv = qd + 2 * kvd;
      L.qkv.forward(ws.xn.data(), t, d, ws.qkv.data(), ldq, ws.scratch, act_);
      q = ws.qkv.data(), k = q + qd, v = k + kvd;
    } else {
      ldq = qd, ldkv = kvd;
      q = ws.q.data(), k = ws.k.data(), v = ws.v.data();
      L.q.forward(ws.xn.data(), t, d, q, qd, ws.scratch, act_);
      L.k.forward(ws.xn.data(), t, d, k, kvd, ws.scratch, act_);
      L.v.forward(ws.xn.data(), t, d, v, kvd, ws.scratch, act_);
    }
    for (int64_t r = 0; r < t; ++r) {
      rope_.apply(q + r * ldq, cfg_.heads, start + r);
      rope_.apply(k + r * ldkv, cfg_.kv_heads, start + r);
      cache.store(li, start + r, k + r * ldkv, v + r * ldkv);
    }
    attention(li, start, t, q, ldq, cache, ws);
    L.o.forward(ws.att.data(), t, qd, ws.tmp.data(), d, ws.scratch, act_);
    add_inplace(h, ws.tmp.data(), t * d);
    rms_norm(h, L.mlp_norm, ws.xn.data(), t, d, eps);
    if (L.stacked_gate_up) {
      L.gate_up.forward(ws.xn.data(), t, d, ws.gate_up.data(), 2 * f, ws.scratch, act_);
      swiglu_rows(ws.gate_up.data(), t, f, ws.gate.data());
    } else {
      L.gate.forward(ws.xn.data(), t, d, ws.gate.data(), f, ws.scratch, act_);
      L.up.forward(ws.xn.data(), t, d, ws.up.data(), f, ws.scratch, act_);
      silu_mul(ws.gate.data(), ws.up.data(), t * f);
    }
    L.down.forward(ws.gate.data(), t, f, ws.tmp.data(), d, ws.scratch, act_);
    add_inplace(h, ws.tmp.data(), t * d);
  }
  cache.length_ = start + t;
  if (all_logits) {
    rms_norm(h, norm_, ws.xn.data(), t, d, eps);
    lm_head_.forward(ws.xn.data(), t, d, all_logits, cfg_.vocab, ws.scratch, act_);
  }
  if (logits) {
    rms_norm(h + (t - 1) * d, norm_, ws.logits_row.data(), 1, d, eps);
    lm_head_.forward(ws.logits_row.data(), 1, d, logits, cfg_.vocab, ws.scratch, act_);
  }
}

}  // namespace bluelm::runtime

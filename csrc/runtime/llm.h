#pragma once
// The LLaMA-family decoder of the engine (GQA, RoPE, RMSNorm, SwiGLU, tied or untied head), with the flags the
// families need (model/config.h): biases on Q/K/V (Qwen2), linear and llama3 RoPE scaling. Bit-for-bit the same
// arithmetic order as bluelm_v/models/llm.py except where the weights are quantized (csrc/kernels: int8
// activations) and where the KV cache is int8.
//
// KV cache (int8): per layer, KV head and position, the hd values of a key (after RoPE) or a value are stored
// as int8 in groups of kKvGroup values, each with a float32 scale d = max|x| / 127 (q = round(x / d)); attention
// (runtime/attention.h) dequantizes blocks of positions on the fly. Keys have outlier channels, so one scale per
// head vector loses the small ones (measured in docs/engine.md). The f16 cache (the default, as llama.cpp's) stores
// IEEE halves, rounded to nearest even: relative error 2^-11, where int8 keys flip ~1% of SmolLM2's greedy tokens.
// The f32 cache stores the values as they are (for checking against the reference). Layout and bytes per token:
// docs/engine.md.
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/kernels.h"
#include "model/package.h"
#include "runtime/attention.h"
#include "runtime/linear.h"
#include "runtime/ops.h"

namespace bluelm::runtime {

enum class KvType { int8, f16, f32 };
KvType parse_kv_type(const std::string& s);  // "int8" | "f16" | "f32" (InvalidArgument otherwise)
constexpr int64_t kKvGroup = 32;

class KvCache {
 public:
  KvCache(KvType type, int64_t layers, int64_t kv_heads, int64_t capacity, int64_t head_dim);
  KvType type() const { return type_; }
  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }
  void set_length(int64_t n);  // truncate (n <= length) to reuse a prefix, or 0 to reset
  int64_t bytes() const;
  // Bytes one position adds over all layers: keys, values and their scales (the cache holds capacity of them).
  int64_t bytes_per_token() const { return bytes_per_token(type_, layers_, kv_heads_, hd_); }
  static int64_t bytes_per_token(KvType type, int64_t layers, int64_t kv_heads, int64_t head_dim);
  int64_t layers() const { return layers_; }
  int64_t kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return hd_; }
  // k, v: [kv_heads, hd] of one position.
  void store(int64_t layer, int64_t pos, const float* k, const float* v);
  // The cache of one (layer, KV head), for attention (checked indices).
  KvHeadView head(int64_t layer, int64_t kvh) const;

 private:
  friend class Llm;
  KvType type_;
  int64_t layers_, kv_heads_, capacity_, hd_, length_ = 0, gs_ = 0, groups_ = 1;
  std::vector<int8_t> k8_, v8_;
  std::vector<uint16_t> k16_, v16_;
  std::vector<float> kf_, vf_, ks_, vs_;  // f32 values, or the int8 scales [layers, kv_heads, capacity, groups]
  size_t slot(int64_t layer, int64_t kvh, int64_t pos) const {
    return (size_t(layer) * size_t(kv_heads_) + size_t(kvh)) * size_t(capacity_) + size_t(pos);
  }
};

// Attention of t query positions over a sequence of n positions (the last t of them are the queries' own), through a
// one-layer cache of `type`, as the LLM runs it: decode (t = 1) or a prefill chunk. q [t, heads, hd] (unscaled),
// k, v [n, kv_heads, hd] -> [t, heads, hd]. For tests against other implementations; lengths are checked.
std::vector<float> attend_sequence(KvType type, const float* q, int64_t t, int64_t heads, const float* k,
                                   const float* v, int64_t n, int64_t kv_heads, int64_t hd);

// Per-request working memory of the LLM (activations of one chunk), sized for chunks of up to max_t positions.
struct LlmWorkspace {
  int64_t max_t = 0;
  std::vector<float> h, xn, q, k, v, att, tmp, gate, up, logits_row;
  DecodeScratch decode;
  std::vector<float> qkv, gate_up;  // outputs of the stacked products [max_t, q + 2 kv], [max_t, 2 * ffn]
  kernels::Scratch scratch;
};

class Llm {
 public:
  Llm(const model::Package& pkg, int64_t max_positions, Activations act = Activations::int8);
  Activations activations() const { return act_; }
  const model::LlmConfig& config() const { return cfg_; }
  KvCache new_cache(KvType type, int64_t capacity) const;
  LlmWorkspace new_workspace(int64_t max_t) const;
  int64_t resident_bytes() const;
  // Products the layers run stacked (Q/K/V and gate/up, Linear::can_stack): 2 per layer when all stack.
  int64_t stacked_products() const;

  // Token embeddings: ids [t] -> out [t, hidden] (ids checked against the vocabulary).
  void embed(const int32_t* ids, int64_t t, float* out) const;
  // One chunk of t positions after cache.length(): x [t, hidden] embeddings. logits [vocab] of the last position
  // when `logits` is not null; all_logits [t, vocab] when not null (for tests). `decoding`: a generation step
  // (t = 1), whose attention over an int8 cache computes in integers (decode_attention); prefill chunks of any
  // length keep float queries, so any split of a prompt gives the same logits.
  void forward(const float* x, int64_t t, KvCache& cache, LlmWorkspace& ws, float* logits,
               float* all_logits = nullptr, bool decoding = false) const;

 private:
  struct Layer {
    const float *attn_norm = nullptr, *mlp_norm = nullptr;
    Linear q, k, v, o, gate, up, down;
    Linear qkv, gate_up;  // Q, K, V and gate, up stacked (Linear::can_stack); then q, k, v, gate, up are empty
    bool stacked_qkv = false, stacked_gate_up = false;
  };
  // Queries q [t, heads * head_dim] with rows ldq floats apart; output into ws.att.
  void attention(int64_t layer, int64_t start, int64_t t, const float* q, int64_t ldq, const KvCache& cache,
                 LlmWorkspace& ws, bool decoding) const;

  model::LlmConfig cfg_;
  const model::TensorInfo* embed_ = nullptr;
  std::vector<Layer> layers_;
  const float* norm_ = nullptr;
  Linear lm_head_;
  Rope rope_;
  Activations act_ = Activations::int8;
};

}  // namespace bluelm::runtime

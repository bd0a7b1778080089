#pragma once
// The KV cache of the LLM: per layer, KV head and position, the hd values of a key (after RoPE) and of a value.
// int8: stored in groups of kKvGroup values, each with a float32 scale d = max|x| / 127 (q = round(x / d));
// attention (runtime/attention.h) reads them straight from the cache. Keys have outlier channels, so one scale per
// head vector loses the small ones (measured in docs/engine.md). f16 (the default, as llama.cpp's): IEEE halves,
// rounded to nearest even, relative error 2^-11, where int8 keys flip ~1% of SmolLM2's greedy tokens. f32: the
// values as they are (for checking against the reference). Layout and bytes per token: docs/engine.md.
// Plain C++ (no Eigen, no model code), so it builds with the attention kernels for aarch64 (BLUELM_KERNELS_ONLY).
#include <cstdint>
#include <string>
#include <vector>

#include "common/memory.h"
#include "runtime/attention.h"

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
  // Prefetches (to L2) the first `positions` entries of the layer's cached keys, values (and int8 scales) in every
  // KV head, where each head's keys take at most kKvPrefetchRun bytes (f16, hd = 64: 128 positions); past that it
  // does nothing. A decode step calls it as a layer starts, so that the attention after the layer's q / k / v
  // products finds its short runs in L2 (docs/engine.md, "The KV cache prefetched a layer ahead").
  void prefetch(int64_t layer, int64_t positions) const;
  static constexpr int64_t kKvPrefetchRun = 16 << 10;

 private:
  friend class Llm;
  KvType type_;
  int64_t layers_, kv_heads_, capacity_, hd_, length_ = 0, gs_ = 0, groups_ = 1;
  // On huge pages (common/memory.h): at depth a decode step streams every layer's cache. On the Zen 3 host, SmolLM2's
  // decode at depth 4,096 ran 10-15% faster with the f16 cache and 2-4% with int8 (docs/engine.md, fourth pass).
  LargeArray<int8_t> k8_, v8_;
  LargeArray<uint16_t> k16_, v16_;
  LargeArray<float> kf_, vf_, ks_, vs_;  // f32 values, or the int8 scales [layers, kv_heads, capacity, groups]
  size_t slot(int64_t layer, int64_t kvh, int64_t pos) const {
    return (size_t(layer) * size_t(kv_heads_) + size_t(kvh)) * size_t(capacity_) + size_t(pos);
  }
};

// A/B switch (on by default): whether a decode step prefetches each layer's cached keys and values as the layer
// starts (KvCache::prefetch). For A/B runs (docs/engine.md, "The KV cache prefetched a layer ahead").
void set_kv_prefetch(bool on);
bool kv_prefetch();

// Attention of t query positions over a sequence of n positions (the last t of them are the queries' own), through a
// one-layer cache of `type`, as the LLM runs it: decode (t = 1) or a prefill chunk. q [t, heads, hd] (unscaled),
// k, v [n, kv_heads, hd] -> [t, heads, hd]. For tests against other implementations; lengths are checked.
std::vector<float> attend_sequence(KvType type, const float* q, int64_t t, int64_t heads, const float* k,
                                   const float* v, int64_t n, int64_t kv_heads, int64_t hd);

}  // namespace bluelm::runtime

#include "runtime/kv_cache.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "quant/quant.h"

namespace bluelm::runtime {

KvType parse_kv_type(const std::string& s) {
  if (s == "int8") return KvType::int8;
  if (s == "f16") return KvType::f16;
  if (s == "f32") return KvType::f32;
  throw InvalidArgument(cat("unknown KV cache type '", s, "': expected 'int8', 'f16' or 'f32'"));
}

KvCache::KvCache(KvType type, int64_t layers, int64_t kv_heads, int64_t capacity, int64_t head_dim)
    : type_(type), layers_(layers), kv_heads_(kv_heads), capacity_(capacity), hd_(head_dim) {
  if (capacity < 1) throw InvalidArgument(cat("KV cache capacity must be positive, got ", capacity));
  const size_t slots = size_t(layers) * size_t(kv_heads) * size_t(capacity);
  gs_ = head_dim % kKvGroup == 0 ? kKvGroup : head_dim;
  groups_ = head_dim / gs_;
  if (type == KvType::int8) {
    k8_ = LargeArray<int8_t>(slots * size_t(hd_));
    v8_ = LargeArray<int8_t>(slots * size_t(hd_));
    ks_ = LargeArray<float>(slots * size_t(groups_));
    vs_ = LargeArray<float>(slots * size_t(groups_));
  } else if (type == KvType::f16) {
    k16_ = LargeArray<uint16_t>(slots * size_t(hd_));
    v16_ = LargeArray<uint16_t>(slots * size_t(hd_));
  } else {
    kf_ = LargeArray<float>(slots * size_t(hd_));
    vf_ = LargeArray<float>(slots * size_t(hd_));
  }
}

void KvCache::set_length(int64_t n) {
  if (n < 0 || n > length_) throw InvalidArgument(cat("cannot set a KV cache of length ", length_, " to ", n));
  length_ = n;
}

int64_t KvCache::bytes_per_token(KvType type, int64_t layers, int64_t kv_heads, int64_t head_dim) {
  const int64_t groups = head_dim % kKvGroup == 0 ? head_dim / kKvGroup : 1;
  const int64_t per_head = type == KvType::int8  ? 2 * (head_dim + int64_t(sizeof(float)) * groups)
                           : type == KvType::f16 ? 2 * head_dim * int64_t(sizeof(uint16_t))
                                                 : 2 * head_dim * int64_t(sizeof(float));
  return layers * kv_heads * per_head;
}

int64_t KvCache::bytes() const {
  return int64_t(k8_.size() + v8_.size()) + int64_t(sizeof(uint16_t)) * int64_t(k16_.size() + v16_.size()) +
         int64_t(sizeof(float)) * int64_t(kf_.size() + vf_.size() + ks_.size() + vs_.size());
}

void KvCache::store(int64_t layer, int64_t pos, const float* k, const float* v) {
  for (int64_t h = 0; h < kv_heads_; ++h) {
    const size_t s = slot(layer, h, pos);
    if (type_ == KvType::int8) {
      for (int64_t g = 0; g < groups_; ++g) {
        const int64_t o = g * gs_;
        quantize_group_i8(k + h * hd_ + o, gs_, &k8_[s * size_t(hd_) + size_t(o)], &ks_[s * size_t(groups_) + size_t(g)]);
        quantize_group_i8(v + h * hd_ + o, gs_, &v8_[s * size_t(hd_) + size_t(o)], &vs_[s * size_t(groups_) + size_t(g)]);
      }
    } else if (type_ == KvType::f16) {
      for (int64_t i = 0; i < hd_; ++i) {
        k16_[s * size_t(hd_) + size_t(i)] = quant::fp32_to_fp16(k[h * hd_ + i]);
        v16_[s * size_t(hd_) + size_t(i)] = quant::fp32_to_fp16(v[h * hd_ + i]);
      }
    } else {
      std::memcpy(&kf_[s * size_t(hd_)], k + h * hd_, size_t(hd_) * sizeof(float));
      std::memcpy(&vf_[s * size_t(hd_)], v + h * hd_, size_t(hd_) * sizeof(float));
    }
  }
}

namespace {
std::atomic<bool> g_kv_prefetch{true};

void prefetch_range(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 2);
}
}  // namespace

void set_kv_prefetch(bool on) { g_kv_prefetch.store(on, std::memory_order_relaxed); }
bool kv_prefetch() { return g_kv_prefetch.load(std::memory_order_relaxed); }

void KvCache::prefetch(int64_t layer, int64_t positions) const {
  positions = std::min(positions, capacity_);
  const int64_t elem = type_ == KvType::int8 ? 1 : type_ == KvType::f16 ? 2 : 4, run = positions * hd_ * elem;
  if (positions <= 0 || run > kKvPrefetchRun) return;  // long runs: the hardware prefetchers carry them
  for (int64_t h = 0; h < kv_heads_; ++h) {
    const KvHeadView v = head(layer, h);  // checked indices
    const void* keys = v.k8 ? static_cast<const void*>(v.k8) : v.k16 ? static_cast<const void*>(v.k16) : v.kf;
    const void* values = v.v8 ? static_cast<const void*>(v.v8) : v.v16 ? static_cast<const void*>(v.v16) : v.vf;
    prefetch_range(keys, run);
    prefetch_range(values, run);
    if (v.ks) prefetch_range(v.ks, positions * groups_ * int64_t(sizeof(float)));
    if (v.vs) prefetch_range(v.vs, positions * groups_ * int64_t(sizeof(float)));
  }
}

KvHeadView KvCache::head(int64_t layer, int64_t kvh) const {
  if (layer < 0 || layer >= layers_ || kvh < 0 || kvh >= kv_heads_)
    throw InvalidArgument(cat("KV head (", layer, ", ", kvh, ") outside a cache of ", layers_, " layers x ", kv_heads_,
                              " heads"));
  const size_t s0 = slot(layer, kvh, 0);
  KvHeadView v;
  v.hd = hd_;
  v.gs = gs_;
  if (type_ == KvType::int8) {
    v.k8 = &k8_[s0 * size_t(hd_)];
    v.v8 = &v8_[s0 * size_t(hd_)];
    v.ks = &ks_[s0 * size_t(groups_)];
    v.vs = &vs_[s0 * size_t(groups_)];
  } else if (type_ == KvType::f16) {
    v.k16 = &k16_[s0 * size_t(hd_)];
    v.v16 = &v16_[s0 * size_t(hd_)];
  } else {
    v.kf = &kf_[s0 * size_t(hd_)];
    v.vf = &vf_[s0 * size_t(hd_)];
  }
  return v;
}

std::vector<float> attend_sequence(KvType type, const float* q, int64_t t, int64_t heads, const float* k,
                                   const float* v, int64_t n, int64_t kv_heads, int64_t hd) {
  if (hd < 1 || kv_heads < 1 || heads < 1 || heads % kv_heads)
    throw InvalidArgument(cat("attention needs heads (", heads, ") a multiple of KV heads (", kv_heads,
                              ") and a positive head size (", hd, ")"));
  if (t < 1 || t > n) throw InvalidArgument(cat("attention of ", t, " queries over ", n, " positions"));
  KvCache cache(type, 1, kv_heads, n, hd);
  for (int64_t p = 0; p < n; ++p) cache.store(0, p, k + p * kv_heads * hd, v + p * kv_heads * hd);
  std::vector<KvHeadView> kv;
  for (int64_t h = 0; h < kv_heads; ++h) kv.push_back(cache.head(0, h));
  std::vector<float> out(size_t(t * heads * hd));
  const float scale = 1.0f / std::sqrt(float(hd));
  if (t == 1) {
    DecodeScratch ds;
    decode_attention(kv.data(), kv_heads, heads / kv_heads, q, scale, n, out.data(), ds);
  } else {
    prefill_attention(kv.data(), kv_heads, heads / kv_heads, q, heads * hd, scale, n - t, t, out.data(), heads * hd);
  }
  return out;
}

}  // namespace bluelm::runtime

// Attention over the KV cache (runtime/attention.h): every tier against the double-precision reference and against
// the scalar tier, on awkward lengths, head sizes and GQA ratios; split-K merging; the causal limit of prefill.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/isa.h"
#include "common/testing.h"
#include "quant/quant.h"
#include "runtime/attention.h"
#include "runtime/attention_isa.h"
#include "runtime/kv_cache.h"

using namespace bluelm;
using namespace bluelm::runtime;

namespace {

// A one-layer cache of kv_heads heads holding n random positions (keys with a few large channels, as real keys).
KvCache random_cache(KvType type, int64_t kv_heads, int64_t n, int64_t hd, uint32_t seed) {
  KvCache c(type, 1, kv_heads, n, hd);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> k(size_t(kv_heads * hd)), v(size_t(kv_heads * hd));
  for (int64_t p = 0; p < n; ++p) {
    for (size_t i = 0; i < k.size(); ++i) k[i] = nd(rng) * (i % 17 == 3 ? 6.0f : 1.0f);
    for (auto& x : v) x = nd(rng);
    c.store(0, p, k.data(), v.data());
  }
  return c;
}

std::vector<float> random_rows(int64_t rows, int64_t hd, uint32_t seed, float s) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, s);
  std::vector<float> q(size_t(rows * hd));
  for (auto& x : q) x = nd(rng);
  return q;
}

// m rows over [0, n) in ranges of `split` positions merged (split >= n: one range).
std::vector<float> attend_split(const KvHeadView& kv, const float* q, int64_t m, int64_t n, int64_t split,
                                const int64_t* limit, const QueryI8View* q8 = nullptr) {
  const int64_t hd = kv.hd, parts = (n + split - 1) / split;
  std::vector<float> out(size_t(parts * m * hd)), mx(size_t(parts * m)), sum(size_t(parts * m));
  std::vector<AttnPartial> st;
  AttnScratch scratch;
  for (int64_t p = 0; p < parts; ++p) {
    st.push_back({out.data() + p * m * hd, hd, mx.data() + p * m, sum.data() + p * m});
    attend_block_range(kv, q, hd, m, p * split, std::min(n, (p + 1) * split), limit, st.back(), true, scratch, q8);
  }
  std::vector<float> res(size_t(m * hd));
  merge_partials(st.data(), parts, m, hd, res.data(), hd);
  return res;
}

// The rows decode's int8 path computes with: each group's int8 values times its scale.
std::vector<float> dequantized(const QueryI8& q, int64_t m) {
  std::vector<float> out(size_t(m * q.hd));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t i = 0; i < q.hd; ++i)
      out[size_t(r * q.hd + i)] = float(q.q8[size_t(r * q.hd + i)]) * q.d[size_t(r * (q.hd / q.gs) + i / q.gs)];
  return out;
}

double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, double(std::fabs(x)));
  return m;
}

}  // namespace

BLUELM_TEST(attention_tiers_match_reference_on_awkward_sizes) {
  const Isa saved = active_isa();
  uint32_t seed = 1;
  for (KvType type : {KvType::int8, KvType::f16, KvType::f32})
    for (int64_t hd : {64, 80, 128})
      for (int64_t n : {1, 31, 33, 4097}) {
        const KvCache c = random_cache(type, 1, n, hd, seed++);
        const KvHeadView kv = c.head(0, 0);
        for (int64_t groups : {1, 3, 4, 8}) {
          const std::vector<float> q = random_rows(groups, hd, seed++, 1.0f / std::sqrt(float(hd)));
          std::vector<float> want(size_t(groups * hd));
          for (int64_t r = 0; r < groups; ++r) attend_reference(kv, q.data() + r * hd, n, want.data() + r * hd);
          std::vector<float> scalar;
          for (Isa isa : supported_isas()) {
            if (!attention_kernels_for(isa)) continue;
            set_active_isa(isa);
            for (int64_t split : {n, int64_t(512), int64_t(100)}) {  // 100: ranges not aligned to blocks
              const std::vector<float> got = attend_split(kv, q.data(), groups, n, split, nullptr);
              for (size_t i = 0; i < got.size(); ++i) CHECK_NEAR(got[i], want[i], 2e-5 * (1 + std::fabs(want[i])));
              if (isa == Isa::scalar && split == n) scalar = got;
              if (isa != Isa::scalar && split == n)
                for (size_t i = 0; i < got.size(); ++i) CHECK_NEAR(got[i], scalar[i], 1e-5 * (1 + std::fabs(scalar[i])));
            }
          }
        }
      }
  set_active_isa(saved);
}

BLUELM_TEST(quantize_group_i8_rounds_like_nearbyint_including_ties) {
  // The query and KV-cache quantizer rounds by the 1.5 x 2^23 shift instead of calling nearbyint: the same integers,
  // ties to even, on groups whose scale makes x / d land exactly on k + 0.5, and on random groups.
  const std::vector<float> ties = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -126.5f, 3.49999f, -0.0f};
  std::vector<int8_t> q(ties.size());
  float d = 0.0f;
  quantize_group_i8(ties.data(), int64_t(ties.size()), q.data(), &d);
  CHECK_EQ(d, 1.0f);
  const std::vector<int> want = {127, 0, 2, 2, 0, -2, -2, 126, -126, 3, 0};
  for (size_t i = 0; i < q.size(); ++i) CHECK_EQ(int(q[i]), want[i]);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (int64_t n : {1, 7, 32, 80}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (auto& v : x) v = nd(rng);
    std::vector<int8_t> got(static_cast<size_t>(n));
    quantize_group_i8(x.data(), n, got.data(), &d);
    float m = 0.0f;
    for (float v : x) m = std::max(m, std::fabs(v));
    const float inv = 1.0f / (m / 127.0f);
    for (int64_t i = 0; i < n; ++i) CHECK_EQ(int(got[size_t(i)]), int(std::nearbyint(x[size_t(i)] * inv)));
  }
}

BLUELM_TEST(attention_int8_query_scores_match_reference_on_awkward_sizes) {
  // Decode's integer path: the query quantized per scale group, integer dot products with the int8 keys, the
  // softmax weights rounded to int16 per block for the values. Every tier equals the scalar tier (1e-5: the same
  // integers, scaled in another order) and the double reference fed the dequantized query within the weights'
  // rounding (each within 1/65534 of its block's largest: measured ~3e-5, bound 1.5e-4); against the float query
  // the difference is the query's rounding, bounded loosely.
  const Isa saved = active_isa();
  uint32_t seed = 100;
  for (int64_t hd : {64, 80, 128})
    for (int64_t n : {1, 31, 33, 4097}) {
      const KvCache c = random_cache(KvType::int8, 1, n, hd, seed++);
      const KvHeadView kv = c.head(0, 0);
      for (int64_t groups : {1, 3, 4, 8}) {
        const std::vector<float> q = random_rows(groups, hd, seed++, 1.0f / std::sqrt(float(hd)));
        QueryI8 q8;
        q8.quantize(q.data(), hd, groups, hd, kv.gs);
        const QueryI8View view = q8.rows(0);
        const std::vector<float> qdq = dequantized(q8, groups);
        std::vector<float> want(size_t(groups * hd)), exact(size_t(groups * hd));
        for (int64_t r = 0; r < groups; ++r) {
          attend_reference(kv, qdq.data() + r * hd, n, want.data() + r * hd);
          attend_reference(kv, q.data() + r * hd, n, exact.data() + r * hd);
        }
        std::vector<float> scalar;
        for (Isa isa : supported_isas()) {
          if (!attention_kernels_for(isa)) continue;
          set_active_isa(isa);
          for (int64_t split : {n, int64_t(100)}) {
            const std::vector<float> got = attend_split(kv, q.data(), groups, n, split, nullptr, &view);
            for (size_t i = 0; i < got.size(); ++i) {
              CHECK_NEAR(got[i], want[i], 1.5e-4 * (1 + std::fabs(want[i])));
              CHECK_NEAR(got[i], exact[i], 0.05);
            }
            if (isa == Isa::scalar && split == n) scalar = got;
            if (isa != Isa::scalar && split == n)
              for (size_t i = 0; i < got.size(); ++i) CHECK_NEAR(got[i], scalar[i], 1e-5 * (1 + std::fabs(scalar[i])));
          }
        }
      }
    }
  set_active_isa(saved);
}

BLUELM_TEST(attention_causal_limit_and_decode_driver) {
  // Rows with their own limits (prefill's diagonal) equal the reference over [0, limit); the decode driver (GQA
  // groups over KV heads, split-K over the pool) equals it over [0, n).
  const int64_t hd = 64, n = 1100, kv_heads = 3, groups = 3;
  const KvCache c = random_cache(KvType::int8, kv_heads, n, hd, 77);
  const Isa saved = active_isa();
  for (Isa isa : supported_isas()) {
    if (!attention_kernels_for(isa)) continue;
    set_active_isa(isa);
    const int64_t m = 7;
    const std::vector<float> q = random_rows(m, hd, 5, 0.125f);
    const std::vector<int64_t> limit = {1, 2, 63, 64, 65, 700, n};
    const std::vector<float> got = attend_split(c.head(0, 1), q.data(), m, n, n, limit.data());
    for (int64_t r = 0; r < m; ++r) {
      std::vector<float> want(static_cast<size_t>(hd));
      attend_reference(c.head(0, 1), q.data() + r * hd, limit[size_t(r)], want.data());
      for (int64_t i = 0; i < hd; ++i) CHECK_NEAR(got[size_t(r * hd + i)], want[size_t(i)], 2e-5);
    }
    const std::vector<float> qd = random_rows(kv_heads * groups, hd, 6, 1.0f);
    std::vector<KvHeadView> kv;
    for (int64_t h = 0; h < kv_heads; ++h) kv.push_back(c.head(0, h));
    std::vector<float> out(size_t(kv_heads * groups * hd));
    DecodeScratch ds;
    decode_attention(kv.data(), kv_heads, groups, qd.data(), 0.125f, n, out.data(), ds);
    // The int8 cache's decode computes with the query rounded to int8 per scale group (QueryI8) and the weights of
    // the values rounded to int16 (within 1.5e-4, as in the test above).
    const std::vector<float> qdq = dequantized(ds.q8, kv_heads * groups);
    for (int64_t h = 0; h < kv_heads * groups; ++h) {
      std::vector<float> qs(qdq.begin() + h * hd, qdq.begin() + (h + 1) * hd), want(static_cast<size_t>(hd));
      attend_reference(kv[size_t(h / groups)], qs.data(), n, want.data());
      for (int64_t i = 0; i < hd; ++i) CHECK_NEAR(out[size_t(h * hd + i)], want[size_t(i)], 1.5e-4);
    }
  }
  set_active_isa(saved);
}

BLUELM_TEST(attention_integer_prefill_matches_reference_on_awkward_sizes) {
  // A prefill chunk over the int8 cache computes in integers (each row's query quantized per scale group, int16
  // weights of the values): every tier equals the double reference fed the dequantized queries over its causal
  // range and the scalar tier, with tiles of several row blocks (t x groups rows) and diagonal blocks. Bounds on
  // the chunk's largest output, as tests/test_attention.py's: 1.5e-4 against the reference (the int16 weights,
  // each within 1/65534 of its block's largest); 5e-5 between tiers, whose scores differ in float rounding, enough
  // to move a weight to the next int16 step now and then among the chunk's thousands of rows and blocks.
  const Isa saved = active_isa();
  uint32_t seed = 300;
  for (int64_t hd : {64, 80, 128})
    for (int64_t groups : {1, 3, 8}) {
      const int64_t kv_heads = 2, n = 130, t = 37, start = n - t, heads = kv_heads * groups;
      const KvCache c = random_cache(KvType::int8, kv_heads, n, hd, seed++);
      std::vector<KvHeadView> kv;
      for (int64_t h = 0; h < kv_heads; ++h) kv.push_back(c.head(0, h));
      const std::vector<float> q = random_rows(t * heads, hd, seed++, 1.0f);
      const float scale = 1.0f / std::sqrt(float(hd));
      std::vector<float> want(size_t(t * heads * hd));
      for (int64_t i = 0; i < t; ++i)
        for (int64_t h = 0; h < heads; ++h) {
          std::vector<float> qs(static_cast<size_t>(hd));
          for (int64_t d = 0; d < hd; ++d) qs[size_t(d)] = q[size_t((i * heads + h) * hd + d)] * scale;
          QueryI8 q8;
          q8.quantize(qs.data(), hd, 1, hd, kv[0].gs);
          const std::vector<float> qdq = dequantized(q8, 1);
          attend_reference(kv[size_t(h / groups)], qdq.data(), start + i + 1, want.data() + (i * heads + h) * hd);
        }
      std::vector<float> scalar;
      for (Isa isa : supported_isas()) {
        if (!attention_kernels_for(isa)) continue;
        set_active_isa(isa);
        std::vector<float> got(want.size());
        prefill_attention(kv.data(), kv_heads, groups, q.data(), heads * hd, scale, start, t, got.data(), heads * hd);
        const double top = std::max(1.0, max_abs(want));
        for (size_t i = 0; i < got.size(); ++i) CHECK_NEAR(got[i], want[i], 1.5e-4 * top);
        if (isa == Isa::scalar) scalar = got;
        else
          for (size_t i = 0; i < got.size(); ++i) CHECK_NEAR(got[i], scalar[i], 5e-5 * top);
      }
    }
  set_active_isa(saved);
}

BLUELM_TEST(int8_kv_cache_close_to_f32_and_sized_honestly) {
  const int64_t hd = 64, n = 37;
  const KvCache f = random_cache(KvType::f32, 2, n, hd, 5), q = random_cache(KvType::int8, 2, n, hd, 5);
  const std::vector<float> query = random_rows(1, hd, 9, 0.125f);
  std::vector<float> o1(static_cast<size_t>(hd)), o2(static_cast<size_t>(hd));
  attend_reference(f.head(0, 1), query.data(), n, o1.data());
  attend_reference(q.head(0, 1), query.data(), n, o2.data());
  // int8 per group of 32: each K/V entry within 1/254 of its group's max.
  for (int64_t i = 0; i < hd; ++i) CHECK_NEAR(o1[size_t(i)], o2[size_t(i)], 0.03);
  CHECK(max_abs(o2) > 0.01);
  // Bytes per token: K and V, hd int8 plus one float scale per 32 values, per layer and KV head.
  CHECK_EQ(q.bytes_per_token(), 2 * 2 * (64 + 4 * 2));
  CHECK_EQ(f.bytes_per_token(), 2 * 2 * 64 * 4);
  CHECK_EQ(q.bytes(), q.bytes_per_token() * q.capacity());
  CHECK_EQ(f.bytes(), f.bytes_per_token() * f.capacity());
  CHECK_THROWS(q.head(1, 0), InvalidArgument);
  CHECK_THROWS(q.head(0, 2), InvalidArgument);
  CHECK_THROWS(KvCache(KvType::int8, 1, 1, 0, 8), InvalidArgument);
  CHECK_THROWS(parse_kv_type("f8"), InvalidArgument);
}

BLUELM_TEST(f16_kv_cache_holds_halves_and_is_sized_honestly) {
  const int64_t hd = 64, n = 37;
  const KvCache f = random_cache(KvType::f32, 2, n, hd, 5), h = random_cache(KvType::f16, 2, n, hd, 5);
  // Every stored key and value is its float's nearest half (relative error <= 2^-11 in the normal range).
  for (int64_t kvh = 0; kvh < 2; ++kvh) {
    const KvHeadView a = f.head(0, kvh), b = h.head(0, kvh);
    for (int64_t i = 0; i < n * hd; ++i) {
      CHECK_EQ(b.k16[i], quant::fp32_to_fp16(a.kf[i]));
      CHECK_EQ(b.v16[i], quant::fp32_to_fp16(a.vf[i]));
      CHECK_NEAR(quant::fp16_to_fp32(b.k16[i]), a.kf[i], std::fabs(a.kf[i]) * 0x1p-11f + 1e-7f);
    }
  }
  CHECK_EQ(h.bytes_per_token(), 2 * 2 * 64 * 2);
  CHECK_EQ(h.bytes(), h.bytes_per_token() * h.capacity());
  CHECK(parse_kv_type("f16") == KvType::f16);
}

BLUELM_TEST(vector_exp_softmax_and_gelu_match_libm) {
  // Every tier's exp_sum and gelu_tanh against std::exp / std::tanh, over the range softmax and GELU see (softmax
  // arguments are <= 0 after the max is taken), with lengths that leave a tail.
  std::vector<float> xs;
  for (float v = -100.0f; v <= 80.0f; v += 0.0371f) xs.push_back(v);
  xs.push_back(-INFINITY);
  const Isa saved = active_isa();
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    const AttentionKernels& K = attention_kernels();
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(xs.size())}) {
      std::vector<float> y(xs.begin(), xs.begin() + n);
      const float sum = K.exp_sum(y.data(), n, 0.5f);
      double ref_sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double ref = std::exp(double(xs[size_t(i)] - 0.5f));  // the argument as the kernels form it
        ref_sum += ref;
        if (ref > 1e-37) CHECK_NEAR(y[size_t(i)] / ref, 1.0, 3e-7);
        else CHECK(y[size_t(i)] >= 0.0f && y[size_t(i)] < 2e-37f);
      }
      CHECK_NEAR(sum, ref_sum, 1e-5 * ref_sum + 1e-36);
    }
    std::vector<float> g;
    for (float v = -12.0f; v <= 12.0f; v += 0.013f) g.push_back(v);
    std::vector<float> gy = g;
    K.gelu_tanh(gy.data(), int64_t(gy.size()));
    for (size_t i = 0; i < g.size(); ++i) {
      const double v = g[i], ref = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
      CHECK_NEAR(gy[i], ref, 2e-6 * std::max(1.0, std::abs(ref)));
    }
  }
  set_active_isa(saved);
}

BLUELM_TEST(silu_mul_and_rms_norm_rows_match_double_references_in_every_tier) {
  // SwiGLU's product and RMSNorm through each tier's table against double-precision formulas, over lengths that
  // leave vector tails (1, 7, 9, 17, 576, 1537), with gates down to -120 (exp(-g) past float range, clamped) and
  // up to 120, and in place (out = g, y = x) as the engine calls them.
  const Isa saved = active_isa();
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    const AttentionKernels& K = attention_kernels();
    uint32_t seed = 7;
    auto uniform = [&seed] {
      seed = seed * 1664525u + 1013904223u;
      return float(seed >> 8) / float(1u << 24);
    };
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(9), int64_t(17), int64_t(576), int64_t(1537)}) {
      std::vector<float> g(static_cast<size_t>(n)), u(static_cast<size_t>(n)), out(static_cast<size_t>(n) + 1, -5.0f);
      for (int64_t i = 0; i < n; ++i) {
        g[size_t(i)] = i % 97 == 3 ? -120.0f : i % 89 == 5 ? 120.0f : 24.0f * uniform() - 12.0f;
        u[size_t(i)] = 4.0f * uniform() - 2.0f;
      }
      K.silu_mul(g.data(), u.data(), out.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double gv = g[size_t(i)], ref = gv / (1.0 + std::exp(-gv)) * u[size_t(i)];
        CHECK_NEAR(out[size_t(i)], ref, 1e-6 * std::max(1.0, std::abs(ref)));
      }
      CHECK_EQ(out[size_t(n)], -5.0f);  // nothing written past n
      std::vector<float> in_place = g;
      K.silu_mul(in_place.data(), u.data(), in_place.data(), n);
      for (int64_t i = 0; i < n; ++i) CHECK_EQ(in_place[size_t(i)], out[size_t(i)]);

      std::vector<float> x(static_cast<size_t>(n)), w(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) x[size_t(i)] = 6.0f * uniform() - 3.0f, w[size_t(i)] = 2.0f * uniform();
      std::vector<float> y(size_t(n) + 1, -5.0f);
      K.rms_norm_row(x.data(), w.data(), y.data(), n, 1e-5f);
      double ss = 0.0;
      for (float v : x) ss += double(v) * v;
      const double inv = 1.0 / std::sqrt(ss / double(n) + 1e-5);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = double(w[size_t(i)]) * x[size_t(i)] * inv;
        CHECK_NEAR(y[size_t(i)], ref, 2e-6 * std::max(1.0, std::abs(ref)));
      }
      CHECK_EQ(y[size_t(n)], -5.0f);  // nothing written past d
      std::vector<float> xi = x;
      K.rms_norm_row(xi.data(), w.data(), xi.data(), n, 1e-5f);
      for (int64_t i = 0; i < n; ++i) CHECK_EQ(xi[size_t(i)], y[size_t(i)]);
    }
  }
  set_active_isa(saved);
}

BLUELM_TEST(kv_cache_arrays_start_on_huge_page_boundaries) {
  // Each array of a cache of 2 MiB or more is one alloc_large buffer (common/memory.h): the first (layer, head) of
  // each starts on a 2 MiB boundary, and the zero-filled cache attends like any other.
  for (KvType type : {KvType::int8, KvType::f16, KvType::f32}) {
    KvCache c(type, 2, 2, 16384, 64);
    const KvHeadView h = c.head(0, 0);
    const void* k = type == KvType::int8 ? static_cast<const void*>(h.k8)
                    : type == KvType::f16 ? static_cast<const void*>(h.k16)
                                          : static_cast<const void*>(h.kf);
    CHECK_EQ(reinterpret_cast<uintptr_t>(k) % (size_t(2) << 20), uintptr_t(0));
    const KvHeadView last = c.head(1, 1);
    if (type == KvType::int8) CHECK(last.k8[16383 * 64 + 63] == 0 && last.vs[16383 * 2 + 1] == 0.0f);
    if (type == KvType::f16) CHECK(last.v16[16383 * 64 + 63] == 0);
    if (type == KvType::f32) CHECK(last.vf[16383 * 64 + 63] == 0.0f);
  }
}

#include "runtime/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>

#include "common/threadpool.h"
#include "quant/quant.h"
#include "runtime/attention_isa.h"

namespace bluelm::runtime {

void quantize_group_i8(const float* x, int64_t n, int8_t* q, float* d) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  const float scale = m / 127.0f;
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  // nearbyint by the 1.5 x 2^23 shift (|x inv| <= 127: exact, ties to even as in the default rounding mode), so the
  // loop vectorises instead of calling nearbyintf per element (prefill quantizes every query row of a chunk).
  constexpr float kShift = 12582912.0f;
  for (int64_t i = 0; i < n; ++i) q[i] = int8_t(int32_t((x[i] * inv + kShift) - kShift));
  *d = scale;
}

void QueryI8::quantize(const float* q, int64_t ldq, int64_t m, int64_t hd, int64_t gs) {
  const int64_t groups = hd / gs;
  this->hd = hd;
  this->gs = gs;
  q8.resize(size_t(m * hd));
  d.resize(size_t(m * groups));
  sum.resize(size_t(m * groups));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      int8_t* qg = q8.data() + r * hd + g * gs;
      quantize_group_i8(q + r * ldq + g * gs, gs, qg, &d[size_t(r * groups + g)]);
      int32_t t = 0;
      for (int64_t i = 0; i < gs; ++i) t += qg[i];
      sum[size_t(r * groups + g)] = t;
    }
}

void attend_block_range(const KvHeadView& kv, const float* q, int64_t ldq, int64_t m, int64_t j0, int64_t j1,
                        const int64_t* limit, AttnPartial st, bool start, AttnScratch& scratch, const QueryI8View* q8) {
  const AttentionKernels& K = attention_kernels();
  const int64_t hd = kv.hd, groups = hd / kv.gs, ldk = kAttnBlock;
  if (scratch.kt.size() < size_t(hd * ldk)) scratch.kt.resize(size_t(hd * ldk));
  if (scratch.s.size() < size_t(m * ldk)) scratch.s.resize(size_t(m * ldk));
  if ((kv.v8 || kv.v16) && scratch.vt.size() < size_t(kAttnBlock * hd)) scratch.vt.resize(size_t(kAttnBlock * hd));
  if (start)
    for (int64_t r = 0; r < m; ++r) {
      std::fill(st.out + r * st.ldo, st.out + r * st.ldo + hd, 0.0f);
      st.mx[r] = -INFINITY;
      st.sum[r] = 0.0f;
    }
  float* kt = scratch.kt.data();
  float* s = scratch.s.data();
  for (int64_t jb = j0; jb < j1; jb += kAttnBlock) {
    const int64_t nb = std::min(kAttnBlock, j1 - jb);
    // How many of the block's positions each row sees: all of them except on the causal diagonal.
    int64_t seen = 0;
    for (int64_t r = 0; r < m; ++r) seen = std::max(seen, limit ? std::clamp(limit[r] - jb, int64_t(0), nb) : nb);
    if (seen == 0) continue;
    const bool direct =
        (kv.k8 && ((q8 && K.scores_i8q(q8->q8, q8->d, q8->sum, m, kv.k8 + jb * hd,
                                       kv.ks + jb * groups, nb, hd, kv.gs, s, ldk)) ||
                   (!q8 && K.scores_i8_direct &&
                    K.scores_i8_direct(q, ldq, m, kv.k8 + jb * hd, kv.ks + jb * groups, nb, hd, kv.gs, s, ldk)))) ||
        (kv.k16 && K.scores_f16_direct && K.scores_f16_direct(q, ldq, m, kv.k16 + jb * hd, nb, hd, s, ldk));
    if (!direct) {
      if (kv.k8) K.keys_i8_t(kv.k8 + jb * hd, kv.ks + jb * groups, nb, hd, kv.gs, kt, ldk);
      else if (kv.k16) K.keys_f16_t(kv.k16 + jb * hd, nb, hd, kt, ldk);
      else K.keys_f32_t(kv.kf + jb * hd, nb, hd, kt, ldk);
      K.scores(q, ldq, m, kt, ldk, (nb + 7) / 8 * 8, hd, s, ldk);
    }
    for (int64_t r = 0; r < m; ++r) {
      float* row = s + r * ldk;
      const int64_t c = limit ? std::clamp(limit[r] - jb, int64_t(0), nb) : nb;
      if (c == 0) {
        std::fill(row, row + nb, 0.0f);
        continue;
      }
      const float mx = std::max(st.mx[r], K.row_max(row, c));
      // 0 on the first block a row sees; exactly 1 (no call) when the block does not raise the row's maximum
      const float alpha = mx == st.mx[r] ? 1.0f : std::exp(st.mx[r] - mx);
      if (alpha != 1.0f) {
        float* o = st.out + r * st.ldo;
        for (int64_t i = 0; i < hd; ++i) o[i] *= alpha;
        st.sum[r] *= alpha;
      }
      st.sum[r] += K.exp_sum(row, c, mx);
      st.mx[r] = mx;
      std::fill(row + c, row + nb, 0.0f);  // masked positions weigh nothing
    }
    if (q8 && kv.v8) {  // decode's integer path: int16 weights
      K.accumulate_i8w(s, ldk, m, kv.v8 + jb * hd, kv.vs + jb * groups, nb, hd, kv.gs, st.out, st.ldo);
      continue;
    }
    if (kv.v8 && K.accumulate_i8_direct &&
        K.accumulate_i8_direct(s, ldk, m, kv.v8 + jb * hd, kv.vs + jb * groups, nb, hd, kv.gs, st.out, st.ldo))
      continue;
    if (kv.v16 && K.accumulate_f16_direct &&
        K.accumulate_f16_direct(s, ldk, m, kv.v16 + jb * hd, nb, hd, st.out, st.ldo))
      continue;
    const float* v = kv.vf ? kv.vf + jb * hd : scratch.vt.data();
    if (kv.v8) K.values_i8(kv.v8 + jb * hd, kv.vs + jb * groups, nb, hd, kv.gs, scratch.vt.data());
    if (kv.v16) K.values_f16(kv.v16 + jb * hd, nb, hd, scratch.vt.data());
    K.accumulate(s, ldk, m, v, hd, nb, hd, st.out, st.ldo);
  }
}

void merge_partials(const AttnPartial* parts, int64_t count, int64_t m, int64_t hd, float* out, int64_t ldo) {
  thread_local std::vector<float> w;
  w.resize(size_t(count));
  for (int64_t r = 0; r < m; ++r) {
    float top = -INFINITY;
    for (int64_t p = 0; p < count; ++p) top = std::max(top, parts[p].mx[r]);
    float total = 0.0f;
    for (int64_t p = 0; p < count; ++p) {
      w[size_t(p)] = parts[p].mx[r] == -INFINITY ? 0.0f : std::exp(parts[p].mx[r] - top);
      total += w[size_t(p)] * parts[p].sum[r];
    }
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    // Element by element over the parts, so out may be one of the parts' own rows.
    for (int64_t i = 0; i < hd; ++i) {
      float acc = 0.0f;
      for (int64_t p = 0; p < count; ++p) acc += w[size_t(p)] * parts[p].out[r * parts[p].ldo + i];
      out[r * ldo + i] = acc * inv;
    }
  }
}

namespace {
std::atomic<int> g_decode_query{-1};  // -1: not yet read from the environment
}  // namespace

bool decode_query_int8() {
  int v = g_decode_query.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("BLUELM_DECODE_QUERY");
    v = e && std::string(e) == "f32" ? 0 : 1;
    g_decode_query.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

void set_decode_query_int8(bool on) { g_decode_query.store(on ? 1 : 0, std::memory_order_relaxed); }

void decode_attention(const KvHeadView* kv, int64_t kv_heads, int64_t groups, const float* q, float scale, int64_t n,
                      float* out, DecodeScratch& ws, bool integer) {
  const int64_t hd = kv[0].hd, heads = kv_heads * groups;
  // The split depends on n only, never on the thread count, so results do not either.
  const int64_t splits = (n + kDecodeSplit - 1) / kDecodeSplit, tasks = kv_heads * splits;
  ws.q.resize(size_t(heads * hd));
  for (int64_t i = 0; i < heads * hd; ++i) ws.q[size_t(i)] = q[i] * scale;
  // int8 keys: the queries in int8 per scale group, once per step, for integer dot products.
  const bool int8 = integer && kv[0].k8 != nullptr && kv[0].gs % 4 == 0 && decode_query_int8();
  if (int8) ws.q8.quantize(ws.q.data(), hd, heads, hd, kv[0].gs);
  ws.out.resize(size_t(tasks * groups * hd));
  ws.mx.resize(size_t(tasks * groups));
  ws.sum.resize(size_t(tasks * groups));
  auto part = [&](int64_t task) {
    return AttnPartial{ws.out.data() + task * groups * hd, hd, ws.mx.data() + task * groups,
                       ws.sum.data() + task * groups};
  };
  ThreadPool::global().run(tasks, [&](int64_t b, int64_t e, int) {
    thread_local AttnScratch scratch;
    for (int64_t task = b; task < e; ++task) {
      const int64_t h = task / splits, j0 = (task % splits) * kDecodeSplit;
      const QueryI8View qh = int8 ? ws.q8.rows(h * groups) : QueryI8View{};
      attend_block_range(kv[h], ws.q.data() + h * groups * hd, hd, groups, j0, std::min(n, j0 + kDecodeSplit),
                         nullptr, part(task), true, scratch, int8 ? &qh : nullptr);
    }
  });
  thread_local std::vector<AttnPartial> parts;
  parts.resize(size_t(splits));
  for (int64_t h = 0; h < kv_heads; ++h) {
    for (int64_t sp = 0; sp < splits; ++sp) parts[size_t(sp)] = part(h * splits + sp);
    merge_partials(parts.data(), splits, groups, hd, out + h * groups * hd, hd);
  }
}

void prefill_attention(const KvHeadView* kv, int64_t kv_heads, int64_t groups, const float* q, int64_t ldq,
                       float scale, int64_t start, int64_t t, float* out, int64_t ldo, bool integer) {
  const int64_t hd = kv[0].hd;
  const bool int8 = integer && kv[0].k8 != nullptr && kv[0].gs % 4 == 0 && decode_query_int8();
  // Row (i, g) of a tile is position start + q0 + i of query head h * groups + g.
  const int64_t tq = std::max<int64_t>(1, kPrefillRows / groups), tiles = (t + tq - 1) / tq;
  ThreadPool::global().run(kv_heads * tiles, [&](int64_t b, int64_t e, int) {
    thread_local AttnScratch scratch;
    thread_local std::vector<float> o, mx, sum;
    thread_local std::vector<int64_t> limit;
    thread_local QueryI8 q8;
    for (int64_t task = b; task < e; ++task) {
      const int64_t h = task / tiles, q0 = (task % tiles) * tq, q1 = std::min(t, q0 + tq), m = (q1 - q0) * groups;
      scratch.q.resize(size_t(m * hd));
      limit.resize(size_t(m));
      o.resize(size_t(m * hd));
      mx.resize(size_t(m));
      sum.resize(size_t(m));
      for (int64_t i = q0; i < q1; ++i)
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t r = (i - q0) * groups + g;
          const float* src = q + i * ldq + (h * groups + g) * hd;
          for (int64_t c = 0; c < hd; ++c) scratch.q[size_t(r * hd + c)] = src[c] * scale;
          limit[size_t(r)] = start + i + 1;
        }
      const AttnPartial st{o.data(), hd, mx.data(), sum.data()};
      if (int8) q8.quantize(scratch.q.data(), hd, m, hd, kv[h].gs);
      const QueryI8View qv = int8 ? q8.rows(0) : QueryI8View{};
      attend_block_range(kv[h], scratch.q.data(), hd, m, 0, start + q1, limit.data(), st, true, scratch,
                         int8 ? &qv : nullptr);
      for (int64_t i = q0; i < q1; ++i) {
        const int64_t r = (i - q0) * groups;
        const AttnPartial row{o.data() + r * hd, hd, mx.data() + r, sum.data() + r};
        merge_partials(&row, 1, groups, hd, out + i * ldo + h * groups * hd, hd);
      }
    }
  }, 0);
}

void attend_reference(const KvHeadView& kv, const float* q, int64_t n, float* out) {
  const int64_t hd = kv.hd, groups = hd / kv.gs;
  auto key = [&](int64_t j, int64_t i) {
    if (kv.k16) return double(quant::fp16_to_fp32(kv.k16[j * hd + i]));
    return kv.k8 ? double(kv.k8[j * hd + i]) * kv.ks[j * groups + i / kv.gs] : double(kv.kf[j * hd + i]);
  };
  auto value = [&](int64_t j, int64_t i) {
    if (kv.v16) return double(quant::fp16_to_fp32(kv.v16[j * hd + i]));
    return kv.v8 ? double(kv.v8[j * hd + i]) * kv.vs[j * groups + i / kv.gs] : double(kv.vf[j * hd + i]);
  };
  std::vector<double> s(static_cast<size_t>(n));
  double top = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    double a = 0.0;
    for (int64_t i = 0; i < hd; ++i) a += double(q[i]) * key(j, i);
    s[size_t(j)] = a;
    top = std::max(top, a);
  }
  double total = 0.0;
  for (auto& x : s) total += (x = std::exp(x - top));
  for (int64_t i = 0; i < hd; ++i) {
    double a = 0.0;
    for (int64_t j = 0; j < n; ++j) a += s[size_t(j)] * value(j, i);
    out[i] = float(a / total);
  }
}

}  // namespace bluelm::runtime

#pragma once
// Attention over the KV cache in blocks of positions with an online softmax (flash attention), for decode and for
// prefill chunks alike. Plain C++ over one KV head's cache; the inner loops per instruction set live in
// attention_isa.h.
//
// A call takes m query rows that share one KV head (the query heads of a GQA group, and in prefill several
// positions of the chunk), reads each block of kAttnBlock cached positions once for all m rows (int8 keys and
// values dequantized into a small L1 tile, keys transposed so the dot products reduce vertically), and keeps per
// row a running max, sum and unnormalized output. No n-length score buffer exists; a partial result over a range
// of positions merges exactly with others (split-K, flash-decoding).
#include <cstdint>
#include <vector>

namespace bluelm::runtime {

constexpr int64_t kAttnBlock = 64;  // cached positions per tile (int8 hd 64: 4 KB of keys, 16 KB as float)

// One (layer, KV head) of the cache: positions contiguous. int8: k8/v8 [capacity, hd], ks/vs [capacity, hd / gs]
// (one float scale per group of gs values); f16: k16/v16 [capacity, hd] IEEE half bits; f32: kf/vf [capacity, hd].
// Exactly one of the pairs is set.
struct KvHeadView {
  const int8_t *k8 = nullptr, *v8 = nullptr;
  const float *ks = nullptr, *vs = nullptr;
  const uint16_t *k16 = nullptr, *v16 = nullptr;
  const float *kf = nullptr, *vf = nullptr;
  int64_t hd = 0, gs = 0;
};

// Per-thread tiles of one call (grown on demand; reused across calls).
struct AttnScratch {
  std::vector<float> kt, vt, s, q;
};

// Running state of m rows: out [m, hd] unnormalized, mx [m] the max score seen, sum [m] of exp(score - mx).
// Rows that have seen no position hold mx = -inf, sum = 0, out = 0.
struct AttnPartial {
  float* out;
  int64_t ldo;
  float* mx;
  float* sum;
};

// x [n] -> q [n] int8 in [-127, 127] and its scale d = max|x| / 127 (x ~ d q): one scale group, as the int8 KV
// cache stores keys and values and as decode quantizes its queries.
void quantize_group_i8(const float* x, int64_t n, int8_t* q, float* d);

// m query rows in int8 per scale group of the cache (gs values): q8 [m, hd], d and sum [m, hd / gs] (the group's
// scale and the sum of its int8 values, which tiers that offset the keys to unsigned bytes subtract again).
// Decode's scores against int8 keys are then integer dot products per group, scaled once per group.
struct QueryI8View {
  const int8_t* q8;
  const float* d;
  const int32_t* sum;
};
struct QueryI8 {
  std::vector<int8_t> q8;
  std::vector<float> d;
  std::vector<int32_t> sum;
  int64_t hd = 0, gs = 0;
  void quantize(const float* q, int64_t ldq, int64_t m, int64_t hd, int64_t gs);
  QueryI8View rows(int64_t r0) const {  // rows r0, r0 + 1, ...
    return {q8.data() + r0 * hd, d.data() + r0 * (hd / gs), sum.data() + r0 * (hd / gs)};
  }
};

// Attention of m query rows q [m, hd] (row stride ldq, already multiplied by 1/sqrt(hd)) over cached positions
// [j0, j1) of kv, row r seeing only positions < limit[r] (limit null: all of [j0, j1)). Starts the partial state
// fresh (start = true) or continues it. The caller checks j1 against the cache's length. With q8 (the same rows
// quantized, QueryI8) and an int8 cache, the scores are int8 dot products (decode); else float products.
void attend_block_range(const KvHeadView& kv, const float* q, int64_t ldq, int64_t m, int64_t j0, int64_t j1,
                        const int64_t* limit, AttnPartial st, bool start, AttnScratch& scratch,
                        const QueryI8View* q8 = nullptr);

// out[r] = sum_p exp(mx_p[r] - M) out_p[r] / sum_p exp(mx_p[r] - M) sum_p[r] over `parts` partial states of m
// rows each (M the largest mx): the exact merge of attention over disjoint position ranges. out [m, hd] (ldo).
void merge_partials(const AttnPartial* parts, int64_t count, int64_t m, int64_t hd, float* out, int64_t ldo);

// Decode: one position's queries q [kv_heads * groups, hd] (unscaled; head h reads KV head h / groups) against
// positions [0, n) of kv[0..kv_heads) -> out [kv_heads * groups, hd]. The query heads of a KV head read it together;
// positions split into ranges of kDecodeSplit (split-K over the thread pool), merged exactly. With an int8 cache and
// `integer` (and decode_query_int8()) the queries are quantized per scale group once per step, the key scores are
// integer dot products and the values are summed with int16 weights, as prefill_attention does; else float products.
constexpr int64_t kDecodeSplit = 8 * kAttnBlock;
struct DecodeScratch {
  std::vector<float> q, out, mx, sum;
  QueryI8 q8;
};
// Whether decode and prefill quantize their queries for the int8 cache (default; BLUELM_DECODE_QUERY=f32 in the
// environment or set_decode_query_int8(false) keeps float queries and float products, the path before: for A/B
// benchmark runs).
bool decode_query_int8();
void set_decode_query_int8(bool on);
void decode_attention(const KvHeadView* kv, int64_t kv_heads, int64_t groups, const float* q, float scale, int64_t n,
                      float* out, DecodeScratch& scratch, bool integer = true);

// A prefill chunk of t positions start .. start + t - 1: q [t, ldq] (head h at columns h * hd, unscaled) -> out
// [t, ldo] (same columns), position start + i seeing cached positions [0, start + i] (causal). Parallel over
// (KV head, tile of query positions); the mask costs only the diagonal blocks. With an int8 cache and `integer` (and
// decode_query_int8()) the tile's queries are quantized per scale group and computed in integers, as decode's.
constexpr int64_t kPrefillRows = 64;  // query rows (positions x heads of a GQA group) per task
void prefill_attention(const KvHeadView* kv, int64_t kv_heads, int64_t groups, const float* q, int64_t ldq,
                       float scale, int64_t start, int64_t t, float* out, int64_t ldo, bool integer = true);

// The plain reference: softmax(q k^T) v of one query q [hd] (scaled) over positions [0, n), two passes in double.
void attend_reference(const KvHeadView& kv, const float* q, int64_t n, float* out);

}  // namespace bluelm::runtime

#pragma once
// Internal to csrc/kernels: the function table each instruction-set file fills (kernels_scalar.cpp,
// kernels_avx2.cpp, kernels_avx512.cpp, kernels_neon.cpp, kernels_dotprod.cpp). Same signatures everywhere; the
// driver (kernels.cpp) checks arguments, splits work over the thread pool and calls active_kernels().
// Nothing here is inline code: ISA files must not share inline functions with the portable ones.
#include "common/isa.h"
#include "kernels/kernels.h"

namespace bluelm::kernels {

// What quantize_row writes into QuantizedActs::s per block: factor * sum(q), times the block's d when times_d.
struct ActSumRule {
  float factor;
  bool times_d;
};

// gemm_i16 (kernels.cpp): one 8-row panel widened once per call for all the call's tokens. q holds the integer
// levels as int16, [nb][G / 2][8 rows][2]: for each pair of columns, the 8 rows' two levels side by side, so one
// 32-bit lane is one row and vpmaddwd / SMLAL take a pair per lane. d [nb][8] are the scales (w = level * d, plus
// m [nb][8] for asymmetric formats; m null otherwise).
struct WidePanel {
  const int16_t* q;
  const float* d;
  const float* m;
};

// Activations rounded to int16 on each group's own scale (kernels.cpp, quantize_i16): q [t, k], d [t, nb] with
// x ~ q * d, d = amax / 32767; s [t, nb] = d * sum(q), the group's sum for asymmetric weights.
struct I16Acts {
  int64_t t = 0, k = 0;
  int group = 32;
  const int16_t* q = nullptr;
  const float* d = nullptr;
  const float* s = nullptr;
};

struct PanelGeometry;

struct IsaKernels {
  const char* name;
  // x [k] -> q [k], d [k / group], s [k / group] as QuantizedActs describes (s = sum(q) * rule.factor, times d
  // when rule.times_d). Bit-identical across tiers: d = amax / 127, q = nearest-even(x * (127 / amax)).
  void (*quantize_row)(const float* x, int64_t k, int group, ActSumRule rule, int8_t* q, float* d, float* s);
  // y[t, 8p + r] for panels p in [p0, p1), tokens t in [t0, t1), weight blocks [b0, b1) of the packed matrix w;
  // accumulate adds to y instead of overwriting. Rows >= w.n are not written.
  void (*gemm_panels)(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                      int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy);
  // y [n] = (x - mean) / sqrt(var + eps) * gamma + beta; gamma, beta may be null. y may alias x.
  void (*layer_norm_row)(const float* x, int64_t n, const float* gamma, const float* beta, float eps, float* y);
  // One-pass int16 activations (null in tiers without it: gemm_i16 is then not offered and int16 activations run
  // as two int8 passes). y[t, r] for rows r < `rows` (<= 8 * np) of np = 1 or 2 widened panels, tokens [t0, t1);
  // y points at the panels' first column; overwrites, no bias. Per row and token, in this order and bit-identical
  // across tiers: acc = 0; for each group g: acc = fma(float(sum of level * q), d[g] * a.d[g], acc), then (m not
  // null) acc = fma(m[g], a.s[g], acc).
  void (*gemm_i16_panels)(const WidePanel* w, int np, int64_t nb, const I16Acts& a, int64_t t0, int64_t t1, float* y,
                          int64_t ldy, int rows);
  // Widens one 8-bit panel (q8_0 layout, pack.cpp: nb blocks of qbytes = 8 * G level bytes, then the fp16 scales
  // [nb][8] at byte `scales`) into WidePanel's q and d. Null: kernels.cpp's portable loop does it (same values).
  void (*widen_int8_panel)(const uint8_t* panel, int64_t nb, int group, int64_t scales, int16_t* q, float* d);
  // x [k] -> int16 q [k], d [k / group] = amax / 32767, s [k / group] = d * sum(q), q = nearest-even(x * (32767 /
  // amax)) clamped to +-32767, NaN -> 0 (amax ignores NaN). Bit-identical across tiers; null: the scalar tier's.
  void (*quantize_i16_row)(const float* x, int64_t k, int group, int16_t* q, float* d, float* s);
  // Q5_0 / Q5_1 panels widened to q8_0 panels (widen_int5_panel's bytes; the signature of WidenInt5Fn, below). Null:
  // the portable widen_int5_panel.
  void (*widen_int5_panel)(const uint8_t* panel, const PanelGeometry& g5, bool sym, int64_t b0, int64_t b1,
                           uint8_t* out, const PanelGeometry& g8);
  // Q5_1's term of one panel: y[t * ldy + r] += sum over blocks b of m[b * 8 + r] * xsum[t * nb + b], for t < tokens
  // and r < rows (m: the panel's float minima [nb][8], xsum: each token's block sums of x). Null: the scalar tier's.
  void (*add_block_minima)(const float* m, int64_t nb, const float* xsum, int64_t tokens, float* y, int64_t ldy,
                           int rows);
  // The fewest tokens for which the engine's int16 activations take gemm_i16_panels rather than two int8 passes
  // (kernels.h, gemm_i16_pays); unused without gemm_i16_panels.
  int i16_min_tokens;
};

const IsaKernels* isa_kernels_scalar();
#if defined(__x86_64__) || defined(_M_X64)
const IsaKernels* isa_kernels_avx2();
const IsaKernels* isa_kernels_avx512();
// K-quant (Q4_K, Q5_K, Q6_K) panels in AVX2 (kquant_avx2.cpp), the gemm_panels signature; the AVX2 and AVX-512
// tables call it for those formats.
void gemm_panels_k_avx2(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                        int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy);
// The AVX-512 tier's K-quant panels (kquant_avx512.cpp): the VNNI GEMM for 4 or more tokens, the AVX2 decode below.
void gemm_panels_k_avx512(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0,
                          int64_t t1, int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy);
// AVX2 entries the AVX-512 table shares: widen_int8_panel and quantize_i16_row (bit-identical to the scalar tier's),
void widen_int8_panel_avx2(const uint8_t* panel, int64_t nb, int group, int64_t scales, int16_t* q, float* d);
void quantize_i16_row_avx2(const float* x, int64_t k, int group, int16_t* q, float* d, float* s);
// and add_block_minima (AVX2 FMA order) and widen_int5_panel (the same bytes).
void add_block_minima_avx2(const float* m, int64_t nb, const float* xsum, int64_t tokens, float* y, int64_t ldy,
                           int rows);
// widen_int5_panel in AVX2 (the same bytes).
void widen_int5_panel_avx2(const uint8_t* panel, const PanelGeometry& g5, bool sym, int64_t b0, int64_t b1,
                           uint8_t* out, const PanelGeometry& g8);
#endif
#if defined(__aarch64__)
const IsaKernels* isa_kernels_neon();
const IsaKernels* isa_kernels_dotprod();
#endif

// The table of a tier (nullptr when this build has none for it) and the one in use: active_isa(), falling back
// to the best lower tier that has kernels.
const IsaKernels* kernels_for(Isa isa);
const IsaKernels& active_kernels();

// How far ahead a decode tile (1-3 tokens: one per step, two for int16 activations' two passes) prefetches the
// packed bytes it streams, in the x86 tiers: far past the 4 KB pages the L2 prefetcher stops at; 16-64 KB
// measured alike on this project's Zen 3 (docs/kernels.md).
constexpr int64_t kPrefetchBytes = 24 << 10;

// The running prefetch of a decode tile, spread over the tile's loads: `one()` after each weight load issues at
// most one line, `rest()` at the end of a block issues what is left up to `end` (the block's share of the panel,
// kPrefetchBytes ahead). Issued as one burst of 4-26 back-to-back prefetches before each block, the same lines
// held the stream GEMV at 0.63-0.78 of the read bandwidth on an AVX-512 Xeon; spread, 0.9-1.0 (docs/kernels.md,
// "Spreading the decode prefetch").
// The lines go to L2 or L1 as decode_prefetch_l2() says (kernels.h), read once per tile.
struct SpreadPrefetch {
  uintptr_t at, end;
  bool l2 = decode_prefetch_l2();
  __attribute__((always_inline)) void one() {
    if (at < end) {
      line(at, l2);
      at += 64;
    }
  }
  __attribute__((always_inline)) void rest() {
    for (; at < end; at += 64) line(at, l2);
  }
  // One line to L2 or L1: every x86 decode prefetch goes through here.
  __attribute__((always_inline)) static void line(uintptr_t p, bool l2) {
    if (l2)
      __builtin_prefetch(reinterpret_cast<const void*>(p), 0, 2);
    else
      __builtin_prefetch(reinterpret_cast<const void*>(p), 0, 3);
  }
};

// Panel geometry shared by every tier (plain numbers, computed once per call by the driver).
struct PanelGeometry {
  int group;         // G
  int kind;          // quant::Kind as int
  int64_t nb;        // blocks per row (k / G)
  int64_t qbytes;    // bytes of quantized values per block for the 8 rows (4G for int4, 5G for int5, 8G for int8)
  int64_t scales;    // offset of the fp16 scales inside a panel (nb * qbytes)
  int64_t minima;    // offset of the fp16 minima (asymmetric formats), else 0
  int64_t stride;    // bytes per panel
  int64_t span;      // ceil(stride / nb): a block's share of its panel's bytes, the decode prefetch's step
};
PanelGeometry panel_geometry(Format f, int64_t k);

// A one-token tile consumes its panel at g.span (stride / nb, rounded up) bytes per block: during block b it
// prefetches every cache line up to kPrefetchBytes past the end of block b's share, one line after each weight
// load and the rest after the block's last (SpreadPrefetch, above). The span is precomputed: dividing
// stride by nb here put a 64-bit idiv in every block, and removing it made the cache-hot GEMV 4-11% faster (A/B in
// one process).
inline uintptr_t prefetch_start(const uint8_t* panel, const PanelGeometry& g, int64_t b0) {
  return (reinterpret_cast<uintptr_t>(panel) + b0 * g.span + kPrefetchBytes) & ~uintptr_t(63);
}
inline uintptr_t prefetch_target(const uint8_t* panel, const PanelGeometry& g, int64_t b) {
  return reinterpret_cast<uintptr_t>(panel) + (b + 1) * g.span + kPrefetchBytes;
}
// A decode call's first kPrefetchBytes of this thread's share (panels p0.. from block b0), which the tiles' running
// prefetch starts past (A/B: +2-5 points of read bandwidth on a 3 MB matrix, none on larger ones).
inline void prefetch_head(const PackedView& w, const PanelGeometry& g, int64_t p0, int64_t p1, int64_t b0) {
  const uintptr_t start = reinterpret_cast<uintptr_t>(w.data + p0 * g.stride + b0 * g.span);
  const uintptr_t end = reinterpret_cast<uintptr_t>(w.data + p1 * g.stride);
  SpreadPrefetch{start, start + kPrefetchBytes < end ? start + kPrefetchBytes : end}.rest();
}

// Where the AVX2 tier's one-token Q8_0 tile reads its panels front to back with the scales last (kernels_avx2.cpp,
// DeferredScales): decode_scales_last() on, and the activations plus 32 bytes of held-back row values per block
// within kScalesLastBytes (K <= 3072), which stay in L1 while the panel streams past.
constexpr int64_t kScalesLastBytes = 6 << 10;
inline bool fits_scales_last(const PanelGeometry& g, int64_t k) { return k + g.nb * kPanelRows * 4 <= kScalesLastBytes; }
inline bool q8_0_scales_last(const PanelGeometry& g, int64_t k) { return fits_scales_last(g, k) && decode_scales_last(); }
// Past that budget, with decode_scales_last() on, the same tile keeps the scales per block and prefetches the next
// panel's scales to L2 as it starts a panel (kernels.h).
inline bool q8_0_next_scales(const PanelGeometry& g, int64_t k) { return !fits_scales_last(g, k) && decode_scales_last(); }

// Q4_K and Q5_K panels: a panel super-block holds the 8 rows' GGUF blocks (144 or 176 bytes) as pieces of 4 bytes,
// piece c of row r at byte 32 c + 4 r (the int4 panels' rule): piece 0 is the row's fp16 d and dmin, pieces 1-3 its
// 12 bytes of 6-bit scales and minima, then (Q5_K) 8 pieces of fifth bits, then 32 pieces of nibbles. So one 32-byte
// load gives the same 4 bytes of all 8 rows, and the decode (kquant_avx2.cpp) multiplies 8 rows by one broadcast of
// 4 activations. get_block_pieces gives row r's GGUF block back (the portable tiers use it), put_block_pieces stores
// one; `bytes` is the block's size.
constexpr bool has_pieces(Format f) { return f == Format::q4_k || f == Format::q5_k; }
constexpr int kMaxPieceBlock = 176;  // the largest block kept in pieces (Q5_K)
constexpr int64_t piece_offset(int c, int r) { return 32 * int64_t(c) + 4 * r; }
void put_block_pieces(const uint8_t* block, int bytes, int r, uint8_t* sb /*[8 * bytes]*/);
void get_block_pieces(const uint8_t* sb /*[8 * bytes]*/, int bytes, int r, uint8_t* block);
// Row r's GGUF block of a K-quant panel super-block sb: in place, or gathered from its pieces into `gathered`.
inline const uint8_t* super_block_row(Format f, const uint8_t* sb, int r, uint8_t (&gathered)[kMaxPieceBlock]) {
  const int bytes = quant::format_info(f).block_bytes;
  if (!has_pieces(f)) return sb + r * bytes;
  get_block_pieces(sb, bytes, r, gathered);
  return gathered;
}

// Q5_0 / Q5_1 panels (pack.cpp, pack_q5): per block the int4 layout's 128 nibble bytes, then this plane of fifth bits.
constexpr int64_t kInt5PlaneBytes = 32;
using GemmPanelsFn = void (*)(const PackedView&, const QuantizedActs&, int64_t, int64_t, int64_t, int64_t, int64_t,
                              int64_t, bool, float*, int64_t);
// Blocks [b0, b1) of one int5 panel (geometry g5) widened into a q8_0 panel (geometry g8: the same K): levels as int8
// (Q5_0: q - 16, so w = level * d as in q8_0; Q5_1: q itself, its minima left to the caller) and the fp16 scales.
void widen_int5_panel(const uint8_t* panel, const PanelGeometry& g5, bool sym, int64_t b0, int64_t b1, uint8_t* out,
                      const PanelGeometry& g8);
using WidenInt5Fn = void (*)(const uint8_t*, const PanelGeometry&, bool, int64_t, int64_t, uint8_t*,
                             const PanelGeometry&);
// gemm_panels of a tier on int5 panels through its q8_0 kernel `q8`: each panel widened (`widen`: widen_int5_panel
// or a tier's own, same bytes) into a thread-local q8_0 panel, then multiplied. Q5_1's m * sum(x) is the driver's
// (kernels.cpp), as for every tier.
void gemm_panels_int5_widened(GemmPanelsFn q8, WidenInt5Fn widen, const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1,
                              int64_t t0, int64_t t1, int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy);

// Where quantize_activations puts t rows of k activations inside a scratch block of act_scratch_bytes(f, t, k).
struct ActBuffers {
  int8_t* q;
  float* d;
  float* s;
};
ActBuffers act_buffers(Format f, int64_t t, int64_t k, void* base);
ActSumRule act_sum_rule(Format f);  // {-8, d}, {1, d} or {-128, no d} (see QuantizedActs)

}  // namespace bluelm::kernels

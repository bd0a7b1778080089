#pragma once
// Quantized linear-algebra kernels for decode (GEMV), chunked prefill (GEMM) and the 2x2 token down-sampler.
// Usable from C++ alone: the engine links bluelm_core and calls these with its own preallocated buffers.
// Layouts, error bounds and dispatch rules: docs/kernels.md.
//
// Weights. A GGUF-layout matrix W [n, k] (n rows of quant::row_bytes(format, k) bytes) is repacked once, at load
// time, into the panel layout the SIMD kernels stream (pack_weights: byte shuffling only, no re-quantization;
// unpack_weights inverts it). Panel layout: rows in panels of 8 (the last one zero-padded); per panel, for each
// of the k/G blocks, the nibble or int8 bytes of the 8 rows interleaved in 4-byte pieces (piece j of row r at
// byte (8j + r) * 4), then the 8 fp16 scales of every block, then (asymmetric formats) the 8 fp16 minima; each
// panel padded to 64 bytes.
//
// Activations. The kernels quantize each row of x to int8 in groups of the weight format's group size G
// (d = max|x| / 127, q = round-half-even(x * 127 / max|x|)), then use integer dot products. The result differs
// from the float product W_deq x by at most  sum_b d_b / 2 * sum_{i in b} |W_deq[n, i]|  (plus float rounding),
// with d_b the activation scale of group b; the tests check this bound.
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "common/memory.h"
#include "quant/quant.h"

namespace bluelm::kernels {

using quant::Format;
using quant::Kind;

constexpr int kPanelRows = 8;

// Bytes of the packed form of an [n, k] matrix (k a multiple of the format's group).
int64_t packed_bytes(Format f, int64_t n, int64_t k);
int64_t panel_stride(Format f, int64_t k);  // bytes per panel of 8 rows
// rows [n, row_bytes(f, k)] GGUF layout -> out [packed_bytes(f, n, k)].
void pack_weights(Format f, const uint8_t* rows, int64_t n, int64_t k, uint8_t* out);
// The inverse: packed -> rows [n, row_bytes(f, k)].
void unpack_weights(Format f, const uint8_t* packed, int64_t n, int64_t k, uint8_t* rows);

// A packed matrix the kernels read (non-owning). `bytes` is checked against packed_bytes(format, n, k).
struct PackedView {
  Format format = Format::q4_0;
  int64_t n = 0, k = 0;
  const uint8_t* data = nullptr;
  int64_t bytes = 0;
};

// Owning packed matrix, 64-byte aligned (2 MiB and huge pages from 2 MiB up: common/memory.h). Given an arena
// with room, it is packed there instead (a model's weights back to back on huge pages) and keeps the arena alive.
class PackedMatrix {
 public:
  PackedMatrix() = default;
  PackedMatrix(Format f, const uint8_t* rows, int64_t n, int64_t k,  // packs GGUF-layout rows
               std::shared_ptr<WeightArena> arena = nullptr);
  // Several row blocks of one format and K stacked into one matrix (the rows of parts[0], then parts[1], ...), as
  // if their GGUF rows had been concatenated: one product then covers them all (Q, K and V; gate and up). Every
  // part but the last must have a multiple of 8 rows (whole panels).
  PackedMatrix(Format f, const std::vector<const uint8_t*>& parts, const std::vector<int64_t>& rows, int64_t k,
               std::shared_ptr<WeightArena> arena = nullptr);
  PackedMatrix(PackedMatrix&& o) noexcept { *this = std::move(o); }
  PackedMatrix& operator=(PackedMatrix&& o) noexcept;  // leaves `o` empty (a null view)
  PackedView view() const { return {format_, n_, k_, ptr_, bytes_}; }
  bool in_arena() const { return arena_ != nullptr; }
  Format format() const { return format_; }
  int64_t n() const { return n_; }
  int64_t k() const { return k_; }

 private:
  Format format_ = Format::q4_0;
  int64_t n_ = 0, k_ = 0, bytes_ = 0;
  std::unique_ptr<uint8_t, FreeDeleter> data_;   // own allocation, or
  std::shared_ptr<WeightArena> arena_;    // the arena holding ptr_
  const uint8_t* ptr_ = nullptr;
};

// Activations quantized for one weight format (see the header comment). s[b] = d[b] * sum(q in group b) * c with
// c = -8 (int4 symmetric: folds the nibble offset in) or 1 (int4 asymmetric: multiplies the minimum); for int8
// s[b] = -128 * sum(q in group b), an integer (exact in float), which the tiers that multiply unsigned weights
// w + 128 (AVX-512 VNNI) add to their integer sum before scaling it; the others multiply signed bytes and do not
// read s.
struct QuantizedActs {
  int64_t t = 0, k = 0;
  int group = 32;
  const int8_t* q = nullptr;  // [t, k]
  const float* d = nullptr;   // [t, k / group]
  const float* s = nullptr;   // [t, k / group]
};

// Reusable scratch memory: reserve() once with the largest size you need, and no kernel call allocates.
class Scratch {
 public:
  void reserve(int64_t bytes);
  void* get(int64_t bytes);  // grows if needed (64-byte aligned)
  int64_t capacity() const { return capacity_; }

 private:
  std::unique_ptr<uint8_t, FreeDeleter> data_;
  int64_t capacity_ = 0;
};

// Scratch bytes gemv / gemm / quantize_activations need for t rows of k activations in format f.
int64_t act_scratch_bytes(Format f, int64_t t, int64_t k);

// x [t, k] (row stride ldx floats) -> int8 activations in `scratch` (t rows in parallel on the pool).
QuantizedActs quantize_activations(Format f, const float* x, int64_t t, int64_t k, int64_t ldx, Scratch& scratch);

// y[n] = W[n, k] x[k] (+ bias[n]). bias may be null; scratch null: a thread-local one.
void gemv(const PackedView& w, const float* x /*[k]*/, float* y /*[n]*/, const float* bias /*[n]*/,
          Scratch* scratch = nullptr);
// y[t, n] = x[t, k] W[n, k]^T (+ bias[n]), t >= 1 (a prefill chunk: 1..512 and more).
void gemm(const PackedView& w, const float* x /*[t, k]*/, int64_t t, float* y /*[t, n]*/,
          const float* bias /*[n]*/, Scratch* scratch = nullptr);
// The same with activations already quantized (reuse one quantization for Q, K and V); y rows ldy floats apart.
void gemm_quantized(const PackedView& w, const QuantizedActs& a, float* y /*[t, ldy]*/, int64_t ldy,
                    const float* bias /*[n]*/);

// int16 activations in one pass: x [t, k] (row stride ldx) is rounded to int16 on each group's own scale
// (d = amax / 32767, the weights' group), the weights' integer levels are widened to int16 once per call (two
// 8-row panels at a time, for all t tokens), and each pair of products is one vpmaddwd in int32; per group the
// sum is scaled by the weight's and the activation's scales in float. y [t, ldy] = x W^T (+ bias). Formats: those
// with one scale per group (q4_0, q4_1, q5_0, q5_1, q8_0 and the 64 / 128 groups), in tiers whose table has the
// kernel (scalar, AVX2, AVX-512 VNNI); has_gemm_i16 says whether the active tier runs `f` so.
bool has_gemm_i16(Format f);
// Whether the engine's int16 activations should take gemm_i16 for t tokens of `f` in the active tier: t at least
// the tier's threshold (i16_min_tokens: 8 in the scalar and AVX2 tiers, 16 in AVX-512) and 8-bit levels (q8_0, and
// Q5_0 / Q5_1, whose panels are widened to q8_0 first). Measured with cache-hot q8_0 weights, one pass against the
// two int8 passes' GEMM of 2t rows (benchmarks/kernels.py --int16): on this project's AVX2 host, 1 thread,
// 0.69-0.83x the speed at 2 tokens, 1.04-1.15x at 4, 1.31-1.49x at 8 (576 x 576, 1152 x 1152, 4304 x 1152); on an
// AVX-512 VNNI host (1152 x 1152), 0.54x at 4, 0.80x at 8, 1.04x at 16, 1.21x at 32. Not on 4-bit panels: the int4
// tile spends two instructions per 32 products, so its two passes cost what one vpmaddwd pass does, and q4_0 ran
// 0.72-0.91x at 128 tokens.
bool gemm_i16_pays(Format f, int64_t t);
int64_t i16_min_tokens();  // the active tier's threshold (0 when it has no one-pass kernel)
void gemm_i16(const PackedView& w, const float* x /*[t, ldx]*/, int64_t t, int64_t ldx, float* y /*[t, ldy]*/,
              int64_t ldy, const float* bias /*[n]*/, Scratch* scratch = nullptr);
// Scratch bytes gemm_i16 takes for t rows of k activations in format f.
int64_t i16_scratch_bytes(Format f, int64_t t, int64_t k);
// A/B switch (on by default): int16 activations (runtime::Linear) take gemm_i16 where gemm_i16_pays; off, every
// int16 product runs as two int8 passes (the second on the first's residual).
void set_int16_one_pass(bool on);
bool int16_one_pass();
// Tests: widen panels for gemm_i16 with the portable loop even where the tier has its own (same values expected).
void set_portable_widen(bool on);

// A/B switch (off by default): the AVX-512 tier's int8 tiles use unsigned weights w + 128, the offset taken out of
// each block's integer sum; on, the sign trick (|w| times the activation with w's sign moved over, a masked
// subtract per token and weight vector). Both give the same bytes (kernels_test.cpp); the switch is for A/B runs.
void set_int8_sign_trick(bool on);
bool int8_sign_trick();

// A/B switch (on by default): the AVX-512 tier's prefill (4 or more tokens) of the int4 / int8 block formats runs
// on four panels unpacked once per 256 weights and 128 tokens (kernels_avx512.cpp: quad_panels); off, on the
// panel-pair tile that decode uses. Both give the same bytes (kernels_test.cpp); the switch is for A/B runs.
void set_avx512_quads(bool on);
bool avx512_quads();

// A/B switch (on by default): the AVX-512 tier's Q4_K / Q5_K decode of 2-3 tokens (int16 activations' two passes)
// sums each step's products with vpdpbusd on ymm into int32 lanes (kquant_k45_decode.h) instead of running the AVX2
// tier's vpmaddubsw walk over the same panels; one token runs the AVX2 walk either way (measured no faster in the
// engine, docs/kernels.md). The integer sums are the same, so the results are the same bytes (kernels_test.cpp).
void set_avx512_k45_decode(bool on);
bool avx512_k45_decode();

// Where the AVX-512 tier runs a one-token product of Q4_0 (and its 64 / 128 groups), and of Q8_0 where the AVX2
// tile would read it the AMD way (decode_scales_last, below): on its own panel-pair tile (16 rows per zmm,
// the two panels read side by side) or on the AVX2 tier's one-panel tile (8 rows per ymm, one panel read front to
// back). The default is the one-panel tile on AMD CPUs and the pair tile on the others, by measurement on a Zen 4
// (docs/kernels.md, "One-panel Q4_0 decode on AMD" and "Decode with the scales last"): the 3B shape's Q4_0 decode
// ran 14.9-15.6 tokens/s on the pair tile against 16.0-19.1 on the one-panel tile at one thread, and SmolLM2's Q8_0
// decode 140 against 186 with the scales last, although the pair tile is the faster one on cached weights (Q4_0
// 39.5 against 32.3 GB/s). Q8_0 with the scales per block (K > 3072) goes to the one-panel tile too since that tile
// prefetches the next panel's scales (decode_scales_last, below): 1.24-1.27x the pair tile at one thread on
// K = 4096 / 5760, alike at two. The Intel Xeon VM streamed the pair tile at 0.9-1.0 of its read, and the one-panel
// tile is not measured there. The two give results equal to within float rounding (not the same bytes: their sums
// run in another order). For A/B runs.
void set_avx512_pair_decode(bool on);
bool avx512_pair_decode();

// Whether the AVX2 tier's one-token Q8_0 tile reads each panel front to back and applies its scales after its
// levels (on), or reads each block's scales from the end of the panel after the block's levels, with the software
// prefetch kPrefetchBytes ahead (off). On applies where the activations and the held-back row values fit in 6 KB
// (K + 32 bytes per block: K <= 3072). Past that, on means the tile keeps the scales per block and the prefetch and
// also prefetches the next panel's scales (45 lines for K = 5760) to L2 when it starts a panel, so that each block's
// scales come from L2 rather than from a second stream of the memory. The results are the same bytes either way.
// The default is on for AMD CPUs and
// off for the others, by measurement (docs/kernels.md, "Decode with the scales last"): on a Zen 4 it streamed Q8_0
// 1.08-1.28x as fast as the two-stream walk on all but one shape measured (K = 1536 once 0.85x), and SmolLM2's Q8_0
// decoded 1.33x as fast at one thread; no Intel CPU was measured. Q4_0 keeps its scales per block (0.94-0.97x this
// way). For A/B runs.
void set_decode_scales_last(bool on);
bool decode_scales_last();
// Whether a one-token product of format f and K is one the scales-last walk covers (Q8_0, K + 32 bytes per block
// within 6 KB), whatever decode_scales_last() is now.
bool scales_last_fits(Format f, int64_t k);

// Where the x86 decode tiles' software prefetch (kPrefetchBytes ahead of the weights they stream) puts its lines:
// L2 (prefetcht1) or L1 (prefetcht0). The default is L2 on AMD CPUs and L1 on the others, by measurement
// (docs/kernels.md, "The decode prefetch's level"): on a Zen 4, L1 held the streaming GEMV at 0.34-0.63 of the read
// where L2 gave 0.66-0.85; Zen 3 measured the two alike, and the Intel Xeon VM streamed at 0.9-1.0 with L1.
// BLUELM_DECODE_PREFETCH=l1 or l2 overrides the default; set_decode_prefetch_l2 is for A/B runs.
void set_decode_prefetch_l2(bool on);
bool decode_prefetch_l2();

// Token down-sampling (VILA DownSampleBlock): x [h, w, c] -> y [ceil(h/2), ceil(w/2), 4c]; output cell (r, q) is
// the concatenation of x(2r, 2q), x(2r, 2q+1), x(2r+1, 2q), x(2r+1, 2q+1), zeros where out of range.
void downsample_2x2(const float* x /*[h, w, c]*/, int64_t h, int64_t w, int64_t c, float* y /*[h2, w2, 4c]*/);

// LayerNorm of `rows` rows of d floats in the active tier (the downsampling projector's row kernel): y[r, i] =
// (x[r, i] - mean_r) / sqrt(var_r + eps) * gamma[i] + beta[i]; gamma, beta may be null; y may be x. On the calling
// thread.
void layer_norm_rows(const float* x /*[rows, d]*/, int64_t rows, int64_t d, const float* gamma, const float* beta,
                     float eps, float* y /*[rows, d]*/);

// Fused projector input: y [h2 * w2, n] = LN(downsample_2x2(x)) W[n, 4c]^T (+ bias). layer_norm false skips the
// LayerNorm; gamma / beta [4c] may be null (1 and 0). The down-sampled rows are never materialized in float:
// each is gathered, normalized and quantized to int8 in one pass, then multiplied with the int8 GEMM.
struct DownsampleLinear {
  bool layer_norm = true;
  const float* gamma = nullptr;  // [4c]
  const float* beta = nullptr;   // [4c]
  float eps = 1e-6f;
  const float* bias = nullptr;   // [n]
};
void downsample_linear(const float* x /*[h, w, c]*/, int64_t h, int64_t w, int64_t c, const PackedView& wt,
                       const DownsampleLinear& opt, float* y /*[ceil(h/2) * ceil(w/2), n]*/,
                       Scratch* scratch = nullptr);
int64_t downsample_linear_scratch_bytes(Format f, int64_t h, int64_t w, int64_t c);

// Reference (scalar, straightforward) versions the tests compare against: gemm over GGUF-layout rows with the
// same int8 activation quantization, and the element-by-element down-sampler.
void gemm_reference(Format f, const uint8_t* rows /*[n, row_bytes]*/, int64_t n, int64_t k, const float* x /*[t, k]*/,
                    int64_t t, float* y /*[t, n]*/);
void downsample_2x2_reference(const float* x, int64_t h, int64_t w, int64_t c, float* y);

}  // namespace bluelm::kernels

#pragma once
// The inner loops of attention (runtime/attention.h), the exponentials of softmax, GELU and SwiGLU, and RMSNorm's
// rows, per instruction set:
// scalar in attention_scalar.cpp (the reference), AVX2 in attention_avx2.cpp, AVX-512 in attention_avx512.cpp (its
// products; the rest is the AVX2 tier's), NEON in attention_neon.cpp and, with SDOT for the integer scores,
// attention_dotprod.cpp (both from attention_neon_impl.h). attention_kernels() picks the active tier's table
// (common/isa.h).
#include <cstdint>
#include <type_traits>

#include "common/isa.h"

namespace bluelm::runtime {

// Scale groups per head vector the SIMD integer scores lay out on the stack (hd 256 at groups of 32); more take the
// scalar loops.
constexpr int64_t kMaxScaleGroups = 8;

// At depth the cache comes from memory. The AVX2 and AVX-512 tiers' int8 and f16 kernels prefetch, with each cached
// row (or 64-byte piece of one) they load, the same bytes kAttnPrefetchPositions positions further on, so the
// requests are spread over the loads. A burst for the next block before each block measured no gain; this spread
// form x1.16-1.22 on decode at depth 4,096 (SmolLM2, int8 cache; docs/engine.md, "Sixth pass"). `row_bytes` is a
// cached row's size. Past the end of the cache the prefetch touches nothing that matters (prefetches do not fault).
constexpr int64_t kAttnPrefetchPositions = 64;
inline void prefetch_later(const void* p, int64_t row_bytes) {
  __builtin_prefetch(
      reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) + uintptr_t(kAttnPrefetchPositions * row_bytes)), 0,
      3);
}

struct AttentionKernels {
  const char* name;
  // x[i] = exp(x[i] - sub) for i < n, returning their sum (any n). The AVX2 exp is within 3e-7 (relative) of std::exp.
  float (*exp_sum)(float* x, int64_t n, float sub);
  // x[i] = GELU with the tanh approximation, written as x * sigmoid(2y) (any n).
  void (*gelu_tanh)(float* x, int64_t n);
  // max of x[0..n), n >= 1.
  float (*row_max)(const float* x, int64_t n);
  // Keys of nb positions dequantized and transposed so dot products reduce vertically:
  // kt[i * ldk + j] = k[j * hd + i] * ks[j * (hd / gs) + i / gs] for j < nb, 0 for nb <= j < round_up(nb, 8).
  void (*keys_i8_t)(const int8_t* k, const float* ks, int64_t nb, int64_t hd, int64_t gs, float* kt, int64_t ldk);
  // The same for float keys (no scales).
  void (*keys_f32_t)(const float* k, int64_t nb, int64_t hd, float* kt, int64_t ldk);
  // The same for IEEE half keys (converted exactly to float).
  void (*keys_f16_t)(const uint16_t* k, int64_t nb, int64_t hd, float* kt, int64_t ldk);
  // Values dequantized: vt[j * hd + i] = v[j * hd + i] * vs[j * (hd / gs) + i / gs] for j < nb.
  void (*values_i8)(const int8_t* v, const float* vs, int64_t nb, int64_t hd, int64_t gs, float* vt);
  // Half values converted: vt[j * hd + i] = float(v[j * hd + i]) for j < nb.
  void (*values_f16)(const uint16_t* v, int64_t nb, int64_t hd, float* vt);
  // s [m, nc] (row stride lds) = q [m, hd] (row stride ldq) x kt [hd, nc] (row stride ldk); nc a multiple of 8.
  void (*scores)(const float* q, int64_t ldq, int64_t m, const float* kt, int64_t ldk, int64_t nc, int64_t hd,
                 float* s, int64_t lds);
  // o [m, hd] (row stride ldo) += p [m, nb] (row stride ldp) x v [nb, hd] (row stride ldv).
  void (*accumulate)(const float* p, int64_t ldp, int64_t m, const float* v, int64_t ldv, int64_t nb, int64_t hd,
                     float* o, int64_t ldo);
  // Decode's scores straight from the int8 keys in their cache layout, for the few rows of one GQA group (m <= 8),
  // where a transposed tile would be used by too few rows to pay for itself:
  // s[r * lds + j] = sum_i q[r * ldq + i] * k[j * hd + i] * ks[j * (hd / gs) + i / gs] for j < nb. Returns false
  // (writing nothing) for shapes it does not take; null in tiers without it. Both fall back to keys_i8_t + scores.
  bool (*scores_i8_direct)(const float* q, int64_t ldq, int64_t m, const int8_t* k, const float* ks, int64_t nb,
                           int64_t hd, int64_t gs, float* s, int64_t lds);
  // Decode's scores as integer dot products: s[r * lds + j] = sum_g qd[r G + g] ks[j G + g] sum_{i in g}
  // q8[r hd + i] k[j hd + i] for j < nb (G = hd / gs scale groups; qsum[r G + g] = sum_{i in g} q8[r hd + i]).
  // q8 in [-127, 127]. Returns false (writing nothing) unless gs % 4 == 0; every tier has it.
  bool (*scores_i8q)(const int8_t* q8, const float* qd, const int32_t* qsum, int64_t m, const int8_t* k,
                     const float* ks, int64_t nb, int64_t hd, int64_t gs, float* s, int64_t lds);
  // Decode's weighted sum of the int8 values with the weights in int16: per row r and scale group g the weights
  // w_j = p[r ldp + j] * vs[j G + g] are rounded to int16 on the scale sw = max_j w_j / 32767 (round to nearest
  // even), and o[r ldo + i] += sw * sum_j wq_j v[j hd + i] with the sum in int32, for i in group g, j < nb <=
  // kAttnBlock. Every tier has it (SIMD tiers hand shapes they do not take to the scalar loops), so all round alike.
  void (*accumulate_i8w)(const float* p, int64_t ldp, int64_t m, const int8_t* v, const float* vs, int64_t nb,
                         int64_t hd, int64_t gs, float* o, int64_t ldo);
  // The same for the values: o [m, hd] (ldo) += sum_j p[r * ldp + j] * v[j * hd + i] * vs[j * (hd / gs) + i / gs]
  // over j < nb, straight from the int8 values; false (nothing written) for shapes it does not take, null in tiers
  // without it (then values_i8 + accumulate).
  bool (*accumulate_i8_direct)(const float* p, int64_t ldp, int64_t m, const int8_t* v, const float* vs, int64_t nb,
                               int64_t hd, int64_t gs, float* o, int64_t ldo);
  // Decode over the f16 cache, straight from the halves in their cache layout for the few rows of one GQA group
  // (m <= 8), each half converted once for all m rows: s[r * lds + j] = sum_i q[r * ldq + i] * k[j * hd + i] and
  // o[r * ldo + i] += sum_j p[r * ldp + j] * v[j * hd + i], j < nb. False (nothing written) for shapes they do not
  // take; null in tiers without them (then keys_f16_t + scores, values_f16 + accumulate).
  bool (*scores_f16_direct)(const float* q, int64_t ldq, int64_t m, const uint16_t* k, int64_t nb, int64_t hd,
                            float* s, int64_t lds);
  bool (*accumulate_f16_direct)(const float* p, int64_t ldp, int64_t m, const uint16_t* v, int64_t nb, int64_t hd,
                                float* o, int64_t ldo);
  // The LLM's elementwise layers, here for the tiers' exp (any n). SwiGLU's product: out[i] = g[i] / (1 + exp(-g[i]))
  // * u[i]; out may be g. Each element is computed alike wherever it sits in the call, so splitting n over threads
  // does not change a result.
  void (*silu_mul)(const float* g, const float* u, float* out, int64_t n);
  // RMSNorm of one row: y[i] = w[i] * (x[i] / sqrt(mean(x^2) + eps)), i < d; y may be x. The SIMD tiers sum the
  // squares in lanes (another order than the scalar loop's).
  void (*rms_norm_row)(const float* x, const float* w, float* y, int64_t d, float eps);
};

const AttentionKernels& attention_kernels();
const AttentionKernels* attention_kernels_for(Isa isa);  // null when this build has no table of that tier
const AttentionKernels* attention_kernels_scalar();
const AttentionKernels* attention_kernels_avx2();    // null when not compiled in (non-x86 builds)
const AttentionKernels* attention_kernels_avx512();  // the AVX2 table with 512-bit products; null off x86
const AttentionKernels* attention_kernels_neon();     // null off aarch64
const AttentionKernels* attention_kernels_dotprod();  // the NEON table with SDOT scores; null off aarch64

// Row blocking of the tiers' register tiles: body(std::integral_constant<int, R>{}, r) for rows [r, r + R) in blocks
// of 4, then the remainder as one block of 3, 2 or 1 rows.
template <class Body>
inline void for_row_blocks(int64_t m, Body&& body) {
  int64_t r = 0;
  for (; r + 4 <= m; r += 4) body(std::integral_constant<int, 4>{}, r);
  switch (m - r) {
    case 3: body(std::integral_constant<int, 3>{}, r); break;
    case 2: body(std::integral_constant<int, 2>{}, r); break;
    case 1: body(std::integral_constant<int, 1>{}, r); break;
    default: break;
  }
}

}  // namespace bluelm::runtime

#pragma once
// The inner loops of decode attention over the int8 KV cache, and the exponentials of softmax and GELU, per
// instruction set (scalar in ops.cpp, AVX2 in attention_avx2.cpp); attention_kernels() picks the active tier's
// (common/isa.h), falling back to scalar.
#include <cstdint>

namespace bluelm::runtime {

struct AttentionKernels {
  // sum_i q[i] * k[i] over n values (n a multiple of 8).
  float (*dot_f32_i8)(const float* q, const int8_t* k, int64_t n);
  // out[i] += a * v[i] over n values (n a multiple of 8).
  void (*axpy_i8)(float a, const int8_t* v, float* out, int64_t n);
  // x[i] = exp(x[i] - sub) for i < n, returning their sum (any n). The AVX2 exp is within 3e-7 (relative) of std::exp.
  float (*exp_sum)(float* x, int64_t n, float sub);
  // x[i] = GELU with the tanh approximation, written as x * sigmoid(2y) (any n).
  void (*gelu_tanh)(float* x, int64_t n);
};

const AttentionKernels& attention_kernels();
const AttentionKernels* attention_kernels_avx2();  // null when not compiled in (non-x86 builds)

}  // namespace bluelm::runtime

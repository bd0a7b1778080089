#pragma once
// Test helper shared by kernels_test.cpp and kernels_simde_test.cpp: runs a tier's function table against the
// scalar tier on awkward shapes of every format (records CHECK failures; returns the number of cases run).
#include "kernels/kernels_isa.h"

namespace bluelm::kernels::testing {
int check_kernel_table(const IsaKernels& table);
// The AVX-512 int8 tiles (a table whose gemm_panels reads int8_sign_trick()) with unsigned weights against the sign
// trick and the scalar tier, every T from 1 to 33 on awkward K and N; returns the number of cases run.
int check_int8_variants_exact(const IsaKernels& table);
// The AVX-512 prefill quads (a table whose gemm_panels reads avx512_quads()) against its panel-pair tile, byte for
// byte, on awkward N, K, T and sub-ranges of Q4_0 / Q4_1 / Q8_0 (groups 32-128) and Q5_0 / Q5_1; returns the cases.
int check_quads_equal_pair_tile(const IsaKernels& table);
}

#pragma once
// Test helper shared by kernels_test.cpp and kernels_simde_test.cpp: runs a tier's function table against the
// scalar tier on awkward shapes of every format (records CHECK failures; returns the number of cases run).
#include "kernels/kernels_isa.h"

namespace bluelm::kernels::testing {
int check_kernel_table(const IsaKernels& table);
// The AVX-512 int8 tiles (a table whose gemm_panels reads int8_sign_trick()) with unsigned weights against the sign
// trick and the scalar tier, every T from 1 to 33 on awkward K and N; returns the number of cases run.
int check_int8_variants_exact(const IsaKernels& table);
}

#pragma once
// Test helper shared by kernels_test.cpp and kernels_simde_test.cpp: runs a tier's function table against the
// scalar tier on awkward shapes of every format (records CHECK failures; returns the number of cases run).
#include "kernels/kernels_isa.h"

namespace bluelm::kernels::testing {
int check_kernel_table(const IsaKernels& table);
}

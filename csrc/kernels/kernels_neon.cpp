// Plain Armv8 NEON tier (every aarch64 CPU): SMULL/SMLAL + SADALP integer dot products. See kernels_neon_impl.h.
#include "kernels/kernels_neon_impl.h"

namespace bluelm::kernels {
namespace {
const IsaKernels kTable = {"neon", quantize_row_neon, gemm_panels_neon, layer_norm_row_neon, nullptr, nullptr, nullptr,
                           nullptr, nullptr, 0};
}  // namespace
const IsaKernels* isa_kernels_neon() { return &kTable; }
}  // namespace bluelm::kernels

// Armv8.2 NEON with the dot-product extension (SDOT; Cortex-A76/X1 and later, every phone core since 2018).
#define BLUELM_NEON_DOTPROD 1
#include "kernels/kernels_neon_impl.h"

namespace bluelm::kernels {
namespace {
const IsaKernels kTable = {"neon_dotprod", quantize_row_neon, gemm_panels_neon, layer_norm_row_neon, nullptr, nullptr, nullptr,
                           nullptr, nullptr, 0};
}  // namespace
const IsaKernels* isa_kernels_dotprod() { return &kTable; }
}  // namespace bluelm::kernels

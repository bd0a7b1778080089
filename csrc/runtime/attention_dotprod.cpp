// Armv8.2 NEON with the dot-product extension (SDOT) for decode's integer scores. See attention_neon_impl.h.
#define BLUELM_NEON_DOTPROD 1
#include "runtime/attention_neon_impl.h"

namespace bluelm::runtime {
const AttentionKernels* attention_kernels_dotprod() { return &kNeon; }
}  // namespace bluelm::runtime

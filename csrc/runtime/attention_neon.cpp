// Plain Armv8 NEON tier of the attention loops (every aarch64 CPU). See attention_neon_impl.h.
#include "runtime/attention_neon_impl.h"

namespace bluelm::runtime {
const AttentionKernels* attention_kernels_neon() { return &kNeon; }
}  // namespace bluelm::runtime

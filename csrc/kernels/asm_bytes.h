// Memory operands for inline assembly blocks.
#pragma once

#include <cstdint>

namespace bluelm::kernels {

// The N bytes an assembly block reads at p, declared as a memory input (instead of a "memory" clobber, which made
// gcc keep the caller's accumulators on the stack and reload loop invariants after every block).
template <int N>
struct Bytes {
  uint8_t b[N];
};
template <int N>
const Bytes<N>& bytes_at(const void* p) {
  return *static_cast<const Bytes<N>*>(p);
}

}  // namespace bluelm::kernels

#include "memory.h"

#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace bluelm {

bool hugepage_advice_enabled() {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const char* v = std::getenv("BLUELM_HUGEPAGES");
  return !(v && std::strcmp(v, "0") == 0);
#else
  return false;
#endif
}

uint8_t* alloc_large(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (bytes < kHugePageBytes) {
    const size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded < bytes) return nullptr;
    return static_cast<uint8_t*>(std::aligned_alloc(64, rounded));
  }
  void* p = nullptr;
  if (posix_memalign(&p, kHugePageBytes, bytes) != 0) return nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Only whole 2 MiB pages: advising the tail would make the kernel back it with a full huge page.
  if (hugepage_advice_enabled()) ::madvise(p, bytes / kHugePageBytes * kHugePageBytes, MADV_HUGEPAGE);
#endif
  return static_cast<uint8_t*>(p);
}

}  // namespace bluelm

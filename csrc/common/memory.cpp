#include "memory.h"

#include <algorithm>
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

WeightArena::WeightArena(size_t capacity) {
#if defined(__linux__)
  if (capacity == 0 || capacity > (size_t(1) << 46)) return;
  const size_t want = (capacity + 63) / 64 * 64;
  const size_t bytes = want + kHugePageBytes;  // slack to align the start to a huge page
  void* m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return;
  map_ = m;
  map_bytes_ = bytes;
  const uintptr_t a = (reinterpret_cast<uintptr_t>(m) + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  base_ = reinterpret_cast<uint8_t*>(a);
  capacity_ = want;
#if defined(MADV_HUGEPAGE)
  if (hugepage_advice_enabled() && capacity_ >= kHugePageBytes)
    ::madvise(base_, capacity_ / kHugePageBytes * kHugePageBytes, MADV_HUGEPAGE);
#endif
#else
  (void)capacity;
#endif
}

WeightArena::~WeightArena() {
#if defined(__linux__)
  if (map_) ::munmap(map_, map_bytes_);
#endif
}

uint8_t* WeightArena::allocate(size_t bytes) {
  if (bytes == 0 || !base_) return nullptr;
  std::lock_guard<std::mutex> lock(mutex_);
  if (bytes > capacity_ - used_) return nullptr;
  const size_t rounded = (bytes + 63) / 64 * 64;
  uint8_t* p = base_ + used_;
  used_ = std::min(capacity_, used_ + rounded);
  return p;
}

size_t WeightArena::used() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return used_;
}

}  // namespace bluelm

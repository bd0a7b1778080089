#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <sstream>
#include <string>

#include "common/memory.h"
#include "common/testing.h"

using namespace bluelm;

namespace {

// The VmFlags of the mapping holding p in /proc/self/smaps ("" when it cannot be read).
std::string vm_flags_at(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = a >= lo && a < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

bool has_flag(const std::string& flags, const char* f) {
  return (flags + " ").find(std::string(" ") + f + " ") != std::string::npos;
}

}  // namespace

BLUELM_TEST(alloc_large_aligns_and_sizes) {
  CHECK(alloc_large(0) == nullptr);
  for (size_t bytes : {size_t(1), size_t(63), size_t(4097), kHugePageBytes - 1}) {
    uint8_t* p = alloc_large(bytes);
    CHECK(p != nullptr);
    CHECK_EQ(reinterpret_cast<uintptr_t>(p) % 64, uintptr_t(0));
    std::memset(p, 0x5A, bytes);
    CHECK_EQ(int(p[bytes - 1]), 0x5A);
    std::free(p);
  }
  for (size_t bytes : {kHugePageBytes, 3 * kHugePageBytes / 2, 5 * kHugePageBytes + 4096}) {
    uint8_t* p = alloc_large(bytes);
    CHECK(p != nullptr);
    CHECK_EQ(reinterpret_cast<uintptr_t>(p) % kHugePageBytes, uintptr_t(0));
    std::memset(p, 0xA5, bytes);
    CHECK_EQ(int(p[bytes - 1]), 0xA5);
    std::free(p);
  }
  CHECK(alloc_large(~size_t(0) - 8) == nullptr);  // impossible sizes fail cleanly
}

BLUELM_TEST(alloc_large_advises_huge_pages_unless_turned_off) {
#if defined(__linux__) && defined(__x86_64__)  // qemu-user (make test-arm) does not forward the advice
  const char* old = std::getenv("BLUELM_HUGEPAGES");
  const std::string saved = old ? old : "";
  ::setenv("BLUELM_HUGEPAGES", "1", 1);
  CHECK(hugepage_advice_enabled());
  uint8_t* p = alloc_large(3 * kHugePageBytes);
  const std::string on = vm_flags_at(p);
  ::setenv("BLUELM_HUGEPAGES", "0", 1);
  CHECK(!hugepage_advice_enabled());
  uint8_t* q = alloc_large(3 * kHugePageBytes);
  const std::string off = vm_flags_at(q);
  if (old)
    ::setenv("BLUELM_HUGEPAGES", saved.c_str(), 1);
  else
    ::unsetenv("BLUELM_HUGEPAGES");
  if (!on.empty()) {  // /proc/self/smaps readable
    CHECK(has_flag(on, "hg"));
    CHECK(!has_flag(off, "hg"));
    // The partial page at the end keeps 4 KiB pages: the mapping holding the last byte carries no advice.
    uint8_t* r = alloc_large(kHugePageBytes + 4096);
    CHECK(has_flag(vm_flags_at(r), "hg"));
    CHECK(!has_flag(vm_flags_at(r + kHugePageBytes), "hg"));
    std::free(r);
  }
  std::free(p);
  std::free(q);
#endif
}

BLUELM_TEST(large_array_is_zero_filled_aligned_and_on_huge_pages) {
  const LargeArray<int8_t> none(0);
  CHECK(none.data() == nullptr);
  CHECK_EQ(none.size(), size_t(0));
  LargeArray<int16_t> small(100);
  CHECK_EQ(small.size(), size_t(100));
  CHECK_EQ(reinterpret_cast<uintptr_t>(small.data()) % 64, uintptr_t(0));
  bool zero = true;
  for (size_t i = 0; i < small.size(); ++i) zero = zero && small[i] == 0;
  CHECK(zero);
  // Past 2 MiB: aligned to a huge page, zero everywhere (including the 4 KiB-page tail), writable.
  const size_t n = 3 * kHugePageBytes / sizeof(float) + 5;
  LargeArray<float> big(n);
  CHECK_EQ(big.size(), n);
  CHECK_EQ(reinterpret_cast<uintptr_t>(big.data()) % kHugePageBytes, uintptr_t(0));
  zero = true;
  for (size_t i = 0; i < n; i += 997) zero = zero && big[i] == 0.0f;
  CHECK(zero && big[n - 1] == 0.0f);
  big[n - 1] = 2.5f;
  CHECK_EQ(big.data()[n - 1], 2.5f);
#if defined(__linux__) && defined(__x86_64__)  // qemu-user (make test-arm) does not forward the advice
  const std::string flags = vm_flags_at(big.data());
  if (!flags.empty() && hugepage_advice_enabled()) CHECK(has_flag(flags, "hg"));
#endif
  CHECK_THROWS(LargeArray<double>(~size_t(0) / 4), std::bad_alloc);  // more bytes than size_t holds
  CHECK_THROWS(LargeArray<char>(~size_t(0) - 8), std::bad_alloc);    // an impossible allocation
}

BLUELM_TEST(weight_arena_hands_out_aligned_memory_back_to_back_until_full) {
  WeightArena empty(0);
  CHECK_EQ(empty.capacity(), size_t(0));
  CHECK(empty.allocate(1) == nullptr);
#if defined(__linux__)
  WeightArena arena(3 * kHugePageBytes + 100);
  CHECK(arena.capacity() >= 3 * kHugePageBytes + 100);
  CHECK(arena.allocate(0) == nullptr);
  uint8_t* a = arena.allocate(100);
  CHECK(a != nullptr);
  CHECK_EQ(reinterpret_cast<uintptr_t>(a) % kHugePageBytes, uintptr_t(0));  // the arena starts on a huge page
  uint8_t* b = arena.allocate(kHugePageBytes);
  CHECK(b == a + 128);  // back to back, each start 64-byte aligned
  CHECK_EQ(arena.used(), size_t(128) + kHugePageBytes);
  std::memset(a, 0x11, 100);
  std::memset(b, 0x22, kHugePageBytes);
  CHECK_EQ(int(a[99]), 0x11);
  CHECK_EQ(int(b[kHugePageBytes - 1]), 0x22);
  CHECK(arena.allocate(arena.capacity()) == nullptr);  // no room: nothing handed out, nothing used
  CHECK_EQ(arena.used(), size_t(128) + kHugePageBytes);
  uint8_t* c = arena.allocate(arena.capacity() - arena.used());  // exactly the rest
  CHECK(c != nullptr);
  CHECK(arena.allocate(1) == nullptr);
#if defined(__x86_64__)
  const std::string flags = vm_flags_at(a);
  if (!flags.empty() && hugepage_advice_enabled()) CHECK(has_flag(flags, "hg"));
#endif
#endif
}

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
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

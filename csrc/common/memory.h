#pragma once
// Large, read-mostly buffers: packed weight matrices and the bandwidth probe's buffer.
//
// A decode step streams every weight matrix once from DRAM. With 4 KiB pages that stream takes a TLB miss every
// 4 KiB and the hardware prefetchers stop at each page boundary; with 2 MiB transparent huge pages it does not
// (on the Zen 3 host of docs/kernels.md a plain cold 3 MiB read ran 15-40% faster, the decode GEMV, which
// prefetches in software, 0-8%). So a buffer of 2 MiB or more is aligned to 2 MiB and the whole 2 MiB pages inside
// it are advised as huge pages (madvise, Linux). The partial page at the end is left to 4 KiB pages, so no memory
// is spent beyond the buffer. The advice is a hint: a kernel with huge pages off ("never") gives 4 KiB pages and
// nothing fails.
//
// BLUELM_HUGEPAGES=0 in the environment turns the advice off (read at each allocation), to measure its effect or
// to match a system where huge pages are unwelcome.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>

namespace bluelm {

constexpr size_t kHugePageBytes = size_t(2) << 20;

// `bytes` (> 0) of memory aligned to 64 bytes, or to 2 MiB with huge-page advice when bytes >= 2 MiB; nullptr
// when the allocation fails. Release with std::free.
uint8_t* alloc_large(size_t bytes);

// The deleter of a std::unique_ptr that owns an alloc_large (or other malloc-family) buffer.
struct FreeDeleter {
  void operator()(void* p) const noexcept { std::free(p); }
};

// n zero-filled values of a trivially copyable T in one alloc_large buffer (huge pages from 2 MiB up), for arrays
// that are streamed whole, as the KV cache is at every decode step. Throws std::bad_alloc when the allocation fails.
template <class T>
class LargeArray {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  LargeArray() = default;
  explicit LargeArray(size_t n) : n_(n) {
    if (n == 0) return;
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    p_.reset(reinterpret_cast<T*>(alloc_large(n * sizeof(T))));
    if (!p_) throw std::bad_alloc();
    std::memset(static_cast<void*>(p_.get()), 0, n * sizeof(T));  // touched after the advice: huge pages
  }
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return p_.get()[i]; }
  const T& operator[](size_t i) const { return p_.get()[i]; }

 private:
  std::unique_ptr<T, FreeDeleter> p_;
  size_t n_ = 0;
};

// Whether alloc_large advises huge pages (BLUELM_HUGEPAGES is not "0" and the platform has the advice).
bool hugepage_advice_enabled();

// Room for a model's packed weights, handed out back to back in the order they are asked for. A matrix of its own
// (alloc_large) ends in a partial 2 MiB page left to 4 KiB pages: a third of a 3 MB matrix. In one arena every
// matrix but the last lies on huge pages, and a decode step's prefetch running past the end of one matrix fetches
// the next one's first bytes instead of nothing useful. Matrices under 2 MiB (all of SmolLM2-135M's) get huge
// pages only this way. On the Zen 3 host of docs/kernels.md (A/B in one process, medians): SmolLM2-135M decode
// +2% on 1 thread, +10% on 2; the 3B stand-in's decode within noise (-1% / +2%); a stack of 3 MB q4_0 matrices
// 0-5 points of read bandwidth faster than from separate allocations, and 5-10 points slower with 4 KiB pages.
//
// The arena reserves address space only (Linux: an anonymous mapping with MAP_NORESERVE, 2 MiB-aligned, advised
// as huge pages unless BLUELM_HUGEPAGES=0): memory is committed as it is written, so a generous capacity costs
// nothing but the last huge page touched. Elsewhere, or when the reservation fails, it has no room and every
// allocate() returns nullptr: callers fall back to alloc_large.
class WeightArena {
 public:
  explicit WeightArena(size_t capacity);
  ~WeightArena();
  WeightArena(const WeightArena&) = delete;
  WeightArena& operator=(const WeightArena&) = delete;

  // `bytes` (> 0) aligned to 64 bytes, or nullptr when the arena lacks the room. Thread-safe. Memory handed out
  // lives as long as the arena.
  uint8_t* allocate(size_t bytes);
  size_t capacity() const { return capacity_; }
  size_t used() const;

 private:
  uint8_t* base_ = nullptr;  // 2 MiB-aligned start of the usable range
  void* map_ = nullptr;      // the whole mapping (base_ minus alignment slack)
  size_t map_bytes_ = 0, capacity_ = 0, used_ = 0;
  mutable std::mutex mutex_;
};

}  // namespace bluelm

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

namespace bluelm {

constexpr size_t kHugePageBytes = size_t(2) << 20;

// `bytes` (> 0) of memory aligned to 64 bytes, or to 2 MiB with huge-page advice when bytes >= 2 MiB; nullptr
// when the allocation fails. Release with std::free.
uint8_t* alloc_large(size_t bytes);

// Whether alloc_large advises huge pages (BLUELM_HUGEPAGES is not "0" and the platform has the advice).
bool hugepage_advice_enabled();

}  // namespace bluelm

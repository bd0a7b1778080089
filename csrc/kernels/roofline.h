#pragma once
// This machine's limits, measured by the kernel benchmark in the same run as the kernels (benchmarks/kernels.py):
// read bandwidth over a buffer of a given size, and the peak throughput of the arithmetic instructions each
// kernel tier is built on. The peak loops are hand-written assembly (independent accumulator chains, no memory
// operands), so a compiler's register copies cannot lower them (a plain-intrinsics VNNI loop from gcc 12 reached
// ~600 of ~890 GOPS).
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace bluelm::kernels::roofline {

// GB/s reading `bytes` (rounded down to 4 KiB) with `threads` threads, each streaming its own contiguous part;
// the best of `reps` passes after one warm-up pass. Small buffers measure a cache level.
double read_bandwidth(int64_t bytes, int threads, int reps);

// A probe (one instruction pair at its peak: the roofline) or a mix loop (a format's exact instruction mix of one
// tier's GEMM tile, from registers: the ceiling that format can reach on that tier, measured as a fraction of its
// probe in the same run; roofline_mix.cpp).
struct Peak {
  std::string name;         // e.g. "int8_maddubs_paddw_avx2", "mix_q4_0_avx2"
  std::string isa;          // the tier whose kernels use these instructions
  std::string unit;         // "GOPS" (int8: 2 ops per multiply-add) or "GFLOP/s"
  std::string instructions; // what the loop runs
  std::string format;       // mix loops: the quant format ("q4_0"); probes: empty
  std::string probe;        // mix loops: the probe their ceiling is a fraction of; probes: empty
};
std::vector<Peak> peaks();  // the probes and mix loops this CPU can run
// Throughput of a loop on `threads` threads (all run at once), in its unit; best of `reps` passes of about
// `seconds` each (the iteration count is calibrated on a short first pass, which also ramps the clock).
double measure_peak(const std::string& name, int threads, int reps, double seconds = 0.1);

// Seconds each of `calls` GEMVs took, timed call by call from C++ (as the engine calls them, with no interpreter
// between calls): call i computes y = ws[i % ws.size()] x, so a stack larger than the last-level cache streams every
// weight from memory. One untimed pass over the stack first. Every view must have the same K (x has K values);
// calls <= 2^27.
std::vector<double> time_gemv_calls(const std::vector<PackedView>& ws, const float* x, int64_t calls);

}  // namespace bluelm::kernels::roofline

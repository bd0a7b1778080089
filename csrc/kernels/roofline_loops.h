#pragma once
// Internal to csrc/kernels: the register-only loops the roofline measures (roofline.cpp: the instruction probes;
// roofline_mix.cpp: one loop per quant format and tier with that tile's exact instruction mix).
#include <cstdint>
#include <vector>

#include "common/isa.h"
#include "kernels/roofline.h"

namespace bluelm::kernels::roofline {

// One loop: its body runs `iters` times; ops = iters * ops_per_iter (int8: 2 ops per multiply-add).
struct Loop {
  Peak peak;
  Isa needs;
  double ops_per_iter;
  void (*run)(int64_t iters);
};

const std::vector<Loop>& probe_loops();  // roofline.cpp
const std::vector<Loop>& mix_loops();    // roofline_mix.cpp

}  // namespace bluelm::kernels::roofline

// The AVX-512 kernels compiled through SIMDe's portable AVX-512 (BLUELM_AVX512_SIMDE), so their exact source is
// checked against the scalar tier on CPUs without AVX-512 (this Zen 3, the aarch64 cross build). On CPUs with
// AVX-512 VNNI the native build of the same file is tested by kernels_every_tier_matches_scalar as well.
#define BLUELM_AVX512_SIMDE 1
#include "kernels/kernels_avx512.cpp"  // NOLINT(bugprone-suspicious-include): the point is to recompile it

#include "common/testing.h"
#include "kernels/kernels_check.h"

namespace bluelm::kernels {
const IsaKernels* isa_kernels_avx512_simde();
}

BLUELM_TEST(kernels_avx512_source_through_simde_matches_scalar) {
  const int cases = bluelm::kernels::testing::check_kernel_table(*bluelm::kernels::isa_kernels_avx512_simde());
  CHECK(cases > 100);
  CHECK(bluelm::kernels::testing::check_int8_variants_exact(*bluelm::kernels::isa_kernels_avx512_simde()) > 100);
  CHECK(bluelm::kernels::testing::check_quads_equal_pair_tile(*bluelm::kernels::isa_kernels_avx512_simde()) > 100);
}

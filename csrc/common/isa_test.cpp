#include "common/error.h"
#include "common/isa.h"
#include "common/testing.h"

using namespace bluelm;

BLUELM_TEST(isa_parse_and_names) {
  for (int i = 0; i < kIsaCount; ++i) CHECK(parse_isa(isa_name(static_cast<Isa>(i))) == static_cast<Isa>(i));
  CHECK_THROWS(parse_isa("sse9"), InvalidArgument);
}

BLUELM_TEST(isa_scalar_always_supported) {
  CHECK(isa_supported(Isa::scalar));
  CHECK(supported_isas().front() == Isa::scalar);
  CHECK(isa_supported(best_isa()));
}

BLUELM_TEST(isa_override_round_trip) {
  const Isa before = active_isa();
  set_active_isa(Isa::scalar);
  CHECK(active_isa() == Isa::scalar);
  set_active_isa(before);
  CHECK(active_isa() == before);
#if defined(__x86_64__)
  CHECK_THROWS(set_active_isa(Isa::neon), Unsupported);
#endif
}

#pragma once
// Run-time instruction-set dispatch.
//
// Tiers (each implies the ones before it on its architecture):
//   scalar        portable C++, the reference every variant is tested against
//   avx2          x86-64 AVX2 + FMA + F16C (+ BMI2)
//   avx512        AVX-512 F/BW/VL/DQ + VNNI (Ice Lake, Zen 4 and later); Skylake-X without VNNI runs avx2
//   neon          aarch64 Advanced SIMD (always present on aarch64)
//   neon_dotprod  aarch64 with the SDOT/UDOT dot-product instructions (Armv8.2+, every phone core since 2018)
//
// The CPU is probed once (CPUID, and XGETBV to check that the OS saves the AVX / AVX-512 registers; getauxval
// on aarch64). BLUELM_ISA=<tier> in the environment forces a tier; asking for one the CPU lacks is an error,
// never a silent downgrade. Kernels keep one function table per tier and index it with active_isa().
#include <string>
#include <vector>

namespace bluelm {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2, neon = 3, neon_dotprod = 4 };
constexpr int kIsaCount = 5;

struct CpuFeatures {
  bool avx = false, avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false;
  bool avx512bf16 = false, avxvnni = false;
  bool os_avx = false, os_avx512 = false;
  bool neon = false, dotprod = false, i8mm = false;
  bool amd = false;  // x86 vendor string AuthenticAMD (tuning choices, not features)
};

const CpuFeatures& cpu_features();
const char* isa_name(Isa isa);
Isa parse_isa(const std::string& name);  // throws InvalidArgument naming the accepted tiers
bool isa_supported(Isa isa);             // by this CPU and OS, and compiled into this build
std::vector<Isa> supported_isas();       // in ascending order, scalar first
Isa best_isa();
// The tier kernels use: BLUELM_ISA if set (checked), else best_isa(). Cached after the first call.
Isa active_isa();
// Override for tests and benchmarks; throws Unsupported if the tier cannot run here.
void set_active_isa(Isa isa);

}  // namespace bluelm

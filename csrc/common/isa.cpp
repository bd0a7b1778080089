#include "common/isa.h"

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "common/error.h"

#if defined(__x86_64__) || defined(_M_X64)
#define BLUELM_X86 1
#include <cpuid.h>
#elif defined(__aarch64__)
#define BLUELM_ARM64 1
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#endif

namespace bluelm {
namespace {

#if BLUELM_X86
unsigned long long xgetbv0() {
  unsigned int lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}
#endif

CpuFeatures probe() {
  CpuFeatures f;
#if BLUELM_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27);
  f.avx = c & (1u << 28);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  if (osxsave) {
    const unsigned long long xcr0 = xgetbv0();
    f.os_avx = (xcr0 & 0x6) == 0x6;            // XMM and YMM state
    f.os_avx512 = (xcr0 & 0xE6) == 0xE6;       // plus opmask, ZMM_Hi256, Hi16_ZMM
  }
  unsigned vendor[3] = {0, 0, 0};  // leaf 0: EBX, EDX, ECX spell the vendor
  unsigned max_leaf = 0;
  __cpuid(0, max_leaf, vendor[0], vendor[2], vendor[1]);
  f.amd = vendor[0] == 0x68747541u && vendor[1] == 0x69746e65u && vendor[2] == 0x444d4163u;  // "AuthenticAMD"
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = b & (1u << 5);
    f.bmi2 = b & (1u << 8);
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512vnni = c & (1u << 11);
    __cpuid_count(7, 1, a, b, c, d);
    f.avxvnni = a & (1u << 4);
    f.avx512bf16 = a & (1u << 5);
  }
#elif BLUELM_ARM64
  f.neon = true;
  const unsigned long hw = getauxval(AT_HWCAP);
  const unsigned long hw2 = getauxval(AT_HWCAP2);
  f.dotprod = hw & HWCAP_ASIMDDP;
  f.i8mm = hw2 & HWCAP2_I8MM;
#endif
  return f;
}

bool supported_by_cpu(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::scalar:
      return true;
#if BLUELM_X86
    case Isa::avx2:
      return f.os_avx && f.avx && f.avx2 && f.fma && f.f16c && f.bmi2;
    case Isa::avx512:
      return supported_by_cpu(Isa::avx2) && f.os_avx512 && f.avx512f && f.avx512bw && f.avx512vl &&
             f.avx512dq && f.avx512vnni;
#endif
#if BLUELM_ARM64
    case Isa::neon:
      return f.neon;
    case Isa::neon_dotprod:
      return f.neon && f.dotprod;
#endif
    default:
      return false;
  }
}

Isa isa_from_env() {
  const char* env = std::getenv("BLUELM_ISA");
  if (env == nullptr || env[0] == '\0') return best_isa();
  Isa isa = parse_isa(env);
  if (!isa_supported(isa))
    throw Unsupported(cat("BLUELM_ISA=", env, " asks for an instruction set this CPU or build cannot run; supported here: ",
                          [] {
                            std::string s;
                            for (Isa i : supported_isas()) s += std::string(s.empty() ? "" : ", ") + isa_name(i);
                            return s;
                          }()));
  return isa;
}

std::atomic<int> g_active{-1};
std::mutex g_mutex;

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = probe();
  return features;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::neon: return "neon";
    case Isa::neon_dotprod: return "neon_dotprod";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name) {
  for (int i = 0; i < kIsaCount; ++i)
    if (name == isa_name(static_cast<Isa>(i))) return static_cast<Isa>(i);
  throw InvalidArgument(cat("unknown instruction set '", name,
                            "': expected one of scalar, avx2, avx512, neon, neon_dotprod"));
}

bool isa_supported(Isa isa) { return supported_by_cpu(isa); }

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (int i = 0; i < kIsaCount; ++i)
    if (isa_supported(static_cast<Isa>(i))) out.push_back(static_cast<Isa>(i));
  return out;
}

Isa best_isa() {
  Isa best = Isa::scalar;
  for (Isa i : supported_isas()) best = i;
  return best;
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_acquire);
  if (v >= 0) return static_cast<Isa>(v);
  std::lock_guard<std::mutex> lock(g_mutex);
  v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(isa_from_env());
    g_active.store(v, std::memory_order_release);
  }
  return static_cast<Isa>(v);
}

void set_active_isa(Isa isa) {
  if (!isa_supported(isa))
    throw Unsupported(cat("instruction set ", isa_name(isa), " cannot run on this CPU or build"));
  g_active.store(static_cast<int>(isa), std::memory_order_release);
}

}  // namespace bluelm

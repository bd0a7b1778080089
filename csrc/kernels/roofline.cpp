// Machine-limit probes for the benchmark (see roofline.h). Inline assembly needs no compiler ISA flags, so this
// portable file holds every loop; each is run only when the CPU reports its instructions.
#include "kernels/roofline.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/isa.h"
#include "common/memory.h"
#include "common/threadpool.h"
#include "kernels/roofline_loops.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace bluelm::kernels::roofline {
namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

#if defined(__x86_64__)
__attribute__((target("avx2"))) uint64_t read_avx2(const uint8_t* p, int64_t bytes) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 128 <= bytes; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  return uint64_t(_mm256_extract_epi64(s, 0) ^ _mm256_extract_epi64(s, 3));
}
#endif

uint64_t read_portable(const uint8_t* p, int64_t bytes) {
  uint64_t a[8] = {};
  for (int64_t i = 0; i + 64 <= bytes; i += 64)
    for (int j = 0; j < 8; ++j) {
      uint64_t v;
      std::memcpy(&v, p + i + 8 * j, 8);
      a[j] += v;
    }
  return a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

uint64_t read_bytes(const uint8_t* p, int64_t bytes) {
#if defined(__x86_64__)
  if (isa_supported(Isa::avx2)) return read_avx2(p, bytes);
#endif
  return read_portable(p, bytes);
}


#if defined(__x86_64__)
// 10 independent FMA chains (latency 4-5, 2 pipes): 10 * 8 lanes * 2 flops.
void fma_avx2(int64_t n) {
  __asm__ volatile(
      "vxorps %%ymm0,%%ymm0,%%ymm0\n vxorps %%ymm1,%%ymm1,%%ymm1\n vxorps %%ymm2,%%ymm2,%%ymm2\n"
      "vxorps %%ymm3,%%ymm3,%%ymm3\n vxorps %%ymm4,%%ymm4,%%ymm4\n vxorps %%ymm5,%%ymm5,%%ymm5\n"
      "vxorps %%ymm6,%%ymm6,%%ymm6\n vxorps %%ymm7,%%ymm7,%%ymm7\n vxorps %%ymm8,%%ymm8,%%ymm8\n"
      "vxorps %%ymm9,%%ymm9,%%ymm9\n vxorps %%ymm14,%%ymm14,%%ymm14\n vxorps %%ymm15,%%ymm15,%%ymm15\n"
      "1:\n"
      "vfmadd231ps %%ymm14,%%ymm15,%%ymm0\n vfmadd231ps %%ymm14,%%ymm15,%%ymm1\n vfmadd231ps %%ymm14,%%ymm15,%%ymm2\n"
      "vfmadd231ps %%ymm14,%%ymm15,%%ymm3\n vfmadd231ps %%ymm14,%%ymm15,%%ymm4\n vfmadd231ps %%ymm14,%%ymm15,%%ymm5\n"
      "vfmadd231ps %%ymm14,%%ymm15,%%ymm6\n vfmadd231ps %%ymm14,%%ymm15,%%ymm7\n vfmadd231ps %%ymm14,%%ymm15,%%ymm8\n"
      "vfmadd231ps %%ymm14,%%ymm15,%%ymm9\n"
      "dec %0\n jnz 1b\n vzeroupper\n"
      : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm14", "xmm15", "cc");
}

// The AVX2 int4 kernels' inner pair: vpmaddubsw + vpaddw (int16 accumulation), 8 chains: 8 * 32 MACs * 2.
void maddubs_paddw_avx2(int64_t n) {
  __asm__ volatile(
      "vpxor %%ymm0,%%ymm0,%%ymm0\n vpxor %%ymm1,%%ymm1,%%ymm1\n vpxor %%ymm2,%%ymm2,%%ymm2\n"
      "vpxor %%ymm3,%%ymm3,%%ymm3\n vpxor %%ymm4,%%ymm4,%%ymm4\n vpxor %%ymm5,%%ymm5,%%ymm5\n"
      "vpxor %%ymm6,%%ymm6,%%ymm6\n vpxor %%ymm7,%%ymm7,%%ymm7\n vpxor %%ymm14,%%ymm14,%%ymm14\n vpxor %%ymm15,%%ymm15,%%ymm15\n"
      "1:\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm8\n vpaddw %%ymm8,%%ymm0,%%ymm0\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm9\n vpaddw %%ymm9,%%ymm1,%%ymm1\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm10\n vpaddw %%ymm10,%%ymm2,%%ymm2\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm11\n vpaddw %%ymm11,%%ymm3,%%ymm3\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm12\n vpaddw %%ymm12,%%ymm4,%%ymm4\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm13\n vpaddw %%ymm13,%%ymm5,%%ymm5\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm8\n vpaddw %%ymm8,%%ymm6,%%ymm6\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm9\n vpaddw %%ymm9,%%ymm7,%%ymm7\n"
      "dec %0\n jnz 1b\n vzeroupper\n"
      : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm12", "xmm13", "xmm14", "xmm15", "cc");
}

// The int8 dot product widened to int32 (what vpdpbusd does in one instruction): vpmaddubsw + vpmaddwd + vpaddd.
void maddubs_madd_avx2(int64_t n) {
  __asm__ volatile(
      "vpxor %%ymm0,%%ymm0,%%ymm0\n vpxor %%ymm1,%%ymm1,%%ymm1\n vpxor %%ymm2,%%ymm2,%%ymm2\n"
      "vpxor %%ymm3,%%ymm3,%%ymm3\n vpxor %%ymm14,%%ymm14,%%ymm14\n vpxor %%ymm15,%%ymm15,%%ymm15\n"
      "vpxor %%ymm13,%%ymm13,%%ymm13\n"
      "1:\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm4\n vpmaddwd %%ymm13,%%ymm4,%%ymm4\n vpaddd %%ymm4,%%ymm0,%%ymm0\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm5\n vpmaddwd %%ymm13,%%ymm5,%%ymm5\n vpaddd %%ymm5,%%ymm1,%%ymm1\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm6\n vpmaddwd %%ymm13,%%ymm6,%%ymm6\n vpaddd %%ymm6,%%ymm2,%%ymm2\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm7\n vpmaddwd %%ymm13,%%ymm7,%%ymm7\n vpaddd %%ymm7,%%ymm3,%%ymm3\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm8\n vpmaddwd %%ymm13,%%ymm8,%%ymm8\n vpaddd %%ymm8,%%ymm0,%%ymm0\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm9\n vpmaddwd %%ymm13,%%ymm9,%%ymm9\n vpaddd %%ymm9,%%ymm1,%%ymm1\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm10\n vpmaddwd %%ymm13,%%ymm10,%%ymm10\n vpaddd %%ymm10,%%ymm2,%%ymm2\n"
      "vpmaddubsw %%ymm14,%%ymm15,%%ymm11\n vpmaddwd %%ymm13,%%ymm11,%%ymm11\n vpaddd %%ymm11,%%ymm3,%%ymm3\n"
      "dec %0\n jnz 1b\n vzeroupper\n"
      : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm13", "xmm14", "xmm15", "cc");
}

// 12 independent 512-bit FMA chains: 12 * 16 lanes * 2 flops.
void fma_avx512(int64_t n) {
  __asm__ volatile(
      "vpxord %%zmm0,%%zmm0,%%zmm0\n vpxord %%zmm1,%%zmm1,%%zmm1\n vpxord %%zmm2,%%zmm2,%%zmm2\n"
      "vpxord %%zmm3,%%zmm3,%%zmm3\n vpxord %%zmm4,%%zmm4,%%zmm4\n vpxord %%zmm5,%%zmm5,%%zmm5\n"
      "vpxord %%zmm6,%%zmm6,%%zmm6\n vpxord %%zmm7,%%zmm7,%%zmm7\n vpxord %%zmm8,%%zmm8,%%zmm8\n"
      "vpxord %%zmm9,%%zmm9,%%zmm9\n vpxord %%zmm10,%%zmm10,%%zmm10\n vpxord %%zmm11,%%zmm11,%%zmm11\n"
      "vpxord %%zmm14,%%zmm14,%%zmm14\n vpxord %%zmm15,%%zmm15,%%zmm15\n"
      "1:\n"
      "vfmadd231ps %%zmm14,%%zmm15,%%zmm0\n vfmadd231ps %%zmm14,%%zmm15,%%zmm1\n vfmadd231ps %%zmm14,%%zmm15,%%zmm2\n"
      "vfmadd231ps %%zmm14,%%zmm15,%%zmm3\n vfmadd231ps %%zmm14,%%zmm15,%%zmm4\n vfmadd231ps %%zmm14,%%zmm15,%%zmm5\n"
      "vfmadd231ps %%zmm14,%%zmm15,%%zmm6\n vfmadd231ps %%zmm14,%%zmm15,%%zmm7\n vfmadd231ps %%zmm14,%%zmm15,%%zmm8\n"
      "vfmadd231ps %%zmm14,%%zmm15,%%zmm9\n vfmadd231ps %%zmm14,%%zmm15,%%zmm10\n vfmadd231ps %%zmm14,%%zmm15,%%zmm11\n"
      "dec %0\n jnz 1b\n vzeroupper\n"
      : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm14", "xmm15", "cc");
}

// vpdpbusd on zmm, 12 chains: 12 * 64 MACs * 2.
void dpbusd_avx512(int64_t n) {
  __asm__ volatile(
      "vpxord %%zmm0,%%zmm0,%%zmm0\n vpxord %%zmm1,%%zmm1,%%zmm1\n vpxord %%zmm2,%%zmm2,%%zmm2\n"
      "vpxord %%zmm3,%%zmm3,%%zmm3\n vpxord %%zmm4,%%zmm4,%%zmm4\n vpxord %%zmm5,%%zmm5,%%zmm5\n"
      "vpxord %%zmm6,%%zmm6,%%zmm6\n vpxord %%zmm7,%%zmm7,%%zmm7\n vpxord %%zmm8,%%zmm8,%%zmm8\n"
      "vpxord %%zmm9,%%zmm9,%%zmm9\n vpxord %%zmm10,%%zmm10,%%zmm10\n vpxord %%zmm11,%%zmm11,%%zmm11\n"
      "vpxord %%zmm14,%%zmm14,%%zmm14\n vpxord %%zmm15,%%zmm15,%%zmm15\n"
      "1:\n"
      "vpdpbusd %%zmm14,%%zmm15,%%zmm0\n vpdpbusd %%zmm14,%%zmm15,%%zmm1\n vpdpbusd %%zmm14,%%zmm15,%%zmm2\n"
      "vpdpbusd %%zmm14,%%zmm15,%%zmm3\n vpdpbusd %%zmm14,%%zmm15,%%zmm4\n vpdpbusd %%zmm14,%%zmm15,%%zmm5\n"
      "vpdpbusd %%zmm14,%%zmm15,%%zmm6\n vpdpbusd %%zmm14,%%zmm15,%%zmm7\n vpdpbusd %%zmm14,%%zmm15,%%zmm8\n"
      "vpdpbusd %%zmm14,%%zmm15,%%zmm9\n vpdpbusd %%zmm14,%%zmm15,%%zmm10\n vpdpbusd %%zmm14,%%zmm15,%%zmm11\n"
      "dec %0\n jnz 1b\n vzeroupper\n"
      : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm14", "xmm15", "cc");
}
#endif

#if defined(__aarch64__)
// 8 chains of FMLA on 4 lanes: 8 * 4 * 2 flops.
void fma_neon(int64_t n) {
  __asm__ volatile(
      "movi v0.4s, #0\n movi v1.4s, #0\n movi v2.4s, #0\n movi v3.4s, #0\n movi v4.4s, #0\n movi v5.4s, #0\n"
      "movi v6.4s, #0\n movi v7.4s, #0\n movi v30.4s, #0\n movi v31.4s, #0\n"
      "1:\n"
      "fmla v0.4s, v30.4s, v31.4s\n fmla v1.4s, v30.4s, v31.4s\n fmla v2.4s, v30.4s, v31.4s\n fmla v3.4s, v30.4s, v31.4s\n"
      "fmla v4.4s, v30.4s, v31.4s\n fmla v5.4s, v30.4s, v31.4s\n fmla v6.4s, v30.4s, v31.4s\n fmla v7.4s, v30.4s, v31.4s\n"
      "subs %0, %0, #1\n b.ne 1b\n"
      : "+r"(n)::"v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v30", "v31", "cc");
}
// 8 chains of SDOT: 8 * 16 MACs * 2.
__attribute__((target("arch=armv8.2-a+dotprod"))) void sdot_neon(int64_t n) {
  __asm__ volatile(
      "movi v0.4s, #0\n movi v1.4s, #0\n movi v2.4s, #0\n movi v3.4s, #0\n movi v4.4s, #0\n movi v5.4s, #0\n"
      "movi v6.4s, #0\n movi v7.4s, #0\n movi v30.4s, #0\n movi v31.4s, #0\n"
      "1:\n"
      "sdot v0.4s, v30.16b, v31.16b\n sdot v1.4s, v30.16b, v31.16b\n sdot v2.4s, v30.16b, v31.16b\n"
      "sdot v3.4s, v30.16b, v31.16b\n sdot v4.4s, v30.16b, v31.16b\n sdot v5.4s, v30.16b, v31.16b\n"
      "sdot v6.4s, v30.16b, v31.16b\n sdot v7.4s, v30.16b, v31.16b\n"
      "subs %0, %0, #1\n b.ne 1b\n"
      : "+r"(n)::"v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v30", "v31", "cc");
}
#endif

}  // namespace

const std::vector<Loop>& probe_loops() {
  static const std::vector<Loop> all = {
#if defined(__x86_64__)
      {{"fp32_fma_avx2", "avx2", "GFLOP/s", "vfmadd231ps ymm, 10 chains", "", ""}, Isa::avx2, 10 * 8 * 2, fma_avx2},
      {{"int8_maddubs_paddw_avx2", "avx2", "GOPS", "vpmaddubsw + vpaddw ymm (int16 accumulation), 8 chains", "", ""},
       Isa::avx2, 8 * 32 * 2, maddubs_paddw_avx2},
      {{"int8_maddubs_madd_avx2", "avx2", "GOPS", "vpmaddubsw + vpmaddwd + vpaddd ymm (int32 dot product), 8 chains", "", ""},
       Isa::avx2, 8 * 32 * 2, maddubs_madd_avx2},
      {{"fp32_fma_avx512", "avx512", "GFLOP/s", "vfmadd231ps zmm, 12 chains", "", ""}, Isa::avx512, 12 * 16 * 2, fma_avx512},
      {{"int8_vpdpbusd_avx512", "avx512", "GOPS", "vpdpbusd zmm, 12 chains", "", ""}, Isa::avx512, 12 * 64 * 2, dpbusd_avx512},
#endif
#if defined(__aarch64__)
      {{"fp32_fma_neon", "neon", "GFLOP/s", "fmla v.4s, 8 chains", "", ""}, Isa::neon, 8 * 4 * 2, fma_neon},
      {{"int8_sdot_neon", "neon_dotprod", "GOPS", "sdot v.4s, 8 chains", "", ""}, Isa::neon_dotprod, 8 * 16 * 2, sdot_neon},
#endif
  };
  return all;
}

namespace {
// Probes, then mix loops (names are unique across both).
std::vector<const Loop*> loops() {
  std::vector<const Loop*> out;
  for (const auto* list : {&probe_loops(), &mix_loops()})
    for (const Loop& l : *list) out.push_back(&l);
  return out;
}
}  // namespace

double read_bandwidth(int64_t bytes, int threads, int reps) {
  if (bytes < 4096 || bytes > (int64_t(1) << 36)) throw InvalidArgument(cat("buffer of ", bytes, " bytes is out of range"));
  if (threads < 1 || reps < 1) throw InvalidArgument("threads and reps must be >= 1");
  bytes = bytes / 4096 * 4096;
  uint8_t* buf = alloc_large(size_t(bytes));  // huge pages, as the packed weights have (common/memory.h)
  if (!buf) throw LimitError(cat("cannot allocate ", bytes, " bytes"));
  ThreadPool& pool = ThreadPool::global();
  const int old = pool.num_threads();
  pool.set_num_threads(threads);
  std::vector<uint64_t> sink(static_cast<size_t>(threads));
  const int64_t part = bytes / threads / 128 * 128;
  auto pass = [&] {
    pool.run(threads, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) sink[size_t(t)] += read_bytes(buf + t * part, part);
    });
  };
  // First touch by the readers themselves (page placement), then warm-up and timed passes.
  pool.run(threads, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) std::memset(buf + t * part, int(t + 1), size_t(part));
  });
  pass();
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now();
    pass();
    best = std::max(best, double(part) * threads / (now() - t0) / 1e9);
  }
  std::free(buf);
  pool.set_num_threads(old);
  return best;
}

constexpr int64_t kMaxTimedCalls = int64_t(1) << 27;  // 1 GiB of timings

std::vector<double> time_gemv_calls(const std::vector<PackedView>& ws, const float* x, int64_t calls) {
  if (ws.empty()) throw InvalidArgument("time_gemv_calls needs at least one weight matrix");
  if (calls < 1 || calls > kMaxTimedCalls)
    throw InvalidArgument(cat("calls = ", calls, " must be in [1, ", kMaxTimedCalls, "]"));
  if (!x) throw InvalidArgument("activations are null");
  int64_t n_max = 0;
  for (const PackedView& w : ws) {
    if (w.k != ws[0].k) throw InvalidArgument(cat("every matrix must have K = ", ws[0].k, ", one has K = ", w.k));
    n_max = std::max(n_max, w.n);
  }
  std::vector<float> y(static_cast<size_t>(n_max));
  Scratch scratch;
  for (const PackedView& w : ws) gemv(w, x, y.data(), nullptr, &scratch);
  std::vector<double> out(static_cast<size_t>(calls));
  const size_t m = ws.size();
  for (int64_t i = 0; i < calls; ++i) {
    const double t0 = now();
    gemv(ws[size_t(i) % m], x, y.data(), nullptr, &scratch);
    out[size_t(i)] = now() - t0;
  }
  return out;
}

std::vector<Peak> peaks() {
  std::vector<Peak> out;
  for (const Loop* l : loops())
    if (isa_supported(l->needs)) out.push_back(l->peak);
  return out;
}

double measure_peak(const std::string& name, int threads, int reps, double seconds) {
  if (threads < 1 || reps < 1) throw InvalidArgument("threads and reps must be >= 1");
  if (!(seconds > 0.0 && seconds <= 10.0)) throw InvalidArgument(cat("seconds = ", seconds, " must be in (0, 10]"));
  for (const Loop* lp : loops()) {
    const Loop& l = *lp;
    if (l.peak.name != name) continue;
    if (!isa_supported(l.needs)) throw Unsupported(cat("peak ", name, " needs ", isa_name(l.needs), ", which this CPU lacks"));
    ThreadPool& pool = ThreadPool::global();
    const int old = pool.num_threads();
    pool.set_num_threads(threads);
    // Calibration pass (also the clock ramp): 2^20 ops' worth of iterations, then a pass of about `seconds`.
    const int64_t probe_iters = std::max<int64_t>(1000, int64_t((1 << 20) / l.ops_per_iter) * 16);
    const double t_cal = now();
    l.run(probe_iters);
    const double per_iter = std::max(1e-12, (now() - t_cal) / double(probe_iters));
    const int64_t iters = std::clamp<int64_t>(int64_t(seconds / per_iter), 1000, int64_t(1) << 34);
    double best = 0.0;
    for (int r = 0; r < reps; ++r) {
      const double t0 = now();
      pool.run(threads, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t) l.run(iters);
      });
      best = std::max(best, l.ops_per_iter * double(iters) * threads / (now() - t0) / 1e9);
    }
    pool.set_num_threads(old);
    return best;
  }
  throw InvalidArgument(cat("unknown peak '", name, "'"));
}

}  // namespace bluelm::kernels::roofline

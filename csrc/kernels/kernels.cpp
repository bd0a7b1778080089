// The kernel driver: argument checks, dispatch to the active instruction-set table, thread-pool split over
// 8-row panels, 128-token blocks in GEMM, scratch memory, and the straightforward reference.
#include "kernels/kernels.h"

#include <atomic>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/memory.h"
#include "common/threadpool.h"
#include "kernels/kernels_isa.h"

namespace bluelm::kernels {

// ---- dispatch ----

const IsaKernels* kernels_for(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return isa_kernels_scalar();
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::avx2:
      return isa_kernels_avx2();
    case Isa::avx512:
      return isa_kernels_avx512();
#endif
#if defined(__aarch64__)
    case Isa::neon:
      return isa_kernels_neon();
    case Isa::neon_dotprod:
      return isa_kernels_dotprod();
#endif
    default:
      return nullptr;
  }
}

const IsaKernels& active_kernels() {
  for (int i = static_cast<int>(active_isa()); i > 0; --i) {
    const IsaKernels* k = kernels_for(static_cast<Isa>(i));
    if (k && isa_supported(static_cast<Isa>(i))) return *k;
  }
  return *isa_kernels_scalar();
}

// ---- scratch ----


void Scratch::reserve(int64_t bytes) {
  if (bytes < 0) throw InvalidArgument(cat("scratch size ", bytes, " must be >= 0"));
  if (bytes <= capacity_) return;
  uint8_t* p = alloc_large(size_t(bytes));  // 64-byte aligned; a ViT batch's activations get huge pages too
  if (!p) throw LimitError(cat("cannot allocate ", bytes, " bytes of kernel scratch"));
  data_.reset(p);
  capacity_ = bytes;
}

void* Scratch::get(int64_t bytes) {
  reserve(bytes);
  return data_.get();
}

namespace {

int64_t round64(int64_t x) { return (x + 63) / 64 * 64; }

void check_view(const PackedView& w) {
  if (!w.data) throw InvalidArgument("packed weights are null");
  const int64_t need = packed_bytes(w.format, w.n, w.k);
  if (w.bytes != need)
    throw InvalidArgument(cat("packed weights hold ", w.bytes, " bytes; a ", quant::format_name(w.format), " matrix of ",
                              w.n, " x ", w.k, " needs ", need));
}

Scratch& thread_scratch(Scratch* s) {
  thread_local Scratch local;
  return s ? *s : local;
}

}  // namespace

ActSumRule act_sum_rule(Format f) {
  switch (quant::format_info(f).kind) {
    case Kind::int4_sym: return {-8.0f, true};
    case Kind::int4_asym: return {1.0f, true};
    default: return {-128.0f, false};  // an integer, exact in float: |128 * 127 * G| < 2^24 for G <= 128
  }
}

namespace {
std::atomic<bool> g_int8_sign_trick{false};  // see kernels.h: unsigned weights by default
}
void set_int8_sign_trick(bool on) { g_int8_sign_trick.store(on, std::memory_order_relaxed); }
bool int8_sign_trick() { return g_int8_sign_trick.load(std::memory_order_relaxed); }
namespace {
std::atomic<bool> g_avx512_quads{true};
}
void set_avx512_quads(bool on) { g_avx512_quads.store(on, std::memory_order_relaxed); }
bool avx512_quads() { return g_avx512_quads.load(std::memory_order_relaxed); }
namespace {
std::atomic<bool> g_avx512_k45_decode{true};
}
void set_avx512_k45_decode(bool on) { g_avx512_k45_decode.store(on, std::memory_order_relaxed); }
bool avx512_k45_decode() { return g_avx512_k45_decode.load(std::memory_order_relaxed); }

namespace {
// An A/B switch whose default `decide` gives on first use (so a bad environment value is reported by the call that
// uses it, and CPU detection runs once), until set.
class LazySwitch {
 public:
  constexpr explicit LazySwitch(bool (*decide)()) : decide_(decide) {}
  void set(bool on) { v_.store(on ? 1 : 0, std::memory_order_relaxed); }
  bool get() {
    int v = v_.load(std::memory_order_relaxed);
    if (v < 0) {
      int expected = -1;
      v_.compare_exchange_strong(expected, decide_() ? 1 : 0, std::memory_order_relaxed);
      v = v_.load(std::memory_order_relaxed);
    }
    return v == 1;
  }

 private:
  bool (*decide_)();
  std::atomic<int> v_{-1};
};

bool default_prefetch_l2() {
  const char* env = std::getenv("BLUELM_DECODE_PREFETCH");
  if (env && *env) {
    const std::string v(env);
    if (v == "l1") return false;
    if (v == "l2") return true;
    throw InvalidArgument(cat("BLUELM_DECODE_PREFETCH='", v, "' is not l1 or l2"));
  }
  return cpu_features().amd;
}
// Defaults by CPU vendor (kernels.h says what each was measured on).
LazySwitch g_prefetch_l2(default_prefetch_l2);
LazySwitch g_scales_last([] { return cpu_features().amd; });
LazySwitch g_pair_decode([] { return !cpu_features().amd; });
}  // namespace

void set_decode_prefetch_l2(bool on) { g_prefetch_l2.set(on); }
bool decode_prefetch_l2() { return g_prefetch_l2.get(); }
void set_decode_scales_last(bool on) { g_scales_last.set(on); }
bool decode_scales_last() { return g_scales_last.get(); }
bool scales_last_fits(Format f, int64_t k) {
  return quant::format_info(f).kind == Kind::int8_sym && fits_scales_last(panel_geometry(f, k), k);
}
void set_avx512_pair_decode(bool on) { g_pair_decode.set(on); }
bool avx512_pair_decode() { return g_pair_decode.get(); }

ActBuffers act_buffers(Format f, int64_t t, int64_t k, void* base) {
  const int64_t nb = k / quant::format_info(f).group;
  uint8_t* p = static_cast<uint8_t*>(base);
  ActBuffers b;
  b.q = reinterpret_cast<int8_t*>(p);
  b.d = reinterpret_cast<float*>(p + round64(t * k));
  b.s = reinterpret_cast<float*>(p + round64(t * k) + round64(t * nb * int64_t(sizeof(float))));
  return b;
}

int64_t act_scratch_bytes(Format f, int64_t t, int64_t k) {
  quant::check_k(f, k);
  if (t < 1) throw InvalidArgument(cat("T = ", t, " rows of activations must be >= 1"));
  const int64_t nb = k / quant::format_info(f).group;
  return round64(t * k) + 2 * round64(t * nb * int64_t(sizeof(float)));
}

QuantizedActs quantize_activations(Format f, const float* x, int64_t t, int64_t k, int64_t ldx, Scratch& scratch) {
  const int64_t bytes = act_scratch_bytes(f, t, k);
  if (ldx < k) throw InvalidArgument(cat("activation row stride ", ldx, " is smaller than K = ", k));
  if (!x) throw InvalidArgument("activations are null");
  const int group = quant::format_info(f).group;
  const int64_t nb = k / group;
  const ActBuffers buf = act_buffers(f, t, k, scratch.get(bytes));
  int8_t* q = buf.q;
  float* d = buf.d;
  float* s = buf.s;
  QuantizedActs a;
  a.t = t, a.k = k, a.group = group, a.q = q, a.d = d, a.s = s;
  const IsaKernels& K = active_kernels();
  const ActSumRule sf = act_sum_rule(f);
  auto rows = [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) K.quantize_row(x + i * ldx, k, group, sf, q + i * k, d + i * nb, s + i * nb);
  };
  if (t * k >= (int64_t(1) << 16))
    ThreadPool::global().run(t, rows);
  else
    rows(0, t, 0);
  return a;
}

// Products below this many multiply-adds finish faster on the calling thread than the pool can wake its workers
// (measured on SmolLM2-135M's decode step, whose smallest matrices are 64x576 and 576x576).
// BLUELM_MIN_PARALLEL_MACS overrides it (0: always use every thread).
constexpr int64_t kMinParallelMacs = int64_t(1) << 18;

static int small_product_workers(int64_t macs) {
  static const int64_t limit = [] {
    const char* env = std::getenv("BLUELM_MIN_PARALLEL_MACS");
    if (!env || !*env) return kMinParallelMacs;
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (*end != '\0' || v < 0)
      throw InvalidArgument(cat("BLUELM_MIN_PARALLEL_MACS='", env, "' is not a non-negative integer"));
    return int64_t(v);
  }();
  return macs < limit ? 1 : 0;
}

void gemm_quantized(const PackedView& w, const QuantizedActs& a, float* y, int64_t ldy, const float* bias) {
  check_view(w);
  const PanelGeometry g = panel_geometry(w.format, w.k);
  if (a.k != w.k || a.group != g.group || a.t < 1 || !a.q || !a.d || !a.s)
    throw InvalidArgument(cat("quantized activations (T = ", a.t, ", K = ", a.k, ", group ", a.group,
                              ") do not fit weights of K = ", w.k, ", group ", g.group));
  if (!y) throw InvalidArgument("output is null");
  if (ldy < w.n) throw InvalidArgument(cat("output row stride ", ldy, " is smaller than N = ", w.n));
  const IsaKernels& K = active_kernels();
  const int64_t panels = (w.n + kPanelRows - 1) / kPanelRows;
  // Q5_1's minima follow the panels (pack.cpp); the tiers add everything else.
  const quant::Kind kind = quant::format_info(w.format).kind;
  const float* minima = kind == Kind::int5_asym ? reinterpret_cast<const float*>(w.data + panels * g.stride) : nullptr;
  std::vector<float> xsum;  // Q5_1: sum(x) per token and block, d * sum(q) of the int8 activations (s = -128 sum(q))
  if (minima) {
    xsum.resize(size_t(a.t * g.nb));
    for (int64_t i = 0; i < a.t * g.nb; ++i) xsum[size_t(i)] = a.d[i] * (a.s[i] * (-1.0f / 128.0f));
  }
  // Several tokens: take them kTokenBlock at a time (a ViT batch of 4 tiles x 729 tokens would otherwise stream all
  // of its activations from memory past every panel), each block over the whole of K. Chunking K so that a block's
  // activations stay in L2 (192 KB) was slower once the int4 tile covered two panels: A/B in one process on
  // the 3B shapes, q4_0 T = 128, 1 thread 107-110 -> 117-124 GFLOP/s, 2 threads 188-199 -> 207-216, q8_0 63-72 -> 75.
  constexpr int64_t kTokenBlock = 128;
  auto body = [&](int64_t p0, int64_t p1, int) {
    for (int64_t t0 = 0; t0 < a.t; t0 += kTokenBlock)
      K.gemm_panels(w, a, p0, p1, t0, std::min(a.t, t0 + kTokenBlock), 0, g.nb, false, y, ldy);
    if (minima) {
      // + m * sum(x) per block
      const auto add = K.add_block_minima ? K.add_block_minima : isa_kernels_scalar()->add_block_minima;
      for (int64_t p = p0; p < p1; ++p)
        add(minima + p * g.nb * kPanelRows, g.nb, xsum.data(), a.t, y + p * kPanelRows, ldy,
            int(std::min<int64_t>(kPanelRows, w.n - p * kPanelRows)));
    }
    if (bias) {
      const int64_t r0 = p0 * kPanelRows, r1 = std::min(w.n, p1 * kPanelRows);
      for (int64_t t = 0; t < a.t; ++t)
        for (int64_t r = r0; r < r1; ++r) y[t * ldy + r] += bias[r];
    }
  };
  ThreadPool::global().run(panels, body, small_product_workers(w.n * w.k * a.t));
}

void gemm(const PackedView& w, const float* x, int64_t t, float* y, const float* bias, Scratch* scratch) {
  check_view(w);
  const QuantizedActs a = quantize_activations(w.format, x, t, w.k, w.k, thread_scratch(scratch));
  gemm_quantized(w, a, y, w.n, bias);
}

void gemv(const PackedView& w, const float* x, float* y, const float* bias, Scratch* scratch) {
  gemm(w, x, 1, y, bias, scratch);
}

void layer_norm_rows(const float* x, int64_t rows, int64_t d, const float* gamma, const float* beta, float eps,
                     float* y) {
  if (rows < 0 || d < 1) throw InvalidArgument(cat("layer_norm_rows: ", rows, " rows of ", d, " values"));
  if (rows > 0 && (!x || !y)) throw InvalidArgument("layer_norm_rows: null input or output");
  const IsaKernels& K = active_kernels();
  for (int64_t r = 0; r < rows; ++r) K.layer_norm_row(x + r * d, d, gamma, beta, eps, y + r * d);
}

// ---- int16 activations in one pass ----

namespace {
std::atomic<bool> g_int16_one_pass{true};
std::atomic<bool> g_portable_widen{false};  // tests: the portable widening even where the tier has its own

bool i16_format(Format f) {
  const quant::FormatInfo& fi = quant::format_info(f);
  return !fi.super_block && (fi.group == 32 || fi.group == 64 || fi.group == 128);
}

bool i16_asym(Format f) {
  const Kind kind = quant::format_info(f).kind;
  return kind == Kind::int4_asym || kind == Kind::int5_asym;
}

// Panel p of w widened for gemm_i16_panels (kernels_isa.h: WidePanel): the integer levels as int16 in
// [nb][G / 2][8][2], the scales (and minima) as float [nb][8]. The packed layouts are pack.cpp's.
void widen_panel(const IsaKernels& K, const PackedView& w, int64_t p, int16_t* q, float* d, float* m) {
  PanelGeometry g = panel_geometry(w.format, w.k);
  const Kind kind = quant::format_info(w.format).kind;
  const int G = g.group, half = G / 2;
  const uint8_t* panel = w.data + p * g.stride;
  const int64_t panels = (w.n + kPanelRows - 1) / kPanelRows;
  const bool int4 = kind == Kind::int4_sym || kind == Kind::int4_asym;
  if (kind == Kind::int5_asym)  // Q5_1: float minima [nb][8] per panel after the last panel (pack.cpp)
    std::memcpy(m, w.data + panels * g.stride + p * g.nb * kPanelRows * 4, size_t(g.nb * kPanelRows * 4));
  if (quant::is_int5(kind)) {  // Q5_0 / Q5_1: to int8 levels in a q8_0 panel first, then as q8_0
    thread_local std::vector<uint8_t> q8;
    const PanelGeometry g8 = panel_geometry(Format::q8_0, w.k);
    q8.resize(size_t(g8.stride));
    (K.widen_int5_panel ? K.widen_int5_panel : widen_int5_panel)(panel, g, kind == Kind::int5_sym, 0, g.nb, q8.data(), g8);
    panel = q8.data();
    g = g8;
  }
  if (!int4 && K.widen_int8_panel && !g_portable_widen.load(std::memory_order_relaxed))
    return K.widen_int8_panel(panel, g.nb, G, g.scales, q, d);
  const int bias = kind == Kind::int4_sym ? 8 : 0;  // Q4_0's levels are nibble - 8; Q5_0's panels hold q - 16
  for (int64_t b = 0; b < g.nb; ++b) {
    const uint8_t* blk = panel + b * g.qbytes;
    int16_t* qb = q + b * G * kPanelRows;
    for (int r = 0; r < kPanelRows; ++r) {
      d[b * kPanelRows + r] = quant::fp16_to_fp32(quant::load_u16(panel + g.scales + (b * kPanelRows + r) * 2));
      if (kind == Kind::int4_asym)
        m[b * kPanelRows + r] = quant::fp16_to_fp32(quant::load_u16(panel + g.minima + (b * kPanelRows + r) * 2));
    }
    // Piece j of a block holds 4 bytes of each row (pack.cpp): columns 4j..4j+3 (int8), or for int4 the nibbles
    // of columns 4j..4j+3 (low) and G/2 + 4j.. (high). Column pair c of the block goes to qb + c * 16.
    for (int j = 0; j < G / (int4 ? 8 : 4); ++j) {
      const uint8_t* src = blk + j * 32;
      if (int4) {
        int16_t* lo = qb + (2 * j) * 2 * kPanelRows;                // columns 4j .. 4j+3
        int16_t* hi = qb + (half / 2 + 2 * j) * 2 * kPanelRows;     // columns G/2 + 4j ..
        for (int r = 0; r < kPanelRows; ++r)
          for (int i = 0; i < 4; ++i) {
            const int at = (i / 2) * 2 * kPanelRows + r * 2 + i % 2;
            lo[at] = int16_t(int(src[r * 4 + i] & 0x0F) - bias);
            hi[at] = int16_t(int(src[r * 4 + i] >> 4) - bias);
          }
      } else {
        int16_t* out = qb + (2 * j) * 2 * kPanelRows;  // columns 4j .. 4j+3
        for (int r = 0; r < kPanelRows; ++r)
          for (int i = 0; i < 4; ++i) out[(i / 2) * 2 * kPanelRows + r * 2 + i % 2] = int16_t(int8_t(src[r * 4 + i]));
      }
    }
  }
}
}  // namespace

void set_int16_one_pass(bool on) { g_int16_one_pass.store(on, std::memory_order_relaxed); }
void set_portable_widen(bool on) { g_portable_widen.store(on, std::memory_order_relaxed); }
bool int16_one_pass() { return g_int16_one_pass.load(std::memory_order_relaxed); }

int64_t i16_min_tokens() { return active_kernels().gemm_i16_panels ? active_kernels().i16_min_tokens : 0; }

bool has_gemm_i16(Format f) { return active_kernels().gemm_i16_panels != nullptr && i16_format(f); }

bool gemm_i16_pays(Format f, int64_t t) {
  const Kind kind = quant::format_info(f).kind;
  const bool int8_panels = kind == Kind::int8_sym || quant::is_int5(kind);
  return t >= i16_min_tokens() && int8_panels && has_gemm_i16(f);
}

int64_t i16_scratch_bytes(Format f, int64_t t, int64_t k) {
  quant::check_k(f, k);
  if (t < 1) throw InvalidArgument(cat("T = ", t, " rows of activations must be >= 1"));
  const int64_t nb = k / quant::format_info(f).group;
  if (t > (int64_t(1) << 40) / k) throw InvalidArgument(cat(t, " x ", k, " activations are too many"));
  return round64(t * k * int64_t(sizeof(int16_t))) + 2 * round64(t * nb * int64_t(sizeof(float)));
}

void gemm_i16(const PackedView& w, const float* x, int64_t t, int64_t ldx, float* y, int64_t ldy, const float* bias,
              Scratch* scratch) {
  check_view(w);
  const IsaKernels& K = active_kernels();
  if (!i16_format(w.format))
    throw InvalidArgument(cat("one-pass int16 products take formats with one scale per group of 32, 64 or 128, not ",
                              quant::format_name(w.format)));
  if (!K.gemm_i16_panels) throw InvalidArgument(cat("the ", K.name, " kernels have no one-pass int16 product"));
  if (!x || !y) throw InvalidArgument("activations or output are null");
  if (ldx < w.k) throw InvalidArgument(cat("activation row stride ", ldx, " is smaller than K = ", w.k));
  if (ldy < w.n) throw InvalidArgument(cat("output row stride ", ldy, " is smaller than N = ", w.n));
  const int64_t bytes = i16_scratch_bytes(w.format, t, w.k);
  const PanelGeometry g = panel_geometry(w.format, w.k);
  const int G = g.group;
  const int64_t nb = g.nb, k = w.k;
  uint8_t* base = static_cast<uint8_t*>(thread_scratch(scratch).get(bytes));
  int16_t* q = reinterpret_cast<int16_t*>(base);
  float* d = reinterpret_cast<float*>(base + round64(t * k * int64_t(sizeof(int16_t))));
  float* s = d + round64(t * nb * int64_t(sizeof(float))) / int64_t(sizeof(float));
  auto quantize_row = K.quantize_i16_row ? K.quantize_i16_row : isa_kernels_scalar()->quantize_i16_row;
  auto rows = [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) quantize_row(x + i * ldx, k, G, q + i * k, d + i * nb, s + i * nb);
  };
  if (t * k >= (int64_t(1) << 16))
    ThreadPool::global().run(t, rows);
  else
    rows(0, t, 0);
  I16Acts a;
  a.t = t, a.k = k, a.group = G, a.q = q, a.d = d, a.s = s;
  const bool asym = i16_asym(w.format);
  const int64_t panels = (w.n + kPanelRows - 1) / kPanelRows, pairs = (panels + 1) / 2;
  auto body = [&](int64_t b0, int64_t b1, int) {
    thread_local std::vector<int16_t> wq;
    thread_local std::vector<float> wd, wm;
    wq.resize(size_t(2 * k * kPanelRows));
    wd.resize(size_t(2 * nb * kPanelRows));
    wm.resize(asym ? size_t(2 * nb * kPanelRows) : 0);
    for (int64_t pr = b0; pr < b1; ++pr) {
      const int64_t p = 2 * pr;
      const int np = int(std::min<int64_t>(2, panels - p));
      WidePanel wp[2] = {};
      for (int i = 0; i < np; ++i) {
        int16_t* qi = wq.data() + i * k * kPanelRows;
        float* di = wd.data() + i * nb * kPanelRows;
        float* mi = asym ? wm.data() + i * nb * kPanelRows : nullptr;
        widen_panel(K, w, p + i, qi, di, mi);
        wp[i] = {qi, di, mi};
      }
      const int nrows = int(std::min<int64_t>(2 * kPanelRows, w.n - p * kPanelRows));
      K.gemm_i16_panels(wp, np, nb, a, 0, t, y + p * kPanelRows, ldy, nrows);
      if (bias)
        for (int64_t tt = 0; tt < t; ++tt)
          for (int r = 0; r < nrows; ++r) y[tt * ldy + p * kPanelRows + r] += bias[p * kPanelRows + r];
    }
  };
  ThreadPool::global().run(pairs, body, small_product_workers(w.n * w.k * t));
}

// ---- reference ----

void gemm_reference(Format f, const uint8_t* rows, int64_t n, int64_t k, const float* x, int64_t t, float* y) {
  const int group = quant::format_info(f).group;
  const int64_t nb = k / group;
  std::vector<float> wd(static_cast<size_t>(n * k));
  quant::dequantize_rows(f, rows, n, k, wd.data());
  std::vector<int8_t> q(static_cast<size_t>(k));
  std::vector<float> d(static_cast<size_t>(nb)), s(static_cast<size_t>(nb));
  std::vector<double> xh(static_cast<size_t>(k));  // d * q exactly
  for (int64_t i = 0; i < t; ++i) {
    isa_kernels_scalar()->quantize_row(x + i * k, k, group, {0.0f, true}, q.data(), d.data(), s.data());
    for (int64_t j = 0; j < k; ++j) xh[size_t(j)] = double(d[size_t(j / group)]) * q[size_t(j)];
    for (int64_t r = 0; r < n; ++r) {
      double acc = 0.0;
      const float* wr = wd.data() + r * k;
      for (int64_t j = 0; j < k; ++j) acc += double(wr[j]) * xh[size_t(j)];
      y[i * n + r] = float(acc);
    }
  }
}

}  // namespace bluelm::kernels

// 2x2 token down-sampling (VILA DownSampleBlock) and its fusion with the projector's LayerNorm and first linear
// layer. Down-sampling is data movement: whole runs of c floats are copied (memcpy is already vectorized), so
// there is one implementation; downsample_2x2_reference is the element-by-element definition the tests use.
#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "common/threadpool.h"
#include "kernels/kernels.h"
#include "kernels/kernels_isa.h"

namespace bluelm::kernels {
namespace {

void check_grid(const float* x, int64_t h, int64_t w, int64_t c) {
  if (!x) throw InvalidArgument("tokens are null");
  if (h < 1 || w < 1 || c < 1)
    throw InvalidArgument(cat("token grid [", h, ", ", w, ", ", c, "] must have every side >= 1"));
  if (h > (int64_t(1) << 20) || w > (int64_t(1) << 20) || c > (int64_t(1) << 24))
    throw InvalidArgument(cat("token grid [", h, ", ", w, ", ", c, "] is too large"));
}

// Output row (r, q) of the down-sampled grid: the four neighbours' c channels each, zeros outside the grid.
void gather_cell(const float* x, int64_t h, int64_t w, int64_t c, int64_t r, int64_t q, float* out /*[4c]*/) {
  for (int i = 0; i < 4; ++i) {
    const int64_t row = 2 * r + i / 2, col = 2 * q + i % 2;
    float* dst = out + i * c;
    if (row < h && col < w)
      std::memcpy(dst, x + (row * w + col) * c, size_t(c) * sizeof(float));
    else
      std::memset(dst, 0, size_t(c) * sizeof(float));
  }
}

}  // namespace

void downsample_2x2_reference(const float* x, int64_t h, int64_t w, int64_t c, float* y) {
  check_grid(x, h, w, c);
  const int64_t h2 = (h + 1) / 2, w2 = (w + 1) / 2;
  for (int64_t r = 0; r < h2; ++r)
    for (int64_t q = 0; q < w2; ++q)
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t ch = 0; ch < c; ++ch) {
          const int64_t row = 2 * r + i / 2, col = 2 * q + i % 2;
          y[((r * w2 + q) * 4 + i) * c + ch] = (row < h && col < w) ? x[(row * w + col) * c + ch] : 0.0f;
        }
}

void downsample_2x2(const float* x, int64_t h, int64_t w, int64_t c, float* y) {
  check_grid(x, h, w, c);
  if (!y) throw InvalidArgument("output is null");
  const int64_t h2 = (h + 1) / 2, w2 = (w + 1) / 2;
  ThreadPool::global().run(h2 * w2, [&](int64_t b, int64_t e, int) {
    for (int64_t cell = b; cell < e; ++cell) gather_cell(x, h, w, c, cell / w2, cell % w2, y + cell * 4 * c);
  }, h2 * w2 * c >= (int64_t(1) << 16) ? 0 : 1);
}

int64_t downsample_linear_scratch_bytes(Format f, int64_t h, int64_t w, int64_t c) {
  const int64_t t = ((h + 1) / 2) * ((w + 1) / 2);
  return act_scratch_bytes(f, t, 4 * c) + int64_t(num_threads()) * 4 * c * int64_t(sizeof(float)) + 64;
}

void downsample_linear(const float* x, int64_t h, int64_t w, int64_t c, const PackedView& wt,
                       const DownsampleLinear& opt, float* y, Scratch* scratch) {
  check_grid(x, h, w, c);
  if (wt.k != 4 * c)
    throw InvalidArgument(cat("projector weights have K = ", wt.k, " but 2x2 down-sampling of ", c,
                              " channels gives ", 4 * c));
  if (!y) throw InvalidArgument("output is null");
  if (!(opt.eps > 0.0f)) throw InvalidArgument(cat("LayerNorm eps must be > 0, got ", opt.eps));
  quant::check_k(wt.format, wt.k);
  thread_local Scratch local;
  Scratch& sc = scratch ? *scratch : local;
  const int64_t h2 = (h + 1) / 2, w2 = (w + 1) / 2, t = h2 * w2, k = 4 * c;
  const int threads = num_threads();
  const int64_t act_bytes = act_scratch_bytes(wt.format, t, k);
  uint8_t* base = static_cast<uint8_t*>(sc.get(act_bytes + int64_t(threads) * k * int64_t(sizeof(float)) + 64));
  // Activation storage first (laid out exactly as quantize_activations does), then one float row per worker.
  const int group = quant::format_info(wt.format).group;
  const int64_t nb = k / group;
  const ActBuffers buf = act_buffers(wt.format, t, k, base);
  int8_t* q = buf.q;
  float* d = buf.d;
  float* s = buf.s;
  float* rows = reinterpret_cast<float*>(base + (act_bytes + 63) / 64 * 64);
  const ActSumRule sf = act_sum_rule(wt.format);
  const IsaKernels& K = active_kernels();
  ThreadPool::global().run(t, [&](int64_t b, int64_t e, int worker) {
    float* row = rows + int64_t(worker) * k;
    for (int64_t i = b; i < e; ++i) {
      gather_cell(x, h, w, c, i / w2, i % w2, row);
      if (opt.layer_norm) K.layer_norm_row(row, k, opt.gamma, opt.beta, opt.eps, row);
      K.quantize_row(row, k, group, sf, q + i * k, d + i * nb, s + i * nb);
    }
  });
  QuantizedActs a;
  a.t = t, a.k = k, a.group = group, a.q = q, a.d = d, a.s = s;
  gemm_quantized(wt, a, y, wt.n, opt.bias);
}

}  // namespace bluelm::kernels

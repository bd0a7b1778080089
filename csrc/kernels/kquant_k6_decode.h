#pragma once
// The one-token (1-3 tokens) Q6_K panel walk shared by the x86 tiers, included inside the anonymous namespace of
// kquant_avx2.cpp and kquant_avx512.cpp (one copy per tier, compiled with that tier's flags). Each row's 210-byte
// GGUF block goes from its bytes to the products in registers: ROW(blk, xv, sums16) returns the row's integer sums
// (dot - offset) over the super-block as 8 int32 lanes, SUMS(t, b) the token's 16 sums of 16 activations in the
// order ROW wants them. One float FMA per row, token and super-block. Folding four rows' integer sums into one
// conversion (as the per-row Q4_K / Q5_K decode did before their pieces) took 1.03-1.15x the time in the AVX2 loop,
// and 1.07-1.22x with its row in assembly as well; the assembly row alone changed nothing (0.99-1.03x). Why the fold
// cost Q6_K and not them is not identified.

// vpshufb masks: low lane word w, high lane word w + 1 (Q6_K: the two sub-blocks of 16 of one vector of 32).
alignas(32) constexpr uint8_t kPairMask[4][32] = {
#define P(w) {4*w, 4*w+1, 4*w, 4*w+1, 4*w, 4*w+1, 4*w, 4*w+1, 4*w, 4*w+1, 4*w, 4*w+1, 4*w, 4*w+1, 4*w, 4*w+1, \
               4*w+2, 4*w+3, 4*w+2, 4*w+3, 4*w+2, 4*w+3, 4*w+2, 4*w+3, 4*w+2, 4*w+3, 4*w+2, 4*w+3, \
               4*w+2, 4*w+3, 4*w+2, 4*w+3}
    P(0), P(1), P(2), P(3)
#undef P
};

inline float k6_hsum(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  m = _mm_add_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// Panels [p0, p1) x tokens [t0, t1) (at most 3) x super-blocks [b0, b1), streaming each panel once.
template <class Row, class Sums>
void decode_panels_k6_walk(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0,
                           int64_t t1, int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy,
                           const Sums& sums, Row row) {
  const PanelGeometry g = panel_geometry(w.format, w.k);
  const int bb = quant::format_info(w.format).block_bytes;
  const int64_t nt = t1 - t0;
  // One running prefetch kPrefetchBytes ahead, carried from panel to panel (the panels are contiguous: restarting it
  // per panel re-issued 24 KB of prefetches for every 10 KB panel), advanced row by row (SpreadPrefetch).
  SpreadPrefetch prefetch{
      (reinterpret_cast<uintptr_t>(w.data + p0 * g.stride + b0 * g.qbytes) + kPrefetchBytes) & ~uintptr_t(63), 0};
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = w.data + p * g.stride;
    __m256 acc[3][kPanelRows];
    for (int64_t t = 0; t < nt; ++t)
      for (int r = 0; r < kPanelRows; ++r) acc[t][r] = _mm256_setzero_ps();
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t* blocks = panel + b * g.qbytes;
      for (int64_t t = 0; t < nt; ++t) {
        const int8_t* x = a.q + (t0 + t) * a.k + b * g.group;
        const float dx = a.d[(t0 + t) * g.nb + b];
        __m256i xv[8];
        for (int v = 0; v < 8; ++v) xv[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 * v));
        const __m256i sums16 = sums(t, b);
        for (int r = 0; r < kPanelRows; ++r) {
          const uint8_t* blk = blocks + r * bb;
          if (t == 0) {
            prefetch.end = reinterpret_cast<uintptr_t>(blk + bb) + kPrefetchBytes;
            prefetch.rest();
          }
          const float d = _cvtsh_ss(quant::load_u16(blk + 208)) * dx;
          acc[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(row(blk, xv, sums16)), _mm256_set1_ps(d), acc[t][r]);
        }
      }
    }
    const int64_t rows = std::min<int64_t>(kPanelRows, w.n - p * kPanelRows);
    for (int64_t t = 0; t < nt; ++t) {
      float* out = y + (t0 + t) * ldy + p * kPanelRows;
      for (int64_t r = 0; r < rows; ++r) {
        const float v = k6_hsum(acc[t][r]);
        out[r] = accumulate ? out[r] + v : v;
      }
    }
  }
}

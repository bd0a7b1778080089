#pragma once
// The one-token (1-3 tokens) Q6_K panel walk shared by the x86 tiers, included inside the anonymous namespace of
// kquant_avx2.cpp and kquant_avx512.cpp (one copy per tier, compiled with that tier's flags). Each row's 210-byte
// GGUF block goes from its bytes to the products in registers: ROW(std::integral_constant<int, NT>, blk, xv, sums16,
// out) puts each of the NT tokens' integer sums (dot - offset) over the super-block in out[t] as 8 int32 lanes,
// unpacking the row's levels once for all of them (xv[t]: the token's 256 activations, sums16[t]: SUMS(t, b), its 16
// sums of 16 in the order ROW wants them). One float FMA per row, token and super-block. Each token's integers are
// those of a one-token call, so the result does not depend on how many tokens share the walk; the levels unpacked
// per token rather than shared (before 2026-12-08) made two tokens cost about twice one on cached weights. Folding
// four rows' integer sums into one conversion (as the per-row Q4_K / Q5_K decode did before their pieces) took
// 1.03-1.15x the time in the AVX2 loop, and 1.07-1.22x with its row in assembly as well; the assembly row alone
// changed nothing (0.99-1.03x). Why the fold cost Q6_K and not them is not identified.

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

// Panels [p0, p1) x NT tokens from t0 x super-blocks [b0, b1), streaming each panel once.
template <int NT, class Row, class Sums>
void decode_panels_k6_tokens(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0,
                             int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy, const Sums& sums,
                             Row row) {
  const PanelGeometry g = panel_geometry(w.format, w.k);
  const int bb = quant::format_info(w.format).block_bytes;
  // One running prefetch kPrefetchBytes ahead, carried from panel to panel (the panels are contiguous: restarting it
  // per panel re-issued 24 KB of prefetches for every 10 KB panel), advanced row by row (SpreadPrefetch).
  SpreadPrefetch prefetch{
      (reinterpret_cast<uintptr_t>(w.data + p0 * g.stride + b0 * g.qbytes) + kPrefetchBytes) & ~uintptr_t(63), 0};
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = w.data + p * g.stride;
    __m256 acc[NT][kPanelRows];
    for (int t = 0; t < NT; ++t)
      for (int r = 0; r < kPanelRows; ++r) acc[t][r] = _mm256_setzero_ps();
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t* blocks = panel + b * g.qbytes;
      __m256i xv[NT][8], sums16[NT];
      float dx[NT];
      for (int t = 0; t < NT; ++t) {
        const int8_t* x = a.q + (t0 + t) * a.k + b * g.group;
        dx[t] = a.d[(t0 + t) * g.nb + b];
        for (int v = 0; v < 8; ++v) xv[t][v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 * v));
        sums16[t] = sums(t, b);
      }
      for (int r = 0; r < kPanelRows; ++r) {
        const uint8_t* blk = blocks + r * bb;
        prefetch.end = reinterpret_cast<uintptr_t>(blk + bb) + kPrefetchBytes;
        prefetch.rest();
        __m256i sum[NT];
        row(std::integral_constant<int, NT>{}, blk, xv, sums16, sum);
        const float dw = _cvtsh_ss(quant::load_u16(blk + 208));
        for (int t = 0; t < NT; ++t)
          acc[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[t]), _mm256_set1_ps(dw * dx[t]), acc[t][r]);
      }
    }
    const int64_t rows = std::min<int64_t>(kPanelRows, w.n - p * kPanelRows);
    for (int t = 0; t < NT; ++t) {
      float* out = y + (t0 + t) * ldy + p * kPanelRows;
      for (int64_t r = 0; r < rows; ++r) {
        const float v = k6_hsum(acc[t][r]);
        out[r] = accumulate ? out[r] + v : v;
      }
    }
  }
}

// Panels [p0, p1) x tokens [t0, t1) (1-3) x super-blocks [b0, b1).
template <class Row, class Sums>
void decode_panels_k6_walk(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0,
                           int64_t t1, int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy,
                           const Sums& sums, Row row) {
  switch (t1 - t0) {
    case 1: return decode_panels_k6_tokens<1>(w, a, p0, p1, t0, b0, b1, accumulate, y, ldy, sums, row);
    case 2: return decode_panels_k6_tokens<2>(w, a, p0, p1, t0, b0, b1, accumulate, y, ldy, sums, row);
    default: return decode_panels_k6_tokens<3>(w, a, p0, p1, t0, b0, b1, accumulate, y, ldy, sums, row);
  }
}

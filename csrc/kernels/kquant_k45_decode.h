#pragma once
// Q4_K / Q5_K decode (1-3 tokens) on their panels of 4-byte pieces, shared by the x86 tiers: included inside the
// anonymous namespace of kquant_avx2.cpp and kquant_avx512.cpp (one copy per tier, compiled with its flags).
// Ops::kVnni picks how a step's products are summed: false, vpmaddubsw into int16 pairs summed over a run of steps
// and widened by the sub-block scale with vpmaddwd (AVX2); true, Ops::dp (vpdpbusd on ymm, the AVX-512 VNNI tier)
// straight into int32 lanes, the scale applied by one vpmulld per sub-block. Both give the same integer sums, so
// the same result. The including file defines load_i32 (four bytes as an int32) before it.

inline __m256i k45_mask(const uint8_t* m) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(m)); }

// Q5_K: bit 2 i of each byte of the fifth-bit vector qh onto bit 4 of the low-nibble levels lo (sub-block 2 i),
// bit 2 i + 1 onto the high ones hi (16-bit shifts move no bit across a byte that the mask keeps).
inline void or_fifth_bits(__m256i qh, int i, __m256i& lo, __m256i& hi) {
  const __m256i bit4 = _mm256_set1_epi8(0x10);
  const __m256i ha = 2 * i <= 4 ? _mm256_slli_epi16(qh, 4 - 2 * i) : _mm256_srli_epi16(qh, 2 * i - 4);
  const __m256i hh = 2 * i + 1 <= 4 ? _mm256_slli_epi16(qh, 3 - 2 * i) : _mm256_srli_epi16(qh, 2 * i - 3);
  lo = _mm256_or_si256(lo, _mm256_and_si256(ha, bit4));
  hi = _mm256_or_si256(hi, _mm256_and_si256(hh, bit4));
}

// Q4_K and Q5_K on their panels of 4-byte pieces (kernels_isa.h): one 32-byte load holds 4 nibble bytes of each of
// the 8 rows, its low nibbles 4 levels of sub-block 2 i and its high nibbles 4 of sub-block 2 i + 1 (Q5_K: each
// level's fifth bit or'ed in from the piece of fifth bits at the same 4 positions), so one broadcast of 4
// activations feeds 8 rows. Per 64 weights of 8 rows: one load, three operations for the nibbles (Q5_K: six more),
// two vpmaddubsw (with broadcasts from memory) and two vpaddw summing each sub-block in int16; per sub-block one
// vpshufb spreading the 8 rows' scales and one vpmaddwd + vpaddd applying them (Q5_K: two, its levels' larger
// products allow four steps per int16 sum, not eight). The scales and minima of the 8 rows come out of their 12 bytes
// (three pieces) with nine vector operations; the minima term is four vpmaddwd of the rows' minima pairs with the
// token's sub-block sums. About 26 vector operations per 256 weights and row for Q4_K, where a per-row kernel (one
// row's block per vector: per 32 levels a vpmaddubsw, a vpshufb broadcasting the scale, a vpmaddwd and a vpaddd)
// spent about 60 and ran at 21-22 GB/s on cached weights on a Zen 4 (docs/kernels.md, "Q4_K decode from panels of
// pieces").

// vpshufb masks on vectors of one 32-bit lane per row: kLaneByte[q] puts byte q of each lane into both int16 words
// of the lane (a row's sub-block scale); kLanePair[h] bytes 2 h and 2 h + 1 into its two words (two minima).
alignas(32) constexpr uint8_t kLaneByte[4][32] = {
#define B(q) {q, 0x80, q, 0x80, 4 + q, 0x80, 4 + q, 0x80, 8 + q, 0x80, 8 + q, 0x80, 12 + q, 0x80, 12 + q, 0x80, \
               q, 0x80, q, 0x80, 4 + q, 0x80, 4 + q, 0x80, 8 + q, 0x80, 8 + q, 0x80, 12 + q, 0x80, 12 + q, 0x80}
    B(0), B(1), B(2), B(3)
#undef B
};
alignas(32) constexpr uint8_t kLanePair[2][32] = {
#define B(q) {q, 0x80, q + 1, 0x80, 4 + q, 0x80, 5 + q, 0x80, 8 + q, 0x80, 9 + q, 0x80, 12 + q, 0x80, 13 + q, 0x80, \
               q, 0x80, q + 1, 0x80, 4 + q, 0x80, 5 + q, 0x80, 8 + q, 0x80, 9 + q, 0x80, 12 + q, 0x80, 13 + q, 0x80}
    B(0), B(2)
#undef B
};
// The VNNI walk's kLaneByte: byte q of each lane into the lane's low byte, the rest zero (a scale as an int32).
alignas(32) constexpr uint8_t kLaneByte32[4][32] = {
#define B(q) {q, 0x80, 0x80, 0x80, 4 + q, 0x80, 0x80, 0x80, 8 + q, 0x80, 0x80, 0x80, 12 + q, 0x80, 0x80, 0x80, \
               q, 0x80, 0x80, 0x80, 4 + q, 0x80, 0x80, 0x80, 8 + q, 0x80, 0x80, 0x80, 12 + q, 0x80, 0x80, 0x80}
    B(0), B(1), B(2), B(3)
#undef B
};
// Piece 0 of the 8 rows ([d_r | dmin_r] fp16 words) into [d_0..d_3, m_0..m_3 | d_4..d_7, m_4..m_7].
alignas(32) constexpr uint8_t kFactorOrder[32] = {0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                                  0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15};

template <Kind KIND, int NT, class Ops>
void decode_panels_pieces(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t b0,
                          int64_t b1, bool accumulate, float* y, int64_t ldy) {
  constexpr bool k5 = KIND == Kind::k5;
  constexpr int kNibbles = k5 ? 12 : 4;  // the first nibble piece (Q5_K: after its 8 pieces of fifth bits)
  // Steps summed in int16 before a vpmaddwd: pairs of at most 2 * 15 * 128 = 3840 (Q4_K: eight, 30720) or
  // 2 * 31 * 128 = 7936 (Q5_K: four, 31744) stay below 32767.
  constexpr int kRun = k5 ? 4 : 8;
  const PanelGeometry g = panel_geometry(w.format, w.k);
  const int64_t nbb = b1 - b0;
  const int16_t* xsum = kquant_activation_sums(a, g, t0, t0 + NT, b0, b1, false);  // [t][b][8] sums of 32
  const __m256i nib = _mm256_set1_epi8(0x0F), m3f = _mm256_set1_epi8(0x3F), m30 = _mm256_set1_epi8(0x30);
  // A panel super-block: 18 (Q4_K) or 22 (Q5_K) lines, a quarter before each pair of sub-blocks.
  constexpr int kLines = (k5 ? 176 : 144) * kPanelRows / 64;
  const bool l2 = decode_prefetch_l2();
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = w.data + p * g.stride;
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = b0; b < b1; ++b) {
      const uint8_t* sb = panel + b * g.qbytes;
      const auto piece = [sb](int c) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sb + piece_offset(c, 0)));
      };
      const int8_t* x[NT];
      for (int t = 0; t < NT; ++t) x[t] = a.q + (t0 + t) * a.k + b * g.group;
      // scales: bytes 0..3 of each lane hold the row's sub-block scales 0..3 (lo) and 4..7 (hi); minima alike
      const __m256i u0 = piece(1), u1 = piece(2), u2 = piece(3);
      const __m256i sc_lo = _mm256_and_si256(u0, m3f);
      const __m256i sc_hi = _mm256_or_si256(_mm256_and_si256(u2, nib), _mm256_and_si256(_mm256_srli_epi32(u0, 2), m30));
      __m256i dot[NT];
      for (int t = 0; t < NT; ++t) dot[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 5
        for (int l = i * kLines / 4; l < (i + 1) * kLines / 4; ++l)
          SpreadPrefetch::line(reinterpret_cast<uintptr_t>(sb) + kPrefetchBytes + 64 * l, l2);
        const __m256i scales = i < 2 ? sc_lo : sc_hi;
        // the sub-block scales of the 8 rows: in both int16 words of a lane (vpmaddwd), or as the lane's int32
        const auto& lanes = Ops::kVnni ? kLaneByte32 : kLaneByte;
        const __m256i se = _mm256_shuffle_epi8(scales, k45_mask(lanes[(2 * i) & 3]));
        const __m256i so = _mm256_shuffle_epi8(scales, k45_mask(lanes[(2 * i + 1) & 3]));
        // step s: 4 levels of each row in sub-block 2 i (lo) and 2 i + 1 (hi), and the 4 activations for each
        const auto levels = [&](int s, __m256i& lo, __m256i& hi) __attribute__((always_inline)) {
          const __m256i raw = piece(kNibbles + 8 * i + s);
          lo = _mm256_and_si256(raw, nib), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nib);
          if constexpr (k5) or_fifth_bits(piece(4 + s), i, lo, hi);
        };
        const auto acts = [&](int t, int s, int half) __attribute__((always_inline)) {
          return _mm256_set1_epi32(load_i32(x[t] + 64 * i + 32 * half + 4 * s));
        };
        __m256i even[NT], odd[NT];
        if constexpr (Ops::kVnni) {
          // vpdpbusd: each row's 4 products summed into its int32 lane, all 8 steps of a sub-block in int32
          // (at most 8 * 4 * 31 * 128), then the sub-block's scale applied to the lane by one vpmulld.
          for (int t = 0; t < NT; ++t) even[t] = odd[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
          for (int s = 0; s < 8; ++s) {
            __m256i lo, hi;
            levels(s, lo, hi);
            for (int t = 0; t < NT; ++t) {
              even[t] = Ops::dp(even[t], lo, acts(t, s, 0));
              odd[t] = Ops::dp(odd[t], hi, acts(t, s, 1));
            }
          }
          for (int t = 0; t < NT; ++t)
            dot[t] = _mm256_add_epi32(dot[t], _mm256_add_epi32(_mm256_mullo_epi32(even[t], se),
                                                               _mm256_mullo_epi32(odd[t], so)));
          continue;
        }
        // int16 sums of sub-blocks 2 i and 2 i + 1 over a run of kRun steps, widened by vpmaddwd
#pragma GCC unroll 8
        for (int s = 0; s < 8; ++s) {
          __m256i lo, hi;
          levels(s, lo, hi);
          for (int t = 0; t < NT; ++t) {
            const __m256i pe = _mm256_maddubs_epi16(lo, acts(t, s, 0));
            const __m256i po = _mm256_maddubs_epi16(hi, acts(t, s, 1));
            even[t] = s % kRun ? _mm256_add_epi16(even[t], pe) : pe;
            odd[t] = s % kRun ? _mm256_add_epi16(odd[t], po) : po;
            if (s % kRun == kRun - 1)
              dot[t] = _mm256_add_epi32(dot[t], _mm256_add_epi32(_mm256_madd_epi16(even[t], se),
                                                                 _mm256_madd_epi16(odd[t], so)));
          }
        }
      }
      const __m256i mn_lo = _mm256_and_si256(u1, m3f);
      const __m256i mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), nib),
                                            _mm256_and_si256(_mm256_srli_epi32(u1, 2), m30));
      const __m256i mins[4] = {_mm256_shuffle_epi8(mn_lo, k45_mask(kLanePair[0])),
                               _mm256_shuffle_epi8(mn_lo, k45_mask(kLanePair[1])),
                               _mm256_shuffle_epi8(mn_hi, k45_mask(kLanePair[0])),
                               _mm256_shuffle_epi8(mn_hi, k45_mask(kLanePair[1]))};
      const __m256i dm = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(piece(0), k45_mask(kFactorOrder)), 0xD8);
      const __m256 d = _mm256_cvtph_ps(_mm256_castsi256_si128(dm));
      const __m256 m = _mm256_cvtph_ps(_mm256_extracti128_si256(dm, 1));
      for (int t = 0; t < NT; ++t) {
        const int16_t* xs = xsum + (t * nbb + (b - b0)) * 8;  // S_0..S_7: pairs as int32 words
        __m256i off = _mm256_madd_epi16(mins[0], _mm256_set1_epi32(load_i32(xs)));
        for (int h = 1; h < 4; ++h)
          off = _mm256_add_epi32(off, _mm256_madd_epi16(mins[h], _mm256_set1_epi32(load_i32(xs + 2 * h))));
        const __m256 dx = _mm256_set1_ps(a.d[(t0 + t) * g.nb + b]);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[t]), _mm256_mul_ps(d, dx), acc[t]);
        acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(off), _mm256_mul_ps(m, dx), acc[t]);
      }
    }
    const int64_t rows = std::min<int64_t>(kPanelRows, w.n - p * kPanelRows);
    for (int t = 0; t < NT; ++t) {
      float* out = y + (t0 + t) * ldy + p * kPanelRows;
      alignas(32) float v[8];
      _mm256_store_ps(v, acc[t]);
      for (int64_t r = 0; r < rows; ++r) out[r] = accumulate ? out[r] + v[r] : v[r];
    }
  }
}

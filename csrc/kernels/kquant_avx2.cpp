// AVX2 products of the K-quants (Q4_K, Q5_K, Q6_K) with int8 activations quantized per super-block of 256.
// Decode (T <= 3). Q4_K and Q5_K (decode_panels_pieces) read their panels of 4-byte pieces (kernels_isa.h) 8 rows at
// a time: one broadcast of 4 activations feeds the 8 rows, each sub-block summed in int16 and scaled once for the 8
// rows. Q6_K (decode_panels_k6) reads each row's block straight from the GGUF bytes: per 32 levels one vpmaddubsw
// into pair sums, one vpmaddwd by the sub-block scale, the offset term (-32) one vpmaddwd of the row's 16 offsets
// with the 16 sums of 16 activations, converted to float once per row and super-block. Prefill
// (gemm_panels_interleaved) unpacks each 8-row panel super-block once per 128 tokens into a tile whose vectors hold
// 4 levels of each of the 8 rows, so one broadcast of 4 activations feeds 8 rows (16: two panels at a time), and
// applies the scales in integers once per run of int16 sums. Same panel layout and result as the scalar kernel
// (kernels_scalar.cpp) up to float rounding.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/transpose_avx2.h"
#include "kernels/asm_bytes.h"
#include "kernels/kernels_isa.h"
#include "kernels/kquant_tiles.h"

namespace bluelm::kernels {
namespace {

#include "kernels/kquant_k6_decode.h"

// The 16 sums of 16 activations of a super-block (each at most 16 * 127: int16), from the pair sums xs[v] of the
// 8 vectors of 32: lanes [S0, S2, .., S14 | S1, S3, .., S15] (vphaddd works within 128-bit halves).
inline __m256i activation_sums16(const __m256i* xs) {
  const __m256i one16 = _mm256_set1_epi16(1);
  __m256i s[8];
  for (int v = 0; v < 8; ++v) s[v] = _mm256_madd_epi16(xs[v], one16);  // sums of 4
  const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
  const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
  return _mm256_packs_epi32(a, b);
}

// Q4_K / Q5_K: [8 scales | 8 minima] (each 0..63) from the 12 packed bytes (GGUF's get_scale_min_k4 for j = 0..7),
// in one xmm. As 32-bit words u0 u1 u2 of the bytes: scales 0..3 = u0 & 0x3f.., minima 0..3 = u1 & 0x3f..,
// scales 4..7 = (u2 & 0x0f..) | ((u0 >> 6) & 3..) << 4, minima 4..7 = ((u2 >> 4) & 0x0f..) | ((u1 >> 6) & 3..) << 4.
// Reads 16 bytes from sb: the block goes on past its 12 scale bytes (its levels follow).
inline __m128i scales_mins_k45(const uint8_t* sb) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sb));
  const __m128i a = _mm_shuffle_epi32(v, 0x98);  // u0 u2 u1 u2
  const __m128i b = _mm_shuffle_epi32(v, 0x50);  // u0 u0 u1 u1
  const __m128i low = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                                    _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
  const __m128i top = _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
  return _mm_or_si128(low, top);  // scales 0..3, 4..7, minima 0..3, 4..7
}

// The levels (0..63) of Q6_K half h (128 elements) as 4 vectors of 32: q[s] holds elements 128h + 32s .. + 31.
// Element 128h + 32s + l has its low 4 bits in byte 64h + 32(s % 2) + l (low nibble for s < 2, high for s >= 2)
// and its top 2 bits in bits 2s..2s+1 of byte 128 + 32h + l; those land on bits 4-5 by one shift and a mask (the
// 16-bit shifts move no bit across a byte that the mask keeps). k6_combine does it from the three vectors of bytes
// (l0 at 64h, l1 at 64h + 32, hb at 128 + 32h); bytewise, so it also assembles the levels of bytes moved as whole
// 32-bit lanes (interleave_k6's transposes); k6_levels loads them from a block.
inline void k6_combine(__m256i l0, __m256i l1, __m256i hb, __m256i (&q)[4]) {
  const __m256i low = _mm256_set1_epi8(0x0F), top = _mm256_set1_epi8(0x30);
  q[0] = _mm256_or_si256(_mm256_and_si256(l0, low), _mm256_and_si256(_mm256_slli_epi16(hb, 4), top));
  q[1] = _mm256_or_si256(_mm256_and_si256(l1, low), _mm256_and_si256(_mm256_slli_epi16(hb, 2), top));
  q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), _mm256_and_si256(hb, top));
  q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low),
                         _mm256_and_si256(_mm256_srli_epi16(hb, 2), top));
}
inline void k6_levels(const uint8_t* blk, int h, __m256i (&q)[4]) {
  k6_combine(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h)),
             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32)),
             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h)), q);
}

// ---- Decode (1-3 tokens): straight from the GGUF bytes, nothing stored. ----
// A decode tile reads each super-block once per token, so unpacking it into memory first (the GEMM path above,
// which shares that work over up to 32 tokens) cost more than the products. Here each row's block goes from its
// bytes to the products in registers: the 12 bytes of 6-bit scales and minima are spread into 16 bytes with a few
// 32-bit shifts and masks, widened to int16 once, and vpshufb broadcasts a sub-block's scale.

inline __m256i mask(const uint8_t* m) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(m)); }

// Q6_K: dot - off in one vector (the offset 32 * sc_j carries the same factor d).
// NT tokens (1-3: a decode step, or int16 activations' two passes) share the row's levels and scales; each token's
// sums are computed as for one token alone (the same integers).
template <int NT>
inline void row_k6(const uint8_t* blk, const __m256i (*xv)[8], const __m256i* sums16, __m256i* out) {
  const __m128i s8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192));
  // offsets in activation_sums16's order: sub-blocks 0, 2, .., 14 | 1, 3, .., 15, times 32
  const __m128i even_odd = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  const __m256i off32 = _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_shuffle_epi8(s8, even_odd)), 5);
  const __m256i s16 = _mm256_cvtepi8_epi16(s8);  // sub-blocks 0..7 | 8..15
  const __m256i lo_half = _mm256_permute2x128_si256(s16, s16, 0x00);
  const __m256i hi_half = _mm256_permute2x128_si256(s16, s16, 0x11);
  __m256i d0[NT], d1[NT];
  for (int t = 0; t < NT; ++t) d0[t] = d1[t] = _mm256_setzero_si256();
  for (int h = 0; h < 2; ++h) {
    __m256i q[4];
    k6_levels(blk, h, q);
    const __m256i half = h == 0 ? lo_half : hi_half;
    for (int s = 0; s < 4; ++s) {
      const __m256i sc = _mm256_shuffle_epi8(half, mask(kPairMask[s]));
      for (int t = 0; t < NT; ++t) {
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[s], xv[t][4 * h + s]), sc);
        if (s & 1)
          d1[t] = _mm256_add_epi32(d1[t], p);
        else
          d0[t] = _mm256_add_epi32(d0[t], p);
      }
    }
  }
  for (int t = 0; t < NT; ++t)
    out[t] = _mm256_sub_epi32(_mm256_add_epi32(d0[t], d1[t]), _mm256_madd_epi16(sums16[t], off32));
}

// The activations' 16 sums of 16 per token and super-block, taken once per call rather than once per panel (31
// instructions per panel, block and token: ~4 per row and super-block). Up to kCached super-blocks (K up to
// 16384); beyond that they are taken per panel.
class DecodeSums {
 public:
  DecodeSums(const QuantizedActs& a, int64_t t0, int64_t nt, int64_t b0, int64_t b1, int group)
      : a_(a), t0_(t0), b0_(b0), group_(group), cache_(b1 - b0 <= kCached) {
    if (cache_)
      for (int64_t t = 0; t < nt; ++t)
        for (int64_t b = b0; b < b1; ++b) cached_[t][b - b0] = compute(t, b);
  }
  __m256i get(int64_t t, int64_t b) const { return cache_ ? cached_[t][b - b0_] : compute(t, b); }

 private:
  static constexpr int64_t kCached = 64;
  __m256i compute(int64_t t, int64_t b) const {
    const int8_t* x = a_.q + (t0_ + t) * a_.k + b * group_;
    const __m256i ones = _mm256_set1_epi8(1);
    __m256i xs[8];
    for (int v = 0; v < 8; ++v)
      xs[v] = _mm256_maddubs_epi16(ones, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 * v)));
    return activation_sums16(xs);
  }
  const QuantizedActs& a_;
  int64_t t0_, b0_;
  int group_;
  bool cache_;
  alignas(32) __m256i cached_[3][kCached];
};

// Four bytes at p as an int32 (unaligned): fp16 factor words here, activation quads in the prefill tiles.
inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q4_K and Q5_K decode on their panels of 4-byte pieces: kquant_k45_decode.h (the AVX-512 tier runs the same
// walk with vpdpbusd).
struct K45Maddubs {
  static constexpr bool kVnni = false;
  static __m256i dp(__m256i acc, __m256i u, __m256i s);  // never called: kVnni is false
};
#include "kernels/kquant_k45_decode.h"

// Q6_K: each row's block straight from the GGUF bytes (row_k6), the offsets in activation_sums16's order.
void decode_panels_k6(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                      int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const DecodeSums sums(a, t0, t1 - t0, b0, b1, panel_geometry(w.format, w.k).group);
  decode_panels_k6_walk(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy,
                        [&sums](int64_t t, int64_t b) { return sums.get(t, b); },
                        [](auto nt, const uint8_t* blk, const __m256i(*xv)[8], const __m256i* s16, __m256i* out) {
                          row_k6<decltype(nt)::value>(blk, xv, s16, out);
                        });
}

// ---- Prefill GEMM of Q4_K / Q5_K: the panel's 8 rows interleaved as the int4 panels are. ----
// The per-row GEMM below (Q6_K's) spends a vpmaddwd per 32 weights, row and token applying the sub-block scale in
// integers: two multiplies per 32 products, which caps it near half of the vpmaddubsw + vpaddw probe. Here each
// panel super-block is unpacked once per 128 tokens into a tile whose 32-byte vectors hold 4 levels of each of the
// 8 rows, so one broadcast of 4 activations feeds all 8 rows (and, two panels at a time, 16): per sub-block of 32
// weights and token, 8 vpmaddubsw per panel sum in int16 (a pair is at most 2 * 15 * 128 = 3840 for Q4_K, eight of
// them 30720 < 32767; Q5_K's 2 * 31 * 128 = 7936 allows four, so two vpmaddwd), and one vpmaddwd by the rows'
// sub-block scales (int16 pairs) widens them to one int32 lane per row, already scaled; the super-block's int32 sums
// are converted once. The minima term is per super-block too: the rows' minima times the token's sub-block
// activation sums (taken once per call), in integers.
// Measured in docs/kernels.md ("Chunk-128 GEMM against its mix ceiling"): 0.25-0.29 -> 0.53-0.56 of the probe with
// the scales applied in float per sub-block; this integer form in the same section. The tile (InterleavedK45) is in
// kquant_tiles.h: the AVX-512 tier's VNNI GEMM uses it too.

// The `rows` (<= 8) rows' 32 bytes at `offset` of their blocks (bb apart; missing rows: zero), transposed as
// 32-bit lanes: lane r of f[s] is bytes 4 s .. 4 s + 3 of row r.
inline void rows_transposed(const uint8_t* blocks, int bb, int64_t rows, int offset, __m256 (&f)[8]) {
  for (int r = 0; r < kPanelRows; ++r)
    f[r] = r < rows ? _mm256_loadu_ps(reinterpret_cast<const float*>(blocks + r * bb + offset)) : _mm256_setzero_ps();
  transpose8(f);
}

// The 8 rows of 16 bytes transposed: column c (the 8 rows' byte c) in the low (c even) or high (c odd) 8 bytes of
// out[c / 2]. Three rounds of unpacks (bytes, words, dwords) instead of 128 scalar moves.
inline void transpose_8x16(const uint8_t (&rows)[8][16], __m128i (&out)[8]) {
  __m128i r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm_load_si128(reinterpret_cast<const __m128i*>(rows[i]));
  __m128i a[8];  // a[2k]: rows 2k, 2k + 1 for columns 0..7; a[2k + 1]: columns 8..15
  for (int k = 0; k < 4; ++k) {
    a[2 * k] = _mm_unpacklo_epi8(r[2 * k], r[2 * k + 1]);
    a[2 * k + 1] = _mm_unpackhi_epi8(r[2 * k], r[2 * k + 1]);
  }
  for (int half = 0; half < 2; ++half) {  // columns 8 half ..
    // rows 0-3 and 4-7, four columns per vector
    const __m128i b0 = _mm_unpacklo_epi16(a[half], a[2 + half]), b1 = _mm_unpackhi_epi16(a[half], a[2 + half]);
    const __m128i c0 = _mm_unpacklo_epi16(a[4 + half], a[6 + half]), c1 = _mm_unpackhi_epi16(a[4 + half], a[6 + half]);
    out[4 * half + 0] = _mm_unpacklo_epi32(b0, c0);
    out[4 * half + 1] = _mm_unpackhi_epi32(b0, c0);
    out[4 * half + 2] = _mm_unpacklo_epi32(b1, c1);
    out[4 * half + 3] = _mm_unpackhi_epi32(b1, c1);
  }
}

}  // namespace

// The `rows` (<= 8) rows of one panel super-block (its blocks' 4-byte pieces, kernels_isa.h) into the interleaved
// tile (missing rows: zero). A piece vector (32 bytes: the same 4 bytes of the 8 rows) of nibbles holds the low
// nibbles of sub-block 2 i and the high nibbles of sub-block 2 i + 1; of Q5_K's fifth bits, the bits of all eight.
void interleave_k45(Kind kind, const uint8_t* sb, int64_t rows, InterleavedK45& tile) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  const int qs_at = kind == Kind::k4 ? 16 : 48;
  alignas(16) uint8_t sm[8][16];  // [r]: scales 0..7, minima 0..7
  for (int r = 0; r < kPanelRows; ++r) {
    if (r >= rows) {
      std::memset(sm[r], 0, 16);
      tile.d[r] = tile.m[r] = 0.0f;
      continue;
    }
    alignas(16) uint8_t head[20] = {};  // the row's bytes 0..19 (scales_mins_k45 reads 16 from byte 4)
    for (int c = 0; c < 4; ++c) std::memcpy(head + 4 * c, sb + piece_offset(c, r), 4);
    _mm_store_si128(reinterpret_cast<__m128i*>(sm[r]), scales_mins_k45(head + 4));
    tile.d[r] = _cvtsh_ss(quant::load_u16(head));
    tile.m[r] = _cvtsh_ss(quant::load_u16(head + 2));
  }
  __m128i col[8];  // col[v]: the rows' scale (v < 4) or minimum (v >= 4) 2 v, 2 v + 1 (low and high 8 bytes)
  transpose_8x16(sm, col);
  for (int v = 0; v < 4; ++v) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile.sc[2 * v]),
                       _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(col[v], col[v])));
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile.sc[2 * v + 1]),
                       _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(col[v], col[v])));
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile.mn[v]),
                       _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(col[4 + v], _mm_unpackhi_epi64(col[4 + v], col[4 + v]))));
  }
  const auto gather = [&](int offset, __m256 (&f)[8]) {  // the 8 piece vectors from byte `offset` of the blocks
    for (int s = 0; s < 8; ++s)
      f[s] = _mm256_loadu_ps(reinterpret_cast<const float*>(sb + piece_offset(offset / 4 + s, 0)));
  };
  __m256 h[8] = {};  // Q5_K: the fifth bits, transposed
  if (kind == Kind::k5) gather(16, h);
  for (int i = 0; i < 4; ++i) {
    __m256 f[8];
    gather(qs_at + 32 * i, f);
    for (int s = 0; s < 8; ++s) {
      const __m256i v = _mm256_castps_si256(f[s]);
      __m256i a = _mm256_and_si256(v, low), b = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
      if (kind == Kind::k5) or_fifth_bits(_mm256_castps_si256(h[s]), i, a, b);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile.q[2 * i][s]), a);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tile.q[2 * i + 1][s]), b);
    }
  }
}

namespace {

// Four tokens x N steps of 4 levels (N = 8: a Q4_K sub-block; N = 4: half of a Q5_K one; N = 2: a quarter of a
// Q6_K one) of two interleaved tiles: a[m] / b[m] (int16 lanes, one row per 32-bit lane pair) = sum of levels x
// activations of token m for the tile at w0 / w1. In assembly because gcc 12 computes every product of the
// intrinsics version before adding any and spills half of them to the stack (the int4 panels' GEMM in
// kernels_avx2.cpp met the same). Uses 12 ymm registers.
#define K45_LOAD(J) "vmovdqa " #J "*32(%[w0]), %[l0]\n\t vmovdqa " #J "*32(%[w1]), %[l1]\n\t"
#define K45_FIRST(J, XA, A, B)                                                                                   \
  "vpbroadcastd " #J "*4" XA ", %[t]\n\t vpmaddubsw %[t], %[l0], %[" A "]\n\t vpmaddubsw %[t], %[l1], %[" B "]\n\t"
#define K45_NEXT(J, XA, A, B)                                                                                    \
  "vpbroadcastd " #J "*4" XA ", %[t]\n\t vpmaddubsw %[t], %[l0], %[p]\n\t vpaddw %[p], %[" A "], %[" A "]\n\t"     \
  "vpmaddubsw %[t], %[l1], %[t]\n\t vpaddw %[t], %[" B "], %[" B "]\n\t"
#define K45_STEP(J, OP)                                                                                          \
  K45_LOAD(J) OP(J, "(%[x])", "a0", "b0") OP(J, "(%[x],%[k],1)", "a1", "b1") OP(J, "(%[x],%[k],2)", "a2", "b2")  \
      OP(J, "(%[x],%[k3],1)", "a3", "b3")
#define K45_OPERANDS                                                                                             \
  : [a0] "=&x"(a[0]), [a1] "=&x"(a[1]), [a2] "=&x"(a[2]), [a3] "=&x"(a[3]), [b0] "=&x"(b[0]), [b1] "=&x"(b[1]),  \
    [b2] "=&x"(b[2]), [b3] "=&x"(b[3]), [l0] "=&x"(l0), [l1] "=&x"(l1), [t] "=&x"(t), [p] "=&x"(p)              \
  : [w0] "r"(w0), [w1] "r"(w1), [x] "r"(x), [k] "r"(k), [k3] "r"(k3), "m"(bytes_at<32 * N>(w0)),                \
    "m"(bytes_at<32 * N>(w1)), "m"(bytes_at<4 * N>(x)), "m"(bytes_at<4 * N>(x + k)),                           \
    "m"(bytes_at<4 * N>(x + 2 * k)), "m"(bytes_at<4 * N>(x + k3))
template <int N>
inline void k45_p2m4(const uint8_t* w0, const uint8_t* w1, const int8_t* x, int64_t k, __m256i (&a)[4],
                     __m256i (&b)[4]) {
  static_assert(N == 2 || N == 4 || N == 8, "a Q4_K sub-block, half a Q5_K one or a quarter of a Q6_K one");
  __m256i l0, l1, t, p;
  const int64_t k3 = 3 * k;
  if constexpr (N == 8)
    __asm__(K45_STEP(0, K45_FIRST) K45_STEP(1, K45_NEXT) K45_STEP(2, K45_NEXT) K45_STEP(3, K45_NEXT)
                K45_STEP(4, K45_NEXT) K45_STEP(5, K45_NEXT) K45_STEP(6, K45_NEXT) K45_STEP(7, K45_NEXT) K45_OPERANDS);
  else if constexpr (N == 4)
    __asm__(K45_STEP(0, K45_FIRST) K45_STEP(1, K45_NEXT) K45_STEP(2, K45_NEXT) K45_STEP(3, K45_NEXT) K45_OPERANDS);
  else
    __asm__(K45_STEP(0, K45_FIRST) K45_STEP(1, K45_NEXT) K45_OPERANDS);
}
#undef K45_LOAD
#undef K45_FIRST
#undef K45_NEXT
#undef K45_STEP
#undef K45_OPERANDS

// The int32 sums of the tile block: isum[u][pn] += vpmaddwd(int16 sums of token u and panel pn, the rows' scales).
// In registers they and the assembly's 12 need more than 16, so gcc spills some; measured in one process against
// the alternative of the assembly accumulating into memory itself (a vpaddd from memory and a store per token and
// panel), this is faster for all three formats: Q4_K by 3%, Q5_K by 7%, Q6_K by 12%.
template <int NT, int NP>
inline void scale_into(const __m256i (&sa)[4], const __m256i (&sb)[4], const int16_t* sc0, const int16_t* sc1,
                       __m256i (&isum)[NT][NP]) {
  const __m256i s0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(sc0));
  const __m256i s1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(sc1));
  for (int u = 0; u < NT; ++u) {
    isum[u][0] = _mm256_add_epi32(isum[u][0], _mm256_madd_epi16(sa[u], s0));
    isum[u][NP - 1] = _mm256_add_epi32(isum[u][NP - 1], _mm256_madd_epi16(sb[u], s1));
  }
}

// The tails of the tile blocks (a single panel or fewer than 4 tokens), in intrinsics: steps [s0, s1) of sub-block j
// summed in int16, then scaled by the rows' scales tiles[pn].sc[sc_row] into isum.
template <int NT, int NP, class Tile>
inline void tail_run(const Tile* tiles, const int8_t* const* x, int j, int s0, int s1, int sc_row,
                     __m256i (&isum)[NT][NP]) {
  __m256i s16[NT][NP];
  for (int u = 0; u < NT; ++u)
    for (int pn = 0; pn < NP; ++pn) s16[u][pn] = _mm256_setzero_si256();
#pragma GCC unroll 8
  for (int st = s0; st < s1; ++st) {
    __m256i lv[NP];
    for (int pn = 0; pn < NP; ++pn) lv[pn] = _mm256_load_si256(reinterpret_cast<const __m256i*>(tiles[pn].q[j][st]));
    for (int u = 0; u < NT; ++u) {
      const __m256i xv = _mm256_set1_epi32(load_i32(x[u] + 32 * j + 4 * st));
      for (int pn = 0; pn < NP; ++pn) s16[u][pn] = _mm256_add_epi16(s16[u][pn], _mm256_maddubs_epi16(lv[pn], xv));
    }
  }
  for (int pn = 0; pn < NP; ++pn) {
    const __m256i sc = _mm256_load_si256(reinterpret_cast<const __m256i*>(tiles[pn].sc[sc_row]));
    for (int u = 0; u < NT; ++u) isum[u][pn] = _mm256_add_epi32(isum[u][pn], _mm256_madd_epi16(s16[u][pn], sc));
  }
}

// The tile block's int32 sums: isum[u][pn] = sum over sub-blocks j and runs of STEPS steps of the run's int16 sums
// scaled by the rows' scales tiles[pn].sc[sc_row(j, run)]. Two panels x 4 tokens in the assembly block, the tails
// (a single panel or fewer than 4 tokens) in intrinsics.
template <int STEPS, int NT, int NP, class Tile, class ScRow>
inline void tile_sums(const Tile* tiles, const QuantizedActs& a, const PanelGeometry& g, int64_t b, int64_t t,
                      ScRow sc_row, __m256i (&isum)[NT][NP]) {
  const int8_t* x[NT];
  for (int u = 0; u < NT; ++u) x[u] = a.q + (t + u) * a.k + b * g.group;
  for (int u = 0; u < NT; ++u)
    for (int pn = 0; pn < NP; ++pn) isum[u][pn] = _mm256_setzero_si256();
#pragma GCC unroll 1
  for (int j = 0; j < 8; ++j) {
    for (int run = 0; run < 8 / STEPS; ++run) {
      const int row = sc_row(j, run);
      if constexpr (NT == 4 && NP == 2) {
        __m256i sa[4], sb[4];
        k45_p2m4<STEPS>(tiles[0].q[j][run * STEPS], tiles[1].q[j][run * STEPS], x[0] + 32 * j + 4 * run * STEPS,
                        a.k, sa, sb);
        scale_into(sa, sb, tiles[0].sc[row], tiles[1].sc[row], isum);
      } else {
        tail_run(tiles, x, j, run * STEPS, (run + 1) * STEPS, row, isum);
      }
    }
  }
}

// NT tokens t..t+NT against NP panels' super-block b: acc[pn][u] (rows as lanes) += the products. As in the int4
// panels' GEMM, one broadcast of 4 activations feeds both panels' `vpmaddubsw` and one load of a panel's levels feeds
// the NT tokens, so per multiply the loop issues half a broadcast, a quarter of a load and one `vpaddw` (the
// per-panel, per-token loop issued a broadcast and a load per multiply). Per token, panel and sub-block one
// `vpmaddwd` of the int16 sums by the rows' sub-block scales widens and scales them at once, and one `vpaddd` adds
// them to the super-block's int32 sum (at most 8 x 2 x 63 x 30720 for Q4_K, 8 x 2 x 2 x 63 x 31744 for Q5_K:
// far inside int32). Per super-block the minima are four `vpmaddwd` of the rows' minima with the token's sub-block
// activation sums (int16 pairs, taken once per call), and the float work is two conversions, the rows' D and M and
// the token's scale: value = dx * (D * sum(sc * q * x) - M * sum(mn * S)).
template <Kind KIND, int NT, int NP>
inline void k45_block(const InterleavedK45* tiles, const QuantizedActs& a, const PanelGeometry& g, int64_t b,
                      int64_t t, const int16_t* xs, int64_t xs_stride, float* const* acc) {
  __m256i isum[NT][NP];
  constexpr int kSteps = KIND == Kind::k4 ? 8 : 4;  // vpmaddubsw summed in int16 before widening
  tile_sums<kSteps>(tiles, a, g, b, t, [](int j, int) { return j; }, isum);
  for (int u = 0; u < NT; ++u) {
    const __m256 dx = _mm256_set1_ps(a.d[(t + u) * g.nb + b]);
    __m256i sp[4];  // the token's sub-block sums, pairs (2 jp, 2 jp + 1) in every lane
    for (int jp = 0; jp < 4; ++jp)
      sp[jp] = _mm256_set1_epi32(load_i32(xs + u * xs_stride + 2 * jp));
    for (int pn = 0; pn < NP; ++pn) {
      const InterleavedK45& tl = tiles[pn];
      __m256i mins = _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(tl.mn[0])), sp[0]);
      for (int jp = 1; jp < 4; ++jp)
        mins = _mm256_add_epi32(
            mins, _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(tl.mn[jp])), sp[jp]));
      const __m256 v = _mm256_fmsub_ps(_mm256_load_ps(tl.d), _mm256_cvtepi32_ps(isum[u][pn]),
                                       _mm256_mul_ps(_mm256_load_ps(tl.m), _mm256_cvtepi32_ps(mins)));
      float* out = acc[pn] + u * kPanelRows;
      _mm256_store_ps(out, _mm256_fmadd_ps(v, dx, _mm256_load_ps(out)));
    }
  }
}

// ---- Prefill GEMM of Q6_K: the same interleaved tile, with Q6_K's 6-bit levels and 16 scales per super-block. ----
// A vpmaddubsw pair of 6-bit levels reaches 2 * 63 * 128 = 16128, so the int16 sums hold two steps: per sub-block
// of 32 weights, token and panel, four runs of two steps, each widened by one vpmaddwd by the rows' scales of its
// 16 weights (signed int8 scales as int16 pairs) and added to the super-block's int32 sums (at most 16 x 128 x 16 x
// 63 x 128: 2^28). The offset of 32 is one integer term per super-block: 32 times the rows' scales times the token's
// 16 sums of 16 activations (eight vpmaddwd), subtracted before the one conversion.

}  // namespace

// The `rows` (<= 8) blocks of one panel super-block into the interleaved tile (missing rows: zero). Element
// 128 h + 32 s + l (sub-block 4 h + s) has its low 4 bits in byte 64 h + 32 (s % 2) + l (low nibble for s < 2,
// high for s >= 2) and its top 2 bits in bits 2 s, 2 s + 1 of byte 128 + 32 h + l: six 8 x 8 transposes of packed
// bytes serve the eight sub-blocks.
void interleave_k6(const uint8_t* blocks, int bb, int64_t rows, InterleavedK6& tile) {
  alignas(16) uint8_t sc[8][16];  // [r]: the 16 int8 scales
  for (int r = 0; r < kPanelRows; ++r) {
    if (r >= rows) {
      std::memset(sc[r], 0, 16);
      tile.d[r] = 0.0f;
      continue;
    }
    std::memcpy(sc[r], blocks + r * bb + 192, 16);
    tile.d[r] = _cvtsh_ss(quant::load_u16(blocks + r * bb + 208));
  }
  __m128i col[8];  // col[v]: the rows' scales 2 v and 2 v + 1 (low and high 8 bytes)
  transpose_8x16(sc, col);
  for (int v = 0; v < 8; ++v) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile.sc[2 * v]),
                       _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(col[v], col[v])));
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile.sc[2 * v + 1]),
                       _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(col[v], col[v])));
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile.sp[v]),
                       _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(col[v], _mm_unpackhi_epi64(col[v], col[v]))));
  }
  const auto gather = [&](int offset, __m256 (&f)[8]) { rows_transposed(blocks, bb, rows, offset, f); };
  for (int h = 0; h < 2; ++h) {
    __m256 l0[8], l1[8], hb[8];
    gather(64 * h, l0);
    gather(64 * h + 32, l1);
    gather(128 + 32 * h, hb);
    for (int s = 0; s < 8; ++s) {
      __m256i q[4];
      k6_combine(_mm256_castps_si256(l0[s]), _mm256_castps_si256(l1[s]), _mm256_castps_si256(hb[s]), q);
      for (int i = 0; i < 4; ++i) _mm256_store_si256(reinterpret_cast<__m256i*>(tile.q[4 * h + i][s]), q[i]);
    }
  }
}

namespace {

// NT tokens t..t+NT against NP panels' Q6_K super-block b: acc[pn][u] (rows as lanes) += the products.
template <int NT, int NP>
inline void k6_block(const InterleavedK6* tiles, const QuantizedActs& a, const PanelGeometry& g, int64_t b, int64_t t,
                     const int16_t* xs, int64_t xs_stride, float* const* acc) {
  __m256i isum[NT][NP];
  // runs of two steps (weights 32 j + 8 run .. + 7), scaled by the scale of their 16 weights
  tile_sums<2>(tiles, a, g, b, t, [](int j, int run) { return 2 * j + run / 2; }, isum);
  for (int u = 0; u < NT; ++u) {
    const __m256 dx = _mm256_set1_ps(a.d[(t + u) * g.nb + b]);
    __m256i sp[8];  // the token's sums of 16 activations, pairs (2 ip, 2 ip + 1) in every lane
    for (int ip = 0; ip < 8; ++ip)
      sp[ip] = _mm256_set1_epi32(load_i32(xs + u * xs_stride + 2 * ip));
    for (int pn = 0; pn < NP; ++pn) {
      const InterleavedK6& tl = tiles[pn];
      __m256i off = _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(tl.sp[0])), sp[0]);
      for (int ip = 1; ip < 8; ++ip)
        off = _mm256_add_epi32(
            off, _mm256_madd_epi16(_mm256_load_si256(reinterpret_cast<const __m256i*>(tl.sp[ip])), sp[ip]));
      const __m256i total = _mm256_sub_epi32(isum[u][pn], _mm256_slli_epi32(off, 5));
      const __m256 v = _mm256_mul_ps(_mm256_load_ps(tl.d), _mm256_cvtepi32_ps(total));
      float* out = acc[pn] + u * kPanelRows;
      _mm256_store_ps(out, _mm256_fmadd_ps(v, dx, _mm256_load_ps(out)));
    }
  }
}

// The GEMM of the interleaved tiles: Q4_K / Q5_K (InterleavedK45, k45_block) and Q6_K (InterleavedK6, k6_block).
template <Kind KIND>
void gemm_panels_interleaved(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0,
                             int64_t t1, int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  constexpr bool k6 = KIND == Kind::k6;
  using Tile = std::conditional_t<k6, InterleavedK6, InterleavedK45>;
  constexpr int kSums = k6 ? 16 : 8;  // activation sums per token and super-block: of 16 (Q6_K) or of 32
  const PanelGeometry g = panel_geometry(w.format, w.k);
  const int bb = quant::format_info(w.format).block_bytes;
  const int64_t nbb = b1 - b0;
  // Each token's sub-block activation sums, once per call: [t][b][kSums].
  const int16_t* xsum = kquant_activation_sums(a, g, t0, t1, b0, b1, k6);
  // Tiles are unpacked once per 128 tokens (a chunk of prefill): the unpacking costs about a token's products.
  constexpr int64_t kTokens = 128;
  Tile tiles[2];
  alignas(32) float acc[2][kTokens][kPanelRows];
  for (int64_t p = p0; p < p1; p += 2) {
    const int np = p + 1 < p1 ? 2 : 1;
    for (int64_t tb = t0; tb < t1; tb += kTokens) {
      const int64_t te = std::min(t1, tb + kTokens);
      std::memset(acc, 0, sizeof(acc));
      for (int64_t b = b0; b < b1; ++b) {
        for (int pn = 0; pn < np; ++pn) {
          const int64_t rows = std::min<int64_t>(kPanelRows, w.n - (p + pn) * kPanelRows);
          const uint8_t* blocks = w.data + (p + pn) * g.stride + b * g.qbytes;
          if constexpr (k6) interleave_k6(blocks, bb, rows, tiles[pn]);
          else interleave_k45(KIND, blocks, rows, tiles[pn]);
        }
        // The next tiles' bytes, into L1 while this one runs: a panel pair's super-block is read once per 128
        // tokens, too seldom for the hardware prefetcher (its loads stalled ~5% of the GEMM on the 3B shape).
        if (b + 1 < b1)
          for (int pn = 0; pn < np; ++pn)
            for (int64_t o = 0; o < g.qbytes; o += 64)
              _mm_prefetch(reinterpret_cast<const char*>(w.data + (p + pn) * g.stride + (b + 1) * g.qbytes + o),
                           _MM_HINT_T0);
        const auto xs = [&](int64_t tt) { return xsum + ((tt - t0) * nbb + (b - b0)) * kSums; };
        const auto block = [&](auto nt, auto npn, int64_t t) {
          float* const out[2] = {acc[0][t - tb], acc[1][t - tb]};
          if constexpr (k6) k6_block<nt(), npn()>(tiles, a, g, b, t, xs(t), nbb * kSums, out);
          else k45_block<KIND, nt(), npn()>(tiles, a, g, b, t, xs(t), nbb * kSums, out);
        };
        using One = std::integral_constant<int, 1>;
        using Two = std::integral_constant<int, 2>;
        using Four = std::integral_constant<int, 4>;
        int64_t t = tb;
        for (; t + 4 <= te; t += 4) {
          if (np == 2) block(Four{}, Two{}, t);
          else block(Four{}, One{}, t);
        }
        for (; t < te; ++t) {
          if (np == 2) block(One{}, Two{}, t);
          else block(One{}, One{}, t);
        }
      }
      for (int pn = 0; pn < np; ++pn) {
        const int64_t rows = std::min<int64_t>(kPanelRows, w.n - (p + pn) * kPanelRows);
        for (int64_t t = tb; t < te; ++t) {
          float* out = y + t * ldy + (p + pn) * kPanelRows;
          const float* r = acc[pn][t - tb];
          if (rows == kPanelRows) {  // one vector (a call to memmove per 8 floats cost ~5% of the GEMM)
            const __m256 v = _mm256_load_ps(r);
            _mm256_storeu_ps(out, accumulate ? _mm256_add_ps(_mm256_loadu_ps(out), v) : v);
          } else {
            for (int64_t i = 0; i < rows; ++i) out[i] = accumulate ? out[i] + r[i] : r[i];
          }
        }
      }
    }
  }
}

}  // namespace

const int16_t* kquant_activation_sums(const QuantizedActs& a, const PanelGeometry& g, int64_t t0, int64_t t1,
                                      int64_t b0, int64_t b1, bool sums_of_16) {
  const __m256i ones = _mm256_set1_epi16(1), ones8 = _mm256_set1_epi8(1);
  const int64_t nbb = b1 - b0;
  const int n = sums_of_16 ? 16 : 8;
  thread_local std::vector<int16_t> buffer;
  buffer.resize(size_t((t1 - t0) * nbb * n));
  int16_t* out = buffer.data();
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t b = b0; b < b1; ++b) {
      const int8_t* x = a.q + t * a.k + b * g.group;
      __m256i s4[8];  // sums of 4 activations, per vector of 32 (|sum| <= 32 * 128: int16 is exact)
      for (int j = 0; j < 8; ++j)
        s4[j] = _mm256_madd_epi16(
            _mm256_maddubs_epi16(ones8, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32 * j))), ones);
      // [S0 S1 S2 S3 | S0 S1 S2 S3] halves of the vectors' sums (j < 4), then of j >= 4; lane j of lo + hi is S_j
      // (as sums of 16: [S0 S2 S4 S6 | S1 S3 S5 S7] and [S8 .. S14 | S9 .. S15] of the 16 sums of 16)
      const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(s4[0], s4[1]), _mm256_hadd_epi32(s4[2], s4[3]));
      const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(s4[4], s4[5]), _mm256_hadd_epi32(s4[6], s4[7]));
      int16_t* dst = out + ((t - t0) * nbb + (b - b0)) * n;
      if (sums_of_16) {
        const auto natural = [](__m256i h) {  // S(2i), S(2i+1) interleaved back into order, as int16
          const __m128i e = _mm256_castsi256_si128(h), o = _mm256_extracti128_si256(h, 1);
          return _mm_packs_epi32(_mm_unpacklo_epi32(e, o), _mm_unpackhi_epi32(e, o));
        };
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), natural(h0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 8), natural(h1));
      } else {
        const __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                                              _mm256_permute2x128_si256(h0, h1, 0x31));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                         _mm_packs_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1)));
      }
    }
  return out;
}

void gemm_panels_k_avx2(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0, int64_t t1,
                        int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const quant::FormatInfo& fi = quant::format_info(w.format);
  if (t1 - t0 <= 3) {
    if (fi.kind == Kind::k4 || fi.kind == Kind::k5) {
      const auto run = [&](auto kind) {
        constexpr Kind K = decltype(kind)::value;
        if (t1 - t0 == 1) return decode_panels_pieces<K, 1, K45Maddubs>(w, a, p0, p1, t0, b0, b1, accumulate, y, ldy);
        if (t1 - t0 == 2) return decode_panels_pieces<K, 2, K45Maddubs>(w, a, p0, p1, t0, b0, b1, accumulate, y, ldy);
        return decode_panels_pieces<K, 3, K45Maddubs>(w, a, p0, p1, t0, b0, b1, accumulate, y, ldy);
      };
      if (fi.kind == Kind::k4) return run(std::integral_constant<Kind, Kind::k4>{});
      return run(std::integral_constant<Kind, Kind::k5>{});
    }
    return decode_panels_k6(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  }
  if (fi.kind == Kind::k4) return gemm_panels_interleaved<Kind::k4>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  if (fi.kind == Kind::k5) return gemm_panels_interleaved<Kind::k5>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
  return gemm_panels_interleaved<Kind::k6>(w, a, p0, p1, t0, t1, b0, b1, accumulate, y, ldy);
}

}  // namespace bluelm::kernels

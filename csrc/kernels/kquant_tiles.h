// The K-quant prefill tiles shared by the AVX2 kernel (kquant_avx2.cpp, which builds them) and the AVX-512 VNNI one
// (kquant_avx512.cpp): one 8-row panel super-block unpacked into levels whose 32-bit lanes hold 4 consecutive levels
// of one row, with the rows' scales, minima and factors beside them; and each token's sub-block activation sums.
#pragma once

#include <cstdint>

#include "kernels/kernels_isa.h"
#include "quant/quant.h"

namespace bluelm::kernels {

struct InterleavedK45 {
  alignas(32) uint8_t q[8][8][32];  // [sub-block j][step s][4 r + e]: level of weight 32 j + 4 s + e of row r
  alignas(32) int16_t sc[8][16];    // [j][2 r + e]: row r's sub-block scale (0..63), in both int16 of its lane
  alignas(32) int16_t mn[4][16];    // [jp][2 r + e]: row r's sub-block minimum (0..63) of sub-block 2 jp + e
  alignas(32) float d[8];           // [r]: D_r
  alignas(32) float m[8];           // [r]: M_r
};

struct InterleavedK6 {
  alignas(32) uint8_t q[8][8][32];  // [sub-block j][step s][4 r + e]: level (0..63) of weight 32 j + 4 s + e of row r
  alignas(32) int16_t sc[16][16];   // [i][2 r + e]: row r's scale of the 16 weights 16 i.., in both int16 of its lane
  alignas(32) int16_t sp[8][16];    // [ip][2 r + e]: row r's scale of the 16 weights 16 (2 ip + e)..
  alignas(32) float d[8];           // [r]: d_r
};

// The `rows` (<= 8) rows of one panel super-block into a tile; missing rows are zero. Q4_K / Q5_K: the blocks'
// 4-byte pieces (kernels_isa.h); Q6_K: its GGUF blocks, bb bytes apart.
void interleave_k45(quant::Kind kind, const uint8_t* sb, int64_t rows, InterleavedK45& tile);
void interleave_k6(const uint8_t* blocks, int bb, int64_t rows, InterleavedK6& tile);

// Each token's sub-block activation sums (int16, exact), tokens [t0, t1) x super-blocks [b0, b1), in a buffer of the
// calling thread (valid until its next call): element ((t - t0) * (b1 - b0) + b - b0) * n + i, with n = 8 sums of
// 32 (Q4_K / Q5_K) or n = 16 sums of 16 (Q6_K), in element order.
const int16_t* kquant_activation_sums(const QuantizedActs& a, const PanelGeometry& g, int64_t t0, int64_t t1,
                                      int64_t b0, int64_t b1, bool sums_of_16);

}  // namespace bluelm::kernels

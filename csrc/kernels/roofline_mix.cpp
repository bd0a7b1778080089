// Mix loops: for each quant format and tier, one iteration is one 32-weight block of that tier's chunk-GEMM tile
// (two 8-row panels x 4 tokens = 2048 multiply-adds) with the tile's exact arithmetic instructions, in its order,
// from registers: the loads and broadcasts are left out (an isolated AVX2 block measured them as free, 0.97-1.06x,
// docs/kernels.md), so a loop's rate over its tier's probe is the most that format's kernel can reach there: its
// mix ceiling. Values do not matter (all zeros: no denormals); the float accumulators that live in memory in the
// kernels live in registers here.
//
// Adding a format: write its loop beside the others (its tile's instructions per block, as a comment says where
// they come from) and add one row to mix_loops() below, naming the probe it is a fraction of. Nothing else reads
// the list: benchmarks/kernels.py finds the loop by the row's format and tier.
#include "kernels/roofline_loops.h"

namespace bluelm::kernels::roofline {
namespace {

constexpr double kBlockOps = 2.0 * 32 * 16 * 4;  // one block: 32 weights x 16 rows x 4 tokens, 2 ops per MAC

#if defined(__x86_64__)
#define R(x) "%%" #x

// ---- AVX2 tier (kernels_avx2.cpp: tile_int4_pair / q4_sub_p2m4, tile_int8_pair / q8_step_p2m4) ----
// ymm0-3 / ymm4-7: the int16 (int4) or int32 (int8) sums of tokens 0-3 for panels 0 / 1; ymm8-11 unpacked nibbles
// or weights; ymm12-13 products; ymm14 the activation, ymm15 masks, ones and scales.
#define Q4A_UNPACK                                                                                              \
  "vpand %%ymm15,%%ymm15,%%ymm8\n vpsrlw $4,%%ymm15,%%ymm9\n vpand %%ymm9,%%ymm15,%%ymm9\n"                     \
  "vpand %%ymm15,%%ymm15,%%ymm10\n vpsrlw $4,%%ymm15,%%ymm11\n vpand %%ymm11,%%ymm15,%%ymm11\n"
#define Q4A_FIRST(A, B)                                                                                         \
  "vpmaddubsw %%ymm14,%%ymm8," R(A) "\n vpmaddubsw %%ymm14,%%ymm9,%%ymm12\n vpaddw %%ymm12," R(A) "," R(A) "\n" \
  "vpmaddubsw %%ymm14,%%ymm10," R(B) "\n vpmaddubsw %%ymm14,%%ymm11,%%ymm13\n vpaddw %%ymm13," R(B) "," R(B) "\n"
#define Q4A_NEXT(A, B)                                                                                          \
  "vpmaddubsw %%ymm14,%%ymm8,%%ymm12\n vpaddw %%ymm12," R(A) "," R(A) "\n"                                      \
  "vpmaddubsw %%ymm14,%%ymm9,%%ymm13\n vpaddw %%ymm13," R(A) "," R(A) "\n"                                      \
  "vpmaddubsw %%ymm14,%%ymm10,%%ymm12\n vpaddw %%ymm12," R(B) "," R(B) "\n"                                     \
  "vpmaddubsw %%ymm14,%%ymm11,%%ymm13\n vpaddw %%ymm13," R(B) "," R(B) "\n"
#define Q4A_STEP(OP) Q4A_UNPACK OP(ymm0, ymm4) OP(ymm1, ymm5) OP(ymm2, ymm6) OP(ymm3, ymm7)
#define Q4A_PRODUCTS Q4A_STEP(Q4A_FIRST) Q4A_STEP(Q4A_NEXT) Q4A_STEP(Q4A_NEXT) Q4A_STEP(Q4A_NEXT)
// Per block: the panels' scales converted, then per accumulator widen + convert + the format's float epilogue
// (fma_into's load and store left out).
#define A_SCALES "vcvtph2ps %%xmm15,%%ymm12\n vcvtph2ps %%xmm15,%%ymm13\n"
#define Q4_0A_EPI(X, F)                                                                                         \
  "vpmaddwd %%ymm15," R(X) "," R(X) "\n vcvtdq2ps " R(X) "," R(X) "\n"                                          \
  "vfmadd213ps %%ymm15,%%ymm15," R(X) "\n vfmadd231ps " R(X) ",%%ymm12," R(F) "\n"
#define Q4_1A_EPI(X, F)                                                                                         \
  "vpmaddwd %%ymm15," R(X) "," R(X) "\n vcvtdq2ps " R(X) "," R(X) "\n vmulps %%ymm15," R(X) "," R(X) "\n"       \
  "vfmadd231ps " R(X) ",%%ymm12," R(F) "\n vfmadd231ps %%ymm15,%%ymm13," R(F) "\n"
#define A_EPILOGUE(E)                                                                                           \
  E(ymm0, ymm8) E(ymm1, ymm9) E(ymm2, ymm10) E(ymm3, ymm11) E(ymm4, ymm8) E(ymm5, ymm9) E(ymm6, ymm10)          \
  E(ymm7, ymm11)
#define A_CLOBBERS                                                                                              \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",     \
      "xmm13", "xmm14", "xmm15", "cc"
#define A_PROLOGUE                                                                                              \
  "vpxor %%ymm14,%%ymm14,%%ymm14\n vpxor %%ymm15,%%ymm15,%%ymm15\n vpxor %%ymm8,%%ymm8,%%ymm8\n"                \
  "vpxor %%ymm9,%%ymm9,%%ymm9\n vpxor %%ymm10,%%ymm10,%%ymm10\n vpxor %%ymm11,%%ymm11,%%ymm11\n"

void mix_q4_0_avx2(int64_t n) {
  __asm__ volatile(A_PROLOGUE "1:\n" Q4A_PRODUCTS A_SCALES A_EPILOGUE(Q4_0A_EPI) "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::A_CLOBBERS);
}
void mix_q4_1_avx2(int64_t n) {
  __asm__ volatile(A_PROLOGUE "1:\n" Q4A_PRODUCTS A_SCALES "vcvtph2ps %%xmm15,%%ymm14\n vcvtph2ps %%xmm15,%%ymm14\n"
                   A_EPILOGUE(Q4_1A_EPI) "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::A_CLOBBERS);
}

// q8_0 on AVX2: per 4-weight step |w| of both panels, then per token the sign trick, vpmaddubsw, and the widening
// to int32 at once (a pair of int8 x int8 products nearly fills int16). ymm8/9: the weights, ymm10/11: |w|.
#define Q8A_TOKEN(A, B)                                                                                         \
  "vpsignb %%ymm8,%%ymm14,%%ymm12\n vpmaddubsw %%ymm12,%%ymm10,%%ymm12\n vpmaddwd %%ymm15,%%ymm12,%%ymm12\n"    \
  "vpaddd %%ymm12," R(A) "," R(A) "\n"                                                                          \
  "vpsignb %%ymm9,%%ymm14,%%ymm13\n vpmaddubsw %%ymm13,%%ymm11,%%ymm13\n vpmaddwd %%ymm15,%%ymm13,%%ymm13\n"    \
  "vpaddd %%ymm13," R(B) "," R(B) "\n"
#define Q8A_STEP                                                                                                \
  "vpabsb %%ymm8,%%ymm10\n vpabsb %%ymm9,%%ymm11\n" Q8A_TOKEN(ymm0, ymm4) Q8A_TOKEN(ymm1, ymm5)                \
      Q8A_TOKEN(ymm2, ymm6) Q8A_TOKEN(ymm3, ymm7)
#define Q8A_EPI(X, F)                                                                                           \
  "vcvtdq2ps " R(X) "," R(X) "\n vmulps %%ymm15," R(X) "," R(X) "\n vfmadd231ps " R(X) ",%%ymm10," R(F) "\n"    \
  "vpxor " R(X) "," R(X) "," R(X) "\n"
void mix_q8_0_avx2(int64_t n) {
  __asm__ volatile(A_PROLOGUE "1:\n" Q8A_STEP Q8A_STEP Q8A_STEP Q8A_STEP Q8A_STEP Q8A_STEP Q8A_STEP Q8A_STEP
                   "vcvtph2ps %%xmm15,%%ymm10\n vcvtph2ps %%xmm15,%%ymm11\n"
                   Q8A_EPI(ymm0, ymm12) Q8A_EPI(ymm1, ymm13) Q8A_EPI(ymm2, ymm12) Q8A_EPI(ymm3, ymm13)
                   Q8A_EPI(ymm4, ymm12) Q8A_EPI(ymm5, ymm13) Q8A_EPI(ymm6, ymm12) Q8A_EPI(ymm7, ymm13)
                   "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::A_CLOBBERS);
}

// ---- K-quants, AVX2 (kquant_avx2.cpp) ----
// Q4_K / Q5_K (k45_block / k45_p2m4: two 8-row panels' interleaved tiles x 4 tokens): one iteration is one
// super-block of both panels for the 4 tokens (256 weights x 16 rows x 4 tokens). Per sub-block of 32 and per step
// of 4 levels, each token's activations (broadcast; left out, as are the tiles' loads) feed one vpmaddubsw per panel,
// summed in int16 (Q4_K: 8 steps, Q5_K: two runs of 4); then per token and panel (and run) one vpmaddwd by the rows'
// sub-block scales and one vpaddd into the super-block's int32 sums. Per super-block, token and panel: the minima's
// four vpmaddwd and three vpaddd, two conversions, a product by M, an FMSUB by D and the FMA by the token's scale.
// The tiles' unpacking (once per 128 tokens) and the activation sums (once per call) are left out. ymm0-3 / ymm4-7
// the int16 sums of tokens 0-3 for panels 0 / 1 (the epilogue's scratch); ymm8 / 9 the levels; ymm14 the
// activations; ymm12 / 13 products; ymm10 / 11 the int32 sums and float accumulators; ymm15 the scales.
#define K45T_FIRST(A, B) "vpmaddubsw %%ymm14,%%ymm8," R(A) "\n vpmaddubsw %%ymm14,%%ymm9," R(B) "\n"
#define K45T_NEXT(A, B)                                                                                         \
  "vpmaddubsw %%ymm14,%%ymm8,%%ymm12\n vpaddw %%ymm12," R(A) "," R(A) "\n"                                      \
  "vpmaddubsw %%ymm14,%%ymm9,%%ymm13\n vpaddw %%ymm13," R(B) "," R(B) "\n"
#define K45T_STEP(OP) OP(ymm0, ymm4) OP(ymm1, ymm5) OP(ymm2, ymm6) OP(ymm3, ymm7)
#define K45T_SC(X, ACC) "vpmaddwd %%ymm15," R(X) "," R(X) "\n vpaddd " R(X) "," R(ACC) "," R(ACC) "\n"
#define K45T_SCALE                                                                                              \
  K45T_SC(ymm0, ymm10) K45T_SC(ymm1, ymm11) K45T_SC(ymm2, ymm10) K45T_SC(ymm3, ymm11) K45T_SC(ymm4, ymm10)       \
      K45T_SC(ymm5, ymm11) K45T_SC(ymm6, ymm10) K45T_SC(ymm7, ymm11)
// Q4_K: 8 steps in int16, one scaled widening.
#define K4T_SUB                                                                                                 \
  K45T_STEP(K45T_FIRST) K45T_STEP(K45T_NEXT) K45T_STEP(K45T_NEXT) K45T_STEP(K45T_NEXT) K45T_STEP(K45T_NEXT)     \
      K45T_STEP(K45T_NEXT) K45T_STEP(K45T_NEXT) K45T_STEP(K45T_NEXT) K45T_SCALE
// Q5_K: two runs of 4 steps, each widened by the scales into the int32 sums.
#define K5T_SUB                                                                                                 \
  K45T_STEP(K45T_FIRST) K45T_STEP(K45T_NEXT) K45T_STEP(K45T_NEXT) K45T_STEP(K45T_NEXT) K45T_SCALE               \
      K45T_STEP(K45T_FIRST) K45T_STEP(K45T_NEXT) K45T_STEP(K45T_NEXT) K45T_STEP(K45T_NEXT) K45T_SCALE
// Per token and panel: minima (4 vpmaddwd, 3 vpaddd) into A, conversions of A and of the int32 sums (ymm12 stands
// for them: converting the accumulator ACC would chain the iterations), M * A, D * B - that, and the FMA by the
// token's scale into ACC.
#define K45T_EPI(A, B, ACC)                                                                                     \
  "vpmaddwd %%ymm15,%%ymm15," R(A) "\n vpmaddwd %%ymm15,%%ymm15," R(B) "\n vpaddd " R(B) "," R(A) "," R(A) "\n"   \
  "vpmaddwd %%ymm15,%%ymm15," R(B) "\n vpaddd " R(B) "," R(A) "," R(A) "\n"                                       \
  "vpmaddwd %%ymm15,%%ymm15," R(B) "\n vpaddd " R(B) "," R(A) "," R(A) "\n"                                       \
  "vcvtdq2ps " R(A) "," R(A) "\n vcvtdq2ps %%ymm12," R(B) "\n vmulps %%ymm15," R(A) "," R(A) "\n"              \
  "vfmsub231ps %%ymm15," R(B) "," R(A) "\n vfmadd231ps %%ymm15," R(A) "," R(ACC) "\n"
#define K45T_EPILOGUE                                                                                           \
  K45T_EPI(ymm0, ymm1, ymm10) K45T_EPI(ymm2, ymm3, ymm11) K45T_EPI(ymm4, ymm5, ymm10) K45T_EPI(ymm6, ymm7, ymm11) \
      K45T_EPI(ymm0, ymm1, ymm10) K45T_EPI(ymm2, ymm3, ymm11) K45T_EPI(ymm4, ymm5, ymm10)                       \
          K45T_EPI(ymm6, ymm7, ymm11)
void mix_q4_k_avx2(int64_t n) {
  __asm__ volatile(A_PROLOGUE "1:\n" K4T_SUB K4T_SUB K4T_SUB K4T_SUB K4T_SUB K4T_SUB K4T_SUB K4T_SUB K45T_EPILOGUE
                   "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::A_CLOBBERS);
}
void mix_q5_k_avx2(int64_t n) {
  __asm__ volatile(A_PROLOGUE "1:\n" K5T_SUB K5T_SUB K5T_SUB K5T_SUB K5T_SUB K5T_SUB K5T_SUB K5T_SUB K45T_EPILOGUE
                   "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::A_CLOBBERS);
}
// Q6_K (k6_block: the same tiles with 6-bit levels): int16 sums hold two steps, so per sub-block four runs of two
// steps, each scaled by its 16 weights' scales (vpmaddwd) into the int32 sums (vpaddd); per super-block, token and
// panel the offset's eight vpmaddwd and seven vpaddd, a shift and a subtraction, one conversion, the product by d
// and the FMA by the token's scale.
#define K6T_RUN K45T_STEP(K45T_FIRST) K45T_STEP(K45T_NEXT) K45T_SCALE
#define K6T_SUB K6T_RUN K6T_RUN K6T_RUN K6T_RUN
#define K6T_EPI(A, B, ACC)                                                                                      \
  "vpmaddwd %%ymm15,%%ymm15," R(A) "\n" K6T_OFF(A, B) K6T_OFF(A, B) K6T_OFF(A, B) K6T_OFF(A, B) K6T_OFF(A, B)     \
      K6T_OFF(A, B) K6T_OFF(A, B) "vpslld $5," R(A) "," R(A) "\n vpsubd " R(A) ",%%ymm12," R(A) "\n"              \
      "vcvtdq2ps " R(A) "," R(A) "\n vmulps %%ymm15," R(A) "," R(A) "\n vfmadd231ps %%ymm15," R(A) "," R(ACC) "\n"
#define K6T_OFF(A, B) "vpmaddwd %%ymm15,%%ymm15," R(B) "\n vpaddd " R(B) "," R(A) "," R(A) "\n"
#define K6T_EPILOGUE                                                                                            \
  K6T_EPI(ymm0, ymm1, ymm10) K6T_EPI(ymm2, ymm3, ymm11) K6T_EPI(ymm4, ymm5, ymm10) K6T_EPI(ymm6, ymm7, ymm11)     \
      K6T_EPI(ymm0, ymm1, ymm10) K6T_EPI(ymm2, ymm3, ymm11) K6T_EPI(ymm4, ymm5, ymm10) K6T_EPI(ymm6, ymm7, ymm11)
void mix_q6_k_avx2(int64_t n) {
  __asm__ volatile(A_PROLOGUE "1:\n" K6T_SUB K6T_SUB K6T_SUB K6T_SUB K6T_SUB K6T_SUB K6T_SUB K6T_SUB K6T_EPILOGUE
                   "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::A_CLOBBERS);
}
constexpr double kK45TileOps = 2.0 * 256 * 16 * 4;  // one super-block: 256 weights x 16 rows x 4 tokens

// ---- AVX-512 VNNI tier (kernels_avx512.cpp: tile<KIND, 32, 4>) ----
// A zmm holds both panels (16 rows). zmm0-3 / zmm4-7: the int32 sums s0 / s1 of tokens 0-3; zmm8 the weight pair,
// zmm9/10 nibbles or unsigned weights; zmm12 the scales' halves, zmm13 the 0x80 flip, zmm14 the activation, zmm15 masks and scales;
// zmm16-19 the float accumulators (registers in the kernel too), zmm20-24 temporaries.
#define Z_PAIR "vinserti64x4 $1,%%ymm15,%%zmm15,%%zmm8\n"
#define Q4Z_P                                                                                                   \
  Z_PAIR "vpandd %%zmm15,%%zmm8,%%zmm9\n vpsrlw $4,%%zmm8,%%zmm10\n vpandd %%zmm15,%%zmm10,%%zmm10\n"           \
  "vpdpbusd %%zmm14,%%zmm9,%%zmm0\n vpdpbusd %%zmm14,%%zmm10,%%zmm4\n"                                          \
  "vpdpbusd %%zmm14,%%zmm9,%%zmm1\n vpdpbusd %%zmm14,%%zmm10,%%zmm5\n"                                          \
  "vpdpbusd %%zmm14,%%zmm9,%%zmm2\n vpdpbusd %%zmm14,%%zmm10,%%zmm6\n"                                          \
  "vpdpbusd %%zmm14,%%zmm9,%%zmm3\n vpdpbusd %%zmm14,%%zmm10,%%zmm7\n"
// q8_0, shipped: w + 128 once per weight vector, then one vpdpbusd per token (even steps into s0, odd into s1).
#define Q8Z_P(S0, S1, S2, S3)                                                                                   \
  Z_PAIR "vpxord %%zmm13,%%zmm8,%%zmm9\n"                                                                       \
  "vpdpbusd %%zmm14,%%zmm9," R(S0) "\n vpdpbusd %%zmm14,%%zmm9," R(S1) "\n"                                    \
  "vpdpbusd %%zmm14,%%zmm9," R(S2) "\n vpdpbusd %%zmm14,%%zmm9," R(S3) "\n"
#define Q8Z_EVEN Q8Z_P(zmm0, zmm1, zmm2, zmm3)
#define Q8Z_ODD Q8Z_P(zmm4, zmm5, zmm6, zmm7)
// q8_0 through the former sign trick (the A/B variant): |w| and the sign mask per weight vector, a masked
// subtract per token.
#define Q8SZ_TOKEN(X, S) "vpsubb %%zmm14,%%zmm15," R(X) "%{%%k1%}\n vpdpbusd " R(X) ",%%zmm9," R(S) "\n"
#define Q8SZ_P(S0, S1, S2, S3)                                                                                  \
  Z_PAIR "vpabsb %%zmm8,%%zmm9\n vpmovb2m %%zmm8,%%k1\n" Q8SZ_TOKEN(zmm21, S0) Q8SZ_TOKEN(zmm22, S1)            \
      Q8SZ_TOKEN(zmm23, S2) Q8SZ_TOKEN(zmm24, S3)
#define Q8SZ_EVEN Q8SZ_P(zmm0, zmm1, zmm2, zmm3)
#define Q8SZ_ODD Q8SZ_P(zmm4, zmm5, zmm6, zmm7)
// Per block: scales (vinserti128 of the pair's halves + vcvtph2ps into zmm20), then per token s0 + s1, convert,
// the format's float epilogue, and the sums zeroed for the next block.
#define Z_SCALES(Z) "vinserti128 $1,%%xmm15,%%ymm15,%%ymm12\n vcvtph2ps %%ymm12," R(Z) "\n"
#define Z_SUM(A, B, T) "vpaddd " R(B) "," R(A) "," R(T) "\n vcvtdq2ps " R(T) "," R(T) "\n"
#define Z_ZERO(A, B) "vpxord " R(A) "," R(A) "," R(A) "\n vpxord " R(B) "," R(B) "," R(B) "\n"
#define SYM_EPI(A, B, T, F)                                                                                     \
  Z_SUM(A, B, T) "vfmadd213ps %%zmm14,%%zmm15," R(T) "\n vfmadd231ps " R(T) ",%%zmm20," R(F) "\n" Z_ZERO(A, B)
#define ASYM_EPI(A, B, T, F)                                                                                    \
  Z_SUM(A, B, T) "vmulps %%zmm15," R(T) "," R(T) "\n vfmadd231ps " R(T) ",%%zmm20," R(F) "\n"                   \
  "vfmadd231ps %%zmm15,%%zmm25," R(F) "\n" Z_ZERO(A, B)
#define INT8_EPI(A, B, T, F)                                                                                    \
  Z_SUM(A, B, T) "vmulps %%zmm15," R(T) "," R(T) "\n vfmadd231ps " R(T) ",%%zmm20," R(F) "\n" Z_ZERO(A, B)
#define Z_EPILOGUE(E)                                                                                           \
  E(zmm0, zmm4, zmm21, zmm16) E(zmm1, zmm5, zmm22, zmm17) E(zmm2, zmm6, zmm23, zmm18) E(zmm3, zmm7, zmm24, zmm19)
#define Z_PROLOGUE                                                                                              \
  "vpxord %%zmm13,%%zmm13,%%zmm13\n vpxord %%zmm14,%%zmm14,%%zmm14\n vpxord %%zmm15,%%zmm15,%%zmm15\n"          \
  "vpxord %%zmm16,%%zmm16,%%zmm16\n vpxord %%zmm17,%%zmm17,%%zmm17\n vpxord %%zmm18,%%zmm18,%%zmm18\n"          \
  "vpxord %%zmm19,%%zmm19,%%zmm19\n vpxord %%zmm21,%%zmm21,%%zmm21\n vpxord %%zmm22,%%zmm22,%%zmm22\n"          \
  "vpxord %%zmm23,%%zmm23,%%zmm23\n vpxord %%zmm24,%%zmm24,%%zmm24\n kxorq %%k1,%%k1,%%k1\n"
#define Z_CLOBBERS                                                                                              \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",     \
      "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23",         \
      "xmm24", "xmm25", "k1", "cc"
#define Z_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

Z_TARGET void mix_q4_0_avx512(int64_t n) {
  __asm__ volatile(Z_PROLOGUE "1:\n" Q4Z_P Q4Z_P Q4Z_P Q4Z_P Z_SCALES(zmm20) Z_EPILOGUE(SYM_EPI)
                   "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::Z_CLOBBERS);
}
Z_TARGET void mix_q4_1_avx512(int64_t n) {
  __asm__ volatile(Z_PROLOGUE "1:\n" Q4Z_P Q4Z_P Q4Z_P Q4Z_P Z_SCALES(zmm20) Z_SCALES(zmm25) Z_EPILOGUE(ASYM_EPI)
                   "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::Z_CLOBBERS);
}
Z_TARGET void mix_q8_0_avx512(int64_t n) {
  __asm__ volatile(Z_PROLOGUE "1:\n" Q8Z_EVEN Q8Z_ODD Q8Z_EVEN Q8Z_ODD Q8Z_EVEN Q8Z_ODD Q8Z_EVEN Q8Z_ODD
                   Z_SCALES(zmm20) Z_EPILOGUE(SYM_EPI) "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::Z_CLOBBERS);
}
Z_TARGET void mix_q8_0_signtrick_avx512(int64_t n) {
  __asm__ volatile(Z_PROLOGUE "1:\n" Q8SZ_EVEN Q8SZ_ODD Q8SZ_EVEN Q8SZ_ODD Q8SZ_EVEN Q8SZ_ODD Q8SZ_EVEN Q8SZ_ODD
                   Z_SCALES(zmm20) Z_EPILOGUE(INT8_EPI) "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::Z_CLOBBERS);
}

// ---- K-quants, AVX-512 VNNI tier (kquant_avx512.cpp: quad_block, four 8-row panels x 4 tokens) ----
// One iteration is one super-block of the four panels (32 rows, two zmm halves) for 4 tokens. Per step of 4 levels
// each token's broadcast (left out, as are the levels' loads) feeds one vpdpbusd per half into that token's int32 run
// sums; per run (Q4_K / Q5_K: a sub-block's 8 steps; Q6_K: 4 steps, 16 weights) each of the 8 sums is converted and
// added by one FMA with the rows' D x scale (the sums restart from zero idioms). Per super-block, token and half:
// the offset's vpdpwssd (4 of minima x sums of 32, Q6_K: 8 of scales x sums of 16), a conversion, the FNMADD by M and
// the FMA by the token's scale into the output (registers here, memory in the kernel). zmm0-7 run sums, zmm8-15 the
// super-block's float sums, zmm16 / 17 levels, zmm18 activations, zmm19 / 20 factors, zmm21 the offset, zmm22-29
// the outputs.
#define KZ_ZERO(A, B, C, D) "vpxord %%zmm" #A ",%%zmm" #A ",%%zmm" #A "\n vpxord %%zmm" #B ",%%zmm" #B ",%%zmm" #B "\n" \
  "vpxord %%zmm" #C ",%%zmm" #C ",%%zmm" #C "\n vpxord %%zmm" #D ",%%zmm" #D ",%%zmm" #D "\n"
#define KZ_RUN_ZERO KZ_ZERO(0, 1, 2, 3) KZ_ZERO(4, 5, 6, 7)
#define KZ_DP(I) "vpdpbusd %%zmm18,%%zmm16,%%zmm" #I "\n"
#define KZ_DQ(I) "vpdpbusd %%zmm18,%%zmm17,%%zmm" #I "\n"
#define KZ_STEP KZ_DP(0) KZ_DQ(1) KZ_DP(2) KZ_DQ(3) KZ_DP(4) KZ_DQ(5) KZ_DP(6) KZ_DQ(7)
#define KZ_CF(I, F) "vcvtdq2ps %%zmm" #I ",%%zmm" #I "\n vfmadd231ps %%zmm" #I ",%%zmm19,%%zmm" #F "\n"
#define KZ_RUN_END KZ_CF(0, 8) KZ_CF(1, 9) KZ_CF(2, 10) KZ_CF(3, 11) KZ_CF(4, 12) KZ_CF(5, 13) KZ_CF(6, 14) KZ_CF(7, 15)
#define KZ4_SUB KZ_RUN_ZERO KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_RUN_END
#define KZ6_SUB                                                                                                 \
  KZ_RUN_ZERO KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_RUN_END KZ_RUN_ZERO KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_RUN_END
#define KZ_OFF "vpdpwssd %%zmm18,%%zmm16,%%zmm21\n"
#define KZ_EPI(S, O, OFFS)                                                                                      \
  "vpxord %%zmm21,%%zmm21,%%zmm21\n" OFFS "vcvtdq2ps %%zmm21,%%zmm21\n vfnmadd231ps %%zmm21,%%zmm19,%%zmm" #S "\n"  \
  "vfmadd231ps %%zmm" #S ",%%zmm20,%%zmm" #O "\n"
#define KZ_EPILOGUE(OFFS)                                                                                       \
  KZ_EPI(8, 22, OFFS) KZ_EPI(9, 23, OFFS) KZ_EPI(10, 24, OFFS) KZ_EPI(11, 25, OFFS) KZ_EPI(12, 26, OFFS)          \
      KZ_EPI(13, 27, OFFS) KZ_EPI(14, 28, OFFS) KZ_EPI(15, 29, OFFS) KZ_ZERO(8, 9, 10, 11) KZ_ZERO(12, 13, 14, 15)
#define KZ_CLOBBERS Z_CLOBBERS, "xmm26", "xmm27", "xmm28", "xmm29"
#define KZ_PROLOGUE                                                                                             \
  KZ_ZERO(8, 9, 10, 11) KZ_ZERO(12, 13, 14, 15) KZ_ZERO(16, 17, 18, 19) KZ_ZERO(20, 22, 23, 24)                 \
      KZ_ZERO(25, 26, 27, 28) "vpxord %%zmm29,%%zmm29,%%zmm29\n"
Z_TARGET void mix_q4_k_vnni(int64_t n) {
  __asm__ volatile(KZ_PROLOGUE "1:\n" KZ4_SUB KZ4_SUB KZ4_SUB KZ4_SUB KZ4_SUB KZ4_SUB KZ4_SUB KZ4_SUB
                   KZ_EPILOGUE(KZ_OFF KZ_OFF KZ_OFF KZ_OFF) "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::KZ_CLOBBERS);
}
Z_TARGET void mix_q6_k_vnni(int64_t n) {
  __asm__ volatile(KZ_PROLOGUE "1:\n" KZ6_SUB KZ6_SUB KZ6_SUB KZ6_SUB KZ6_SUB KZ6_SUB KZ6_SUB KZ6_SUB
                   KZ_EPILOGUE(KZ_OFF KZ_OFF KZ_OFF KZ_OFF KZ_OFF KZ_OFF KZ_OFF KZ_OFF) "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::KZ_CLOBBERS);
}
constexpr double kKQuadOps = 2.0 * 256 * 32 * 4;  // one super-block: 256 weights x 32 rows x 4 tokens

// ---- Q4_0 / Q4_1 / Q8_0 prefill, AVX-512 VNNI tier (kernels_avx512.cpp: quad_tokens, four panels x 4 tokens) ----
// One iteration is one block of 32 weights of the four unpacked panels (32 rows, two zmm halves) for 4 tokens: 8
// steps of KZ_STEP (each token's broadcast feeding one vpdpbusd per half; loads left out, as above), then per token
// and half the block's float epilogue into the output (registers here and in the kernel): Q4_0 a conversion and two
// FMAs (f dx + s, then by the rows' scales), Q4_1 a conversion, a multiply and two FMAs (the minima's term), Q8_0 a
// conversion, an add (the offset), a multiply and an FMA. zmm0-7 the run sums, zmm19 / 20 the token's d and s,
// zmm21 the rows' scales, zmm15 their minima, zmm22-29 the outputs.
#define QZ_SYM(I, O)                                                                                            \
  "vcvtdq2ps %%zmm" #I ",%%zmm" #I "\n vfmadd213ps %%zmm20,%%zmm19,%%zmm" #I "\n"                                \
  "vfmadd231ps %%zmm" #I ",%%zmm21,%%zmm" #O "\n"
#define QZ_ASYM(I, O)                                                                                           \
  "vcvtdq2ps %%zmm" #I ",%%zmm" #I "\n vmulps %%zmm19,%%zmm" #I ",%%zmm" #I "\n"                                 \
  "vfmadd231ps %%zmm" #I ",%%zmm21,%%zmm" #O "\n vfmadd231ps %%zmm20,%%zmm15,%%zmm" #O "\n"
#define QZ_INT8(I, O)                                                                                           \
  "vcvtdq2ps %%zmm" #I ",%%zmm" #I "\n vaddps %%zmm20,%%zmm" #I ",%%zmm" #I "\n vmulps %%zmm19,%%zmm" #I       \
  ",%%zmm" #I "\n vfmadd231ps %%zmm" #I ",%%zmm21,%%zmm" #O "\n"
#define QZ_BLOCK(E)                                                                                             \
  KZ_RUN_ZERO KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_STEP KZ_STEP E(0, 22) E(1, 23) E(2, 24) E(3, 25) \
      E(4, 26) E(5, 27) E(6, 28) E(7, 29)
#define QZ_PROLOGUE KZ_PROLOGUE "vpxord %%zmm21,%%zmm21,%%zmm21\n"
Z_TARGET void mix_q4_0_quad(int64_t n) {
  __asm__ volatile(QZ_PROLOGUE "1:\n" QZ_BLOCK(QZ_SYM) QZ_BLOCK(QZ_SYM) "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::KZ_CLOBBERS);
}
Z_TARGET void mix_q4_1_quad(int64_t n) {
  __asm__ volatile(QZ_PROLOGUE "1:\n" QZ_BLOCK(QZ_ASYM) QZ_BLOCK(QZ_ASYM) "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::KZ_CLOBBERS);
}
Z_TARGET void mix_q8_0_quad(int64_t n) {
  __asm__ volatile(QZ_PROLOGUE "1:\n" QZ_BLOCK(QZ_INT8) QZ_BLOCK(QZ_INT8) "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)::KZ_CLOBBERS);
}
constexpr double kQuadBlocksOps = 2.0 * 2 * 32 * 32 * 4;  // two blocks: 2 x 32 weights x 32 rows x 4 tokens

// ---- AVX2 attention products (runtime/attention_avx2.cpp; attention rows in benchmarks/attention.py) ----
// Unlike the GEMM tiles above, these loops keep their broadcasts from memory (an L1 buffer, as the kernels read the
// query bytes and the int16 weight pairs): on the Zen 3 host a vpbroadcastd ymm, m32 took a vector pipe slot (in a
// throwaway loop, broadcast + vpmaddwd + vpaddd ran at 0.67 cycles per vpmaddwd; vpmaddwd alone, at 0.5).
// Scores (scores_i8q_cols, 4 rows): a 4-byte key column of 8 positions (ymm12, |k| ymm13) against each row's 4 query
// bytes: sign trick, vpmaddubsw, vpmaddwd by ones (ymm15), into the row's int32 sums ymm0-3. 4 x 32 MACs.
#define AS_ROW(B, T, A)                                                                                         \
  "vpbroadcastd " #B "(%1),%%" #T "\n vpsignb %%ymm12,%%" #T ",%%" #T "\n vpmaddubsw %%" #T ",%%ymm13,%%" #T "\n" \
  "vpmaddwd %%ymm15,%%" #T ",%%" #T "\n vpaddd %%" #T ",%%" #A ",%%" #A "\n"
#define AS_STEP AS_ROW(0, ymm4, ymm0) AS_ROW(64, ymm5, ymm1) AS_ROW(128, ymm6, ymm2) AS_ROW(192, ymm7, ymm3)
// Values (accumulate_i8w_tile<4>): a pair of positions x 16 columns (int16 pairs in ymm8 / ymm9) against each
// row's broadcast weight pair, two vpmaddwd and two vpaddd into the row's sums ymm0-7. 4 x 32 MACs.
#define AV_ROW(B, T, A0, A1)                                                                                    \
  "vpbroadcastd " #B "(%1),%%" #T "\n vpmaddwd %%" #T ",%%ymm8,%%ymm10\n vpaddd %%ymm10,%%" #A0 ",%%" #A0 "\n"  \
  "vpmaddwd %%" #T ",%%ymm9,%%ymm11\n vpaddd %%ymm11,%%" #A1 ",%%" #A1 "\n"
#define AV_STEP AV_ROW(0, ymm12, ymm0, ymm1) AV_ROW(132, ymm13, ymm2, ymm3) AV_ROW(264, ymm14, ymm4, ymm5) \
  AV_ROW(396, ymm15, ymm6, ymm7)
constexpr double kAttnStepOps = 2.0 * 4 * 32;  // one step: 4 rows x 32 multiply-adds
alignas(64) int32_t g_attn_rows[128];           // the rows' broadcast sources (zeros)

void mix_attn_scores_avx2(int64_t n) {
  __asm__ volatile(A_PROLOGUE "vpxor %%ymm12,%%ymm12,%%ymm12\n vpxor %%ymm13,%%ymm13,%%ymm13\n"
                   "1:\n" AS_STEP AS_STEP AS_STEP AS_STEP "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)
                   : "r"(g_attn_rows)
                   : A_CLOBBERS, "memory");
}
void mix_attn_values_avx2(int64_t n) {
  __asm__ volatile(A_PROLOGUE "1:\n" AV_STEP AV_STEP AV_STEP AV_STEP "dec %0\n jnz 1b\n vzeroupper\n"
                   : "+r"(n)
                   : "r"(g_attn_rows)
                   : A_CLOBBERS, "memory");
}
#undef R
#endif

}  // namespace

// One row per (format, tier): the loop, and the probe of that tier its ceiling is a fraction of. A new format adds
// its loop above and its row here.
const std::vector<Loop>& mix_loops() {
  static const std::vector<Loop> all = {
#if defined(__x86_64__)
      {{"mix_q4_0_avx2", "avx2", "GOPS", "q4_0 two-panel x 4-token block, AVX2", "q4_0", "int8_maddubs_paddw_avx2"},
       Isa::avx2, kBlockOps, mix_q4_0_avx2},
      {{"mix_q4_1_avx2", "avx2", "GOPS", "q4_1 two-panel x 4-token block, AVX2", "q4_1", "int8_maddubs_paddw_avx2"},
       Isa::avx2, kBlockOps, mix_q4_1_avx2},
      {{"mix_q8_0_avx2", "avx2", "GOPS", "q8_0 two-panel x 4-token block, AVX2 (sign trick)", "q8_0",
        "int8_maddubs_paddw_avx2"},
       Isa::avx2, kBlockOps, mix_q8_0_avx2},
      {{"mix_q4_k_avx2", "avx2", "GOPS", "q4_k two-panel x 4-token super-block, AVX2", "q4_k",
        "int8_maddubs_paddw_avx2"},
       Isa::avx2, kK45TileOps, mix_q4_k_avx2},
      {{"mix_q5_k_avx2", "avx2", "GOPS", "q5_k two-panel x 4-token super-block, AVX2", "q5_k",
        "int8_maddubs_paddw_avx2"},
       Isa::avx2, kK45TileOps, mix_q5_k_avx2},
      {{"mix_q6_k_avx2", "avx2", "GOPS", "q6_k two-panel x 4-token super-block, AVX2", "q6_k",
        "int8_maddubs_paddw_avx2"},
       Isa::avx2, kK45TileOps, mix_q6_k_avx2},
      // The AVX-512 tier's VNNI K-quant tile (Q5_K's levels are unpacked with the tile: its loop is Q4_K's).
      {{"mix_q4_k_avx512", "avx512", "GOPS", "q4_k four-panel x 4-token super-block, AVX-512 VNNI", "q4_k",
        "int8_vpdpbusd_avx512"},
       Isa::avx512, kKQuadOps, mix_q4_k_vnni},
      {{"mix_q5_k_avx512", "avx512", "GOPS", "q5_k four-panel x 4-token super-block, AVX-512 VNNI", "q5_k",
        "int8_vpdpbusd_avx512"},
       Isa::avx512, kKQuadOps, mix_q4_k_vnni},
      {{"mix_q6_k_avx512", "avx512", "GOPS", "q6_k four-panel x 4-token super-block, AVX-512 VNNI", "q6_k",
        "int8_vpdpbusd_avx512"},
       Isa::avx512, kKQuadOps, mix_q6_k_vnni},
      // The AVX-512 tier's prefill of the block formats runs on unpacked quads; the panel-pair tile (decode, and
      // prefill with set_avx512_quads off) has its rows under <format>_pairs for the A/B.
      {{"mix_q4_0_avx512", "avx512", "GOPS", "q4_0 four-panel x 4-token block, unpacked, AVX-512 VNNI", "q4_0",
        "int8_vpdpbusd_avx512"},
       Isa::avx512, kQuadBlocksOps, mix_q4_0_quad},
      {{"mix_q4_1_avx512", "avx512", "GOPS", "q4_1 four-panel x 4-token block, unpacked, AVX-512 VNNI", "q4_1",
        "int8_vpdpbusd_avx512"},
       Isa::avx512, kQuadBlocksOps, mix_q4_1_quad},
      {{"mix_q8_0_avx512", "avx512", "GOPS", "q8_0 four-panel x 4-token block, unpacked (w + 128), AVX-512 VNNI",
        "q8_0", "int8_vpdpbusd_avx512"},
       Isa::avx512, kQuadBlocksOps, mix_q8_0_quad},
      {{"mix_q4_0_pairs_avx512", "avx512", "GOPS", "q4_0 panel-pair x 4-token block, AVX-512 VNNI", "q4_0_pairs",
        "int8_vpdpbusd_avx512"},
       Isa::avx512, kBlockOps, mix_q4_0_avx512},
      {{"mix_q4_1_pairs_avx512", "avx512", "GOPS", "q4_1 panel-pair x 4-token block, AVX-512 VNNI", "q4_1_pairs",
        "int8_vpdpbusd_avx512"},
       Isa::avx512, kBlockOps, mix_q4_1_avx512},
      {{"mix_q8_0_pairs_avx512", "avx512", "GOPS", "q8_0 panel-pair x 4-token block, AVX-512 VNNI (w + 128)",
        "q8_0_pairs", "int8_vpdpbusd_avx512"},
       Isa::avx512, kBlockOps, mix_q8_0_avx512},
      {{"mix_q8_0_signtrick_avx512", "avx512", "GOPS",
        "q8_0 panel-pair x 4-token block, AVX-512 VNNI, former sign trick (A/B)", "q8_0_signtrick",
        "int8_vpdpbusd_avx512"},
       Isa::avx512, kBlockOps, mix_q8_0_signtrick_avx512},
      // Attention's int8 products (not a quant format: benchmarks/kernels.py skips formats named attn_*), as
      // fractions of the float FMA probe its attention rows are compared with.
      {{"mix_attn_scores_avx2", "avx2", "GOPS", "int8 attention scores, 4 rows x 8 positions (sign trick), AVX2",
        "attn_scores_i8", "fp32_fma_avx2"},
       Isa::avx2, 4 * kAttnStepOps, mix_attn_scores_avx2},
      {{"mix_attn_values_avx2", "avx2", "GOPS", "int8 attention values with int16 weights, 4 rows x 16 columns, AVX2",
        "attn_values_i16", "fp32_fma_avx2"},
       Isa::avx2, 4 * kAttnStepOps, mix_attn_values_avx2},
#endif
  };
  return all;
}

}  // namespace bluelm::kernels::roofline

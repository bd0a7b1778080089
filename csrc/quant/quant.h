#pragma once
// Group quantization formats: the byte layouts (GGUF-identical for group 32), one registry of names, and
// quantize / dequantize in portable C++. docs/kernels.md documents every layout once; bluelm_v/quant.py mirrors
// the registry.
//
// Every format stores a row of K weights as K/G consecutive blocks of G weights (G = the group):
//   int4 symmetric  (q4_0, q4_0_g64, q4_0_g128): fp16 d, G/2 bytes of nibbles;         w = (q - 8) * d
//   int4 asymmetric (q4_1, q4_1_g64, q4_1_g128): fp16 d, fp16 m, G/2 bytes of nibbles;  w = q * d + m
//   int8 symmetric  (q8_0, q8_0_g64, q8_0_g128): fp16 d, G int8;                         w = q * d
//   int5 symmetric  (q5_0, GGUF Q5_0, 22 bytes): fp16 d, 4 bytes qh, 16 bytes of nibbles; w = (q - 16) * d
//   int5 asymmetric (q5_1, GGUF Q5_1, 24 bytes): fp16 d, fp16 m, 4 bytes qh, 16 bytes;    w = q * d + m
//   (q5: the nibbles hold the low 4 bits as in q4_0; qh, a little-endian uint32, has the fifth bit of element i
//   in its bit i.)
// Nibble order inside a block: byte i holds element i in its low nibble and element i + G/2 in its high nibble
// (for G = 32 this is GGUF's Q4_0 / Q4_1 order: low nibbles are elements 0..15, high nibbles 16..31).
// Rounding (the gguf package's and ggml's reference quantizers, bit for bit; float32 arithmetic, no FMA):
//   q4_0: m = the element of largest |x| (first on ties), d = m / -8, q = min(15, trunc(x * (1/d) + 8.5))
//   q4_1: d = (max - min) / 15, q = min(15, trunc((x - min) * (1/d) + 0.5)), m = min
//   q8_0: d = max|x| / 127, q = round-half-away(x * (1/d))
//   q5_0: as q4_0 with d = m / -16, q = min(31, trunc(x * (1/d) + 16.5));  q5_1: as q4_1 with 31 in place of 15
//   (1/d is taken as 0 when d == 0.) d and m are stored as IEEE fp16 rounded to nearest even.
//
// GGUF's K-quants (quant_k.cpp): super-blocks of 256 weights, G = 256, GGML's byte layouts:
//   q4_k (Q4_K, 144 bytes): fp16 d, fp16 dmin, 12 bytes of eight 6-bit sub-block scales sc_j and minima m_j,
//        128 bytes of nibbles; 8 sub-blocks of 32:  w = d * sc_j * q - dmin * m_j,  q in 0..15
//   q5_k (Q5_K, 176 bytes): as q4_k plus 32 bytes of fifth bits;                     q in 0..31
//   q6_k (Q6_K, 210 bytes): 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 scales, fp16 d;
//        16 sub-blocks of 16:  w = d * sc_j * (q - 32),  q in 0..63
//   q8_k (Q8_K, 292 bytes, activations): float32 d, 256 int8, 16 int16 sums of 16;  w = d * q
// Their quantizers follow ggml's reference quantizers (no importance matrix) step by step in float32.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace bluelm::quant {

// IEEE binary16 <-> binary32, round to nearest even, subnormals, infinities and NaN kept (no F16C needed).
uint16_t fp32_to_fp16(float f);
float fp16_to_fp32(uint16_t h);

enum class Format : int {
  q4_0 = 0, q4_1, q8_0, q4_0_g64, q4_0_g128, q4_1_g64, q4_1_g128, q8_0_g64, q8_0_g128,
  q4_k, q5_k, q6_k, q8_k, q5_0, q5_1
};
constexpr int kFormatCount = 15;
// int4/int8 kinds: one scale per block of G. k4 / k5 / k6 / k8: GGUF's super-block formats (Q4_K ... Q8_K).
// int5_sym / int5_asym: GGUF's Q5_0 / Q5_1 (group 32 only).
enum class Kind : int {
  int4_sym = 0, int4_asym = 1, int8_sym = 2, k4 = 3, k5 = 4, k6 = 5, k8 = 6, int5_sym = 7, int5_asym = 8
};
constexpr int kKindCount = 9;
inline bool is_k_quant(Kind k) { return k >= Kind::k4 && k <= Kind::k8; }
inline bool is_int5(Kind k) { return k == Kind::int5_sym || k == Kind::int5_asym; }

// Block structs. `d` and `m` are raw fp16 bits; the structs have no padding (checked), so an array of them is the
// on-disk layout. Bits per weight are given for each.
template <int G>
struct BlockInt4Sym {  // (16 + 4G) / G bits per weight: 4.5 (G=32), 4.25 (64), 4.125 (128)
  uint16_t d;
  uint8_t qs[G / 2];
};
template <int G>
struct BlockInt4Asym {  // (32 + 4G) / G bits per weight: 5.0 (G=32), 4.5 (64), 4.25 (128)
  uint16_t d;
  uint16_t m;
  uint8_t qs[G / 2];
};
template <int G>
struct BlockInt8Sym {  // (16 + 8G) / G bits per weight: 8.5 (G=32), 8.25 (64), 8.125 (128)
  uint16_t d;
  int8_t qs[G];
};
struct BlockQ5_0 {  // 5.5 bits per weight (GGUF Q5_0, ggml block_q5_0)
  uint16_t d;
  uint8_t qh[4];  // little-endian uint32: bit i is the fifth bit of element i
  uint8_t qs[16];
};
struct BlockQ5_1 {  // 6.0 bits per weight (GGUF Q5_1, ggml block_q5_1)
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24, "Q5_0 / Q5_1 blocks must be 22 / 24 bytes (GGUF)");
using BlockQ4_0 = BlockInt4Sym<32>;  // GGUF Q4_0 (ggml block_q4_0)
using BlockQ4_1 = BlockInt4Asym<32>;  // GGUF Q4_1 (ggml block_q4_1)
using BlockQ8_0 = BlockInt8Sym<32>;  // GGUF Q8_0 (ggml block_q8_0)
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must be 18 bytes (GGUF)");
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block must be 20 bytes (GGUF)");
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must be 34 bytes (GGUF)");
static_assert(sizeof(BlockInt4Sym<64>) == 34 && sizeof(BlockInt4Sym<128>) == 66, "int4 sym block size");
static_assert(sizeof(BlockInt4Asym<64>) == 36 && sizeof(BlockInt4Asym<128>) == 68, "int4 asym block size");
static_assert(sizeof(BlockInt8Sym<64>) == 66 && sizeof(BlockInt8Sym<128>) == 130, "int8 block size");

constexpr int kSuperBlock = 256;  // weights per K-quant super-block (GGML's QK_K)
struct BlockQ4_K {  // 4.5 bits per weight
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];  // sc_j, m_j: j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 in the nibbles of byte
                       // j + 4 (sc low, m high) with their top 2 bits in bits 6-7 of bytes j - 4 (sc) and j (m)
  uint8_t qs[128];     // byte 32i + l: element 64i + l (low nibble) and 64i + 32 + l (high nibble)
};
struct BlockQ5_K {  // 5.5 bits per weight
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];  // as Q4_K
  uint8_t qh[32];      // bit 2i of byte l: fifth bit of element 64i + l; bit 2i + 1: of element 64i + 32 + l
  uint8_t qs[128];     // low 4 bits, as Q4_K
};
struct BlockQ6_K {  // 6.5625 bits per weight
  uint8_t ql[128];    // half h (128 elements): byte 64h + l: elements 128h + l (low) and + 64 (high), l < 32;
                      // byte 64h + 32 + l: elements 128h + 32 + l (low) and + 96 (high)
  uint8_t qh[64];     // byte 32h + l: bits 2s..2s+1 hold the top 2 bits of element 128h + 32s + l
  int8_t scales[16];  // one per 16 elements
  uint16_t d;
};
struct BlockQ8_K {  // 9.125 bits per value (activations)
  float d;
  int8_t qs[256];
  int16_t bsums[16];  // sum of each 16 values of qs
};
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block must be 144 bytes (GGUF)");
static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block must be 176 bytes (GGUF)");
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block must be 210 bytes (GGUF)");
static_assert(sizeof(BlockQ8_K) == 292, "Q8_K block must be 292 bytes (GGML)");

struct FormatInfo {
  Format format;
  const char* name;        // registry name: q4_0, q4_1, q8_0, q4_0_g64, ...
  Kind kind;
  int group;               // weights per block (32, 64, 128)
  int block_bytes;         // bytes per block
  int weight_bits;         // 4 or 8
  double bits_per_weight;  // block_bytes * 8 / group
  int gguf_type;           // GGML type id (Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8) or -1 when GGUF has no such type
  int scale_offset_bytes;  // group formats: bytes of fp16 scale (and min) at the start of a block (2 or 4); K: 0
  int fp16_at[2];          // byte offsets of the block's fp16 scale fields (d, then min), -1 when absent
  bool super_block;        // a GGUF K-quant (G = 256, sub-block scales inside the block)
};

const FormatInfo& format_info(Format f);
const std::vector<FormatInfo>& formats();   // the registry, in Format order
Format parse_format(const std::string& name);  // throws InvalidArgument listing the known names
inline const char* format_name(Format f) { return format_info(f).name; }

// Bytes of one row of k weights; throws InvalidArgument unless k is a positive multiple of the group.
int64_t row_bytes(Format f, int64_t k);
void check_k(Format f, int64_t k);

// x [rows, k] float32 -> out [rows, row_bytes(f, k)]. Non-finite inputs are refused (InvalidArgument naming the
// first one). threads: 1 = the calling thread only, 0 = the kernel thread pool's setting.
void quantize_rows(Format f, const float* x, int64_t rows, int64_t k, uint8_t* out, int threads = 1);
// in [rows, row_bytes(f, k)] -> out [rows, k] float32 (w = (q-8)*d, q*d + m or q*d, in float32).
void dequantize_rows(Format f, const uint8_t* in, int64_t rows, int64_t k, float* out, int threads = 1);

// The 32 levels (0..31) of one Q5_0 / Q5_1 block (kind int5_sym or int5_asym).
void q5_levels(const uint8_t* block, Kind kind, int* q /*[32]*/);
// The inverse: writes qh and the nibbles of the block (after its fp16 header) from levels 0..31.
void q5_store_levels(Kind kind, const int* q /*[32]*/, uint8_t* block);

// One K-quant super-block of 256 floats <-> its GGUF bytes (kind k4, k5, k6 or k8; quant_k.cpp).
void quantize_super_block(Kind kind, const float* x /*[256]*/, uint8_t* out);
void dequantize_super_block(Kind kind, const uint8_t* in, float* y /*[256]*/);

// Little-endian fp16 field at p (blocks are only 2-byte aligned inside a file).
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace bluelm::quant

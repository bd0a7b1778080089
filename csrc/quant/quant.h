#pragma once
// Group quantization formats: the byte layouts (GGUF-identical for group 32), one registry of names, and
// quantize / dequantize in portable C++. docs/kernels.md documents every layout once; bluelm_v/quant.py mirrors
// the registry.
//
// Every format stores a row of K weights as K/G consecutive blocks of G weights (G = the group):
//   int4 symmetric  (q4_0, q4_0_g64, q4_0_g128): fp16 d, G/2 bytes of nibbles;         w = (q - 8) * d
//   int4 asymmetric (q4_1, q4_1_g64, q4_1_g128): fp16 d, fp16 m, G/2 bytes of nibbles;  w = q * d + m
//   int8 symmetric  (q8_0, q8_0_g64, q8_0_g128): fp16 d, G int8;                         w = q * d
// Nibble order inside a block: byte i holds element i in its low nibble and element i + G/2 in its high nibble
// (for G = 32 this is GGUF's Q4_0 / Q4_1 order: low nibbles are elements 0..15, high nibbles 16..31).
// Rounding (the gguf package's and ggml's reference quantizers, bit for bit; float32 arithmetic, no FMA):
//   q4_0: m = the element of largest |x| (first on ties), d = m / -8, q = min(15, trunc(x * (1/d) + 8.5))
//   q4_1: d = (max - min) / 15, q = min(15, trunc((x - min) * (1/d) + 0.5)), m = min
//   q8_0: d = max|x| / 127, q = round-half-away(x * (1/d))
//   (1/d is taken as 0 when d == 0.) d and m are stored as IEEE fp16 rounded to nearest even.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace bluelm::quant {

// IEEE binary16 <-> binary32, round to nearest even, subnormals, infinities and NaN kept (no F16C needed).
uint16_t fp32_to_fp16(float f);
float fp16_to_fp32(uint16_t h);

enum class Format : int { q4_0 = 0, q4_1, q8_0, q4_0_g64, q4_0_g128, q4_1_g64, q4_1_g128, q8_0_g64, q8_0_g128 };
constexpr int kFormatCount = 9;
enum class Kind : int { int4_sym = 0, int4_asym = 1, int8_sym = 2 };
constexpr int kKindCount = 3;

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
using BlockQ4_0 = BlockInt4Sym<32>;  // GGUF Q4_0 (ggml block_q4_0)
using BlockQ4_1 = BlockInt4Asym<32>;  // GGUF Q4_1 (ggml block_q4_1)
using BlockQ8_0 = BlockInt8Sym<32>;  // GGUF Q8_0 (ggml block_q8_0)
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must be 18 bytes (GGUF)");
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block must be 20 bytes (GGUF)");
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must be 34 bytes (GGUF)");
static_assert(sizeof(BlockInt4Sym<64>) == 34 && sizeof(BlockInt4Sym<128>) == 66, "int4 sym block size");
static_assert(sizeof(BlockInt4Asym<64>) == 36 && sizeof(BlockInt4Asym<128>) == 68, "int4 asym block size");
static_assert(sizeof(BlockInt8Sym<64>) == 66 && sizeof(BlockInt8Sym<128>) == 130, "int8 block size");

struct FormatInfo {
  Format format;
  const char* name;        // registry name: q4_0, q4_1, q8_0, q4_0_g64, ...
  Kind kind;
  int group;               // weights per block (32, 64, 128)
  int block_bytes;         // bytes per block
  int weight_bits;         // 4 or 8
  double bits_per_weight;  // block_bytes * 8 / group
  int gguf_type;           // GGML type id (Q4_0 = 2, Q4_1 = 3, Q8_0 = 8) or -1 when GGUF has no such type
  int scale_offset_bytes;  // bytes of fp16 scale (and min) at the start of a block: 2 or 4
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

// Little-endian fp16 field at p (blocks are only 2-byte aligned inside a file).
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace bluelm::quant

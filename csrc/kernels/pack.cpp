// Repacking GGUF-layout rows into 8-row panels (and back): byte shuffling only, never re-quantization.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/memory.h"
#include "kernels/kernels.h"
#include "kernels/kernels_isa.h"

namespace bluelm::kernels {

int64_t q5_minima_bytes(Format f, int64_t n, int64_t k) {
  if (quant::format_info(f).kind != Kind::int5_asym) return 0;
  const int64_t panels = (n + kPanelRows - 1) / kPanelRows;
  return (panels * kPanelRows * (k / 32) * 4 + 63) / 64 * 64;
}

PanelGeometry panel_geometry(Format f, int64_t k) {
  quant::check_k(f, k);
  const quant::FormatInfo& fi = quant::format_info(f);
  PanelGeometry g{};
  g.group = fi.group;
  g.kind = static_cast<int>(fi.kind);
  g.nb = k / fi.group;
  if (fi.super_block) {
    // K-quants: per super-block, the 8 rows' GGUF blocks one after another (row r at r * block_bytes); their
    // scales stay inside the blocks. Q4_K and Q5_K: the same bytes with the blocks' 4-byte pieces interleaved
    // (piece_offset, kernels_isa.h).
    g.qbytes = int64_t(fi.block_bytes) * kPanelRows;
    g.scales = g.nb * g.qbytes;
    g.minima = 0;
    g.stride = (g.scales + 63) / 64 * 64;
    g.span = (g.stride + g.nb - 1) / g.nb;
    return g;
  }
  // int8: G level bytes per row; int4: G / 2 nibble bytes; int5 (Q5_0 / Q5_1): the nibbles, then their fifth bits
  // as one plane of G / 8 bytes per row (below, pack_q5).
  g.qbytes = fi.kind == Kind::int8_sym ? int64_t(fi.group) * kPanelRows
             : quant::is_int5(fi.kind) ? int64_t(fi.group) / 2 * kPanelRows + kInt5PlaneBytes
                                       : int64_t(fi.group) / 2 * kPanelRows;
  g.scales = g.nb * g.qbytes;
  const int64_t scale_bytes = 2 * kPanelRows * g.nb;
  g.minima = fi.kind == Kind::int4_asym ? g.scales + scale_bytes : 0;
  const int64_t used = g.scales + scale_bytes * (fi.kind == Kind::int4_asym ? 2 : 1);
  g.stride = (used + 63) / 64 * 64;
  g.span = (g.stride + g.nb - 1) / g.nb;
  return g;
}

void put_block_pieces(const uint8_t* block, int bytes, int r, uint8_t* sb) {
  for (int c = 0; c < bytes / 4; ++c) std::memcpy(sb + piece_offset(c, r), block + 4 * c, 4);
}

void get_block_pieces(const uint8_t* sb, int bytes, int r, uint8_t* block) {
  for (int c = 0; c < bytes / 4; ++c) std::memcpy(block + 4 * c, sb + piece_offset(c, r), 4);
}

int64_t panel_stride(Format f, int64_t k) { return panel_geometry(f, k).stride; }

int64_t packed_bytes(Format f, int64_t n, int64_t k) {
  if (n < 1) throw InvalidArgument(cat("N = ", n, " rows must be >= 1"));
  const int64_t stride = panel_stride(f, k);
  const int64_t panels = (n + kPanelRows - 1) / kPanelRows;
  if (panels > (int64_t(1) << 62) / stride / 2) throw InvalidArgument(cat("matrix of ", n, " x ", k, " is too large"));
  return panels * stride + q5_minima_bytes(f, n, k);
}

namespace {

// Q5_0 / Q5_1 panels. Per block of 32 columns: the 8 rows' low four bits of each level in the int4 layout (piece j
// of row r at (8j + r) * 4: columns 4j .. 4j+3 in the low nibbles, 16 + 4j .. in the high ones), then a plane of
// 32 bytes with the fifth bits: bit 2j of plane byte b is the fifth bit of the low nibble of byte b of piece j, bit
// 2j + 1 that of its high nibble. So one shift and one mask of the plane give a whole piece's fifth bits in place
// (kernels_avx2.cpp). The levels are GGUF's own (0..31; Q5_0's value is (q - 16) d, Q5_1's q d + m); d goes to the
// panel's fp16 scales, and Q5_1's minima m to a region after the last panel, as float32 (converted once here, not
// per product) at ((panel * nb + block) * 8 + row) * 4. Exact both ways for finite minima: unpack gives the GGUF
// bytes back (a NaN minimum keeps no payload; packages and GGUF files with one are refused before they get here).
// Decode streams 5.5 bits per weight (Q5_1: 6.5 with its float minima), as the file holds them.
void pack_q5(Format f, uint8_t* gguf, int64_t n, int64_t k, uint8_t* out, bool unpack) {
  const Kind kind = quant::format_info(f).kind;
  const bool asym = kind == Kind::int5_asym;
  const int bb = quant::format_info(f).block_bytes;
  const PanelGeometry g = panel_geometry(f, k);
  const int64_t rb = quant::row_bytes(f, k);
  uint8_t* minima = out + ((n + kPanelRows - 1) / kPanelRows) * g.stride;
  for (int64_t row = 0; row < n; ++row) {
    const int64_t p = row / kPanelRows, r = row % kPanelRows;
    for (int64_t b = 0; b < g.nb; ++b) {
      const int64_t src = row * rb + b * bb;
      const int64_t panel = p * g.stride;
      const int64_t d_off = panel + g.scales + (b * kPanelRows + r) * 2;
      const int64_t m_off = ((p * g.nb + b) * kPanelRows + r) * 4;
      uint8_t* blk = out + panel + b * g.qbytes;
      uint8_t* plane = blk + 4 * 32;
      int q[32];
      if (!unpack) {
        quant::q5_levels(gguf + src, kind, q);
        std::memcpy(out + d_off, gguf + src, 2);
        if (asym) {
          const float m = quant::fp16_to_fp32(quant::load_u16(gguf + src + 2));
          std::memcpy(minima + m_off, &m, 4);
        }
        for (int j = 0; j < 4; ++j)
          for (int i = 0; i < 4; ++i) {
            const int lo = q[4 * j + i], hi = q[16 + 4 * j + i], at = int(r) * 4 + i;
            blk[32 * j + at] = uint8_t((lo & 0x0F) | ((hi & 0x0F) << 4));
            plane[at] = uint8_t(plane[at] | ((lo >> 4) << (2 * j)) | ((hi >> 4) << (2 * j + 1)));
          }
      } else {
        uint8_t* dst = gguf + src;
        for (int j = 0; j < 4; ++j)
          for (int i = 0; i < 4; ++i) {
            const int at = int(r) * 4 + i, byte = blk[32 * j + at];
            q[4 * j + i] = (byte & 0x0F) | (((plane[at] >> (2 * j)) & 1) << 4);
            q[16 + 4 * j + i] = (byte >> 4) | (((plane[at] >> (2 * j + 1)) & 1) << 4);
          }
        std::memcpy(dst, out + d_off, 2);
        if (asym) {
          float m;
          std::memcpy(&m, minima + m_off, 4);
          const uint16_t mh = quant::fp32_to_fp16(m);
          std::memcpy(dst + 2, &mh, 2);
        }
        quant::q5_store_levels(kind, q, dst);
      }
    }
  }
}

// Calls fn(row block pointer, panel pointer offsets...) for every (row, block) of the matrix.
template <class Fn>
void for_each_block(Format f, int64_t n, int64_t k, Fn&& fn) {
  const quant::FormatInfo& fi = quant::format_info(f);
  const PanelGeometry g = panel_geometry(f, k);
  const int64_t rb = quant::row_bytes(f, k);
  const int hdr = fi.scale_offset_bytes;
  const int64_t row_q = g.qbytes / kPanelRows;  // quantized bytes of one row in one block
  for (int64_t row = 0; row < n; ++row) {
    const int64_t p = row / kPanelRows, r = row % kPanelRows;
    for (int64_t b = 0; b < g.nb; ++b) {
      const int64_t src = row * rb + b * fi.block_bytes;  // in the GGUF rows
      const int64_t panel = p * g.stride;
      const int64_t d_off = panel + g.scales + (b * kPanelRows + r) * 2;
      const int64_t m_off = g.minima ? panel + g.minima + (b * kPanelRows + r) * 2 : -1;
      const int64_t q_off = panel + b * g.qbytes + r * 4;  // piece j at q_off + j * 32
      fn(src, src + hdr, row_q, d_off, m_off, q_off);
    }
  }
}

// K-quants: calls fn(offset in the GGUF rows, offset of the panel super-block, row in the panel) for every block.
template <class Fn>
void for_each_super_block(Format f, int64_t n, int64_t k, Fn&& fn) {
  const quant::FormatInfo& fi = quant::format_info(f);
  const PanelGeometry g = panel_geometry(f, k);
  const int64_t rb = quant::row_bytes(f, k);
  for (int64_t row = 0; row < n; ++row)
    for (int64_t b = 0; b < g.nb; ++b)
      fn(row * rb + b * fi.block_bytes, row / kPanelRows * g.stride + b * g.qbytes, int(row % kPanelRows));
}

// K-quant blocks from the GGUF rows into the panels (unpack: back): whole blocks, or Q4_K's / Q5_K's 4-byte pieces.
void move_super_blocks(Format f, int64_t n, int64_t k, uint8_t* rows, uint8_t* packed, bool unpack) {
  const int bb = quant::format_info(f).block_bytes;
  const bool pieces = has_pieces(f);
  for_each_super_block(f, n, k, [&](int64_t at, int64_t sb, int r) {
    if (pieces && unpack)
      get_block_pieces(packed + sb, bb, r, rows + at);
    else if (pieces)
      put_block_pieces(rows + at, bb, r, packed + sb);
    else if (unpack)
      std::memcpy(rows + at, packed + sb + r * bb, size_t(bb));
    else
      std::memcpy(packed + sb + r * bb, rows + at, size_t(bb));
  });
}

}  // namespace

void pack_weights(Format f, const uint8_t* rows, int64_t n, int64_t k, uint8_t* out) {
  std::memset(out, 0, size_t(packed_bytes(f, n, k)));
  if (quant::is_int5(quant::format_info(f).kind))  // pack_q5 only reads the rows here
    return pack_q5(f, const_cast<uint8_t*>(rows), n, k, out, false);
  if (quant::format_info(f).super_block) return move_super_blocks(f, n, k, const_cast<uint8_t*>(rows), out, false);
  for_each_block(f, n, k, [&](int64_t src, int64_t src_q, int64_t row_q, int64_t d_off, int64_t m_off, int64_t q_off) {
    std::memcpy(out + d_off, rows + src, 2);
    if (m_off >= 0) std::memcpy(out + m_off, rows + src + 2, 2);
    for (int64_t j = 0; j < row_q / 4; ++j) std::memcpy(out + q_off + j * 32, rows + src_q + j * 4, 4);
  });
}

void unpack_weights(Format f, const uint8_t* packed, int64_t n, int64_t k, uint8_t* rows) {
  packed_bytes(f, n, k);  // validates n and k
  if (quant::is_int5(quant::format_info(f).kind))
    return pack_q5(f, rows, n, k, const_cast<uint8_t*>(packed), true);  // and only reads the packed bytes here
  if (quant::format_info(f).super_block)  // and only reads the packed bytes here
    return move_super_blocks(f, n, k, rows, const_cast<uint8_t*>(packed), true);
  for_each_block(f, n, k, [&](int64_t src, int64_t src_q, int64_t row_q, int64_t d_off, int64_t m_off, int64_t q_off) {
    std::memcpy(rows + src, packed + d_off, 2);
    if (m_off >= 0) std::memcpy(rows + src + 2, packed + m_off, 2);
    for (int64_t j = 0; j < row_q / 4; ++j) std::memcpy(rows + src_q + j * 4, packed + q_off + j * 32, 4);
  });
}


void widen_int5_panel(const uint8_t* panel, const PanelGeometry& g5, bool sym, int64_t b0, int64_t b1, uint8_t* out,
                      const PanelGeometry& g8) {
  const int bias = sym ? 16 : 0;
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* blk = panel + b * g5.qbytes;
    const uint8_t* plane = blk + 4 * 32;
    uint8_t* o = out + b * g8.qbytes;
    // q8_0 piece j (columns 4j .. 4j+3) comes from int5 piece j % 4: its low nibbles for j < 4, its high ones after.
    // Byte-parallel over the 32 bytes of a piece, which the compiler vectorizes.
    for (int j = 0; j < 4; ++j) {
      const uint8_t* v = blk + 32 * j;
      for (int e = 0; e < 32; ++e) {
        o[32 * j + e] = uint8_t((v[e] & 0x0F) + (((plane[e] >> (2 * j)) & 1) << 4) - bias);
        o[32 * (j + 4) + e] = uint8_t((v[e] >> 4) + (((plane[e] >> (2 * j + 1)) & 1) << 4) - bias);
      }
    }
  }
  std::memcpy(out + g8.scales + b0 * kPanelRows * 2, panel + g5.scales + b0 * kPanelRows * 2,
              size_t((b1 - b0) * kPanelRows * 2));
}

void gemm_panels_int5_widened(GemmPanelsFn q8, WidenInt5Fn widen, const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1,
                              int64_t t0, int64_t t1, int64_t b0, int64_t b1, bool accumulate, float* y,
                              int64_t ldy) {
  // kInt5WidenPanels panels at a time, so that the q8_0 kernels keep their tiles of two panels (one at a time ran
  // the AVX-512 T = 128 GEMM at 0.35 of q8_0's speed).
  constexpr int64_t kInt5WidenPanels = 4;
  const PanelGeometry g5 = panel_geometry(w.format, w.k), g8 = panel_geometry(Format::q8_0, w.k);
  const bool sym = quant::format_info(w.format).kind == Kind::int5_sym;
  thread_local std::vector<uint8_t> buffer;
  const size_t need = size_t(kInt5WidenPanels * g8.stride + 64);
  if (buffer.size() < need) buffer.resize(need);
  uint8_t* q8p = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(buffer.data()) + 63) & ~uintptr_t(63));
  for (int64_t p = p0; p < p1; p += kInt5WidenPanels) {
    const int64_t np = std::min(kInt5WidenPanels, p1 - p);
    for (int64_t i = 0; i < np; ++i) widen(w.data + (p + i) * g5.stride, g5, sym, b0, b1, q8p + i * g8.stride, g8);
    const int64_t rows = std::min(np * kPanelRows, w.n - p * kPanelRows);
    q8(PackedView{Format::q8_0, rows, w.k, q8p, np * g8.stride}, a, 0, np, t0, t1, b0, b1, accumulate,
       y + p * kPanelRows, ldy);
  }
}

PackedMatrix& PackedMatrix::operator=(PackedMatrix&& o) noexcept {
  if (this != &o) {
    format_ = o.format_;
    n_ = std::exchange(o.n_, 0);
    k_ = std::exchange(o.k_, 0);
    bytes_ = std::exchange(o.bytes_, 0);
    data_ = std::move(o.data_);
    arena_ = std::move(o.arena_);
    ptr_ = std::exchange(o.ptr_, nullptr);
  }
  return *this;
}

PackedMatrix::PackedMatrix(Format f, const uint8_t* rows, int64_t n, int64_t k, std::shared_ptr<WeightArena> arena)
    : PackedMatrix(f, std::vector<const uint8_t*>{rows}, std::vector<int64_t>{n}, k, std::move(arena)) {}

PackedMatrix::PackedMatrix(Format f, const std::vector<const uint8_t*>& parts, const std::vector<int64_t>& rows,
                           int64_t k, std::shared_ptr<WeightArena> arena)
    : format_(f), k_(k) {
  if (parts.empty() || parts.size() != rows.size())
    throw InvalidArgument(cat("stacking needs one row count per part: ", parts.size(), " parts, ", rows.size(), " counts"));
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 1) throw InvalidArgument(cat("part ", i, " has ", rows[i], " rows"));
    if (i + 1 < rows.size() && rows[i] % kPanelRows != 0)
      throw InvalidArgument(cat("part ", i, " has ", rows[i], " rows: all parts but the last must fill whole panels of ",
                                kPanelRows, " rows"));
    n_ += rows[i];
  }
  bytes_ = packed_bytes(f, n_, k);
  uint8_t* p = arena ? arena->allocate(size_t(bytes_)) : nullptr;
  if (p) {
    arena_ = std::move(arena);
  } else {
    data_.reset(alloc_large(size_t(bytes_)));
    p = data_.get();
    if (!p) throw LimitError(cat("cannot allocate ", bytes_, " bytes for a packed ", n_, " x ", k, " matrix"));
  }
  if (q5_minima_bytes(f, n_, k) && parts.size() > 1) {
    // Q5_1 keeps its minima after the last panel of the whole matrix: pack the concatenated rows at once.
    const int64_t rb = quant::row_bytes(f, k);
    std::vector<uint8_t> all(size_t(n_ * rb));
    int64_t at = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      std::memcpy(all.data() + at, parts[i], size_t(rows[i] * rb));
      at += rows[i] * rb;
    }
    pack_weights(f, all.data(), n_, k, p);
    ptr_ = p;
    return;
  }
  int64_t offset = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    pack_weights(f, parts[i], rows[i], k, p + offset);
    offset += packed_bytes(f, rows[i], k);
  }
  ptr_ = p;
}

}  // namespace bluelm::kernels

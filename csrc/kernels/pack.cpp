// Repacking GGUF-layout rows into 8-row panels (and back): byte shuffling only, never re-quantization.
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/memory.h"
#include "kernels/kernels.h"
#include "kernels/kernels_isa.h"

namespace bluelm::kernels {

Format panel_format(Format f) { return quant::is_int5(quant::format_info(f).kind) ? Format::q8_0 : f; }

int64_t q5_minima_bytes(Format f, int64_t n, int64_t k) {
  if (quant::format_info(f).kind != Kind::int5_asym) return 0;
  const int64_t panels = (n + kPanelRows - 1) / kPanelRows;
  return (panels * kPanelRows * (k / 32) * 4 + 63) / 64 * 64;
}

PanelGeometry panel_geometry(Format f, int64_t k) {
  quant::check_k(f, k);
  f = panel_format(f);  // Q5_0 / Q5_1: their levels sit in q8_0 panels (pack.cpp)
  const quant::FormatInfo& fi = quant::format_info(f);
  PanelGeometry g{};
  g.group = fi.group;
  g.kind = static_cast<int>(fi.kind);
  g.nb = k / fi.group;
  if (fi.super_block) {
    // K-quants: per super-block, the 8 rows' GGUF blocks one after another (row r at r * block_bytes); their
    // scales stay inside the blocks.
    g.qbytes = int64_t(fi.block_bytes) * kPanelRows;
    g.scales = g.nb * g.qbytes;
    g.minima = 0;
    g.stride = (g.scales + 63) / 64 * 64;
    g.span = (g.stride + g.nb - 1) / g.nb;
    return g;
  }
  g.qbytes = fi.kind == Kind::int8_sym ? int64_t(fi.group) * kPanelRows : int64_t(fi.group) / 2 * kPanelRows;
  g.scales = g.nb * g.qbytes;
  const int64_t scale_bytes = 2 * kPanelRows * g.nb;
  g.minima = fi.kind == Kind::int4_asym ? g.scales + scale_bytes : 0;
  const int64_t used = g.scales + scale_bytes * (fi.kind == Kind::int4_asym ? 2 : 1);
  g.stride = (used + 63) / 64 * 64;
  g.span = (g.stride + g.nb - 1) / g.nb;
  return g;
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

// Q5_0 / Q5_1: each block's 32 levels become int8 in a q8_0 panel (Q5_0: q - 16, so w = level * d as in q8_0;
// Q5_1: q itself, 0..31, and w = level * d + m), d goes to the panel's scales, and Q5_1's minima m to a region
// after the last panel, as float32 (converted once here, not per product) at ((panel * nb + block) * 8 + row) * 4.
// Exact both ways for finite minima: unpack gives the GGUF bytes back (a NaN minimum keeps no payload; packages
// and GGUF files with one are refused before they get here). The kernels then run the q8_0 panels unchanged
// (kernels.cpp adds Q5_1's m * sum(x) per block), so decode streams 8.5 bits per weight (Q5_1: 9.5), not Q5's
// 5.5 / 6: the price of not having 5-bit panel kernels in every tier.
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
      const int64_t q_off = panel + b * g.qbytes + r * 4;  // piece j at q_off + j * 32
      int q[32];
      if (!unpack) {
        quant::q5_levels(gguf + src, kind, q);
        std::memcpy(out + d_off, gguf + src, 2);
        if (asym) {
          const float m = quant::fp16_to_fp32(quant::load_u16(gguf + src + 2));
          std::memcpy(minima + m_off, &m, 4);
        }
        for (int i = 0; i < 32; ++i) out[q_off + (i / 4) * 32 + i % 4] = uint8_t(int8_t(asym ? q[i] : q[i] - 16));
      } else {
        uint8_t* dst = gguf + src;
        for (int i = 0; i < 32; ++i) {
          const int v = int8_t(out[q_off + (i / 4) * 32 + i % 4]);
          q[i] = asym ? v : v + 16;
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

// K-quants: calls fn(offset in the GGUF rows, offset in the packed matrix) for every block.
template <class Fn>
void for_each_super_block(Format f, int64_t n, int64_t k, Fn&& fn) {
  const quant::FormatInfo& fi = quant::format_info(f);
  const PanelGeometry g = panel_geometry(f, k);
  const int64_t rb = quant::row_bytes(f, k);
  for (int64_t row = 0; row < n; ++row)
    for (int64_t b = 0; b < g.nb; ++b)
      fn(row * rb + b * fi.block_bytes,
         row / kPanelRows * g.stride + b * g.qbytes + row % kPanelRows * fi.block_bytes);
}

}  // namespace

void pack_weights(Format f, const uint8_t* rows, int64_t n, int64_t k, uint8_t* out) {
  std::memset(out, 0, size_t(packed_bytes(f, n, k)));
  if (quant::is_int5(quant::format_info(f).kind))  // pack_q5 only reads the rows here
    return pack_q5(f, const_cast<uint8_t*>(rows), n, k, out, false);
  if (quant::format_info(f).super_block) {
    const size_t bb = size_t(quant::format_info(f).block_bytes);
    for_each_super_block(f, n, k, [&](int64_t src, int64_t dst) { std::memcpy(out + dst, rows + src, bb); });
    return;
  }
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
  if (quant::format_info(f).super_block) {
    const size_t bb = size_t(quant::format_info(f).block_bytes);
    for_each_super_block(f, n, k, [&](int64_t dst, int64_t src) { std::memcpy(rows + dst, packed + src, bb); });
    return;
  }
  for_each_block(f, n, k, [&](int64_t src, int64_t src_q, int64_t row_q, int64_t d_off, int64_t m_off, int64_t q_off) {
    std::memcpy(rows + src, packed + d_off, 2);
    if (m_off >= 0) std::memcpy(rows + src + 2, packed + m_off, 2);
    for (int64_t j = 0; j < row_q / 4; ++j) std::memcpy(rows + src_q + j * 4, packed + q_off + j * 32, 4);
  });
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

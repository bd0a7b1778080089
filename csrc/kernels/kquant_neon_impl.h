#pragma once
// The K-quant (Q4_K, Q5_K, Q6_K) products for the aarch64 tiers, included by kernels_neon_impl.h inside its
// anonymous namespace (one copy per tier, compiled with that tier's flags). Same scheme as the AVX2 kernel
// (kquant_avx2.cpp): per panel and super-block the 8 rows are unpacked once into levels (0..63, used as signed
// bytes) and sub-block scales; per token and row, the 16 sub-blocks of 16 are dotted with the activations in
// integers (SDOT with the dot-product extension, SMULL + SMLAL + SADALP without), each scaled by its sub-block
// scale in int32 (MLA by scalar), and converted to float once per super-block. The offsets (minima, Q6_K's -32)
// multiply the 16 sums of 16 activations, taken once per token.

struct UnpackedK {
  alignas(16) int8_t q[256];
  int32_t sc[16];  // per sub-block of 16 (Q4_K / Q5_K repeat each scale of 32)
  int32_t mn[16];
  float D, M;
};

void unpack_k_neon(Kind kind, const uint8_t* blk, UnpackedK& u) {
  const uint8x16_t low = vdupq_n_u8(0x0F);
  if (kind == Kind::k6) {
    const uint8x16_t three = vdupq_n_u8(3);
    for (int h = 0; h < 2; ++h)
      for (int half = 0; half < 2; ++half) {  // bytes 16 * half .. of each 32-byte row of the quarter
        const uint8x16_t l0 = vld1q_u8(blk + 64 * h + 16 * half);
        const uint8x16_t l1 = vld1q_u8(blk + 64 * h + 32 + 16 * half);
        const uint8x16_t hb = vld1q_u8(blk + 128 + 32 * h + 16 * half);
        const uint8x16_t lo[4] = {vandq_u8(l0, low), vandq_u8(l1, low), vshrq_n_u8(l0, 4), vshrq_n_u8(l1, 4)};
        const uint8x16_t hi[4] = {vandq_u8(hb, three), vandq_u8(vshrq_n_u8(hb, 2), three),
                                  vandq_u8(vshrq_n_u8(hb, 4), three), vshrq_n_u8(hb, 6)};
        for (int s = 0; s < 4; ++s)
          vst1q_u8(reinterpret_cast<uint8_t*>(u.q) + 128 * h + 32 * s + 16 * half,
                   vorrq_u8(lo[s], vshlq_n_u8(hi[s], 4)));
      }
    const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
    for (int j = 0; j < 16; ++j) u.sc[j] = sc[j], u.mn[j] = 32 * sc[j];
    u.D = u.M = quant::fp16_to_fp32(quant::load_u16(blk + 208));
    return;
  }
  const uint8_t* sb = blk + 4;
  const uint8_t* qs = blk + (kind == Kind::k4 ? 16 : 48);
  for (int i = 0; i < 4; ++i)
    for (int half = 0; half < 2; ++half) {
      const uint8x16_t v = vld1q_u8(qs + 32 * i + 16 * half);
      uint8x16_t a = vandq_u8(v, low), b = vshrq_n_u8(v, 4);
      if (kind == Kind::k5) {
        const uint8x16_t qh = vld1q_u8(blk + 16 + 16 * half), sixteen = vdupq_n_u8(16);
        a = vorrq_u8(a, vandq_u8(vtstq_u8(qh, vdupq_n_u8(uint8_t(1 << (2 * i)))), sixteen));
        b = vorrq_u8(b, vandq_u8(vtstq_u8(qh, vdupq_n_u8(uint8_t(2 << (2 * i)))), sixteen));
      }
      vst1q_u8(reinterpret_cast<uint8_t*>(u.q) + 64 * i + 16 * half, a);
      vst1q_u8(reinterpret_cast<uint8_t*>(u.q) + 64 * i + 32 + 16 * half, b);
    }
  for (int j = 0; j < 8; ++j) {
    const int sc = j < 4 ? sb[j] & 63 : (sb[j + 4] & 0x0F) | ((sb[j - 4] >> 6) << 4);
    const int m = j < 4 ? sb[j + 4] & 63 : (sb[j + 4] >> 4) | ((sb[j] >> 6) << 4);
    u.sc[2 * j] = u.sc[2 * j + 1] = sc;
    u.mn[2 * j] = u.mn[2 * j + 1] = m;
  }
  u.D = quant::fp16_to_fp32(quant::load_u16(blk));
  u.M = quant::fp16_to_fp32(quant::load_u16(blk + 2));
}

// The int32 dot product of 16 levels with 16 activations, as 4 lanes.
inline int32x4_t dot16(int8x16_t q, int8x16_t x) {
#if BLUELM_NEON_DOTPROD
  return vdotq_s32(vdupq_n_s32(0), q, x);
#else
  // products of levels <= 63 and activations >= -127 fit int16; pairs are widened into int32 lanes
  return vpadalq_s16(vpaddlq_s16(vmull_s8(vget_low_s8(q), vget_low_s8(x))), vmull_high_s8(q, x));
#endif
}

void gemm_panels_k_neon(const PackedView& w, const QuantizedActs& a, int64_t p0, int64_t p1, int64_t t0,
                        int64_t t1, int64_t b0, int64_t b1, bool accumulate, float* y, int64_t ldy) {
  const PanelGeometry g = panel_geometry(w.format, w.k);
  const quant::FormatInfo& fi = quant::format_info(w.format);
  UnpackedK u[kPanelRows];
  constexpr int64_t kTokens = 32;
  float acc[kTokens][kPanelRows];
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* panel = w.data + p * g.stride;
    const int64_t rows = std::min<int64_t>(kPanelRows, w.n - p * kPanelRows);
    for (int64_t tb = t0; tb < t1; tb += kTokens) {
      const int64_t te = std::min(t1, tb + kTokens);
      std::memset(acc, 0, sizeof acc);
      for (int64_t b = b0; b < b1; ++b) {
        for (int r = 0; r < kPanelRows; ++r) {
          alignas(16) uint8_t gathered[kMaxPieceBlock];
          unpack_k_neon(fi.kind, super_block_row(w.format, panel + b * g.qbytes, r, gathered), u[r]);
        }
        for (int64_t t = tb; t < te; ++t) {
          const int8_t* x = a.q + t * a.k + b * g.group;
          const float dx = a.d[t * g.nb + b];
          int8x16_t xv[16];
          int32_t xs[16];
          for (int j = 0; j < 16; ++j) {
            xv[j] = vld1q_s8(x + 16 * j);
            xs[j] = vaddlvq_s8(xv[j]);
          }
          for (int r = 0; r < kPanelRows; ++r) {
            int32x4_t dot = vdupq_n_s32(0);
            int32_t off = 0;
            for (int j = 0; j < 16; ++j) {
              dot = vmlaq_n_s32(dot, dot16(vld1q_s8(u[r].q + 16 * j), xv[j]), u[r].sc[j]);
              off += u[r].mn[j] * xs[j];
            }
            const int32_t isum = vaddvq_s32(dot);
            if (fi.kind == Kind::k6)
              acc[t - tb][r] += u[r].D * (float(isum - off) * dx);
            else
              acc[t - tb][r] += u[r].D * (float(isum) * dx) - u[r].M * (float(off) * dx);
          }
        }
      }
      for (int64_t t = tb; t < te; ++t) {
        float* out = y + t * ldy + p * kPanelRows;
        for (int64_t r = 0; r < rows; ++r) out[r] = accumulate ? out[r] + acc[t - tb][r] : acc[t - tb][r];
      }
    }
  }
}

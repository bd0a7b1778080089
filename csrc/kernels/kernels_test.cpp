#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "common/error.h"
#include "common/memory.h"
#include "common/testing.h"
#include "common/threadpool.h"
#include "kernels/kernels.h"
#include "kernels/kernels_check.h"
#include "kernels/kernels_isa.h"
#include "kernels/roofline.h"

using namespace bluelm;
using namespace bluelm::kernels;
using quant::FormatInfo;

namespace {

struct Problem {
  Format f;
  int64_t n, k, t;
  std::vector<float> w, x;
  std::vector<uint8_t> rows, packed;
  std::vector<float> wd;  // dequantized weights
  PackedView view() const { return {f, n, k, packed.data(), int64_t(packed.size())}; }
};

Problem make_problem(Format f, int64_t n, int64_t k, int64_t t, uint32_t seed) {
  Problem p{f, n, k, t, {}, {}, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  p.w.resize(size_t(n * k));
  p.x.resize(size_t(t * k));
  for (auto& v : p.w) v = nd(rng);
  for (auto& v : p.x) v = nd(rng) * 3.0f;
  if (k >= 64) p.x[5] = 40.0f;  // an outlier activation
  p.rows.resize(size_t(n * quant::row_bytes(f, k)));
  quant::quantize_rows(f, p.w.data(), n, k, p.rows.data());
  p.packed.resize(size_t(packed_bytes(f, n, k)));
  pack_weights(f, p.rows.data(), n, k, p.packed.data());
  p.wd.resize(p.w.size());
  quant::dequantize_rows(f, p.rows.data(), n, k, p.wd.data());
  return p;
}

// sum_i |w_ni| |x_i| per output (the scale of float rounding), and the activation-quantization bound.
void magnitudes(const Problem& p, std::vector<double>& mag, std::vector<double>& bound) {
  const int group = quant::format_info(p.f).group;
  mag.assign(size_t(p.t * p.n), 0.0);
  bound.assign(size_t(p.t * p.n), 0.0);
  for (int64_t t = 0; t < p.t; ++t)
    for (int64_t b = 0; b < p.k / group; ++b) {
      float amax = 0.0f;
      for (int i = 0; i < group; ++i) amax = std::fmax(amax, std::fabs(p.x[size_t(t * p.k + b * group + i)]));
      const double dx = amax / 127.0;
      for (int64_t r = 0; r < p.n; ++r) {
        double wabs = 0.0, m = 0.0;
        for (int i = 0; i < group; ++i) {
          const size_t j = size_t(b * group + i);
          wabs += std::fabs(p.wd[size_t(r * p.k) + j]);
          m += std::fabs(p.wd[size_t(r * p.k) + j] * p.x[size_t(t * p.k) + j]);
        }
        bound[size_t(t * p.n + r)] += dx / 2 * wabs * (1 + 1e-5);
        mag[size_t(t * p.n + r)] += m + dx * wabs;
      }
    }
}

// Float tolerance between two orders of summation of the same block terms.
double order_tol(const Problem& p, double mag) {
  return (4.0 * double(p.k / quant::format_info(p.f).group) + 16.0) * 6e-8 * mag + 1e-6;
}

std::vector<int64_t> shape_ks(int group) { return {group, 3 * group, 4096 + group}; }

}  // namespace

namespace bluelm::kernels::testing {

int check_kernel_table(const IsaKernels& table) {
  const IsaKernels& ref = *isa_kernels_scalar();
  int cases = 0;
  uint32_t seed = 1;
  for (const FormatInfo& fi : quant::formats()) {
    for (int64_t k : shape_ks(fi.group))
      for (int64_t n : {1, 7, 9, 17, 33})  // 17: a two-panel tile whose second panel holds one row
        for (int64_t t : {1, 3, 4, 5, 7}) {
          if (k > 1024 && t > 4) continue;  // keep the run short; T = 128/129 runs in Python and below
          Problem p = make_problem(fi.format, n, k, t, seed++);
          const int64_t nb = k / fi.group;
          // Activation quantization: bit-identical to the scalar tier.
          std::vector<int8_t> q1(size_t(t * k)), q2(size_t(t * k));
          std::vector<float> d1(size_t(t * nb)), d2(d1), s1(d1), s2(d1);
          for (int64_t i = 0; i < t; ++i) {
            ref.quantize_row(p.x.data() + i * k, k, fi.group, {-8.0f, true}, q1.data() + i * k, d1.data() + i * nb, s1.data() + i * nb);
            table.quantize_row(p.x.data() + i * k, k, fi.group, {-8.0f, true}, q2.data() + i * k, d2.data() + i * nb, s2.data() + i * nb);
          }
          CHECK(q1 == q2);
          CHECK(std::memcmp(d1.data(), d2.data(), d1.size() * 4) == 0);
          CHECK(std::memcmp(s1.data(), s2.data(), s1.size() * 4) == 0);
          const ActSumRule sf = act_sum_rule(fi.format);
          for (int64_t i = 0; i < t; ++i)
            ref.quantize_row(p.x.data() + i * k, k, fi.group, sf, q1.data() + i * k, d1.data() + i * nb, s1.data() + i * nb);
          QuantizedActs a{t, k, fi.group, q1.data(), d1.data(), s1.data()};
          const int64_t panels = (n + 7) / 8;
          // y rows padded (ldy = n + 3) with a sentinel that must survive.
          const int64_t ldy = n + 3;
          std::vector<float> y_ref(size_t(t * ldy), -7.0f), y(size_t(t * ldy), -7.0f);
          ref.gemm_panels(p.view(), a, 0, panels, 0, t, 0, nb, false, y_ref.data(), ldy);
          // The tier in two K halves (accumulate path) and two panel ranges.
          const int64_t half = nb / 2, pm = panels / 2;
          for (int64_t pr = 0; pr < 2; ++pr) {
            const int64_t pa = pr ? pm : 0, pb = pr ? panels : pm;
            if (pa == pb) continue;
            if (half > 0) {
              table.gemm_panels(p.view(), a, pa, pb, 0, t, 0, half, false, y.data(), ldy);
              table.gemm_panels(p.view(), a, pa, pb, 0, t, half, nb, true, y.data(), ldy);
            } else {
              table.gemm_panels(p.view(), a, pa, pb, 0, t, 0, nb, false, y.data(), ldy);
            }
          }
          std::vector<double> mag, bound;
          magnitudes(p, mag, bound);
          for (int64_t i = 0; i < t; ++i) {
            for (int64_t r = 0; r < n; ++r) {
              const double tol = order_tol(p, mag[size_t(i * n + r)]);
              CHECK_NEAR(y[size_t(i * ldy + r)], y_ref[size_t(i * ldy + r)], tol);
            }
            for (int64_t r = n; r < ldy; ++r) CHECK_EQ(y[size_t(i * ldy + r)], -7.0f);
          }
          ++cases;
        }
    // LayerNorm against the scalar tier
    std::vector<float> x(4 * 1152 + 3), g(x.size()), b(x.size()), y1(x.size()), y2(x.size());
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.5f, 2.0f);
    for (size_t i = 0; i < x.size(); ++i) x[i] = nd(rng), g[i] = nd(rng), b[i] = nd(rng);
    ref.layer_norm_row(x.data(), int64_t(x.size()), g.data(), b.data(), 1e-6f, y1.data());
    table.layer_norm_row(x.data(), int64_t(x.size()), g.data(), b.data(), 1e-6f, y2.data());
    for (size_t i = 0; i < x.size(); ++i) CHECK_NEAR(y1[i], y2[i], 1e-4 * (std::fabs(g[i]) + 1));
  }
  return cases;
}

int check_int8_variants_exact(const IsaKernels& table) {
  const IsaKernels& ref = *isa_kernels_scalar();
  const bool saved = int8_sign_trick();
  const ActSumRule rule = act_sum_rule(Format::q8_0);
  int cases = 0;
  uint32_t seed = 100;
  for (int64_t k : {32, 96, 4096 + 32})  // one block (bitwise equal to scalar), a few, many
    for (int64_t n : {1, 17, 33})
      for (int64_t t = 1; t <= 33; ++t) {
        if (k > 1024 && t % 8 != 1) continue;  // T = 1, 9, 17, 25, 33 there: seconds, not minutes
        Problem p = make_problem(Format::q8_0, n, k, t, seed++);
        const int64_t nb = k / 32, panels = (n + 7) / 8;
        std::vector<int8_t> q(size_t(t * k));
        std::vector<float> d(size_t(t * nb)), s(d.size());
        for (int64_t i = 0; i < t; ++i)
          ref.quantize_row(p.x.data() + i * k, k, 32, rule, q.data() + i * k, d.data() + i * nb, s.data() + i * nb);
        const QuantizedActs a{t, k, 32, q.data(), d.data(), s.data()};
        std::vector<float> y_ref(size_t(t * n)), y_sign(y_ref.size()), y_unsigned(y_ref.size());
        ref.gemm_panels(p.view(), a, 0, panels, 0, t, 0, nb, false, y_ref.data(), n);
        set_int8_sign_trick(true);
        table.gemm_panels(p.view(), a, 0, panels, 0, t, 0, nb, false, y_sign.data(), n);
        set_int8_sign_trick(false);
        table.gemm_panels(p.view(), a, 0, panels, 0, t, 0, nb, false, y_unsigned.data(), n);
        // Same integer sums, same float epilogue: the two variants agree bit for bit.
        CHECK(std::memcmp(y_sign.data(), y_unsigned.data(), y_sign.size() * 4) == 0);
        std::vector<double> mag, bound;
        magnitudes(p, mag, bound);
        for (int64_t i = 0; i < t * n; ++i) {
          // One block: dw * (isum * dx) is scalar's formula too (no sum to reorder), so bit for bit.
          if (nb == 1)
            CHECK_EQ(y_unsigned[size_t(i)], y_ref[size_t(i)]);
          else
            CHECK_NEAR(y_unsigned[size_t(i)], y_ref[size_t(i)], order_tol(p, mag[size_t(i)]));
        }
        ++cases;
      }
  set_int8_sign_trick(saved);
  return cases;
}

// The AVX-512 prefill quads (four panels unpacked once per 128 tokens) against the panel-pair tile they replace
// for 4+ tokens: the same integer sums and the same float chain per token, so the same bytes. N leaves quads of
// 1-4 panels and a partial panel; K leaves a partial 256-weight chunk; T leaves token tails of 0-3 and a second
// 128-token tile; the panel, token and block ranges start inside the matrix; accumulate adds onto what y holds.
int check_quads_equal_pair_tile(const IsaKernels& table) {
  const IsaKernels& ref = *isa_kernels_scalar();
  const bool saved = avx512_quads();
  int cases = 0;
  uint32_t seed = 300;
  for (Format f : {Format::q4_0, Format::q4_1, Format::q8_0, Format::q4_0_g64, Format::q4_1_g128,
                   Format::q8_0_g128, Format::q5_0, Format::q5_1}) {
    const FormatInfo& fi = quant::format_info(f);
    const ActSumRule rule = act_sum_rule(f);
    for (int64_t n : {8, 20, 33, 57})
      for (int64_t k : {int64_t(fi.group) * 3, 256 + int64_t(fi.group) * (256 / fi.group - 1)})
        for (int64_t t : {4, 7, 131}) {
          Problem p = make_problem(f, n, k, t, seed++);
          const int64_t nb = k / fi.group, panels = (n + 7) / 8;
          std::vector<int8_t> q(size_t(t * k));
          std::vector<float> d(size_t(t * nb)), s(d.size());
          for (int64_t i = 0; i < t; ++i)
            ref.quantize_row(p.x.data() + i * k, k, fi.group, rule, q.data() + i * k, d.data() + i * nb,
                             s.data() + i * nb);
          const QuantizedActs a{t, k, fi.group, q.data(), d.data(), s.data()};
          struct Range { int64_t p0, t0, b0, b1; bool accumulate; };
          for (const Range r : {Range{0, 0, 0, nb, false}, Range{panels > 1 ? 1 : 0, 1, nb > 2 ? 1 : 0, nb, true}}) {
            std::vector<float> y_pair(size_t(t * n)), y_quad(y_pair.size());
            for (size_t i = 0; i < y_pair.size(); ++i) y_pair[i] = y_quad[i] = float(i % 7) - 3.0f;
            set_avx512_quads(false);
            table.gemm_panels(p.view(), a, r.p0, panels, r.t0, t, r.b0, r.b1, r.accumulate, y_pair.data(), n);
            set_avx512_quads(true);
            table.gemm_panels(p.view(), a, r.p0, panels, r.t0, t, r.b0, r.b1, r.accumulate, y_quad.data(), n);
            CHECK(std::memcmp(y_pair.data(), y_quad.data(), y_pair.size() * 4) == 0);
            ++cases;
          }
        }
  }
  set_avx512_quads(saved);
  return cases;
}

}  // namespace bluelm::kernels::testing

BLUELM_TEST(kernels_every_tier_matches_scalar) {
  for (Isa isa : supported_isas()) {
    const IsaKernels* t = kernels_for(isa);
    if (!t || isa == Isa::scalar) continue;
    std::cout << "    tier " << t->name << ": " << bluelm::kernels::testing::check_kernel_table(*t) << " cases\n";
  }
}

// The AVX-512 int8 tiles with unsigned weights add the offset's correction to the integer sum, so they equal the
// sign trick bit for bit and scalar's integer sums for every T (the former float correction did not: 1e-6 errors
// that int8 activation quantization downstream turned into 0.08 on the tiny ViT's outputs).
BLUELM_TEST(kernels_int8_unsigned_tiles_are_exact_for_every_t) {
  const IsaKernels* t = kernels_for(Isa::avx512);
  if (!t || !isa_supported(Isa::avx512)) return;
  CHECK(bluelm::kernels::testing::check_int8_variants_exact(*t) > 100);
}

// The AVX-512 int8 tiles' two variants (unsigned weights w + 128; the sign trick) give scalar's sums.
BLUELM_TEST(kernels_avx512_prefill_quads_equal_the_pair_tile_byte_for_byte) {
  const IsaKernels* t = kernels_for(Isa::avx512);
  if (!t || !isa_supported(Isa::avx512)) return;
  CHECK(bluelm::kernels::testing::check_quads_equal_pair_tile(*t) > 100);
}

// The AVX-512 tier's one-token Q4_0 and Q8_0 products on either tile (the default picks one by CPU vendor) match
// scalar.
BLUELM_TEST(kernels_avx512_one_token_q4_0_and_q8_0_on_the_pair_or_one_panel_tile_match_scalar) {
  const IsaKernels* t = kernels_for(Isa::avx512);
  if (!t || !isa_supported(Isa::avx512)) return;
  const bool saved = avx512_pair_decode();
  for (bool pair : {true, false}) {
    set_avx512_pair_decode(pair);
    CHECK(bluelm::kernels::testing::check_kernel_table(*t) > 100);
  }
  set_avx512_pair_decode(saved);
}

// The AVX2 tier's one-token Q8_0 tile with the panel's scales applied after its levels (one stream) gives the bytes
// of the per-block scales, on K up to the 6 KB budget (576, 3072) and past it (4096, where the switch only adds the
// prefetch of the next panel's scales), over the whole of K and from a middle block on; and either way the tier
// still matches scalar.
BLUELM_TEST(kernels_avx2_one_token_q8_0_scales_last_gives_the_bytes_of_per_block_scales) {
  const IsaKernels* t = kernels_for(Isa::avx2);
  if (!t || !isa_supported(Isa::avx2)) return;
  const bool saved = decode_scales_last();
  int compared = 0;
  for (Format f : {Format::q8_0})
    for (int64_t k : {576, 3072, 4096}) {
      const int64_t n = 17, nb = k / 32, panels = 3;
      Problem p = make_problem(f, n, k, 1, uint32_t(k + int(f)));
      std::vector<int8_t> q(static_cast<size_t>(k));
      std::vector<float> d(static_cast<size_t>(nb)), s(static_cast<size_t>(nb));
      t->quantize_row(p.x.data(), k, 32, act_sum_rule(f), q.data(), d.data(), s.data());
      const QuantizedActs a{1, k, 32, q.data(), d.data(), s.data()};
      for (int64_t b0 : {int64_t(0), nb / 3}) {
        std::vector<float> y[2];
        for (int last = 0; last < 2; ++last) {
          set_decode_scales_last(last == 1);
          y[last].assign(size_t(n), -7.0f);
          t->gemm_panels(p.view(), a, 0, panels, 0, 1, b0, nb, false, y[last].data(), n);
        }
        CHECK(std::memcmp(y[0].data(), y[1].data(), y[0].size() * 4) == 0);
        CHECK(std::fabs(y[1][3]) > 0.0f);
        ++compared;
      }
    }
  CHECK_EQ(compared, 6);
  for (bool last : {true, false}) {
    set_decode_scales_last(last);
    CHECK(bluelm::kernels::testing::check_kernel_table(*t) > 100);
  }
  set_decode_scales_last(saved);
}

// One to three tokens of Q6_K at the ends of its ranges: levels 63 and 0 (every byte 0xFF or 0x00), scales -128 and
// 127, activations +-127, beside rows of random bytes; 13 rows (a partial panel), K = 512 and 4096, over all of K and
// from the second super-block on with accumulate. Every tier's product equals the double sum of the dequantized
// weights (quant::dequantize_rows, the gguf package's values) times the int8 activations, up to float rounding: the
// AVX-512 tier's vpdpwssd loop and the AVX2 / NEON ones may not saturate or wrap anywhere on the way.
BLUELM_TEST(kernels_one_token_q6_k_at_extreme_levels_scales_and_activations_equals_the_double_sum_in_every_tier) {
  const Format f = Format::q6_k;
  const int64_t n = 13;
  std::mt19937 rng(61);
  int compared = 0;
  for (int64_t k : {512, 4096}) {
    const int64_t nb = k / 256, bb = 210;
    std::vector<uint8_t> rows(size_t(n * nb * bb));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* blk = rows.data() + (r * nb + b) * bb;
        for (int i = 0; i < 192; ++i) blk[i] = r % 3 == 0 ? 0xFF : r % 3 == 1 ? 0x00 : uint8_t(rng());
        for (int j = 0; j < 16; ++j)
          blk[192 + j] = r % 3 == 2 ? uint8_t(rng()) : uint8_t((r + j + b) % 2 ? 0x80 : 0x7F);  // -128 / 127
        const uint16_t d = (r + b) % 2 ? 0x3C00 : 0x3800;  // 1.0 / 0.5
        std::memcpy(blk + 208, &d, 2);
      }
    std::vector<float> wd(size_t(n * k));
    quant::dequantize_rows(f, rows.data(), n, k, wd.data());
    std::vector<uint8_t> packed(size_t(packed_bytes(f, n, k)));
    pack_weights(f, rows.data(), n, k, packed.data());
    const PackedView view{f, n, k, packed.data(), int64_t(packed.size())};
    for (int64_t t = 1; t <= 3; ++t) {
      std::vector<int8_t> q(size_t(t * k));
      for (int64_t i = 0; i < t * k; ++i) q[size_t(i)] = i % 5 == 4 ? int8_t(int(rng() % 255) - 127) : (i / 7 + t) % 2 ? 127 : -127;
      std::vector<float> dx(size_t(t * nb)), sx(dx.size(), 0.0f);
      for (size_t i = 0; i < dx.size(); ++i) dx[i] = i % 2 ? 1.0f : 0.25f;
      const QuantizedActs a{t, k, 256, q.data(), dx.data(), sx.data()};
      for (int64_t b0 : {int64_t(0), int64_t(1)}) {
        std::vector<double> want(size_t(t * n), b0 ? 5.0 : 0.0), mag(want.size(), 1.0);
        for (int64_t i = 0; i < t; ++i)
          for (int64_t r = 0; r < n; ++r)
            for (int64_t e = b0 * 256; e < k; ++e) {
              const double v = double(wd[size_t(r * k + e)]) * q[size_t(i * k + e)] * dx[size_t(i * nb + e / 256)];
              want[size_t(i * n + r)] += v;
              mag[size_t(i * n + r)] += std::fabs(v);
            }
        for (Isa isa : supported_isas()) {
          const IsaKernels* table = kernels_for(isa);
          if (!table) continue;
          std::vector<float> y(size_t(t * n), b0 ? 5.0f : -7.0f);
          table->gemm_panels(view, a, 0, 2, 0, t, b0, nb, b0 == 1, y.data(), n);
          for (size_t i = 0; i < y.size(); ++i) CHECK_NEAR(y[i], want[i], 2e-6 * mag[i]);
          ++compared;
        }
      }
    }
  }
  CHECK(compared >= 12);
}

// The AVX-512 tier's Q4_K / Q5_K decode of 2-3 tokens with vpdpbusd (kquant_k45_decode.h, avx512_k45_decode on)
// sums the same integers as the AVX2 tier's vpmaddubsw walk (off), so the two give the same bytes: at the largest
// levels, scales and minima (all bits set), at zero, and on random bytes, with activations at +-127, 1-3 tokens
// (one token runs the AVX2 walk either way), a partial panel, from super-block 0 and 1 with accumulate.
BLUELM_TEST(kernels_avx512_k45_decode_with_vpdpbusd_equals_the_avx2_walk_byte_for_byte) {
  const IsaKernels* table = kernels_for(Isa::avx512);
  if (!table || !isa_supported(Isa::avx512)) return;
  const bool saved = avx512_k45_decode();
  std::mt19937 rng(45);
  int compared = 0;
  for (Format f : {Format::q4_k, Format::q5_k}) {
    const int64_t bb = quant::format_info(f).block_bytes, n = 13;
    for (int64_t k : {256, 2304}) {
      const int64_t nb = k / 256;
      std::vector<uint8_t> rows(size_t(n * nb * bb));
      for (int64_t r = 0; r < n; ++r)
        for (int64_t b = 0; b < nb; ++b) {
          uint8_t* blk = rows.data() + (r * nb + b) * bb;
          for (int64_t i = 4; i < bb; ++i) blk[i] = r % 3 == 0 ? 0xFF : r % 3 == 1 ? 0x00 : uint8_t(rng());
          const uint16_t d = (r + b) % 2 ? 0x3C00 : 0x3800, dmin = (r + b) % 2 ? 0x3400 : 0x3C00;  // 1, 0.5, 0.25
          std::memcpy(blk, &d, 2);
          std::memcpy(blk + 2, &dmin, 2);
        }
      std::vector<uint8_t> packed(size_t(packed_bytes(f, n, k)));
      pack_weights(f, rows.data(), n, k, packed.data());
      const PackedView view{f, n, k, packed.data(), int64_t(packed.size())};
      for (int64_t t = 1; t <= 3; ++t) {
        std::vector<int8_t> q(size_t(t * k));
        for (int64_t i = 0; i < t * k; ++i)
          q[size_t(i)] = i % 5 == 4 ? int8_t(int(rng() % 255) - 127) : (i / 7 + t) % 2 ? 127 : -127;
        std::vector<float> dx(size_t(t * nb)), sx(dx.size(), 0.0f);
        for (size_t i = 0; i < dx.size(); ++i) dx[i] = i % 2 ? 1.0f : 0.25f;
        const QuantizedActs a{t, k, 256, q.data(), dx.data(), sx.data()};
        for (int64_t b0 : {int64_t(0), int64_t(1)}) {
          if (b0 >= nb) continue;
          std::vector<float> got(size_t(t * n), 3.0f), want(got);
          set_avx512_k45_decode(true);
          table->gemm_panels(view, a, 0, 2, 0, t, b0, nb, b0 == 1, got.data(), n);
          set_avx512_k45_decode(false);
          table->gemm_panels(view, a, 0, 2, 0, t, b0, nb, b0 == 1, want.data(), n);
          CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
          bool finite = true;
          for (float v : got) finite = finite && std::isfinite(v);
          CHECK(finite);
          ++compared;
        }
      }
    }
  }
  set_avx512_k45_decode(saved);
  CHECK(compared == 18);
}

BLUELM_TEST(kernels_int8_sign_trick_variant_matches_scalar) {
  const IsaKernels* t = kernels_for(Isa::avx512);
  if (!t || !isa_supported(Isa::avx512)) return;
  const bool saved = int8_sign_trick();
  set_int8_sign_trick(true);
  const int cases = bluelm::kernels::testing::check_kernel_table(*t);
  set_int8_sign_trick(false);
  const int unsigned_cases = bluelm::kernels::testing::check_kernel_table(*t);
  set_int8_sign_trick(saved);
  CHECK(cases > 0 && unsigned_cases > 0);
}

// Q5_0 / Q5_1 panels hold 5.5 bits per weight (128 nibble bytes + a 32-byte plane of fifth bits + 16 bytes of scales
// per block of 8 rows x 32), and widening one to a q8_0 panel gives each weight's GGUF level (Q5_0: q - 16) at its
// q8_0 place with the block's scale, in the portable loop and in every tier that has its own, byte for byte.
BLUELM_TEST(kernels_int5_panels_keep_five_bits_and_widen_to_their_levels) {
  for (Format f : {Format::q5_0, Format::q5_1}) {
    const FormatInfo& fi = quant::format_info(f);
    const bool sym = fi.kind == Kind::int5_sym;
    for (int64_t k : {32, 96, 4096 + 32}) {
      const int64_t n = 13, nb = k / 32, panels = 2, rb = quant::row_bytes(f, k);
      Problem p = make_problem(f, n, k, 1, uint32_t(k));
      const PanelGeometry g5 = panel_geometry(f, k), g8 = panel_geometry(Format::q8_0, k);
      CHECK_EQ(g5.qbytes, int64_t(160));
      CHECK_EQ(g5.stride, (nb * (160 + 16) + 63) / 64 * 64);
      std::vector<const IsaKernels*> tiers;
      for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon, Isa::neon_dotprod})
        if (const IsaKernels* t = kernels_for(isa); t && t->widen_int5_panel) tiers.push_back(t);
      for (int64_t pn = 0; pn < panels; ++pn) {
        const uint8_t* panel = p.packed.data() + pn * g5.stride;
        std::vector<uint8_t> wide(size_t(g8.stride), 0xAB);
        widen_int5_panel(panel, g5, sym, 0, nb, wide.data(), g8);
        for (int r = 0; r < kPanelRows && pn * kPanelRows + r < n; ++r)
          for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* blk = p.rows.data() + (pn * kPanelRows + r) * rb + b * fi.block_bytes;
            int q[32];
            quant::q5_levels(blk, fi.kind, q);
            for (int c = 0; c < 32; ++c)
              CHECK_EQ(int(int8_t(wide[size_t(b * g8.qbytes + (8 * (c / 4) + r) * 4 + c % 4)])), sym ? q[c] - 16 : q[c]);
            CHECK_EQ(int(quant::load_u16(wide.data() + g8.scales + (b * kPanelRows + r) * 2)), int(quant::load_u16(blk)));
          }
        for (const IsaKernels* t : tiers) {
          std::vector<uint8_t> mine(size_t(g8.stride), 0xAB);
          t->widen_int5_panel(panel, g5, sym, 0, nb, mine.data(), g8);
          CHECK(mine == wide);
          // A block range leaves the other blocks alone.
          if (nb > 2) {
            std::vector<uint8_t> part(size_t(g8.stride), 0xAB);
            t->widen_int5_panel(panel, g5, sym, 1, 2, part.data(), g8);
            CHECK(std::equal(part.begin() + g8.qbytes, part.begin() + 2 * g8.qbytes, wide.begin() + g8.qbytes));
            CHECK_EQ(int(part[0]), 0xAB);
            CHECK_EQ(int(part[size_t(2 * g8.qbytes)]), 0xAB);
          }
        }
      }
    }
  }
}

BLUELM_TEST(kernels_pack_unpack_round_trip) {
  for (const FormatInfo& fi : quant::formats()) {
    Problem p = make_problem(fi.format, 13, 2 * fi.group, 1, 11);
    std::vector<uint8_t> back(p.rows.size());
    unpack_weights(fi.format, p.packed.data(), 13, 2 * fi.group, back.data());
    CHECK(back == p.rows);
    CHECK_EQ(int64_t(p.packed.size()) % 64, int64_t(0));
  }
  CHECK_THROWS(packed_bytes(Format::q4_0, 0, 32), InvalidArgument);
  CHECK_THROWS(packed_bytes(Format::q4_0_g64, 8, 96), InvalidArgument);
}

// Q4_K's and Q5_K's panel layout (kernels_isa.h): piece c (bytes 4c..4c+3) of row r's block b at 32 c + 4 r of the
// panel super-block, the rows past N zero.
BLUELM_TEST(kernels_q4_k_and_q5_k_panels_put_piece_c_of_row_r_at_32c_plus_4r) {
  const int64_t n = 13, k = 512;
  for (Format f : {Format::q4_k, Format::q5_k}) {
    const int bb = quant::format_info(f).block_bytes;
    CHECK(has_pieces(f));
    Problem p = make_problem(f, n, k, 1, 5);
    const PanelGeometry g = panel_geometry(f, k);
    CHECK_EQ(g.qbytes, int64_t(kPanelRows * bb));
    for (int64_t row = 0; row < 16; ++row)
      for (int64_t b = 0; b < 2; ++b)
        for (int c = 0; c < bb / 4; ++c)
          for (int e = 0; e < 4; ++e) {
            const int64_t at = row / 8 * g.stride + b * g.qbytes + piece_offset(c, int(row % 8)) + e;
            const uint8_t got = p.packed[size_t(at)];
            const int want = row < n ? p.rows[size_t(row * 2 * bb + b * bb + 4 * c + e)] : 0;
            CHECK_EQ(int(got), want);
          }
  }
}

// Public API (dispatch + thread pool + token blocks) against the reference, for each tier, with the error bound
// against exact float math.
BLUELM_TEST(kernels_gemm_api_matches_reference_and_bound) {
  const Isa before = active_isa();
  // Q5_0 / Q5_1 run 5-bit panels (t = 1: the direct decode tile in AVX2 / AVX-512; t = 129: widened to q8_0);
  // Q5_1's minima term is the driver's: only this test covers it.
  for (Format f : {Format::q4_0, Format::q4_1, Format::q8_0, Format::q4_0_g128, Format::q5_0, Format::q5_1}) {
    for (int64_t t : {1, 129}) {
      const int64_t k = 4096 + quant::format_info(f).group, n = 9;
      Problem p = make_problem(f, n, k, t, 5);
      std::vector<float> ref(size_t(t * n));
      gemm_reference(f, p.rows.data(), n, k, p.x.data(), t, ref.data());
      std::vector<double> mag, bound;
      magnitudes(p, mag, bound);
      for (int64_t i = 0; i < t * n; ++i) {
        double exact = 0.0;
        for (int64_t j = 0; j < k; ++j) exact += double(p.wd[size_t((i % n) * k + j)]) * p.x[size_t((i / n) * k + j)];
        CHECK(std::fabs(ref[size_t(i)] - exact) <= bound[size_t(i)] + 1e-6 * mag[size_t(i)]);
      }
      for (Isa isa : supported_isas()) {
        set_active_isa(isa);
        std::vector<float> y(size_t(t * n));
        std::vector<float> bias(size_t(n), 0.25f);
        gemm(p.view(), p.x.data(), t, y.data(), bias.data());
        for (int64_t i = 0; i < t * n; ++i) CHECK_NEAR(y[size_t(i)] - 0.25f, ref[size_t(i)], order_tol(p, mag[size_t(i)]));
      }
      set_active_isa(before);
    }
  }
}

// One-pass int16 activations (gemm_i16): every tier that has the kernel gives the scalar tier's outputs bit for
// bit (the same integer sums and float order, kernels_isa.h) through the public driver (the tier's and the
// portable widening, 4-token tiles and 1-3-token tails, a second panel of one row, padded output rows that must
// survive, 1 and 3 threads), and the
// result is within the int16 rounding's bound of exact math on the dequantized weights.
// Where the engine's int16 activations take the one pass: from the tier's threshold up, on 8-bit levels only.
BLUELM_TEST(kernels_int16_one_pass_starts_at_the_tiers_threshold) {
  const Isa before = active_isa();
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    const int64_t min = i16_min_tokens();
    if (!has_gemm_i16(Format::q8_0)) {
      CHECK_EQ(min, int64_t(0));
      CHECK(!gemm_i16_pays(Format::q8_0, 512));
      continue;
    }
    CHECK_EQ(min, int64_t(isa == Isa::avx512 ? 16 : 8));
    for (Format f : {Format::q8_0, Format::q5_0, Format::q5_1}) {
      CHECK(gemm_i16_pays(f, min));
      CHECK(!gemm_i16_pays(f, min - 1));
    }
    CHECK(!gemm_i16_pays(Format::q4_0, 512));
    CHECK(!gemm_i16_pays(Format::q4_k, 512));
  }
  set_active_isa(before);
}

BLUELM_TEST(kernels_int16_one_pass_equals_scalar_bit_for_bit_within_its_bound) {
  const Isa before = active_isa();
  const int threads = num_threads();
  uint32_t seed = 300;
  int compared = 0;
  for (Format f : {Format::q4_0, Format::q4_1, Format::q8_0, Format::q5_0, Format::q5_1, Format::q4_0_g64,
                   Format::q4_1_g128, Format::q8_0_g128})
    for (int64_t n : {1, 9, 17, 40})
      for (int64_t t : {1, 6, 35}) {
        const int group = quant::format_info(f).group;
        const int64_t k = (t == 6 && n == 17) ? 4096 + group : 3 * group, nb = k / group, ldy = n + 3;
        Problem p = make_problem(f, n, k, t, seed++);
        std::vector<float> bias(static_cast<size_t>(n), 0.0f);
        for (int64_t r = 0; r < n; ++r) bias[size_t(r)] = 0.125f * float(r % 5) - 0.25f;
        set_active_isa(Isa::scalar);
        set_num_threads(1);
        std::vector<float> y_ref(size_t(t * ldy), -7.0f);
        gemm_i16(p.view(), p.x.data(), t, k, y_ref.data(), ldy, bias.data());
        for (int64_t i = 0; i < t; ++i) {
          for (int64_t r = 0; r < n; ++r) {
            // |error| <= sum over groups of (amax / 32767 / 2) * sum |w| (rounding x), plus float rounding
            double exact = bias[size_t(r)], bound = 0.0, mag = 0.0;
            for (int64_t b = 0; b < nb; ++b) {
              double amax = 0.0, wabs = 0.0;
              for (int j = 0; j < group; ++j) {
                const size_t c = size_t(b * group + j);
                const double w = p.wd[size_t(r * k) + c], x = p.x[size_t(i * k) + c];
                amax = std::max(amax, std::fabs(x));
                wabs += std::fabs(w);
                exact += w * x;
                mag += std::fabs(w * x);
              }
              bound += amax / 32767.0 / 2.0 * wabs * (1 + 1e-5);
            }
            CHECK_NEAR(y_ref[size_t(i * ldy + r)], exact, bound + (4.0 * double(nb) + 16.0) * 6e-8 * mag + 1e-6);
          }
          for (int64_t r = n; r < ldy; ++r) CHECK_EQ(y_ref[size_t(i * ldy + r)], -7.0f);
        }
        for (Isa isa : supported_isas()) {
          const IsaKernels* table = kernels_for(isa);
          if (!table || !table->gemm_i16_panels || isa == Isa::scalar) continue;
          set_active_isa(isa);
          for (int th : {1, 3})
            for (bool portable : {false, true}) {  // the tier's own widening of 8-bit panels, and the portable one
              set_num_threads(th);
              set_portable_widen(portable);
              std::vector<float> y(size_t(t * ldy), -7.0f);
              gemm_i16(p.view(), p.x.data(), t, k, y.data(), ldy, bias.data());
              set_portable_widen(false);
              CHECK(std::memcmp(y.data(), y_ref.data(), y.size() * sizeof(float)) == 0);
              ++compared;
            }
        }
      }
  set_num_threads(threads);
  set_active_isa(before);
#if defined(__x86_64__) || defined(_M_X64)
  if (isa_supported(Isa::avx2)) CHECK(compared > 100);
#endif
  // Rounding to int16 in each tier with the kernel: the scalar tier's bytes, on groups of 32 / 64 / 128 holding
  // ordinary values, zeros only, a NaN, an infinity, values at and past the clamp.
  for (Isa isa : supported_isas()) {
    const IsaKernels* table = kernels_for(isa);
    if (!table || !table->quantize_i16_row || isa == Isa::scalar) continue;
    std::mt19937 rng(17);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    for (int group : {32, 64, 128}) {
      const int64_t k = 6 * group;
      std::vector<float> x(static_cast<size_t>(k), 0.0f);
      for (auto& v : x) v = nd(rng);
      for (int i = 0; i < group; ++i) x[size_t(group + i)] = 0.0f;        // group 1: all zeros
      x[size_t(2 * group + 3)] = std::nanf("");                            // group 2: a NaN
      x[size_t(3 * group + 5)] = -INFINITY;                                // group 3: an infinity
      x[size_t(4 * group + 7)] = 1e30f, x[size_t(4 * group + 8)] = -1e30f;  // group 4: huge values
      x[size_t(5 * group + 1)] = 2.5f;                                     // group 5: a tie (2.5 * 32767 / 2.5)
      std::vector<int16_t> q1(static_cast<size_t>(k), 0), q2(static_cast<size_t>(k), 0);
      std::vector<float> d1(6), d2(6), s1(6), s2(6);
      isa_kernels_scalar()->quantize_i16_row(x.data(), k, group, q1.data(), d1.data(), s1.data());
      table->quantize_i16_row(x.data(), k, group, q2.data(), d2.data(), s2.data());
      CHECK(q1 == q2);
      CHECK(std::memcmp(d1.data(), d2.data(), 6 * sizeof(float)) == 0);
      CHECK(std::memcmp(s1.data(), s2.data(), 6 * sizeof(float)) == 0);
      CHECK_EQ(q1[size_t(2 * group + 3)], int16_t(0));
      CHECK_EQ(int(q1[size_t(4 * group + 7)]), 32767);
      CHECK_EQ(int(q1[size_t(4 * group + 8)]), -32767);
    }
  }
  // Refused: a K-quant (no single scale per group), no rows, a short row stride, null buffers.
  Problem p = make_problem(Format::q8_0, 8, 64, 2, 2);
  std::vector<float> y(16);
  Problem kq = make_problem(Format::q4_k, 8, 256, 1, 3);
  CHECK_THROWS(gemm_i16(kq.view(), kq.x.data(), 1, 256, y.data(), 8, nullptr), InvalidArgument);
  CHECK(!has_gemm_i16(Format::q4_k));
  CHECK_THROWS(gemm_i16(p.view(), p.x.data(), 0, 64, y.data(), 8, nullptr), InvalidArgument);
  CHECK_THROWS(gemm_i16(p.view(), p.x.data(), 2, 32, y.data(), 8, nullptr), InvalidArgument);
  CHECK_THROWS(gemm_i16(p.view(), p.x.data(), 2, 64, y.data(), 7, nullptr), InvalidArgument);
  CHECK_THROWS(gemm_i16(p.view(), nullptr, 2, 64, y.data(), 8, nullptr), InvalidArgument);
}

BLUELM_TEST(kernels_threads_give_identical_results) {
  Problem p = make_problem(Format::q4_0, 333, 2304, 7, 9);
  const int before = num_threads();
  std::vector<float> y1(size_t(7 * 333)), y2(y1.size());
  set_num_threads(1);
  gemm(p.view(), p.x.data(), 7, y1.data(), nullptr);
  set_num_threads(3);
  gemm(p.view(), p.x.data(), 7, y2.data(), nullptr);
  set_num_threads(before);
  CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * 4) == 0);
}

BLUELM_TEST(kernels_bad_arguments_are_refused) {
  Problem p = make_problem(Format::q4_0, 8, 64, 1, 2);
  std::vector<float> y(8);
  PackedView v = p.view();
  v.bytes -= 1;
  CHECK_THROWS(gemv(v, p.x.data(), y.data(), nullptr), InvalidArgument);
  v = p.view();
  v.k = 48;
  CHECK_THROWS(gemv(v, p.x.data(), y.data(), nullptr), InvalidArgument);
  CHECK_THROWS(gemm(p.view(), p.x.data(), 0, y.data(), nullptr), InvalidArgument);
  CHECK_THROWS(downsample_2x2(p.x.data(), 0, 3, 3, y.data()), InvalidArgument);
  DownsampleLinear opt;
  CHECK_THROWS(downsample_linear(p.x.data(), 2, 2, 15, p.view(), opt, y.data()), InvalidArgument);
}

BLUELM_TEST(kernels_downsample_matches_reference) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> ud(-1.0f, 1.0f);
  for (auto hw : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 2}, {2, 1}, {3, 3}, {5, 4}, {27, 27}})
    for (int64_t c : {1, 3, 16}) {
      const int64_t h = hw.first, w = hw.second, h2 = (h + 1) / 2, w2 = (w + 1) / 2;
      std::vector<float> x(size_t(h * w * c));
      for (auto& v : x) v = ud(rng);
      std::vector<float> y1(size_t(h2 * w2 * 4 * c), 9.0f), y2(y1.size(), 9.0f);
      downsample_2x2_reference(x.data(), h, w, c, y1.data());
      downsample_2x2(x.data(), h, w, c, y2.data());
      CHECK(y1 == y2);
      if (h == 27 && c == 1) {
        CHECK_EQ(h2 * w2, int64_t(196));
        // last output row: x(26, *) on top, zeros below; last column: zeros on the right
        const float* cell = y2.data() + (13 * 14 + 13) * 4;
        CHECK_EQ(cell[0], x[size_t(26 * 27 + 26)]);
        CHECK(cell[1] == 0.0f && cell[2] == 0.0f && cell[3] == 0.0f);
        const float* first = y2.data();
        CHECK(first[0] == x[0] && first[1] == x[1] && first[2] == x[27] && first[3] == x[28]);
      }
    }
}

// Fused down-sample + LayerNorm + linear against the unfused composition, on every tier.
BLUELM_TEST(kernels_downsample_linear_matches_composition) {
  const int64_t h = 5, w = 3, c = 24, k = 4 * c, n = 11, t = 3 * 2;
  std::mt19937 rng(6);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(size_t(h * w * c)), gamma(static_cast<size_t>(k)), beta(static_cast<size_t>(k)), bias(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng) + 0.5f;
  for (auto& v : gamma) v = 1.0f + 0.1f * nd(rng);
  for (auto& v : beta) v = 0.1f * nd(rng);
  for (auto& v : bias) v = nd(rng);
  const Isa before = active_isa();
  for (Format f : {Format::q8_0, Format::q4_0, Format::q4_1}) {
    Problem p = make_problem(f, n, k, 1, 8);
    std::vector<float> ds(size_t(t * k)), ref(size_t(t * n));
    downsample_2x2_reference(x.data(), h, w, c, ds.data());
    for (int64_t i = 0; i < t; ++i)
      isa_kernels_scalar()->layer_norm_row(ds.data() + i * k, k, gamma.data(), beta.data(), 1e-6f, ds.data() + i * k);
    gemm_reference(f, p.rows.data(), n, k, ds.data(), t, ref.data());
    Problem q = p;
    q.t = t, q.x = ds;
    std::vector<double> mag, bound;
    magnitudes(q, mag, bound);
    for (Isa isa : supported_isas()) {
      set_active_isa(isa);
      std::vector<float> y(size_t(t * n));
      DownsampleLinear opt;
      opt.gamma = gamma.data(), opt.beta = beta.data(), opt.bias = bias.data();
      downsample_linear(x.data(), h, w, c, p.view(), opt, y.data());
      // LayerNorm rounding may move an activation by one int8 step: allow twice the quantization bound.
      for (int64_t i = 0; i < t * n; ++i)
        CHECK_NEAR(y[size_t(i)] - bias[size_t(i % n)], ref[size_t(i)], 4 * bound[size_t(i)] + order_tol(q, mag[size_t(i)]));
    }
    set_active_isa(before);
  }
}

BLUELM_TEST(kernels_roofline_probes_run) {
  CHECK(roofline::read_bandwidth(1 << 20, 1, 1) > 0.1);
  for (const roofline::Peak& pk : roofline::peaks()) CHECK(roofline::measure_peak(pk.name, 1, 1, 0.01) > 0.1);
  CHECK_THROWS(roofline::measure_peak("nope", 1, 1), InvalidArgument);
  CHECK_THROWS(roofline::measure_peak(roofline::peaks().at(0).name, 1, 1, 0.0), InvalidArgument);
}

// Every mix loop names a format and a probe of its own tier that this CPU also runs (the benchmark divides by it).
BLUELM_TEST(kernels_mix_loops_name_their_format_and_probe) {
  int mixes = 0;
  for (const roofline::Peak& pk : roofline::peaks()) {
    if (pk.probe.empty()) continue;
    ++mixes;
    CHECK(!pk.format.empty());
    bool found = false;
    for (const roofline::Peak& q : roofline::peaks()) found = found || (q.name == pk.probe && q.isa == pk.isa);
    CHECK(found);
  }
#if defined(__x86_64__)
  CHECK(mixes >= 3 || !isa_supported(Isa::avx2));
#endif
}

BLUELM_TEST(gemv_call_timer_times_each_call_and_checks_its_stack) {
  const quant::Format f = quant::Format::q8_0;
  const int64_t n = 9, k = 64, k2 = 96;
  std::vector<uint8_t> rows(size_t(n * quant::row_bytes(f, k2)), 0);
  PackedMatrix a(f, rows.data(), n, k), b(f, rows.data(), n, k), c(f, rows.data(), n, k2);
  const std::vector<float> x(size_t(k2), 1.0f);
  const std::vector<double> t = roofline::time_gemv_calls({a.view(), b.view()}, x.data(), 5);
  CHECK(t.size() == 5);
  for (double s : t) CHECK(s > 0.0);
  CHECK_THROWS(roofline::time_gemv_calls({}, x.data(), 1), InvalidArgument);
  CHECK_THROWS(roofline::time_gemv_calls({a.view()}, x.data(), 0), InvalidArgument);
  CHECK_THROWS(roofline::time_gemv_calls({a.view()}, x.data(), int64_t(1) << 40), InvalidArgument);
  CHECK_THROWS(roofline::time_gemv_calls({a.view(), c.view()}, x.data(), 1), InvalidArgument);
  CHECK_THROWS(roofline::time_gemv_calls({a.view()}, nullptr, 1), InvalidArgument);
}

BLUELM_TEST(packed_matrix_in_an_arena_matches_its_own_allocation_and_falls_back_when_full) {
  const quant::Format f = quant::Format::q4_0;
  const int64_t n = 20, k = 64;
  std::vector<float> w(size_t(n * k));
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(int(i % 13) - 6) * 0.05f;
  std::vector<uint8_t> rows(size_t(n * quant::row_bytes(f, k)));
  quant::quantize_rows(f, w.data(), n, k, rows.data());
  const PackedMatrix own(f, rows.data(), n, k);
  auto arena = std::make_shared<WeightArena>(size_t(packed_bytes(f, n, k)) + 64);
  PackedMatrix in(f, rows.data(), n, k, arena);
  const bool reserved = arena->capacity() > 0;  // no reservation off Linux: the matrix falls back
  CHECK_EQ(in.in_arena(), reserved);
  const PackedMatrix fallback(f, rows.data(), n, k, arena);  // the arena is full now
  CHECK(!fallback.in_arena());
  arena.reset();  // the matrices keep it alive
  const PackedView a = own.view(), b = in.view(), c = fallback.view();
  CHECK_EQ(a.bytes, b.bytes);
  CHECK(std::memcmp(a.data, b.data, size_t(a.bytes)) == 0);
  CHECK(std::memcmp(a.data, c.data, size_t(a.bytes)) == 0);
  std::vector<float> x(size_t(k), 0.25f), ya(static_cast<size_t>(n)), yb(static_cast<size_t>(n));
  gemv(a, x.data(), ya.data(), nullptr);
  gemv(b, x.data(), yb.data(), nullptr);
  CHECK(ya == yb);
  PackedMatrix moved = std::move(in);
  CHECK(in.view().data == nullptr);  // a moved-from matrix has a null view, not a dangling one
  CHECK_EQ(in.view().bytes, int64_t(0));
  CHECK(moved.view().data == b.data);
  CHECK_EQ(moved.in_arena(), reserved);
}

BLUELM_TEST(packed_matrix_stacked_from_parts_equals_the_concatenated_rows) {
  // q5_1 keeps its minima after the last panel of the whole matrix, not of each part
  for (const quant::Format f : {quant::Format::q4_1, quant::Format::q5_1}) {
    const int64_t k = 96;
    const std::vector<int64_t> ns = {16, 8, 5};
    const int64_t rb = quant::row_bytes(f, k), n = 29;
    std::vector<float> w(size_t(n * k));
    for (size_t i = 0; i < w.size(); ++i) w[i] = float(int(i * 7 % 23) - 11) * 0.03f;
    std::vector<uint8_t> rows(size_t(n * rb));
    quant::quantize_rows(f, w.data(), n, k, rows.data());
    const PackedMatrix whole(f, rows.data(), n, k);
    const PackedMatrix stacked(f, {rows.data(), rows.data() + 16 * rb, rows.data() + 24 * rb}, ns, k);
    CHECK_EQ(stacked.n(), n);
    CHECK_EQ(stacked.view().bytes, whole.view().bytes);
    CHECK(std::memcmp(stacked.view().data, whole.view().data, size_t(whole.view().bytes)) == 0);
    // A part that ends inside a panel can only come last.
    bool refused = false;
    try {
      PackedMatrix bad(f, {rows.data(), rows.data() + 5 * rb}, {5, 8}, k);
    } catch (const InvalidArgument& e) {
      refused = std::string(e.what()).find("whole panels") != std::string::npos;
    }
    CHECK(refused);
  }
}

BLUELM_TEST(layer_norm_rows_match_a_double_reference_in_every_tier) {
  // The rows of a ViT LayerNorm (d = 1152) and an odd width with a vector tail (d = 7), with and without gamma /
  // beta, written to another buffer and in place; a bad shape is refused.
  const Isa saved = active_isa();
  for (Isa isa : supported_isas()) {
    set_active_isa(isa);
    for (int64_t d : {int64_t(7), int64_t(1152)}) {
      const int64_t rows = 3;
      std::vector<float> x(static_cast<size_t>(rows * d)), g(static_cast<size_t>(d)), b(static_cast<size_t>(d));
      for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 37 % 101) - 50) * 0.07f + 3.0f;
      for (int64_t i = 0; i < d; ++i) g[size_t(i)] = 0.5f + 0.01f * float(i % 13), b[size_t(i)] = 0.02f * float(i % 5);
      for (bool affine : {false, true}) {
        std::vector<float> y(x.size() + 1, -9.0f);
        layer_norm_rows(x.data(), rows, d, affine ? g.data() : nullptr, affine ? b.data() : nullptr, 1e-6f, y.data());
        for (int64_t r = 0; r < rows; ++r) {
          double mean = 0, var = 0;
          for (int64_t i = 0; i < d; ++i) mean += x[size_t(r * d + i)];
          mean /= double(d);
          for (int64_t i = 0; i < d; ++i) var += (x[size_t(r * d + i)] - mean) * (x[size_t(r * d + i)] - mean);
          const double rstd = 1.0 / std::sqrt(var / double(d) + 1e-6);
          for (int64_t i = 0; i < d; ++i) {
            double ref = (x[size_t(r * d + i)] - mean) * rstd;
            if (affine) ref = ref * g[size_t(i)] + b[size_t(i)];
            CHECK_NEAR(y[size_t(r * d + i)], ref, 2e-5 * std::max(1.0, std::fabs(ref)));
          }
        }
        CHECK_EQ(y[x.size()], -9.0f);
        std::vector<float> z = x;
        layer_norm_rows(z.data(), rows, d, affine ? g.data() : nullptr, affine ? b.data() : nullptr, 1e-6f, z.data());
        for (size_t i = 0; i < x.size(); ++i) CHECK_EQ(z[i], y[i]);
      }
    }
  }
  set_active_isa(saved);
  bool refused = false;
  try {
    std::vector<float> v(4);
    layer_norm_rows(v.data(), 1, 0, nullptr, nullptr, 1e-6f, v.data());
  } catch (const InvalidArgument& e) {
    refused = std::string(e.what()).find("rows of 0 values") != std::string::npos;
  }
  CHECK(refused);
}

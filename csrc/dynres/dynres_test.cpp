#include "common/error.h"
#include "common/testing.h"
#include "dynres/dynres.h"

using namespace bluelm;
using namespace bluelm::dynres;

namespace {
Params grid3(Selection s) {
  Params p = default_params(s);
  if (s == Selection::internvl) {
    p.max_num = 9;
  } else {
    p.candidates = square_grid(3, s == Selection::bluelm);
  }
  return p;
}
}  // namespace

// The paper's worked examples (Fig. 3 and Fig. 9; docs/dynamic-resolution.md).
BLUELM_TEST(dynres_paper_examples) {
  Plan a = plan(394, 390, grid3(Selection::llava_next));
  CHECK_EQ(a.grid.m, 2);
  CHECK_EQ(a.grid.n, 2);
  CHECK_EQ(a.patches, 5);
  CHECK_EQ(a.tokens_vit, 3645);
  Plan b = plan(394, 390, grid3(Selection::bluelm));
  CHECK_EQ(b.grid.m * b.grid.n, 1);
  CHECK_EQ(b.patches, 1);
  Params iv6 = default_params(Selection::internvl);
  iv6.max_num = 6;
  Plan c = plan(380, 76, iv6);
  CHECK_EQ(c.grid.m, 5);
  CHECK_EQ(c.grid.n, 1);
  CHECK_EQ(c.tokens_ds, 1176);
  Plan d = plan(500, 102, default_params(Selection::bluelm));
  CHECK_EQ(d.grid.m, 2);
  CHECK_EQ(d.grid.n, 1);
  CHECK_EQ(d.tokens_ds, 588);
  Plan e = plan(380, 393, grid3(Selection::llava_next));
  CHECK_EQ(e.canvas_w, 384);
  CHECK_EQ(e.canvas_h, 768);
}

BLUELM_TEST(dynres_phone_screen_is_2x4) {
  const int64_t screens[][2] = {{1080, 2400}, {1170, 2532}, {1440, 3200}, {750, 1334}};
  for (auto& s : screens) {
    Plan p = plan(s[0], s[1], default_params(Selection::bluelm));
    CHECK_EQ(p.grid.m, 2);
    CHECK_EQ(p.grid.n, 4);
    CHECK_EQ(p.tokens_ds, 1764);
  }
}

BLUELM_TEST(dynres_float_truncation_kept) {
  // 2582 * (384 / 2582) is 383.99999999999994 in double: trunc gives 383, not 384.
  Resolution r = resolution_in(3676, 2582, 768, 384);
  CHECK(r.effective < 546 * 384);
}

BLUELM_TEST(dynres_extreme_aspect_falls_back) {
  Plan p = plan(10000, 1, default_params(Selection::bluelm));
  CHECK(p.fallback);
  CHECK_EQ(p.grid.m, 1);
  CHECK_EQ(p.grid.n, 1);
  Plan q = plan(1536, 1, default_params(Selection::bluelm));
  CHECK(!q.fallback);
}

BLUELM_TEST(dynres_bad_input) {
  Params p = default_params(Selection::bluelm);
  CHECK_THROWS(plan(0, 10, p), InvalidArgument);
  CHECK_THROWS(plan(10, -3, p), InvalidArgument);
  CHECK_THROWS(plan(int64_t(1) << 20, int64_t(1) << 20, p), LimitError);
  p.alpha = -0.1;
  CHECK_THROWS(plan(10, 10, p), InvalidArgument);
  Params q = default_params(Selection::llava_next);
  q.candidates = {{0, 2}};
  CHECK_THROWS(plan(10, 10, q), InvalidArgument);
}

BLUELM_TEST(dynres_batch_matches_single) {
  Params p = default_params(Selection::bluelm);
  std::vector<int64_t> w, h;
  for (int i = 1; i < 3000; i += 7) {
    w.push_back(i);
    h.push_back(3001 - i);
  }
  std::vector<Plan> out(w.size());
  plan_batch(w.data(), h.data(), int64_t(w.size()), p, out.data(), 2);
  for (size_t i = 0; i < w.size(); ++i) {
    Plan s = plan(w[i], h[i], p);
    CHECK(s.grid.m == out[i].grid.m && s.grid.n == out[i].grid.n && s.content_w == out[i].content_w &&
          s.content_h == out[i].content_h);
  }
}

#include "dynres/dynres.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>

#include "common/error.h"

namespace bluelm::dynres {

namespace {

constexpr int kMaxGridSide = 1024;  // any candidate side beyond this is a mistake, not a research setting

int64_t checked_tokens_per_patch(int tile, int patch, bool downsampled) {
  const int64_t side = tile / patch;  // stride-`patch` conv without padding
  const int64_t s = downsampled ? (side + 1) / 2 : side;
  return s * s;
}

}  // namespace

Selection parse_selection(const std::string& s) {
  if (s == "bluelm") return Selection::bluelm;
  if (s == "llava_next") return Selection::llava_next;
  if (s == "internvl") return Selection::internvl;
  throw InvalidArgument(cat("unknown scheme '", s, "': expected bluelm, llava_next or internvl"));
}
Thumbnail parse_thumbnail(const std::string& s) {
  if (s == "always") return Thumbnail::always;
  if (s == "if_multi") return Thumbnail::if_multi;
  if (s == "never") return Thumbnail::never;
  throw InvalidArgument(cat("unknown thumbnail policy '", s, "': expected always, if_multi or never"));
}
Layout parse_layout(const std::string& s) {
  if (s == "fit_pad") return Layout::fit_pad;
  if (s == "stretch") return Layout::stretch;
  throw InvalidArgument(cat("unknown layout '", s, "': expected fit_pad or stretch"));
}
Clause2 parse_clause2(const std::string& s) {
  if (s == "<") return Clause2::lt;
  if (s == "<=") return Clause2::le;
  throw InvalidArgument(cat("unknown clause2 '", s, "': expected \"<\" (as printed) or \"<=\""));
}
const char* selection_name(Selection s) {
  switch (s) {
    case Selection::bluelm: return "bluelm";
    case Selection::llava_next: return "llava_next";
    case Selection::internvl: return "internvl";
  }
  return "?";
}
const char* thumbnail_name(Thumbnail t) {
  switch (t) {
    case Thumbnail::always: return "always";
    case Thumbnail::if_multi: return "if_multi";
    case Thumbnail::never: return "never";
  }
  return "?";
}
const char* layout_name(Layout l) { return l == Layout::fit_pad ? "fit_pad" : "stretch"; }
const char* clause2_name(Clause2 c) { return c == Clause2::lt ? "<" : "<="; }

std::vector<Grid> square_grid(int k, bool descending) {
  if (k < 1 || k > kMaxGridSide) throw InvalidArgument(cat("grid side ", k, " must be in [1, ", kMaxGridSide, "]"));
  std::vector<Grid> out;
  out.reserve(size_t(k) * size_t(k));
  for (int m = 1; m <= k; ++m)
    for (int n = 1; n <= k; ++n) out.push_back({m, n});
  if (descending) std::reverse(out.begin(), out.end());
  return out;
}

std::vector<Grid> internvl_grid(int min_num, int max_num) {
  if (min_num < 1) throw InvalidArgument(cat("min_num ", min_num, " must be >= 1"));
  if (max_num < min_num) throw InvalidArgument(cat("max_num ", max_num, " must be >= min_num ", min_num));
  if (max_num > kMaxGridSide) throw InvalidArgument(cat("max_num ", max_num, " must be <= ", kMaxGridSide));
  std::vector<Grid> out;
  for (int area = min_num; area <= max_num; ++area)
    for (int i = 1; i <= area; ++i)
      if (area % i == 0) out.push_back({i, area / i});
  return out;
}

Params default_params(Selection selection) {
  Params p;
  p.selection = selection;
  switch (selection) {
    case Selection::bluelm:
      p.alpha = 0.1;
      p.clause2 = Clause2::lt;
      p.thumbnail = Thumbnail::if_multi;
      p.layout = Layout::fit_pad;
      break;
    case Selection::llava_next:
      p.thumbnail = Thumbnail::always;
      p.layout = Layout::fit_pad;
      break;
    case Selection::internvl:
      p.min_num = 1;
      p.max_num = 16;
      p.thumbnail = Thumbnail::if_multi;
      p.layout = Layout::stretch;
      break;
  }
  return p;
}

std::vector<Grid> effective_candidates(const Params& p) {
  if (!p.candidates.empty()) return p.candidates;
  switch (p.selection) {
    case Selection::bluelm: return square_grid(4, /*descending=*/true);
    case Selection::llava_next: return square_grid(4, /*descending=*/false);
    case Selection::internvl: return internvl_grid(p.min_num, p.max_num);
  }
  return {};
}

void validate(const Params& p) {
  if (!(p.alpha >= 0.0) || !std::isfinite(p.alpha))
    throw InvalidArgument(cat("alpha ", p.alpha, " must be a finite number >= 0"));
  if (p.tile < 1 || p.tile > 65536) throw InvalidArgument(cat("tile ", p.tile, " must be in [1, 65536]"));
  if (p.vit_patch < 1 || p.vit_patch > p.tile)
    throw InvalidArgument(cat("vit_patch ", p.vit_patch, " must be in [1, tile=", p.tile, "]"));
  if (p.max_pixels < 1) throw InvalidArgument(cat("max_pixels ", p.max_pixels, " must be >= 1"));
  if (p.selection == Selection::internvl && p.candidates.empty()) internvl_grid(p.min_num, p.max_num);
  for (size_t i = 0; i < p.candidates.size(); ++i) {
    const Grid& g = p.candidates[i];
    if (g.m < 1 || g.n < 1 || g.m > kMaxGridSide || g.n > kMaxGridSide)
      throw InvalidArgument(cat("candidate ", i, " (", g.m, ", ", g.n, ") must have 1 <= m, n <= ", kMaxGridSide));
  }
}

Resolution resolution_in(int64_t w, int64_t h, int64_t canvas_w, int64_t canvas_h) {
  const double scale = std::min(double(canvas_w) / double(w), double(canvas_h) / double(h));
  const int64_t dw = static_cast<int64_t>(double(w) * scale);  // truncation toward zero, like Python int()
  const int64_t dh = static_cast<int64_t>(double(h) * scale);
  Resolution r;
  r.effective = std::min(dw * dh, w * h);
  r.wasted = canvas_w * canvas_h - r.effective;
  return r;
}

namespace {

Grid select_llava_next(int64_t w, int64_t h, int64_t tile, const std::vector<Grid>& cands) {
  Grid best = cands.front();
  int64_t best_eff = 0;
  int64_t best_waste = std::numeric_limits<int64_t>::max();
  bool have = false;
  for (const Grid& g : cands) {
    const Resolution r = resolution_in(w, h, tile * g.m, tile * g.n);
    if (r.effective > best_eff || (r.effective == best_eff && r.wasted < best_waste)) {
      best = g;
      best_eff = r.effective;
      best_waste = r.wasted;
      have = true;
    }
  }
  (void)have;  // the first candidate always satisfies the second rule, so `best` is set
  return best;
}

Grid select_internvl(int64_t w, int64_t h, int64_t tile, const std::vector<Grid>& cands) {
  const double aspect = double(w) / double(h);
  const double area = double(w * h);
  Grid best{1, 1};
  double best_diff = std::numeric_limits<double>::infinity();
  for (const Grid& g : cands) {
    const double diff = std::fabs(aspect - double(g.m) / double(g.n));
    if (diff < best_diff) {
      best_diff = diff;
      best = g;
    } else if (diff == best_diff) {
      if (area > 0.5 * double(tile) * double(tile) * double(g.m) * double(g.n)) best = g;
    }
  }
  return best;
}

Grid select_bluelm(int64_t w, int64_t h, int64_t tile, double alpha, Clause2 clause2,
                   const std::vector<Grid>& cands, bool* fallback) {
  bool have = false;
  Grid best{};
  int64_t ref = 0;                                         // R_e of the current best ("R_e,max" in the paper)
  int64_t waste_min = std::numeric_limits<int64_t>::max();  // +inf: every real R_w is smaller
  for (const Grid& g : cands) {
    const Resolution r = resolution_in(w, h, tile * g.m, tile * g.n);
    const double slack = alpha * double(ref);
    const bool gain = double(r.effective - ref) > slack;  // int64 -> double exact below 2^53
    const double loss = double(ref - r.effective);
    const bool close = clause2 == Clause2::lt ? loss < slack : loss <= slack;
    if (gain || (close && r.wasted < waste_min)) {
      best = g;
      ref = r.effective;
      waste_min = r.wasted;
      have = true;
    }
  }
  if (have) {
    *fallback = false;
    return best;
  }
  // As printed, Algorithm 1 returns nothing when every R_e is 0 (aspect beyond the grid's reach).
  *fallback = true;
  Grid smallest = cands.front();
  for (const Grid& g : cands)
    if (int64_t(g.m) * g.n < int64_t(smallest.m) * smallest.n) smallest = g;
  return smallest;
}

void check_size(int64_t w, int64_t h, const Params& p) {
  if (w < 1 || h < 1) throw InvalidArgument(cat("image size ", w, "x", h, " must have width and height >= 1"));
  if (w > p.max_pixels || h > p.max_pixels || w * h > p.max_pixels)
    throw LimitError(cat("image size ", w, "x", h, " (", double(w) * double(h), " pixels) exceeds max_pixels=",
                         p.max_pixels));
}

Plan plan_unchecked(int64_t w, int64_t h, const Params& p, const std::vector<Grid>& cands) {
  Plan out;
  bool fallback = false;
  out.grid = select_grid(w, h, p, cands, &fallback);
  out.fallback = fallback;
  const int64_t tile = p.tile;
  out.canvas_w = tile * out.grid.m;
  out.canvas_h = tile * out.grid.n;
  if (p.layout == Layout::stretch) {
    out.content_w = out.canvas_w;
    out.content_h = out.canvas_h;
  } else {
    // LLaVA-NeXT resize_and_pad_image: note ceil here against trunc in the selection step.
    const double sw = double(out.canvas_w) / double(w);
    const double sh = double(out.canvas_h) / double(h);
    if (sw < sh) {
      out.content_w = out.canvas_w;
      out.content_h = std::min(static_cast<int64_t>(std::ceil(double(h) * sw)), out.canvas_h);
    } else {
      out.content_h = out.canvas_h;
      out.content_w = std::min(static_cast<int64_t>(std::ceil(double(w) * sh)), out.canvas_w);
    }
    out.offset_x = (out.canvas_w - out.content_w) / 2;
    out.offset_y = (out.canvas_h - out.content_h) / 2;
  }
  out.local_patches = int64_t(out.grid.m) * out.grid.n;
  bool thumb = false;
  switch (p.thumbnail) {
    case Thumbnail::always: thumb = true; break;
    case Thumbnail::if_multi: thumb = out.local_patches > 1; break;
    case Thumbnail::never: thumb = false; break;
  }
  out.patches = out.local_patches + (thumb ? 1 : 0);
  out.thumbnail_first = thumb && p.selection == Selection::llava_next;
  out.tokens_vit = out.patches * checked_tokens_per_patch(p.tile, p.vit_patch, false);
  out.tokens_ds = out.patches * checked_tokens_per_patch(p.tile, p.vit_patch, true);
  return out;
}

}  // namespace

Grid select_grid(int64_t w, int64_t h, const Params& p, const std::vector<Grid>& cands, bool* fallback) {
  *fallback = false;
  if (cands.empty()) throw InvalidArgument("candidate list is empty");
  switch (p.selection) {
    case Selection::llava_next: return select_llava_next(w, h, p.tile, cands);
    case Selection::internvl: return select_internvl(w, h, p.tile, cands);
    case Selection::bluelm: return select_bluelm(w, h, p.tile, p.alpha, p.clause2, cands, fallback);
  }
  return cands.front();
}

Plan plan(int64_t w, int64_t h, const Params& p) {
  validate(p);
  check_size(w, h, p);
  const std::vector<Grid> cands = effective_candidates(p);
  if (cands.empty()) throw InvalidArgument("candidate list is empty");
  return plan_unchecked(w, h, p, cands);
}

void plan_batch(const int64_t* w, const int64_t* h, int64_t n, const Params& p, Plan* out, int threads) {
  validate(p);
  if (n < 0) throw InvalidArgument(cat("batch size ", n, " must be >= 0"));
  const std::vector<Grid> cands = effective_candidates(p);
  if (cands.empty()) throw InvalidArgument("candidate list is empty");
  for (int64_t i = 0; i < n; ++i) {
    try {
      check_size(w[i], h[i], p);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(cat("size at index ", i, ": ", e.what()));
    } catch (const LimitError& e) {
      throw LimitError(cat("size at index ", i, ": ", e.what()));
    }
  }
  if (threads <= 0) threads = std::max(1u, std::thread::hardware_concurrency());
  const int64_t min_per_thread = 1 << 14;
  threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, n / min_per_thread)));
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = plan_unchecked(w[i], h[i], p, cands);
  };
  if (threads == 1) {
    run(0, n);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t step = (n + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int64_t b = t * step, e = std::min(n, b + step);
    if (b < e) pool.emplace_back(run, b, e);
  }
  for (auto& th : pool) th.join();
}

}  // namespace bluelm::dynres

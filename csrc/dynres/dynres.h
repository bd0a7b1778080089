#pragma once
// Dynamic image resolution: which grid of 384x384 tiles an image of w x h pixels is cut into.
// Three selection rules, as docs/dynamic-resolution.md states them:
//   bluelm      BlueLM-V-3B Algorithm 1, relaxed aspect-ratio matching with alpha (paper §3.2, appendix §7)
//   llava_next  LLaVA-NeXT select_best_resolution (max effective resolution, then min wasted)
//   internvl    InternVL 1.5/2 find_closest_aspect_ratio (closest ratio, area tie rule)
// All floating-point steps are IEEE double in the documented order, with truncation toward zero; this file
// must never be compiled with -ffast-math (the build adds -fno-fast-math).
#include <cstdint>
#include <string>
#include <vector>

namespace bluelm::dynres {

enum class Selection { bluelm, llava_next, internvl };
enum class Thumbnail { always, if_multi, never };
enum class Layout { fit_pad, stretch };
enum class Clause2 { lt, le };  // Algorithm 1 line 11 as printed ("<"), or the "<=" variant

struct Grid {
  int m = 1;  // tiles across the width
  int n = 1;  // tiles down the height
};

struct Params {
  Selection selection = Selection::bluelm;
  std::vector<Grid> candidates;  // empty: the scheme's default (4x4 grid in its own order; internvl: min/max_num)
  double alpha = 0.1;
  Clause2 clause2 = Clause2::lt;
  int min_num = 1;    // internvl, when candidates is empty
  int max_num = 16;   // internvl, when candidates is empty
  Thumbnail thumbnail = Thumbnail::if_multi;
  Layout layout = Layout::fit_pad;
  int tile = 384;
  int vit_patch = 14;  // SigLIP patch: floor(tile/patch)^2 tokens per tile
  int64_t max_pixels = 178956970;  // w*h above this is refused (Pillow's decompression-bomb limit)
};

// Each scheme's defaults: the bluelm4x4 entries of tests/data/dynres-vectors.json.
Params default_params(Selection selection);
Selection parse_selection(const std::string& s);
Thumbnail parse_thumbnail(const std::string& s);
Layout parse_layout(const std::string& s);
Clause2 parse_clause2(const std::string& s);
const char* selection_name(Selection s);
const char* thumbnail_name(Thumbnail t);
const char* layout_name(Layout l);
const char* clause2_name(Clause2 c);

// Candidate lists. square_grid(K, descending=false) is LLaVA-OneVision's (1x1)..(KxK) order (m outer, n inner,
// ascending); descending=true is its exact reverse, Algorithm 1's enumeration. internvl_grid lists every (i, j)
// with min_num <= i*j <= max_num by ascending area, then ascending i.
std::vector<Grid> square_grid(int k, bool descending);
std::vector<Grid> internvl_grid(int min_num, int max_num);
// The candidate list plan() uses for these params (the default when params.candidates is empty).
std::vector<Grid> effective_candidates(const Params& p);
// Throws InvalidArgument naming the bad field.
void validate(const Params& p);

struct Plan {
  Grid grid;
  int64_t canvas_w = 0, canvas_h = 0;    // tile*m x tile*n
  int64_t content_w = 0, content_h = 0;  // the image resized inside the canvas (== canvas for stretch)
  int64_t offset_x = 0, offset_y = 0;    // where the content sits on the canvas (fit_pad centres it)
  int64_t local_patches = 0;             // m*n
  int64_t patches = 0;                   // local + thumbnail per the policy
  int64_t tokens_vit = 0;                // patches * floor(tile/patch)^2      (729 at 384/14)
  int64_t tokens_ds = 0;                 // patches * ceil(floor(tile/patch)/2)^2 (196 after 2x2 down-sampling)
  bool fallback = false;                 // Algorithm 1 found nothing (every R_e == 0); smallest canvas used
  bool thumbnail_first = false;          // LLaVA-NeXT puts its base image before the tiles
};

// Effective and wasted resolution of the image w x h in canvas W x H (LLaVA-NeXT's definition, exact arithmetic
// order: scale = min(W/w, H/h) in double; trunc(w*scale) * trunc(h*scale), capped at w*h).
struct Resolution {
  int64_t effective = 0;
  int64_t wasted = 0;
};
Resolution resolution_in(int64_t w, int64_t h, int64_t canvas_w, int64_t canvas_h);

// Selection only: the chosen grid (and whether Algorithm 1 fell back). Candidates must be validated.
Grid select_grid(int64_t w, int64_t h, const Params& p, const std::vector<Grid>& candidates, bool* fallback);

// Selection plus layout, patches and token counts. Throws InvalidArgument / LimitError on bad sizes.
Plan plan(int64_t w, int64_t h, const Params& p);

// Batch form for ablations: n sizes, one Plan each (out must hold n). Validates params once; sizes that are
// invalid throw naming the index. Runs on `threads` threads (0 = hardware concurrency).
void plan_batch(const int64_t* w, const int64_t* h, int64_t n, const Params& p, Plan* out, int threads = 1);

}  // namespace bluelm::dynres

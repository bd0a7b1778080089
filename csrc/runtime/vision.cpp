#include "runtime/vision.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/threadpool.h"
#include "runtime/attention_isa.h"
#include "runtime/ops.h"

namespace bluelm::runtime {

namespace {

void activate(model::Activation a, float* x, int64_t n) {
  if (a == model::Activation::gelu) gelu_erf(x, n);
  else gelu_tanh(x, n);
}

template <class V>
void grow(V& v, size_t n) {
  if (v.size() < n) v.resize(n);
}
}  // namespace

VisionEncoder::VisionEncoder(const model::Package& pkg, Activations act)
    : cfg_(pkg.config().vision), proj_(pkg.config().projector), d_llm_(pkg.config().llm.hidden), act_(act) {
  if (!pkg.config().multimodal) throw InvalidArgument("the model has no vision tower");
  const int64_t c = cfg_.hidden, p = cfg_.patch_size, f = cfg_.intermediate;
  const bool rms = cfg_.norm == model::Norm::rms_norm;
  const std::string v = "vision_tower.";
  patch_ = Linear(pkg, v + "embeddings.patch_embedding.weight", c, cfg_.channels * p * p,
                  v + "embeddings.patch_embedding.bias");
  pos_ = pkg.tensor(v + "embeddings.position_embedding.weight", {cfg_.positions(), c}).f32();
  if (cfg_.class_token) cls_ = pkg.tensor(v + "embeddings.class_embedding", {c}).f32();
  auto bias = [&](const std::string& name) { return cfg_.qkv_bias ? name : std::string(); };
  for (int64_t i = 0; i < cfg_.layers_used(); ++i) {
    const std::string l = cat(v, "encoder.layers.", i, ".");
    auto norm_bias = [&](const std::string& name) { return rms ? nullptr : pkg.tensor(name, {c}).f32(); };
    Layer L{pkg.tensor(l + "layer_norm1.weight", {c}).f32(), norm_bias(l + "layer_norm1.bias"),
            pkg.tensor(l + "layer_norm2.weight", {c}).f32(), norm_bias(l + "layer_norm2.bias"),
            Linear(pkg, l + "self_attn.q_proj.weight", c, c, bias(l + "self_attn.q_proj.bias")),
            Linear(pkg, l + "self_attn.k_proj.weight", c, c, bias(l + "self_attn.k_proj.bias")),
            Linear(pkg, l + "self_attn.v_proj.weight", c, c, bias(l + "self_attn.v_proj.bias")),
            Linear(pkg, l + "self_attn.out_proj.weight", c, c, l + "self_attn.out_proj.bias"),
            Linear(pkg, l + "mlp.fc1.weight", f, c, l + "mlp.fc1.bias"),
            Linear(pkg, l + "mlp.fc2.weight", c, f, l + "mlp.fc2.bias")};
    if (cfg_.qk_norm) {
      L.q_norm = pkg.tensor(l + "self_attn.q_norm.weight", {c}).f32();
      L.k_norm = pkg.tensor(l + "self_attn.k_norm.weight", {c}).f32();
    }
    if (cfg_.layer_scale) {
      L.scale1 = pkg.tensor(l + "layer_scale1", {c}).f32();
      L.scale2 = pkg.tensor(l + "layer_scale2", {c}).f32();
    }
    layers_.push_back(std::move(L));
  }
  if (cfg_.apply_post_layernorm()) {  // a LayerNorm in both ViTs
    post_w_ = pkg.tensor(v + "post_layernorm.weight", {c}).f32();
    post_b_ = pkg.tensor(v + "post_layernorm.bias", {c}).f32();
  }
  const int64_t width = proj_.merge * proj_.merge * c;
  if (proj_.layer_norm) {
    pn_w_ = pkg.tensor("mm_projector.norm.weight", {width}).f32();
    pn_b_ = pkg.tensor("mm_projector.norm.bias", {width}).f32();
  }
  const bool mlp = proj_.kind == model::ProjectorKind::mlp;
  l1_ = Linear(pkg, "mm_projector.linear_1.weight", d_llm_, width, proj_.bias ? "mm_projector.linear_1.bias" : "");
  if (mlp)
    l2_ = Linear(pkg, "mm_projector.linear_2.weight", d_llm_, d_llm_, proj_.bias ? "mm_projector.linear_2.bias" : "");
  if (pkg.config().image_layout == model::ImageLayout::anyres_unpad)
    newline_ = pkg.tensor("image_newline", {d_llm_}).f32();
  tokens_out_ = pkg.config().image_tokens_per_tile();
}

int64_t VisionEncoder::resident_bytes() const {
  int64_t b = patch_.resident_bytes() + l1_.resident_bytes() + l2_.resident_bytes();  // l2_ empty: 0
  for (const Layer& L : layers_)
    for (const Linear* l : {&L.q, &L.k, &L.v, &L.o, &L.fc1, &L.fc2}) b += l->resident_bytes();
  return b;
}

void VisionEncoder::attention(int64_t b, int64_t n) {
  // Per (tile, head): the head's keys transposed once (zero columns up to a multiple of 8), then blocks of query
  // rows through the tier's attention kernels (the LLM prefill's f32 scores and value products, vectorized in each
  // tier: this file is compiled without SIMD flags, so Eigen here ran SSE2 without FMA, 24% of an AVX2 tile):
  // scores of kRows rows at a time (kept in L2), scaled, SoftMax over the n real columns, then o = p v.
  const int64_t c = cfg_.hidden, heads = cfg_.heads, hd = c / heads;
  const float scale = 1.0f / std::sqrt(float(hd));
  const int nt = std::max(1, num_threads());
  constexpr int64_t kRows = 64;
  const int64_t np = (n + 7) / 8 * 8, rows = std::min(kRows, n);
  const size_t per_worker = size_t(hd) * size_t(np) + size_t(rows) * size_t(np);
  grow(scores_, size_t(nt) * per_worker);
  const AttentionKernels& A = attention_kernels();
  ThreadPool::global().run(b * heads, [&](int64_t t0, int64_t t1, int worker) {
    float* kt = scores_.data() + size_t(worker) * per_worker;  // [hd, np]
    float* s = kt + size_t(hd) * size_t(np);                    // [rows, np]
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t tile = task / heads, h = task % heads;
      const size_t off = size_t(tile * n) * size_t(c) + size_t(h * hd);
      const float* q = q_.data() + off;
      const float* k = k_.data() + off;
      const float* v = v_.data() + off;
      float* o = att_.data() + off;
      for (int64_t i = 0; i < hd; ++i) {
        float* row = kt + i * np;
        for (int64_t j = 0; j < n; ++j) row[j] = k[j * c + i];
        std::fill(row + n, row + np, 0.0f);
      }
      for (int64_t r0 = 0; r0 < n; r0 += kRows) {
        const int64_t m = std::min(kRows, n - r0);
        A.scores(q + r0 * c, c, m, kt, np, np, hd, s, np);
        for (int64_t r = 0; r < m; ++r) {
          float* row = s + r * np;
          for (int64_t j = 0; j < n; ++j) row[j] *= scale;
          softmax(row, n);
        }
        for (int64_t r = 0; r < m; ++r) std::fill(o + (r0 + r) * c, o + (r0 + r) * c + hd, 0.0f);
        A.accumulate(s, np, m, v, c, n, hd, o + r0 * c, c);
      }
    }
  });
}

void VisionEncoder::norm(const float* x, const float* w, const float* b, float* y, int64_t rows) const {
  if (cfg_.norm == model::Norm::rms_norm) rms_norm(x, w, y, rows, cfg_.hidden, float(cfg_.layer_norm_eps));
  else layer_norm(x, w, b, y, rows, cfg_.hidden, float(cfg_.layer_norm_eps));
}

namespace {
// out[i] += s[i % c] * y[i] over rows of c (InternViT's layer scale on a residual branch).
void add_scaled(float* x, const float* y, const float* s, int64_t rows, int64_t c) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < c; ++i) x[r * c + i] += s[i] * y[r * c + i];
}

// Token merge for any factor: x [g, g, c] -> y [side * side, merge * merge * c], side = ceil(g / merge); output cell
// (r, q) holds x(r*merge + dy, q*merge + dx) at channel block dy*merge + dx, zeros beyond the grid
// (bluelm_v/models/projector.py, row-major order).
void merge_tokens(const float* x, int64_t g, int64_t c, int64_t merge, float* y) {
  const int64_t side = (g + merge - 1) / merge;
  for (int64_t r = 0; r < side; ++r)
    for (int64_t q = 0; q < side; ++q)
      for (int64_t dy = 0; dy < merge; ++dy)
        for (int64_t dx = 0; dx < merge; ++dx) {
          float* dst = y + ((r * side + q) * merge * merge + dy * merge + dx) * c;
          const int64_t sy = r * merge + dy, sx = q * merge + dx;
          if (sy < g && sx < g) std::memcpy(dst, x + (sy * g + sx) * c, size_t(c) * sizeof(float));
          else std::fill(dst, dst + c, 0.0f);
        }
}
}  // namespace

void VisionEncoder::project(const float* feat, float* out) {
  const int64_t c = cfg_.hidden, g = cfg_.grid(), m = tokens_out_, width = proj_.merge * proj_.merge * c;
  const bool mlp = proj_.kind == model::ProjectorKind::mlp;
  float* first = mlp ? (grow(p1_, size_t(m * d_llm_)), p1_.data()) : out;
  if (proj_.merge == 2 && l1_.quantized() && l1_.stored_k() == width && act_ == Activations::int8) {
    kernels::DownsampleLinear opt;
    opt.layer_norm = proj_.layer_norm;
    opt.gamma = pn_w_;
    opt.beta = pn_b_;
    opt.eps = float(proj_.layer_norm_eps);
    opt.bias = l1_.bias();
    kernels::downsample_linear(feat, g, g, c, l1_.packed(), opt, first, &scratch_);
  } else {
    grow(ds_, size_t(m * width));
    if (proj_.merge == 2) kernels::downsample_2x2(feat, g, g, c, ds_.data());
    else merge_tokens(feat, g, c, proj_.merge, ds_.data());
    if (proj_.layer_norm) layer_norm(ds_.data(), pn_w_, pn_b_, ds_.data(), m, width, float(proj_.layer_norm_eps));
    l1_.forward(ds_.data(), m, width, first, d_llm_, scratch_, act_);
  }
  if (!mlp) return;
  activate(proj_.act, p1_.data(), m * d_llm_);
  l2_.forward(p1_.data(), m, d_llm_, out, d_llm_, scratch_, act_);
}

void VisionEncoder::encode(const float* tiles, int64_t b, float* out) {
  const int64_t c = cfg_.hidden, p = cfg_.patch_size, g = cfg_.grid(), s = cfg_.image_size;
  const int64_t n = cfg_.positions(), first = cfg_.class_token ? 1 : 0;  // patch rows start after the class token
  const int64_t pp = cfg_.channels * p * p, rows = b * n, f = cfg_.intermediate;
  const float eps = float(cfg_.layer_norm_eps);
  grow(patches_, size_t(b * g * g * pp));
  for (auto* v : {&x_, &xn_, &q_, &k_, &v_, &att_, &tmp_}) grow(*v, size_t(rows * c));
  grow(mlp_, size_t(rows * f));
  // Patch embedding: each patch flattened in the conv weight's (channel, y, x) order.
  for (int64_t t = 0; t < b; ++t)
    for (int64_t gy = 0; gy < g; ++gy)
      for (int64_t gx = 0; gx < g; ++gx) {
        float* dst = patches_.data() + ((t * g * g) + gy * g + gx) * pp;
        for (int64_t ch = 0; ch < cfg_.channels; ++ch)
          for (int64_t ky = 0; ky < p; ++ky) {
            const float* src = tiles + ((t * cfg_.channels + ch) * s + gy * p + ky) * s + gx * p;
            std::memcpy(dst + (ch * p + ky) * p, src, size_t(p) * sizeof(float));
          }
      }
  for (int64_t t = 0; t < b; ++t) {  // [class token] patches, then + positions
    float* xt = x_.data() + t * n * c;
    patch_.forward(patches_.data() + t * g * g * pp, g * g, pp, xt + first * c, c, scratch_, act_);
    if (cls_) std::memcpy(xt, cls_, size_t(c) * sizeof(float));
    add_inplace(xt, pos_, n * c);
  }
  for (const Layer& L : layers_) {
    norm(x_.data(), L.ln1_w, L.ln1_b, xn_.data(), rows);
    L.q.forward(xn_.data(), rows, c, q_.data(), c, scratch_, act_);
    L.k.forward(xn_.data(), rows, c, k_.data(), c, scratch_, act_);
    L.v.forward(xn_.data(), rows, c, v_.data(), c, scratch_, act_);
    if (L.q_norm) {  // over the whole width before the head split, InternViT's fixed eps
      rms_norm(q_.data(), L.q_norm, q_.data(), rows, c, 1e-6f);
      rms_norm(k_.data(), L.k_norm, k_.data(), rows, c, 1e-6f);
    }
    attention(b, n);
    L.o.forward(att_.data(), rows, c, tmp_.data(), c, scratch_, act_);
    if (L.scale1) add_scaled(x_.data(), tmp_.data(), L.scale1, rows, c);
    else add_inplace(x_.data(), tmp_.data(), rows * c);
    norm(x_.data(), L.ln2_w, L.ln2_b, xn_.data(), rows);
    L.fc1.forward(xn_.data(), rows, c, mlp_.data(), f, scratch_, act_);
    activate(cfg_.act, mlp_.data(), rows * f);
    L.fc2.forward(mlp_.data(), rows, f, tmp_.data(), c, scratch_, act_);
    if (L.scale2) add_scaled(x_.data(), tmp_.data(), L.scale2, rows, c);
    else add_inplace(x_.data(), tmp_.data(), rows * c);
  }
  if (post_w_) layer_norm(x_.data(), post_w_, post_b_, x_.data(), rows, c, eps);
  // Projector tile by tile, on the patch features (the class token dropped).
  for (int64_t t = 0; t < b; ++t) project(x_.data() + (t * n + first) * c, out + t * tokens_out_ * d_llm_);
}

}  // namespace bluelm::runtime

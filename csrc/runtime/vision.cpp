#include "runtime/vision.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/threadpool.h"
#include "runtime/ops.h"

namespace bluelm::runtime {

namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;

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
  const std::string v = "vision_tower.";
  patch_ = Linear(pkg, v + "embeddings.patch_embedding.weight", c, cfg_.channels * p * p,
                  v + "embeddings.patch_embedding.bias");
  pos_ = pkg.tensor(v + "embeddings.position_embedding.weight", {cfg_.tokens(), c}).f32();
  for (int64_t i = 0; i < cfg_.layers_used(); ++i) {
    const std::string l = cat(v, "encoder.layers.", i, ".");
    Layer L{pkg.tensor(l + "layer_norm1.weight", {c}).f32(), pkg.tensor(l + "layer_norm1.bias", {c}).f32(),
            pkg.tensor(l + "layer_norm2.weight", {c}).f32(), pkg.tensor(l + "layer_norm2.bias", {c}).f32(),
            Linear(pkg, l + "self_attn.q_proj.weight", c, c, l + "self_attn.q_proj.bias"),
            Linear(pkg, l + "self_attn.k_proj.weight", c, c, l + "self_attn.k_proj.bias"),
            Linear(pkg, l + "self_attn.v_proj.weight", c, c, l + "self_attn.v_proj.bias"),
            Linear(pkg, l + "self_attn.out_proj.weight", c, c, l + "self_attn.out_proj.bias"),
            Linear(pkg, l + "mlp.fc1.weight", f, c, l + "mlp.fc1.bias"),
            Linear(pkg, l + "mlp.fc2.weight", c, f, l + "mlp.fc2.bias")};
    layers_.push_back(std::move(L));
  }
  if (cfg_.apply_post_layernorm()) {
    post_w_ = pkg.tensor(v + "post_layernorm.weight", {c}).f32();
    post_b_ = pkg.tensor(v + "post_layernorm.bias", {c}).f32();
  }
  const int64_t width = proj_.merge * proj_.merge * c;
  if (proj_.layer_norm) {
    pn_w_ = pkg.tensor("mm_projector.norm.weight", {width}).f32();
    pn_b_ = pkg.tensor("mm_projector.norm.bias", {width}).f32();
  }
  l1_ = Linear(pkg, "mm_projector.linear_1.weight", d_llm_, width, "mm_projector.linear_1.bias");
  l2_ = Linear(pkg, "mm_projector.linear_2.weight", d_llm_, d_llm_, "mm_projector.linear_2.bias");
  tokens_out_ = pkg.config().image_tokens_per_tile();
}

int64_t VisionEncoder::resident_bytes() const {
  int64_t b = patch_.resident_bytes() + l1_.resident_bytes() + l2_.resident_bytes();
  for (const Layer& L : layers_)
    for (const Linear* l : {&L.q, &L.k, &L.v, &L.o, &L.fc1, &L.fc2}) b += l->resident_bytes();
  return b;
}

void VisionEncoder::attention(int64_t b, int64_t n) {
  const int64_t c = cfg_.hidden, heads = cfg_.heads, hd = c / heads;
  const float scale = 1.0f / std::sqrt(float(hd));
  const int nt = std::max(1, num_threads());
  grow(scores_, size_t(nt) * size_t(n) * size_t(n));
  ThreadPool::global().run(b * heads, [&](int64_t t0, int64_t t1, int worker) {
    Map S(scores_.data() + size_t(worker) * size_t(n) * size_t(n), n, n, Eigen::OuterStride<>(n));
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t tile = task / heads, h = task % heads;
      const size_t off = size_t(tile * n) * size_t(c) + size_t(h * hd);
      const ConstMap Q(q_.data() + off, n, hd, Eigen::OuterStride<>(c));
      const ConstMap K(k_.data() + off, n, hd, Eigen::OuterStride<>(c));
      const ConstMap V(v_.data() + off, n, hd, Eigen::OuterStride<>(c));
      S.noalias() = Q * K.transpose();
      for (int64_t r = 0; r < n; ++r) {
        float* row = S.data() + r * n;
        for (int64_t j = 0; j < n; ++j) row[j] *= scale;
        softmax(row, n);
      }
      Map O(att_.data() + off, n, hd, Eigen::OuterStride<>(c));
      O.noalias() = S * V;
    }
  });
}

void VisionEncoder::encode(const float* tiles, int64_t b, float* out) {
  const int64_t c = cfg_.hidden, p = cfg_.patch_size, g = cfg_.grid(), n = cfg_.tokens(), s = cfg_.image_size;
  const int64_t pp = cfg_.channels * p * p, rows = b * n, f = cfg_.intermediate;
  const float eps = float(cfg_.layer_norm_eps);
  grow(patches_, size_t(rows * pp));
  for (auto* v : {&x_, &xn_, &q_, &k_, &v_, &att_, &tmp_}) grow(*v, size_t(rows * c));
  grow(mlp_, size_t(rows * f));
  // Patch embedding: each patch flattened in the conv weight's (channel, y, x) order.
  for (int64_t t = 0; t < b; ++t)
    for (int64_t gy = 0; gy < g; ++gy)
      for (int64_t gx = 0; gx < g; ++gx) {
        float* dst = patches_.data() + ((t * n) + gy * g + gx) * pp;
        for (int64_t ch = 0; ch < cfg_.channels; ++ch)
          for (int64_t ky = 0; ky < p; ++ky) {
            const float* src = tiles + ((t * cfg_.channels + ch) * s + gy * p + ky) * s + gx * p;
            std::memcpy(dst + (ch * p + ky) * p, src, size_t(p) * sizeof(float));
          }
      }
  patch_.forward(patches_.data(), rows, pp, x_.data(), c, scratch_, act_);
  for (int64_t t = 0; t < b; ++t) add_inplace(x_.data() + t * n * c, pos_, n * c);
  for (const Layer& L : layers_) {
    layer_norm(x_.data(), L.ln1_w, L.ln1_b, xn_.data(), rows, c, eps);
    L.q.forward(xn_.data(), rows, c, q_.data(), c, scratch_, act_);
    L.k.forward(xn_.data(), rows, c, k_.data(), c, scratch_, act_);
    L.v.forward(xn_.data(), rows, c, v_.data(), c, scratch_, act_);
    attention(b, n);
    L.o.forward(att_.data(), rows, c, tmp_.data(), c, scratch_, act_);
    add_inplace(x_.data(), tmp_.data(), rows * c);
    layer_norm(x_.data(), L.ln2_w, L.ln2_b, xn_.data(), rows, c, eps);
    L.fc1.forward(xn_.data(), rows, c, mlp_.data(), f, scratch_, act_);
    activate(cfg_.act, mlp_.data(), rows * f);
    L.fc2.forward(mlp_.data(), rows, f, tmp_.data(), c, scratch_, act_);
    add_inplace(x_.data(), tmp_.data(), rows * c);
  }
  if (post_w_) layer_norm(x_.data(), post_w_, post_b_, x_.data(), rows, c, eps);
  // Projector, tile by tile: down-sample 2x2 (+ LayerNorm) + linear_1, GELU, linear_2.
  const int64_t m = tokens_out_, width = 4 * c;
  grow(p1_, size_t(m * d_llm_));
  for (int64_t t = 0; t < b; ++t) {
    const float* feat = x_.data() + t * n * c;
    if (l1_.quantized() && l1_.stored_k() == width && act_ == Activations::int8) {
      kernels::DownsampleLinear opt;
      opt.layer_norm = proj_.layer_norm;
      opt.gamma = pn_w_;
      opt.beta = pn_b_;
      opt.eps = float(proj_.layer_norm_eps);
      opt.bias = l1_.bias();
      kernels::downsample_linear(feat, g, g, c, l1_.packed(), opt, p1_.data(), &scratch_);
    } else {
      grow(ds_, size_t(m * width));
      kernels::downsample_2x2(feat, g, g, c, ds_.data());
      if (proj_.layer_norm) layer_norm(ds_.data(), pn_w_, pn_b_, ds_.data(), m, width, float(proj_.layer_norm_eps));
      l1_.forward(ds_.data(), m, width, p1_.data(), d_llm_, scratch_, act_);
    }
    activate(proj_.act, p1_.data(), m * d_llm_);
    l2_.forward(p1_.data(), m, d_llm_, out + t * m * d_llm_, d_llm_, scratch_, act_);
  }
}

}  // namespace bluelm::runtime

// Global stream (spec §3): projections of the frozen features, global-attention editors,
// adaptive weighted combiner; target = the image projection. Names of spec §9.
#include <cmath>
#include <cstring>

#include "model.h"

namespace dwc {
namespace {

// Linear(in,out) parameters: offsets into the ParamBuffer.
struct Lin {
  int64_t W = 0, b = 0;
  int in = 0, out = 0;
};

// Activations of Linear -> ReLU -> Dropout (r: ReLU output — the Linear's when relu is off —, d: after
// dropout, mask: null when off).
struct LRD {
  float *r = nullptr, *d = nullptr, *mask = nullptr;
  bool relu = true;
};

class GlobalStream : public Stream {
 public:
  GlobalStream(const ModelDims& dims, const ModelOptions& opt, backend::Backend& be) : Stream(be), Dc_(dims.Dc), D_(dims.D) {
    DWC_ARG_CHECK(dims.Dc > 0, "model: dimension 'Dc' must be a positive integer, got " << dims.Dc);
    DWC_ARG_CHECK(dims.D > 0, "model: dimension 'D' must be a positive integer, got " << dims.D);
    options = opt;
    img_fc_ = lin("global.img_fc.0", Dc_, D_);
    txt_fc_ = lin("global.txt_fc.0", Dc_, D_);
    attI0_ = lin("global.atten_I.0", 2 * D_, D_);
    attI3_ = lin("global.atten_I.3", D_, D_);
    attT0_ = lin("global.atten_T.0", 2 * D_, D_);
    attT3_ = lin("global.atten_T.3", D_, D_);
    ds0_ = lin("global.dynamic_scalar.0", 2 * D_, D_);
    ds3_ = lin("global.dynamic_scalar.3", D_, 1);
    params.finalize();
    init_params(opt.seed);
  }
  const char* name() const override { return "global"; }
  int dim() const override { return D_; }

  void init_params(uint64_t seed) override {
    // PyTorch nn.Linear default: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)).
    Rng base{seed, 0x6C6F62616CULL};
    for (size_t i = 0; i < params.specs.size(); ++i) {
      const ParamSpec& s = params.specs[i];
      float bound = 1.f / std::sqrt(static_cast<float>(fan_in_[i]));
      params.init_uniform(s.offset, s.numel, -bound, bound, base.derive(i));
    }
  }

  StreamOut forward(const Batch& b, bool train, const Rng& rng) override {
    arena.reset();
    d_e_img = d_e_txt = d_e_target = nullptr;
    B_ = b.B;
    const bool editors = !options.no_editors, comb = !options.fixed_w;
    // the global stream's own rate when set (globalDropout, docs/EXPERIMENTS.md "The global half"), else the shared one
    const float p = train ? (options.global_dropout >= 0.f ? options.global_dropout : options.dropout) : 0.f;
    StreamOut out;
    has_q_ = b.e_img && b.e_txt;
    has_t_ = b.e_target != nullptr;
    if (has_q_ || has_t_) DWC_ARG_CHECK(b.Dc == Dc_, "batch: global features have Dc = " << b.Dc << " but the model expects Dc = " << Dc_);
    const int B = B_, D = D_;
    if (has_q_) {
      // §3.1 projections
      fI_ = proj(b.e_img, img_fc_, p, rng.derive(1), &pI_, &nI_);
      fT_ = proj(b.e_txt, txt_fc_, p, rng.derive(2), &pT_, &nT_, options.text_relu);
      x_ = arena.alloc(int64_t(B) * 2 * D, false);
      concat(fI_, fT_, x_);
      // §3.2 editors: a = MLP_σ(2D→D→D)([f_I; f_T]), f' = a ⊙ f
      if (editors) {
        aI_ = mlp(x_, attI0_, attI3_, p, rng.derive(3), &hI_, &zI_);
        aT_ = mlp(x_, attT0_, attT3_, p, rng.derive(4), &hT_, &zT_);
        fIp_ = arena.alloc(int64_t(B) * D, false);
        fTp_ = arena.alloc(int64_t(B) * D, false);
        be_->mul_forward(aI_, fI_, fIp_, int64_t(B) * D);
        be_->mul_forward(aT_, fT_, fTp_, int64_t(B) * D);
        x2_ = arena.alloc(int64_t(B) * 2 * D, false);
        concat(fIp_, fTp_, x2_);
      } else {
        fIp_ = fI_;
        fTp_ = fT_;
        x2_ = x_;
      }
      // §3.3 combiner: w = MLP_σ(2D→D→1)([f_I'; f_T']), q = norm(w f_I' + (1−w) f_T')
      if (comb) {
        w_ = mlp(x2_, ds0_, ds3_, p, rng.derive(5), &hW_, &zW_);
      } else {
        w_ = arena.alloc(B, false);
        be_->fill(w_, options.fixed_w_value, B);
      }
      u_ = arena.alloc(int64_t(B) * D, false);
      be_->weighted_fusion_forward(fIp_, fTp_, w_, u_, B, D);
      q_ = arena.alloc(int64_t(B) * D, false);
      nq_ = arena.alloc(B, false);
      be_->l2norm_rows_forward(u_, q_, nq_, B, D);
      out.query = q_;
      out.weight = w_;
    }
    if (has_t_) {
      // §3.4 target: the image projection
      t_ = proj(b.e_target, img_fc_, p, rng.derive(6), &pX_, &nX_);
      out.target = t_;
    }
    return out;
  }

  void backward(const Batch& b, const float* dquery, const float* dtarget) override {
    const int B = B_, D = D_;
    const int64_t BD = int64_t(B) * D;
    if (dquery && has_q_) {
      float* du = arena.alloc(BD);
      be_->l2norm_rows_backward(q_, nq_, dquery, du, B, D);
      float* dfIp = arena.alloc(BD);
      float* dfTp = arena.alloc(BD);
      float* dw = arena.alloc(B);
      be_->weighted_fusion_backward(fIp_, fTp_, w_, du, dfIp, dfTp, options.fixed_w ? nullptr : dw, B, D);
      if (extra_dw && !options.fixed_w) be_->add_inplace(dw, extra_dw, B);  // + dL_w/dw (PL4CIR §3)
      float* dfI = dfIp;
      float* dfT = dfTp;
      if (!options.fixed_w) {
        float* dx2 = arena.alloc(2 * BD);
        mlp_backward(x2_, ds0_, ds3_, hW_, zW_, w_, dw, dx2);
        split_add(dx2, dfIp, dfTp);  // into the f' grads, before the gates
      }
      if (!options.no_editors) {
        dfI = arena.alloc(BD);
        dfT = arena.alloc(BD);
        float* daI = arena.alloc(BD);
        float* daT = arena.alloc(BD);
        be_->mul_backward(aI_, fI_, dfIp, daI, dfI, BD);
        be_->mul_backward(aT_, fT_, dfTp, daT, dfT, BD);
        float* dx = arena.alloc(2 * BD);
        mlp_backward(x_, attI0_, attI3_, hI_, zI_, aI_, daI, dx);
        mlp_backward(x_, attT0_, attT3_, hT_, zT_, aT_, daT, dx);
        split_add(dx, dfI, dfT);
      }
      proj_backward(b.e_img, img_fc_, pI_, fI_, nI_, dfI, feat_grad(&d_e_img));
      proj_backward(b.e_txt, txt_fc_, pT_, fT_, nT_, dfT, feat_grad(&d_e_txt));
    }
    if (dtarget && has_t_) proj_backward(b.e_target, img_fc_, pX_, t_, nX_, dtarget, feat_grad(&d_e_target));
  }

 private:
  Lin lin(const std::string& prefix, int in, int out) {
    Lin l;
    l.in = in;
    l.out = out;
    l.W = params.add(prefix + ".weight", {out, in});
    fan_in_.push_back(in);
    l.b = params.add(prefix + ".bias", {out});
    fan_in_.push_back(in);
    return l;
  }

  // y[B,out] = x·Wᵀ + b, then ReLU in place (unless !relu), then dropout (skipped when p == 0).
  LRD lin_relu_drop(const float* x, const Lin& l, float p, const Rng& rng, bool relu = true) {
    LRD a;
    a.relu = relu;
    const int64_t n = int64_t(B_) * l.out;
    a.r = arena.alloc(n, false);
    be_->linear_forward(x, params.p(l.W), params.p(l.b), a.r, B_, l.in, l.out);
    if (relu) be_->relu_forward(a.r, a.r, n);
    if (p > 0.f) {
      a.d = arena.alloc(n, false);
      a.mask = arena.alloc(n, false);
      be_->dropout_forward(a.r, a.d, a.mask, n, p, rng);
    } else {
      a.d = a.r;
    }
    return a;
  }
  // dh = d(ReLU∘Dropout) of dd (dd is consumed); returns dh (without the ReLU: the dropout's gradient)
  const float* lrd_backward(const LRD& a, const float* dd, int out) {
    const int64_t n = int64_t(B_) * out;
    const float* dr = dd;
    if (a.mask) {
      float* t = arena.alloc(n);
      be_->dropout_backward(a.mask, dd, t, n);
      dr = t;
    }
    if (!a.relu) return dr;
    float* dh = arena.alloc(n);
    be_->relu_backward(a.r, dr, dh, n);
    return dh;
  }

  // f = norm(Dropout(ReLU(W e + b))); relu false: f = norm(Dropout(W e + b)) (text_relu, docs/MODEL.md §3)
  float* proj(const float* e, const Lin& l, float p, const Rng& rng, LRD* act, float** norms, bool relu = true) {
    *act = lin_relu_drop(e, l, p, rng, relu);
    float* f = arena.alloc(int64_t(B_) * l.out, false);
    *norms = arena.alloc(B_, false);
    be_->l2norm_rows_forward(act->d, f, *norms, B_, l.out);
    return f;
  }
  // d(features) buffer [B,Dc] (zeroed) when the trainable encoder asks for it, else null.
  float* feat_grad(const float** slot) {
    if (!want_feature_grads) return nullptr;
    float* d = arena.alloc(int64_t(B_) * Dc_);
    *slot = d;
    return d;
  }
  void proj_backward(const float* e, const Lin& l, const LRD& act, const float* f, const float* norms, const float* df, float* de) {
    float* dd = arena.alloc(int64_t(B_) * l.out);
    be_->l2norm_rows_backward(f, norms, df, dd, B_, l.out);
    const float* dh = lrd_backward(act, dd, l.out);
    be_->linear_backward(e, params.p(l.W), dh, de, params.g(l.W), params.g(l.b), B_, l.in, l.out);
    params.touch(l.W);
    params.touch(l.b);
  }

  // MLP_σ: σ(L3(Dropout(ReLU(L0 x)))); returns σ output [B, l3.out]
  float* mlp(const float* x, const Lin& l0, const Lin& l3, float p, const Rng& rng, LRD* h, float** z) {
    *h = lin_relu_drop(x, l0, p, rng);
    const int64_t n = int64_t(B_) * l3.out;
    *z = arena.alloc(n, false);
    be_->linear_forward(h->d, params.p(l3.W), params.p(l3.b), *z, B_, l3.in, l3.out);
    float* s = arena.alloc(n, false);
    be_->sigmoid_forward(*z, s, n);
    return s;
  }
  // Accumulates dx [B, l0.in] from ds (gradient of the σ output).
  void mlp_backward(const float* x, const Lin& l0, const Lin& l3, const LRD& h, const float* z, const float* s, const float* ds, float* dx) {
    (void)z;
    const int64_t n = int64_t(B_) * l3.out;
    float* dz = arena.alloc(n);
    be_->sigmoid_backward(s, ds, dz, n);
    float* dd = arena.alloc(int64_t(B_) * l3.in);
    be_->linear_backward(h.d, params.p(l3.W), dz, dd, params.g(l3.W), params.g(l3.b), B_, l3.in, l3.out);
    const float* dh = lrd_backward(h, dd, l0.out);
    be_->linear_backward(x, params.p(l0.W), dh, dx, params.g(l0.W), params.g(l0.b), B_, l0.in, l0.out);
    for (const Lin* l : {&l0, &l3}) {
      params.touch(l->W);
      params.touch(l->b);
    }
  }

  // x[B,2D] = [a; b] per row, and the reverse (accumulating) split.
  void concat(const float* a, const float* b, float* x) const {
    const float* xs[2] = {a, b};
    const int64_t sz[2] = {D_, D_};
    be_->concat_forward(2, xs, sz, B_, 1, x);
  }
  void split_add(const float* dx, float* da, float* db) const {
    const int D = D_;
    for (int i = 0; i < B_; ++i) {
      be_->add_inplace(da + int64_t(i) * D, dx + int64_t(i) * 2 * D, D);
      be_->add_inplace(db + int64_t(i) * D, dx + int64_t(i) * 2 * D + D, D);
    }
  }

  int Dc_, D_, B_ = 0;
  std::vector<int> fan_in_;  // per spec, for the default init
  Lin img_fc_, txt_fc_, attI0_, attI3_, attT0_, attT3_, ds0_, ds3_;
  bool has_q_ = false, has_t_ = false;
  // activations of the last forward (arena)
  LRD pI_, pT_, pX_, hI_, hT_, hW_;
  float *fI_ = nullptr, *fT_ = nullptr, *nI_ = nullptr, *nT_ = nullptr, *x_ = nullptr;
  float *aI_ = nullptr, *aT_ = nullptr, *zI_ = nullptr, *zT_ = nullptr, *fIp_ = nullptr, *fTp_ = nullptr, *x2_ = nullptr;
  float *w_ = nullptr, *zW_ = nullptr, *u_ = nullptr, *q_ = nullptr, *nq_ = nullptr, *t_ = nullptr, *nX_ = nullptr;
};

}  // namespace

std::unique_ptr<Stream> make_global_stream(const ModelDims& dims, const ModelOptions& opt, backend::Backend& be) {
  return std::make_unique<GlobalStream>(dims, opt, be);
}

}  // namespace dwc

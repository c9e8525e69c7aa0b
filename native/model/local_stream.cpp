// Local stream of DWC (spec §4, masking §10, names §9), see local_stream.h.
#include "local_stream.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "../core/op.h"

namespace dwc {

namespace {
constexpr float kTempS = 7.0f, kTempW = 4.0f;  // §4 steps 3-4
constexpr float kGemEps = 1e-6f;
constexpr uint64_t kDropoutStream = 1;  // sub-stream of the forward rng for MLP_σ's dropout

// Declares the parameters that come before the first Inception block (§9 order).
ParamBuffer& declare_head(ParamBuffer& pb, int D, int C, int E, int V) {
  // Inception outputs (D and C channels) split into eighths (§4)
  DWC_ARG_CHECK(D > 0 && D % 8 == 0, "local stream: dimension 'D' must be a positive multiple of 8, got " << D);
  DWC_ARG_CHECK(C > 0 && C % 8 == 0, "local stream: dimension 'C' must be a positive multiple of 8, got " << C);
  DWC_ARG_CHECK(E > 0, "local stream: dimension 'E' must be positive, got " << E);
  DWC_ARG_CHECK(V > 0, "local stream: dimension 'V' must be positive, got " << V);
  pb.add("local.img_pool.p", {1});
  pb.add("local.img_fc.weight", {D, C});
  pb.add("local.img_fc.bias", {D});
  pb.add("local.txt_model.embedding_layer.weight", {V, E});
  pb.add("local.txt_model.lstm.weight_ih_l0", {4 * D, E});
  pb.add("local.txt_model.lstm.weight_hh_l0", {4 * D, D});
  pb.add("local.txt_model.lstm.bias_ih_l0", {4 * D});
  pb.add("local.txt_model.lstm.bias_hh_l0", {4 * D});
  return pb;
}

}  // namespace

LocalStream::LocalStream(int D, int C, int E, int V, const ModelOptions& opts, backend::Backend& be)
    : Stream(be),
      D_(D),
      C_(C),
      E_(E),
      V_(V),
      imgconv_(declare_head(params, D, C, E, V), "local.imgconv.0.", C, D, true),
      imgatt_(params, "local.imgatt.0.", 2 * D, C, true),
      txtatt_(params, "local.txtatt.0.", 2 * D, D, false),
      txt2img_(params, "local.txt2img.0.", D, C, true),
      img2txt_(params, "local.img2txt.0.", D, D, false) {
  arena_.set_backend(be_);
  options = opts;
  params.add("local.pool_i.p", {1});
  params.add("local.pool_t.p", {1});
  params.add("local.fc_txt.weight", {D, D});
  params.add("local.fc_txt.bias", {D});
  params.add("local.dynamic_scalar.0.weight", {D, 2 * D});
  params.add("local.dynamic_scalar.0.bias", {D});
  params.add("local.dynamic_scalar.3.weight", {1, D});
  params.add("local.dynamic_scalar.3.bias", {1});
  params.finalize();
  if (params.touched.size() < params.specs.size()) params.touched.assign(params.specs.size(), false);
  for (Inception* blk : {&imgconv_, &imgatt_, &txtatt_, &txt2img_, &img2txt_}) blk->bind(params);
  o_img_pool_ = off("local.img_pool.p", &i_img_pool_);
  o_imgfc_w_ = off("local.img_fc.weight", &i_imgfc_w_);
  o_imgfc_b_ = off("local.img_fc.bias", &i_imgfc_b_);
  o_emb_ = off("local.txt_model.embedding_layer.weight", &i_emb_);
  o_wih_ = off("local.txt_model.lstm.weight_ih_l0", &i_wih_);
  o_whh_ = off("local.txt_model.lstm.weight_hh_l0", &i_whh_);
  o_bih_ = off("local.txt_model.lstm.bias_ih_l0", &i_bih_);
  o_bhh_ = off("local.txt_model.lstm.bias_hh_l0", &i_bhh_);
  o_pool_i_ = off("local.pool_i.p", &i_pool_i_);
  o_pool_t_ = off("local.pool_t.p", &i_pool_t_);
  o_fctxt_w_ = off("local.fc_txt.weight", &i_fctxt_w_);
  o_fctxt_b_ = off("local.fc_txt.bias", &i_fctxt_b_);
  o_ds0_w_ = off("local.dynamic_scalar.0.weight", &i_ds0_w_);
  o_ds0_b_ = off("local.dynamic_scalar.0.bias", &i_ds0_b_);
  o_ds3_w_ = off("local.dynamic_scalar.3.weight", &i_ds3_w_);
  o_ds3_b_ = off("local.dynamic_scalar.3.bias", &i_ds3_b_);
}

int64_t LocalStream::off(const std::string& name, int* idx) const {
  const ParamSpec* s = params.find(name);
  DWC_CHECK(s != nullptr, Internal, "parameter '" << name << "' was not declared");
  if (idx) *idx = static_cast<int>(s - params.specs.data());
  return s->offset;
}

void LocalStream::touch(int idx) {
  if (params.touched.size() < params.specs.size()) params.touched.resize(params.specs.size(), false);
  params.touched[idx] = true;
}

// PyTorch defaults: Linear U(±1/√fan_in) for weight and bias, LSTM U(±1/√D), Embedding N(0,1),
// GeM p = 3; Inception convs/BNs in Inception::init_params.
void LocalStream::init_params(uint64_t seed) {
  const Rng base{seed, 0};
  auto uni = [&](int64_t o, int idx, float bound) {
    const ParamSpec& s = params.specs[idx];
    params.init_uniform(o, s.numel, -bound, bound, base.derive(static_cast<uint64_t>(idx)));
  };
  const float D = static_cast<float>(D_), C = static_cast<float>(C_);
  params.init_fill(o_img_pool_, 1, 3.0f);
  params.init_fill(o_pool_i_, 1, 3.0f);
  params.init_fill(o_pool_t_, 1, 3.0f);
  uni(o_imgfc_w_, i_imgfc_w_, 1.0f / std::sqrt(C));
  uni(o_imgfc_b_, i_imgfc_b_, 1.0f / std::sqrt(C));
  params.init_normal(o_emb_, params.specs[i_emb_].numel, 0.0f, 1.0f, base.derive(static_cast<uint64_t>(i_emb_)));
  for (auto [o, i] : {std::pair{o_wih_, i_wih_}, {o_whh_, i_whh_}, {o_bih_, i_bih_}, {o_bhh_, i_bhh_}}) uni(o, i, 1.0f / std::sqrt(D));
  uni(o_fctxt_w_, i_fctxt_w_, 1.0f / std::sqrt(D));
  uni(o_fctxt_b_, i_fctxt_b_, 1.0f / std::sqrt(D));
  uni(o_ds0_w_, i_ds0_w_, 1.0f / std::sqrt(2 * D));
  uni(o_ds0_b_, i_ds0_b_, 1.0f / std::sqrt(2 * D));
  uni(o_ds3_w_, i_ds3_w_, 1.0f / std::sqrt(D));
  uni(o_ds3_b_, i_ds3_b_, 1.0f / std::sqrt(D));
  for (const Inception* blk : {&imgconv_, &imgatt_, &txtatt_, &txt2img_, &img2txt_}) blk->init_params(params, base);
}

StreamOut LocalStream::forward(const Batch& b, bool train, const Rng& rng) {
  prof_mark(nullptr);
  // §6 step 4 after step 1: same batch, same weights → reuse the query path (see header)
  const bool reuse = reuse_next_forward && train && train_ && has_q_ && fwd_valid_ && b.fmap && b.fmap == last_fmap_ &&
                     b.tokens == last_tokens_ && b.lengths == last_lengths_ && b.B == B_ && b.C == C_ && b.H == H_ && b.W == W_ &&
                     b.L == L_;
  reuse_next_forward = false;
  reused_ = reuse;
  if (!reuse) arena_.reset();  // (reuse keeps the arena: the step-1 activations live in it)
  dF_ = dFt_ = nullptr;
  train_ = train;
  has_q_ = b.fmap != nullptr;
  has_t_ = b.fmap_target != nullptr;
  fwd_valid_ = false;
  StreamOut out;
  if (!has_q_ && !has_t_) return out;
  // GeM exponents: downloaded once per forward, kept for backward (docs/CUDA.md "The model on the backend")
  p_pool_i_ = params.scalar(o_pool_i_);
  p_pool_t_ = params.scalar(o_pool_t_);
  p_img_pool_ = params.scalar(o_img_pool_);
  DWC_ARG_CHECK(b.B > 0, "local stream: argument 'B' (batch size) must be positive, got " << b.B);
  DWC_ARG_CHECK(b.C == C_, "local stream: argument 'fmap' has " << b.C << " channels, expected C = " << C_);
  DWC_ARG_CHECK(b.H > 0 && b.W > 0, "local stream: argument 'fmap' has an empty map (H=" << b.H << ", W=" << b.W << ")");
  const int B = b.B, D = D_, C = C_, H = b.H, W = b.W, P = H * W;
  const int64_t BD = static_cast<int64_t>(B) * D, BCP = static_cast<int64_t>(B) * C * P, BDP = BD * P;
  B_ = B;
  H_ = H;
  W_ = W;

  if (has_q_) {
    DWC_ARG_CHECK(b.tokens != nullptr, "local stream: argument 'tokens' is required with 'fmap'");
    DWC_ARG_CHECK(b.L > 0, "local stream: argument 'tokens' must have at least one token per query, got L = " << b.L);
    const int L = b.L;
    L_ = L;
    const int32_t* tok = b.host_tokens();
    for (int64_t i = 0; i < static_cast<int64_t>(B) * L; ++i)
      DWC_ARG_CHECK(tok[i] >= 0 && tok[i] < V_,
                    "local stream: argument 'tokens' holds id " << tok[i] << " at " << i << ", outside the vocabulary [0, " << V_ << ")");
    lens_ = options.masked ? b.lengths : nullptr;  // §10: null = reference (run over all L)
    lens_host_ = options.masked ? b.host_lengths() : nullptr;
    if (lens_host_)
      for (int i = 0; i < B; ++i)
        DWC_ARG_CHECK(lens_host_[i] >= 1 && lens_host_[i] <= L,
                      "local stream: argument 'lengths'[" << i << "] = " << lens_host_[i] << " is outside [1, " << L << "]");
    const bool editors = !options.no_editors;
    if (reuse) {
      for (Inception* blk : {&imgconv_, &txt2img_, &img2txt_}) blk->replay_running_stats(params);
      if (editors)
        for (Inception* blk : {&imgatt_, &txtatt_}) blk->replay_running_stats(params);
      prof_mark("f.reused");
    } else {
      const int64_t BDL = BD * L;
      size_t ws = std::max({imgconv_.workspace_floats(B, H, W), txt2img_.workspace_floats(B, H, W), img2txt_.workspace_floats(B, 1, L)});
      if (editors) ws = std::max({ws, imgatt_.workspace_floats(B, H, W), txtatt_.workspace_floats(B, 1, L)});
      ws_ = arena_.alloc(static_cast<int64_t>(ws) + 16, false);

      // text encoder: Embedding -> LSTM, T [B,L,D]
      emb_ = arena_.alloc(static_cast<int64_t>(B) * L * E_, false);
      be_->embedding_forward(b.tokens, params.p(o_emb_), emb_, static_cast<int64_t>(B) * L, V_, E_);
      T_ = arena_.alloc(BDL, false);
      lstm_cache_ = arena_.alloc(static_cast<int64_t>(be_->lstm_cache_floats(B, L, D)), false);
      be_->lstm_forward(emb_, lens_, params.p(o_wih_), params.p(o_whh_), params.p(o_bih_), params.p(o_bhh_), T_, lstm_cache_, B, L, E_, D);
      prof_mark("f.text_encoder");

      // 1. I = ReLU(Inc2d(C→D)(F)) [B,D,P]
      const float* I0 = imgconv_.forward(params, b.fmap, B, H, W, train, arena_, ws_);
      I_ = arena_.alloc(BDP, false);
      be_->relu_forward(I0, I_, BDP);
      prof_mark("f.misc");

      // 2-4. cross attention: Ŝ [B,D,P], Î [B,D,L]
      S_hat_ = arena_.alloc(BDP, false);
      I_hat_ = arena_.alloc(BDL, false);
      A_s_ = arena_.alloc(static_cast<int64_t>(B) * L * P, false);
      A_w_ = arena_.alloc(static_cast<int64_t>(B) * L * P, false);
      be_->cross_attention_forward(T_, I_, lens_, S_hat_, I_hat_, A_s_, A_w_, B, L, D, P, kTempS, kTempW);
      prof_mark("f.cross_attention");

      // 5. image editor: Φ = g_I ⊙ F + ReLU(Inc2d(D→C)(Ŝ)); fuse_i = img_fc(GeM_i(Φ))
      Phi_ = arena_.alloc(BCP, false);
      if (editors) {
        XI_ = arena_.alloc(2 * BDP, false);
        const float* xs[2] = {I_, S_hat_};
        const int64_t sz[2] = {D, D};
        be_->concat_forward(2, xs, sz, B, P, XI_);
        const float* gpre = imgatt_.forward(params, XI_, B, H, W, train, arena_, ws_);
        gI_ = arena_.alloc(BCP, false);
        be_->sigmoid_forward(gpre, gI_, BCP);
        be_->mul_forward(gI_, b.fmap, Phi_, BCP);
      } else {
        be_->copy(Phi_, b.fmap, sizeof(float) * BCP);
      }
      const float* t2i_pre = txt2img_.forward(params, S_hat_, B, H, W, train, arena_, ws_);
      t2i_ = arena_.alloc(BCP, false);
      be_->relu_forward(t2i_pre, t2i_, BCP);
      be_->add_inplace(Phi_, t2i_, BCP);
      phi_ = arena_.alloc(static_cast<int64_t>(B) * C, false);
      be_->gem_forward(Phi_, p_pool_i_, phi_, B, C, P, nullptr, kGemEps);
      fuse_i_ = arena_.alloc(BD, false);
      be_->linear_forward(phi_, params.p(o_imgfc_w_), params.p(o_imgfc_b_), fuse_i_, B, C, D);
      prof_mark("f.misc");

      // 6. text editor: Ψ = g_T ⊙ Tᵀ + ReLU(Inc1d(D→D)(Î)); fuse_t = fc_txt(GeM_t(Ψ)) over real tokens.
      // Masked (§10): T and Î are 0 at padded tokens (LSTM, attention), and both Inc1d see each
      // text as unpadded (zero boundary, pool and BN statistics over real tokens: inception.h), so
      // a query's embedding does not depend on the other texts of its batch.
      Tt_ = arena_.alloc(BDL, false);
      be_->transpose_batched(T_, Tt_, B, L, D, false);
      Psi_ = arena_.alloc(BDL, false);
      if (editors) {
        XT_ = arena_.alloc(2 * BDL, false);
        const float* xs[2] = {Tt_, I_hat_};
        const int64_t sz[2] = {D, D};
        be_->concat_forward(2, xs, sz, B, L, XT_);
        const float* gpre = txtatt_.forward(params, XT_, B, 1, L, train, arena_, ws_, lens_, lens_host_);
        gT_ = arena_.alloc(BDL, false);
        be_->sigmoid_forward(gpre, gT_, BDL);
        be_->mul_forward(gT_, Tt_, Psi_, BDL);
      } else {
        be_->copy(Psi_, Tt_, sizeof(float) * BDL);
      }
      const float* i2t_pre = img2txt_.forward(params, I_hat_, B, 1, L, train, arena_, ws_, lens_, lens_host_);
      i2t_ = arena_.alloc(BDL, false);
      be_->relu_forward(i2t_pre, i2t_, BDL);
      be_->add_inplace(Psi_, i2t_, BDL);
      psi_ = arena_.alloc(BD, false);
      be_->gem_forward(Psi_, p_pool_t_, psi_, B, D, L, lens_, kGemEps);
      fuse_t_ = arena_.alloc(BD, false);
      be_->linear_forward(psi_, params.p(o_fctxt_w_), params.p(o_fctxt_b_), fuse_t_, B, D, D);

    }
    // 7. combiner: w = MLP_σ(2D→D→1)([fuse_i; fuse_t]); q = norm(w·fuse_i + (1−w)·fuse_t)
    w_ = arena_.alloc(B, false);
    if (!options.fixed_w) {
      Xw_ = arena_.alloc(2 * BD, false);
      const float* xs[2] = {fuse_i_, fuse_t_};
      const int64_t sz[2] = {D, D};
      be_->concat_forward(2, xs, sz, B, 1, Xw_);
      h1_ = arena_.alloc(BD, false);
      be_->linear_forward(Xw_, params.p(o_ds0_w_), params.p(o_ds0_b_), h1_, B, 2 * D, D);
      r1_ = arena_.alloc(BD, false);
      be_->relu_forward(h1_, r1_, BD);
      if (train && options.dropout > 0.0f) {
        drop_ = arena_.alloc(BD, false);
        mask_ = arena_.alloc(BD, false);
        be_->dropout_forward(r1_, drop_, mask_, BD, options.dropout, rng.derive(kDropoutStream));
      } else {
        drop_ = r1_;
        mask_ = nullptr;
      }
      z_ = arena_.alloc(B, false);
      be_->linear_forward(drop_, params.p(o_ds3_w_), params.p(o_ds3_b_), z_, B, D, 1);
      be_->sigmoid_forward(z_, w_, B);
    } else {
      be_->fill(w_, 0.5f, B);
    }
    fused_ = arena_.alloc(BD, false);
    be_->weighted_fusion_forward(fuse_i_, fuse_t_, w_, fused_, B, D);
    q_ = arena_.alloc(BD, false);
    qn_ = arena_.alloc(B, false);
    be_->l2norm_rows_forward(fused_, q_, qn_, B, D);
    prof_mark("f.misc");
    out.query = q_;
    out.weight = w_;
    fwd_valid_ = train;
    last_fmap_ = b.fmap;
    last_tokens_ = b.tokens;
    last_lengths_ = b.lengths;
  }

  if (has_t_) {
    // target: t = norm(img_fc(GeM_img(F_target)))
    gt_ = arena_.alloc(static_cast<int64_t>(B) * C, false);
    be_->gem_forward(b.fmap_target, p_img_pool_, gt_, B, C, P, nullptr, kGemEps);
    t0_ = arena_.alloc(BD, false);
    be_->linear_forward(gt_, params.p(o_imgfc_w_), params.p(o_imgfc_b_), t0_, B, C, D);
    t_ = arena_.alloc(BD, false);
    tn_ = arena_.alloc(B, false);
    be_->l2norm_rows_forward(t0_, t_, tn_, B, D);
    out.target = t_;
    prof_mark("f.target");
  }
  return out;
}

void LocalStream::backward(const Batch& b, const float* dquery, const float* dtarget) {
  DWC_ARG_CHECK(b.B == B_, "local stream: backward batch size " << b.B << " differs from the forward's " << B_);
  fwd_valid_ = false;  // backward reuses forward buffers as scratch
  const int B = B_, D = D_, C = C_, H = H_, W = W_, P = H * W;
  const int64_t BD = static_cast<int64_t>(B) * D, BCP = static_cast<int64_t>(B) * C * P, BDP = BD * P;
  prof_mark(nullptr);
  if (dtarget && has_t_) {
    float* dt0 = arena_.alloc(BD);
    be_->l2norm_rows_backward(t_, tn_, dtarget, dt0, B, D);
    float* dg = arena_.alloc(static_cast<int64_t>(B) * C);
    be_->linear_backward(gt_, params.p(o_imgfc_w_), dt0, dg, params.g(o_imgfc_w_), params.g(o_imgfc_b_), B, C, D);
    if (input_grads) dFt_ = arena_.alloc(BCP);
    be_->gem_backward(b.fmap_target, p_img_pool_, gt_, dg, dFt_, params.g(o_img_pool_), B, C, P, nullptr, kGemEps);
    touch(i_img_pool_);
    touch(i_imgfc_w_);
    touch(i_imgfc_b_);
    prof_mark("b.target");
  }
  if (!(dquery && has_q_)) return;
  DWC_CHECK(train_, Internal, "local stream: query backward needs a train-mode forward (batch-norm batch statistics)");
  const int L = L_;
  const int64_t BDL = BD * L;
  const bool editors = !options.no_editors;

  // 7. combiner
  float* dfused = arena_.alloc(BD);
  be_->l2norm_rows_backward(q_, qn_, dquery, dfused, B, D);
  float* dfi = arena_.alloc(BD);
  float* dft = arena_.alloc(BD);
  float* dw = options.fixed_w ? nullptr : arena_.alloc(B);
  be_->weighted_fusion_backward(fuse_i_, fuse_t_, w_, dfused, dfi, dft, dw, B, D);
  if (extra_dw && dw) be_->add_inplace(dw, extra_dw, B);  // + dL_w/dw (PL4CIR §3)
  if (!options.fixed_w) {
    float* dz = arena_.alloc(B);
    be_->sigmoid_backward(w_, dw, dz, B);
    float* ddrop = arena_.alloc(BD);
    be_->linear_backward(drop_, params.p(o_ds3_w_), dz, ddrop, params.g(o_ds3_w_), params.g(o_ds3_b_), B, D, 1);
    float* dr1 = ddrop;
    if (mask_) {
      dr1 = arena_.alloc(BD);
      be_->dropout_backward(mask_, ddrop, dr1, BD);
    }
    float* dh1 = arena_.alloc(BD);
    be_->relu_backward(r1_, dr1, dh1, BD);
    float* dXw = arena_.alloc(2 * BD);
    be_->linear_backward(Xw_, params.p(o_ds0_w_), dh1, dXw, params.g(o_ds0_w_), params.g(o_ds0_b_), B, 2 * D, D);
    float* dxs[2] = {dfi, dft};
    const int64_t sz[2] = {D, D};
    be_->concat_backward(2, dxs, sz, B, 1, dXw);
    for (int i : {i_ds0_w_, i_ds0_b_, i_ds3_w_, i_ds3_b_}) touch(i);
  }
  prof_mark("b.misc");

  // 6. text editor
  float* dpsi = arena_.alloc(BD);
  be_->linear_backward(psi_, params.p(o_fctxt_w_), dft, dpsi, params.g(o_fctxt_w_), params.g(o_fctxt_b_), B, D, D);
  float* dPsi = arena_.alloc(BDL);
  be_->gem_backward(Psi_, p_pool_t_, psi_, dpsi, dPsi, params.g(o_pool_t_), B, D, L, lens_, kGemEps);
  prof_mark("b.misc");
  float* dTt = arena_.alloc(BDL);
  float* dIhat = arena_.alloc(BDL);
  if (editors) {
    float* dg = arena_.alloc(BDL);
    be_->mul_backward(gT_, Tt_, dPsi, dg, dTt, BDL);
    float* dgpre = arena_.alloc(BDL);
    be_->sigmoid_backward(gT_, dg, dgpre, BDL);
    float* dXT = arena_.alloc(2 * BDL);
    txtatt_.backward(params, dgpre, dXT, arena_, ws_);
    float* dxs[2] = {dTt, dIhat};
    const int64_t sz[2] = {D, D};
    be_->concat_backward(2, dxs, sz, B, L, dXT);
    txtatt_.mark_touched(params);
  } else {
    be_->add_inplace(dTt, dPsi, BDL);
  }
  float* di2t = arena_.alloc(BDL);
  be_->relu_backward(i2t_, dPsi, di2t, BDL);
  img2txt_.backward(params, di2t, dIhat, arena_, ws_);

  // 5. image editor
  float* dphi = arena_.alloc(static_cast<int64_t>(B) * C);
  be_->linear_backward(phi_, params.p(o_imgfc_w_), dfi, dphi, params.g(o_imgfc_w_), params.g(o_imgfc_b_), B, C, D);
  float* dPhi = arena_.alloc(BCP);
  be_->gem_backward(Phi_, p_pool_i_, phi_, dphi, dPhi, params.g(o_pool_i_), B, C, P, nullptr, kGemEps);
  prof_mark("b.misc");
  float* dShat = arena_.alloc(BDP);
  float* dI = arena_.alloc(BDP);
  if (input_grads) dF_ = arena_.alloc(BCP);
  if (editors) {
    float* dg = arena_.alloc(BCP);
    be_->mul_backward(gI_, b.fmap, dPhi, dg, dF_, BCP);
    float* dgpre = arena_.alloc(BCP);
    be_->sigmoid_backward(gI_, dg, dgpre, BCP);
    float* dXI = arena_.alloc(2 * BDP);
    imgatt_.backward(params, dgpre, dXI, arena_, ws_);
    float* dxs[2] = {dI, dShat};
    const int64_t sz[2] = {D, D};
    be_->concat_backward(2, dxs, sz, B, P, dXI);
    imgatt_.mark_touched(params);
  } else if (dF_) {
    be_->add_inplace(dF_, dPhi, BCP);
  }
  float* dt2i = arena_.alloc(BCP);
  be_->relu_backward(t2i_, dPhi, dt2i, BCP);
  txt2img_.backward(params, dt2i, dShat, arena_, ws_);

  // 2-4. cross attention, then T's two uses (attention and Tᵀ in the text editor)
  float* dT = arena_.alloc(BDL);
  be_->cross_attention_backward(T_, I_, lens_, A_s_, A_w_, dShat, dIhat, dT, dI, B, L, D, P, kTempS, kTempW);
  be_->transpose_batched(dTt, dT, B, D, L, true);
  prof_mark("b.cross_attention");

  // 1. image conv
  float* dI0 = arena_.alloc(BDP);
  be_->relu_backward(I_, dI, dI0, BDP);
  imgconv_.backward(params, dI0, dF_, arena_, ws_);

  // text encoder
  float* demb = arena_.alloc(static_cast<int64_t>(B) * L * E_);
  be_->lstm_backward(emb_, lens_, params.p(o_wih_), params.p(o_whh_), T_, lstm_cache_, dT, demb, params.g(o_wih_), params.g(o_whh_),
                     params.g(o_bih_), params.g(o_bhh_), B, L, E_, D);
  be_->embedding_backward(b.tokens, demb, params.g(o_emb_), static_cast<int64_t>(B) * L, V_, E_);
  prof_mark("b.text_encoder");

  for (int i : {i_imgfc_w_, i_imgfc_b_, i_emb_, i_wih_, i_whh_, i_bih_, i_bhh_, i_pool_i_, i_pool_t_, i_fctxt_w_, i_fctxt_b_}) touch(i);
  imgconv_.mark_touched(params);
  txt2img_.mark_touched(params);
  img2txt_.mark_touched(params);
  prof_dump("local stream since last dump (forwards + backward)");
}

// ---- ops (JS tests) ----
namespace {
ModelOptions options_from(const OpCtx& c) {
  ModelOptions o;
  o.masked = c.flag("masked", true);
  o.no_editors = c.flag("no_editors", false);
  o.fixed_w = c.flag("fixed_w", false);
  const double p = c.attr_or("dropout", 0.0);
  DWC_ARG_CHECK(p >= 0 && p < 1, c.op_name << ": option 'dropout' must be in [0, 1), got " << p);
  o.dropout = static_cast<float>(p);
  return o;
}
int dim_attr(const OpCtx& c, const char* name) {
  const int64_t v = c.int_attr(name);
  DWC_ARG_CHECK(v > 0 && v < (1 << 24), c.op_name << ": option '" << name << "' must be a positive integer, got " << v);
  return static_cast<int>(v);
}
}  // namespace

// Names and shapes of the local stream's parameters (§9): one output per parameter holding its
// initial value (attr seed), and "offset:<name>" int32 [4] = {offset, numel, trainable, is_counter}.
DWC_REGISTER_OP("local_stream_param_names", "; D, C, E, V, seed -> <name> (init value), offset:<name>", [](OpCtx& c) {
  LocalStream s(dim_attr(c, "D"), dim_attr(c, "C"), dim_attr(c, "E"), dim_attr(c, "V"), ModelOptions{});
  s.init_params(static_cast<uint64_t>(c.int_attr_or("seed", 0)));
  for (const ParamSpec& p : s.params.specs) {
    std::copy(s.params.p(p.offset), s.params.p(p.offset) + p.numel, c.out(p.name, p.shape).f32());
    int32_t* o = c.out("offset:" + p.name, {4}, DType::I32).i32();
    o[0] = static_cast<int32_t>(p.offset);
    o[1] = static_cast<int32_t>(p.numel);
    o[2] = p.trainable;
    o[3] = p.is_counter;
  }
});

// One local-stream forward (+ backward when dq or dt is given) at any dims.
// inputs: fmap, fmap_target [B,C,H,W] (each optional), tokens int32 [B,L], lengths int32 [B]
// (optional), dq, dt [B,D] (optional), param.<name> (optional overrides of the initial values).
// attrs: D, E, V (C from fmap), seed (init), train (1), masked (1), no_editors, fixed_w, dropout (0),
// dropout_seed, input_grads, repeat (runs forward+backward this many times; outputs of the last),
// prefwd (1: each run starts with a no-gradient forward, as step 1 of spec §6; 2: the same on
// fmap_target in place of fmap; 3: with fmap as the target map), reuse (1: the timed forward gets the reuse_next_forward hint of
// step 4); reused int32 [repeat] says whether it was taken.
// outputs: query, target, weight, grad.<name> for every parameter that got a gradient,
// param.<name> after the run (running stats updated), dfmap / dfmap_target (input_grads),
// arena_grows int32 [repeat] (arena growth count after each run), ms [repeat, 2] (forward, backward).
DWC_REGISTER_OP("local_stream_loss",
                "fmap?, fmap_target?, tokens, lengths?, dq?, dt?, param.*; D, E, V, seed, train, masked, no_editors, fixed_w, dropout -> "
                "query, target, weight, grad.*, param.*",
                [](OpCtx& c) {
                  const int D = dim_attr(c, "D"), E = dim_attr(c, "E"), V = dim_attr(c, "V");
                  const Tensor* fmap = c.in_opt("fmap", 4);
                  const Tensor* fmapt = c.in_opt("fmap_target", 4);
                  DWC_ARG_CHECK(fmap || fmapt, c.op_name << ": missing input 'fmap' (give 'fmap' and/or 'fmap_target')");
                  const Tensor& ref = fmap ? *fmap : *fmapt;
                  const std::vector<int64_t> fshape = ref.shape;
                  if (fmap && fmapt) c.expect_shape(*fmapt, "fmap_target", fshape);
                  Batch b;
                  b.B = static_cast<int>(fshape[0]);
                  b.C = static_cast<int>(fshape[1]);
                  b.H = static_cast<int>(fshape[2]);
                  b.W = static_cast<int>(fshape[3]);
                  b.fmap = fmap ? fmap->f32() : nullptr;
                  b.fmap_target = fmapt ? fmapt->f32() : nullptr;
                  if (fmap) {
                    const Tensor& tok = c.in_i32("tokens", 2);
                    c.expect_dim(tok, "tokens", 0, b.B, "B (batch of fmap)");
                    b.L = static_cast<int>(tok.dim(1));
                    b.tokens = tok.i32();
                    if (const Tensor* len = c.in_i32_opt("lengths", 1)) {
                      c.expect_shape(*len, "lengths", {b.B});
                      b.lengths = len->i32();
                    }
                  }
                  const Tensor* dq = c.in_opt("dq");
                  const Tensor* dt = c.in_opt("dt");
                  if (dq) c.expect_shape(*dq, "dq", {b.B, D});
                  if (dt) c.expect_shape(*dt, "dt", {b.B, D});
                  LocalStream s(D, b.C, E, V, options_from(c));
                  s.input_grads = c.flag("input_grads", false);
                  s.init_params(static_cast<uint64_t>(c.int_attr_or("seed", 0)));
                  for (const ParamSpec& p : s.params.specs)
                    if (const Tensor* t = c.in_opt("param." + p.name)) {
                      if (!(p.shape.empty() && t->numel() == 1)) c.expect_shape(*t, "param." + p.name, p.shape);  // 0-d counters may come as [1]
                      std::copy(t->f32(), t->f32() + p.numel, s.params.p(p.offset));
                    }
                  const bool train = c.flag("train", true);
                  const int64_t repeat = c.int_attr_or("repeat", 1);
                  const int64_t prefwd = c.int_attr_or("prefwd", 0);
                  DWC_ARG_CHECK(prefwd >= 0 && prefwd <= 3, c.op_name << ": option 'prefwd' must be in [0, 3], got " << prefwd);
                  DWC_ARG_CHECK(prefwd < 2 || (fmap && fmapt), c.op_name << ": option 'prefwd' = " << prefwd << " needs 'fmap' and 'fmap_target'");
                  const bool reuse = c.flag("reuse", false);
                  DWC_ARG_CHECK(repeat >= 1 && repeat <= 100, c.op_name << ": option 'repeat' must be in [1, 100], got " << repeat);
                  int32_t* grows = c.out("arena_grows", {repeat}, DType::I32).i32();
                  int32_t* reused = c.out("reused", {repeat}, DType::I32).i32();
                  const Rng rng{static_cast<uint64_t>(c.int_attr_or("dropout_seed", 0)), 7};
                  StreamOut o;
                  float* ms = c.out("ms", {repeat, 2}).f32();
                  using clk = std::chrono::steady_clock;
                  for (int64_t r = 0; r < repeat; ++r) {
                    s.params.zero_grad();
                    std::fill(s.params.touched.begin(), s.params.touched.end(), false);
                    if (prefwd) {  // 2: on another fmap (the target's), so the hint must be ignored;
                      Batch pre = b;     // 3: targets from fmap (the reference-quirk partner, §10)
                      if (prefwd == 2) pre.fmap = b.fmap_target;
                      if (prefwd == 3) pre.fmap_target = b.fmap;
                      s.forward(pre, train, Rng{static_cast<uint64_t>(c.int_attr_or("dropout_seed", 0)), 11});
                    }
                    s.reuse_next_forward = reuse;
                    const auto t0 = clk::now();
                    o = s.forward(b, train, rng);
                    const auto t1 = clk::now();
                    if (dq || dt) s.backward(b, dq ? dq->f32() : nullptr, dt ? dt->f32() : nullptr);
                    const auto t2 = clk::now();
                    grows[r] = s.arena().grow_count();
                    reused[r] = s.last_forward_reused();
                    ms[2 * r] = std::chrono::duration<float, std::milli>(t1 - t0).count();
                    ms[2 * r + 1] = std::chrono::duration<float, std::milli>(t2 - t1).count();
                  }
                  if (o.query) std::copy(o.query, o.query + b.B * D, c.out("query", {b.B, D}).f32());
                  if (o.weight) std::copy(o.weight, o.weight + b.B, c.out("weight", {b.B}).f32());
                  if (o.target) std::copy(o.target, o.target + b.B * D, c.out("target", {b.B, D}).f32());
                  for (size_t i = 0; i < s.params.specs.size(); ++i) {
                    const ParamSpec& p = s.params.specs[i];
                    if (p.trainable && i < s.params.touched.size() && s.params.touched[i])
                      std::copy(s.params.g(p.offset), s.params.g(p.offset) + p.numel, c.out("grad." + p.name, p.shape).f32());
                    std::copy(s.params.p(p.offset), s.params.p(p.offset) + p.numel, c.out("param." + p.name, p.shape).f32());
                  }
                  if (s.grad_fmap()) std::copy(s.grad_fmap(), s.grad_fmap() + shape_numel(fshape), c.out("dfmap", fshape).f32());
                  if (s.grad_fmap_target())
                    std::copy(s.grad_fmap_target(), s.grad_fmap_target() + shape_numel(fshape), c.out("dfmap_target", fshape).f32());
                });

}  // namespace dwc

namespace dwc {
// Factory (model.h): parameters declared, finalized and initialised from opt.seed.
std::unique_ptr<Stream> make_local_stream(const ModelDims& d, const ModelOptions& opt, backend::Backend& be) {
  auto s = std::make_unique<LocalStream>(d.D, d.C, d.E, d.vocab, opt, be);
  s->init_params(opt.seed);
  return s;
}
}  // namespace dwc

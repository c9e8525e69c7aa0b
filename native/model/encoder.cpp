// Trainable pooled encoder (spec §12 `small`): see encoder.h.
#include "encoder.h"

#include <cmath>
#include <cstring>

namespace dwc {

namespace {
constexpr float kGemEps = 1e-6f;  // as the local stream's GeM (spec §4)
}

Encoder::Encoder(int Dc, int Ce, int E, int V, uint64_t seed, bool own_trunk, int grid, backend::Backend& be)
    : be_(&be), Dc_(Dc), Ce_(Ce), E_(E), V_(V), g_(grid) {
  params.be = be_;
  arena_.set_backend(be_);
  DWC_ARG_CHECK(Dc > 0, "encoder: dimension 'Dc' must be a positive integer, got " << Dc);
  DWC_ARG_CHECK(Ce > 0, "encoder: trunk channels must be a positive integer, got " << Ce);
  DWC_ARG_CHECK(E > 0, "encoder: dimension 'E' must be a positive integer, got " << E);
  DWC_ARG_CHECK(V > 0, "encoder: dimension 'vocab' must be a positive integer, got " << V);
  DWC_ARG_CHECK(grid >= 1 && grid <= 8, "encoder: dimension 'encGrid' must be an integer in [1, 8], got " << grid);
  if (own_trunk) {
    trunk = make_trunk("small", "global.img_enc.trunk.", Ce, *be_);
    Ce_ = trunk->out_channels();
  }
  o_pool_ = params.add("global.img_enc.pool.p", {1});
  o_fc_w_ = params.add("global.img_enc.fc.weight", {Dc, int64_t(Ce_) * g_ * g_});
  o_fc_b_ = params.add("global.img_enc.fc.bias", {Dc});
  o_emb_ = params.add("global.txt_enc.embedding.weight", {V, E});
  o_wih_ = params.add("global.txt_enc.lstm.weight_ih_l0", {4 * E, E});
  o_whh_ = params.add("global.txt_enc.lstm.weight_hh_l0", {4 * E, E});
  o_bih_ = params.add("global.txt_enc.lstm.bias_ih_l0", {4 * E});
  o_bhh_ = params.add("global.txt_enc.lstm.bias_hh_l0", {4 * E});
  o_tfc_w_ = params.add("global.txt_enc.fc.weight", {Dc, E});
  o_tfc_b_ = params.add("global.txt_enc.fc.bias", {Dc});
  params.finalize();
  init_params(seed);
}

void Encoder::init_params(uint64_t seed) {
  Rng base{seed, 0x656E636F646572ULL};
  params.init_fill(o_pool_, 1, 3.0f);
  const int64_t Cin = int64_t(Ce_) * g_ * g_;
  const float bi = 1.f / std::sqrt(float(Cin)), bt = 1.f / std::sqrt(float(E_));
  params.init_uniform(o_fc_w_, int64_t(Dc_) * Cin, -bi, bi, base.derive(1));
  params.init_uniform(o_fc_b_, Dc_, -bi, bi, base.derive(2));
  params.init_normal(o_emb_, int64_t(V_) * E_, 0.f, 1.f, base.derive(3));  // nn.Embedding
  // nn.LSTM: every weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden))
  int k = 6;
  for (int64_t o : {o_wih_, o_whh_, o_bih_, o_bhh_}) {
    const int64_t n = (o == o_wih_ || o == o_whh_) ? int64_t(4) * E_ * E_ : int64_t(4) * E_;
    params.init_uniform(o, n, -bt, bt, base.derive(k++));
  }
  params.init_uniform(o_tfc_w_, int64_t(Dc_) * E_, -bt, bt, base.derive(4));
  params.init_uniform(o_tfc_b_, Dc_, -bt, bt, base.derive(5));
  if (trunk) trunk->init_params(seed * 0x9E3779B97F4A7C15ULL + 0x656E63ULL);  // own stream of the seed
}

void Encoder::reset() {
  arena_.reset();
  if (trunk) trunk->reset();
  slot_[0] = slot_[1] = Slot{};
  te_ = tmean_ = nullptr;
}

const float* Encoder::forward_image(int slot, const float* x, int B, int Hi, int Wi, bool train) {
  DWC_CHECK(trunk, Internal, "encoder: forward_image without an own trunk (kind 'shared' takes maps)");
  int Ho = 0, Wo = 0;
  trunk->out_size(Hi, Wi, &Ho, &Wo);
  return forward_map(slot, trunk->forward(slot, x, B, Hi, Wi, train), B, Ho, Wo);
}

const float* Encoder::forward_map(int slot, const float* fmap, int B, int H, int W) {
  DWC_CHECK(slot == 0 || slot == 1, Internal, "encoder: slot " << slot);
  DWC_ARG_CHECK(H >= g_ && W >= g_, "encoder: a " << H << "x" << W << " map is smaller than the " << g_ << "x" << g_ << " pooling grid");
  Slot& s = slot_[slot];
  s.B = B;
  s.H = H;
  s.W = W;
  s.k = (H + g_ - 1) / g_;
  s.kw = (W + g_ - 1) / g_;
  s.fmap = fmap;
  const int R = g_ * g_, kk = s.k * s.kw;
  if (g_ == 1) {
    s.win = fmap;  // one window: the map itself
  } else {
    float* win = arena_.alloc(int64_t(B) * Ce_ * R * kk, false);
    be_->windows_gather(fmap, win, B, Ce_, H, W, g_, s.k, s.kw);
    s.win = win;
  }
  s.pooled = arena_.alloc(int64_t(B) * Ce_ * R, false);
  s.p = params.scalar(o_pool_);  // GeM p: one download per forward (kept for backward)
  be_->gem_forward(s.win, s.p, s.pooled, B, Ce_ * R, kk, nullptr, kGemEps);
  float* e = arena_.alloc(int64_t(B) * Dc_, false);
  be_->linear_forward(s.pooled, params.p(o_fc_w_), params.p(o_fc_b_), e, B, Ce_ * R, Dc_);
  s.e = e;
  return e;
}

void Encoder::backward_image(int slot, const float* de) {
  Slot& s = slot_[slot];
  DWC_CHECK(s.e != nullptr, Internal, "encoder: backward_image without forward on slot " << slot);
  const int R = g_ * g_, kk = s.k * s.kw;
  float* dpooled = arena_.alloc(int64_t(s.B) * Ce_ * R);
  be_->linear_backward(s.pooled, params.p(o_fc_w_), de, dpooled, params.g(o_fc_w_), params.g(o_fc_b_), s.B, Ce_ * R, Dc_);
  // a shared map gets no gradient: only p's
  float* dwin = trunk ? arena_.alloc(int64_t(s.B) * Ce_ * R * kk) : nullptr;
  be_->gem_backward(s.win, s.p, s.pooled, dpooled, dwin, params.g(o_pool_), s.B, Ce_ * R, kk, nullptr, kGemEps);
  for (int64_t o : {o_pool_, o_fc_w_, o_fc_b_}) params.touch(o);
  if (!trunk) return;
  float* dfmap = dwin;
  if (g_ > 1) {
    dfmap = arena_.alloc(int64_t(s.B) * Ce_ * s.H * s.W);
    be_->windows_scatter_add(dfmap, dwin, s.B, Ce_, s.H, s.W, g_, s.k, s.kw);
  }
  trunk->backward(slot, dfmap, nullptr);
}

const float* Encoder::forward_text(const int32_t* tokens, const int32_t* lengths, int B, int L) {
  tB_ = B;
  tL_ = L;
  tok_ = tokens;
  len_ = lengths;
  const int64_t BL = int64_t(B) * L;
  temb_ = arena_.alloc(BL * E_, false);
  be_->embedding_forward(tokens, params.p(o_emb_), temb_, BL, V_, E_);
  th_ = arena_.alloc(BL * E_, false);
  tcache_ = arena_.alloc(static_cast<int64_t>(be_->lstm_cache_floats(B, L, E_)), false);
  be_->lstm_forward(temb_, lengths, params.p(o_wih_), params.p(o_whh_), params.p(o_bih_), params.p(o_bhh_), th_, tcache_, B, L, E_, E_);
  // mean over the real steps (the LSTM leaves h = 0 beyond a text's length)
  tmean_ = arena_.alloc(int64_t(B) * E_, false);
  be_->seq_mean_forward(th_, lengths, tmean_, B, L, E_);
  float* e = arena_.alloc(int64_t(B) * Dc_, false);
  be_->linear_forward(tmean_, params.p(o_tfc_w_), params.p(o_tfc_b_), e, B, E_, Dc_);
  te_ = e;
  return e;
}

void Encoder::backward_text(const float* de) {
  DWC_CHECK(te_ != nullptr, Internal, "encoder: backward_text without forward");
  const int B = tB_, L = tL_;
  const int64_t BL = int64_t(B) * L;
  float* dmean = arena_.alloc(int64_t(B) * E_);
  be_->linear_backward(tmean_, params.p(o_tfc_w_), de, dmean, params.g(o_tfc_w_), params.g(o_tfc_b_), B, E_, Dc_);
  float* dh = arena_.alloc(BL * E_, false);  // steps beyond a text's length get 0
  be_->seq_mean_backward(dmean, len_, dh, B, L, E_);
  float* demb = arena_.alloc(BL * E_);
  be_->lstm_backward(temb_, len_, params.p(o_wih_), params.p(o_whh_), th_, tcache_, dh, demb, params.g(o_wih_), params.g(o_whh_),
                     params.g(o_bih_), params.g(o_bhh_), B, L, E_, E_);
  be_->embedding_backward(tok_, demb, params.g(o_emb_), BL, V_, E_);
  for (int64_t o : {o_emb_, o_wih_, o_whh_, o_bih_, o_bhh_, o_tfc_w_, o_tfc_b_}) params.touch(o);
}

int Encoder::arena_grows() const { return arena_.grow_count() + (trunk ? trunk->arena_grows() : 0); }
size_t Encoder::arena_bytes() const { return arena_.capacity(); }

}  // namespace dwc

// Trainable pooled encoder (spec §12 `small`): see encoder.h.
#include "encoder.h"

#include <cmath>
#include <cstring>

#include "../kernels/gemm.h"
#include "../kernels/lstm.h"
#include "../kernels/pool.h"
#include "../kernels/tensorops.h"

namespace dwc {

namespace {
constexpr float kGemEps = 1e-6f;  // as the local stream's GeM (spec §4)
}

Encoder::Encoder(int Dc, int Ce, int E, int V, uint64_t seed, bool own_trunk) : Dc_(Dc), Ce_(Ce), E_(E), V_(V) {
  DWC_ARG_CHECK(Dc > 0, "encoder: dimension 'Dc' must be a positive integer, got " << Dc);
  DWC_ARG_CHECK(Ce > 0, "encoder: trunk channels must be a positive integer, got " << Ce);
  DWC_ARG_CHECK(E > 0, "encoder: dimension 'E' must be a positive integer, got " << E);
  DWC_ARG_CHECK(V > 0, "encoder: dimension 'vocab' must be a positive integer, got " << V);
  if (own_trunk) {
    trunk = make_trunk("small", "global.img_enc.trunk.", Ce);
    Ce_ = trunk->out_channels();
  }
  o_pool_ = params.add("global.img_enc.pool.p", {1});
  o_fc_w_ = params.add("global.img_enc.fc.weight", {Dc, Ce_});
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
  *params.p(o_pool_) = 3.0f;
  const float bi = 1.f / std::sqrt(float(Ce_)), bt = 1.f / std::sqrt(float(E_));
  fill_uniform(params.p(o_fc_w_), int64_t(Dc_) * Ce_, -bi, bi, base.derive(1));
  fill_uniform(params.p(o_fc_b_), Dc_, -bi, bi, base.derive(2));
  fill_normal(params.p(o_emb_), int64_t(V_) * E_, 0.f, 1.f, base.derive(3));  // nn.Embedding
  // nn.LSTM: every weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden))
  int k = 6;
  for (int64_t o : {o_wih_, o_whh_, o_bih_, o_bhh_}) {
    const int64_t n = (o == o_wih_ || o == o_whh_) ? int64_t(4) * E_ * E_ : int64_t(4) * E_;
    fill_uniform(params.p(o), n, -bt, bt, base.derive(k++));
  }
  fill_uniform(params.p(o_tfc_w_), int64_t(Dc_) * E_, -bt, bt, base.derive(4));
  fill_uniform(params.p(o_tfc_b_), Dc_, -bt, bt, base.derive(5));
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
  return forward_map(slot, trunk->forward(slot, x, B, Hi, Wi, train), B, Ho * Wo);
}

const float* Encoder::forward_map(int slot, const float* fmap, int B, int P) {
  DWC_CHECK(slot == 0 || slot == 1, Internal, "encoder: slot " << slot);
  Slot& s = slot_[slot];
  s.B = B;
  s.P = P;
  s.fmap = fmap;
  s.pooled = arena_.alloc(int64_t(B) * Ce_, false);
  cpu::gem_forward(s.fmap, *params.p(o_pool_), s.pooled, B, Ce_, s.P, nullptr, kGemEps);
  s.e = arena_.alloc(int64_t(B) * Dc_, false);
  cpu::linear_forward(s.pooled, params.p(o_fc_w_), params.p(o_fc_b_), s.e, B, Ce_, Dc_);
  return s.e;
}

void Encoder::backward_image(int slot, const float* de) {
  Slot& s = slot_[slot];
  DWC_CHECK(s.e != nullptr, Internal, "encoder: backward_image without forward on slot " << slot);
  float* dpooled = arena_.alloc(int64_t(s.B) * Ce_);
  cpu::linear_backward(s.pooled, params.p(o_fc_w_), de, dpooled, params.g(o_fc_w_), params.g(o_fc_b_), s.B, Ce_, Dc_);
  float* dfmap = arena_.alloc(int64_t(s.B) * Ce_ * s.P);
  cpu::gem_backward(s.fmap, *params.p(o_pool_), s.pooled, dpooled, dfmap, params.g(o_pool_), s.B, Ce_, s.P, nullptr, kGemEps);
  for (int64_t o : {o_pool_, o_fc_w_, o_fc_b_}) params.touch(o);
  if (trunk) trunk->backward(slot, dfmap, nullptr);
}

const float* Encoder::forward_text(const int32_t* tokens, const int32_t* lengths, int B, int L) {
  tB_ = B;
  tL_ = L;
  tok_ = tokens;
  len_ = lengths;
  const int64_t BL = int64_t(B) * L;
  temb_ = arena_.alloc(BL * E_, false);
  cpu::embedding_forward(tokens, params.p(o_emb_), temb_, BL, V_, E_);
  th_ = arena_.alloc(BL * E_, false);
  tcache_ = arena_.alloc(static_cast<int64_t>(cpu::lstm_cache_floats(B, L, E_)), false);
  cpu::lstm_forward(temb_, lengths, params.p(o_wih_), params.p(o_whh_), params.p(o_bih_), params.p(o_bhh_), th_, tcache_, B, L, E_, E_);
  // mean over the real steps (the LSTM leaves h = 0 beyond a text's length)
  tmean_ = arena_.alloc(int64_t(B) * E_, true);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < B; ++i) {
    const int n = lengths ? lengths[i] : L;
    float* m = tmean_ + int64_t(i) * E_;
    for (int t = 0; t < n; ++t) {
      const float* h = th_ + (int64_t(i) * L + t) * E_;
      for (int k = 0; k < E_; ++k) m[k] += h[k];
    }
    const float inv = 1.f / float(n > 0 ? n : 1);
    for (int k = 0; k < E_; ++k) m[k] *= inv;
  }
  te_ = arena_.alloc(int64_t(B) * Dc_, false);
  cpu::linear_forward(tmean_, params.p(o_tfc_w_), params.p(o_tfc_b_), te_, B, E_, Dc_);
  return te_;
}

void Encoder::backward_text(const float* de) {
  DWC_CHECK(te_ != nullptr, Internal, "encoder: backward_text without forward");
  const int B = tB_, L = tL_;
  const int64_t BL = int64_t(B) * L;
  float* dmean = arena_.alloc(int64_t(B) * E_);
  cpu::linear_backward(tmean_, params.p(o_tfc_w_), de, dmean, params.g(o_tfc_w_), params.g(o_tfc_b_), B, E_, Dc_);
  float* dh = arena_.alloc(BL * E_);  // zeroed: steps beyond a text's length get no gradient
  for (int i = 0; i < B; ++i) {
    const int n = len_ ? len_[i] : L;
    const float inv = 1.f / float(n > 0 ? n : 1);
    const float* d = dmean + int64_t(i) * E_;
    for (int t = 0; t < n; ++t) {
      float* r = dh + (int64_t(i) * L + t) * E_;
      for (int k = 0; k < E_; ++k) r[k] = d[k] * inv;
    }
  }
  float* demb = arena_.alloc(BL * E_);
  cpu::lstm_backward(temb_, len_, params.p(o_wih_), params.p(o_whh_), th_, tcache_, dh, demb, params.g(o_wih_), params.g(o_whh_),
                     params.g(o_bih_), params.g(o_bhh_), B, L, E_, E_);
  cpu::embedding_backward(tok_, demb, params.g(o_emb_), BL, V_, E_);
  for (int64_t o : {o_emb_, o_wih_, o_whh_, o_bih_, o_bhh_, o_tfc_w_, o_tfc_b_}) params.touch(o);
}

int Encoder::arena_grows() const { return arena_.grow_count() + (trunk ? trunk->arena_grows() : 0); }
size_t Encoder::arena_bytes() const { return arena_.capacity(); }

}  // namespace dwc

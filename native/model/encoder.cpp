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

// Start of window i of g along an axis of length n with window side k (see encoder.h).
int window_start(int i, int g, int n, int k) { return g == 1 ? 0 : int(std::lround(double(i) * (n - k) / (g - 1))); }

// map [B,C,H,W] <-> windows [B,C,g²,k·kw]; scatter adds (windows may overlap).
template <bool kScatter>
void windows(float* map, float* win, int B, int C, int H, int W, int g, int k, int kw) {
  const int R = g * g, kk = k * kw;
#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < int64_t(B) * C; ++bc) {
    float* m = map + bc * H * W;
    for (int r = 0; r < R; ++r) {
      const int y0 = window_start(r / g, g, H, k), x0 = window_start(r % g, g, W, kw);
      float* w = win + (bc * R + r) * kk;
      for (int y = 0; y < k; ++y)
        for (int x = 0; x < kw; ++x) {
          if (kScatter) m[(y0 + y) * W + x0 + x] += w[y * kw + x];
          else w[y * kw + x] = m[(y0 + y) * W + x0 + x];
        }
    }
  }
}
}

Encoder::Encoder(int Dc, int Ce, int E, int V, uint64_t seed, bool own_trunk, int grid)
    : Dc_(Dc), Ce_(Ce), E_(E), V_(V), g_(grid) {
  DWC_ARG_CHECK(Dc > 0, "encoder: dimension 'Dc' must be a positive integer, got " << Dc);
  DWC_ARG_CHECK(Ce > 0, "encoder: trunk channels must be a positive integer, got " << Ce);
  DWC_ARG_CHECK(E > 0, "encoder: dimension 'E' must be a positive integer, got " << E);
  DWC_ARG_CHECK(V > 0, "encoder: dimension 'vocab' must be a positive integer, got " << V);
  DWC_ARG_CHECK(grid >= 1 && grid <= 8, "encoder: dimension 'encGrid' must be an integer in [1, 8], got " << grid);
  if (own_trunk) {
    trunk = make_trunk("small", "global.img_enc.trunk.", Ce);
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
  *params.p(o_pool_) = 3.0f;
  const int64_t Cin = int64_t(Ce_) * g_ * g_;
  const float bi = 1.f / std::sqrt(float(Cin)), bt = 1.f / std::sqrt(float(E_));
  fill_uniform(params.p(o_fc_w_), int64_t(Dc_) * Cin, -bi, bi, base.derive(1));
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
    windows<false>(const_cast<float*>(fmap), win, B, Ce_, H, W, g_, s.k, s.kw);  // gathers: reads the map only
    s.win = win;
  }
  s.pooled = arena_.alloc(int64_t(B) * Ce_ * R, false);
  cpu::gem_forward(s.win, *params.p(o_pool_), s.pooled, B, Ce_ * R, kk, nullptr, kGemEps);
  float* e = arena_.alloc(int64_t(B) * Dc_, false);
  cpu::linear_forward(s.pooled, params.p(o_fc_w_), params.p(o_fc_b_), e, B, Ce_ * R, Dc_);
  s.e = e;
  return e;
}

void Encoder::backward_image(int slot, const float* de) {
  Slot& s = slot_[slot];
  DWC_CHECK(s.e != nullptr, Internal, "encoder: backward_image without forward on slot " << slot);
  const int R = g_ * g_, kk = s.k * s.kw;
  float* dpooled = arena_.alloc(int64_t(s.B) * Ce_ * R);
  cpu::linear_backward(s.pooled, params.p(o_fc_w_), de, dpooled, params.g(o_fc_w_), params.g(o_fc_b_), s.B, Ce_ * R, Dc_);
  // a shared map gets no gradient: only p's
  float* dwin = trunk ? arena_.alloc(int64_t(s.B) * Ce_ * R * kk) : nullptr;
  cpu::gem_backward(s.win, *params.p(o_pool_), s.pooled, dpooled, dwin, params.g(o_pool_), s.B, Ce_ * R, kk, nullptr, kGemEps);
  for (int64_t o : {o_pool_, o_fc_w_, o_fc_b_}) params.touch(o);
  if (!trunk) return;
  float* dfmap = dwin;
  if (g_ > 1) {
    dfmap = arena_.alloc(int64_t(s.B) * Ce_ * s.H * s.W);
    windows<true>(dfmap, dwin, s.B, Ce_, s.H, s.W, g_, s.k, s.kw);
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
  float* e = arena_.alloc(int64_t(B) * Dc_, false);
  cpu::linear_forward(tmean_, params.p(o_tfc_w_), params.p(o_tfc_b_), e, B, E_, Dc_);
  te_ = e;
  return e;
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

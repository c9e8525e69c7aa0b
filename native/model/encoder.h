// Trainable pooled encoder of the `small` preset (spec §12, issue 5 item 2): replaces the frozen
// vision-language encoder of the global stream for the built-in synthetic data only.
// Image: a CNN map -> GeM (global.img_enc.pool.p) over each of g×g windows of the map ->
// their concatenation [Ce·g²] -> Linear(Ce·g² -> Dc) (global.img_enc.fc.*). g = 1 is plain
// global pooling; g > 1 keeps where things are (a pooled CLIP vector does; a single GeM over the
// map does not). Windows: side k = ceil(H/g), starts round(i·(H−k)/(g−1)) (overlap when g ∤ H).
// The map comes from
//   - kind "shared": the local stream's trunk (local.img_model.*), read without gradient — the
//     global stream sees it as the frozen image backbone the reference takes from CLIP, and the
//     local stream trains it (the maps are computed once per iteration for both streams);
//   - kind "small": an own small trunk (global.img_enc.trunk.*) trained with the global stream
//     (needed when there is no local stream, e.g. the global-only ablation).
// Text: Embedding(V, E) (global.txt_enc.embedding.weight) -> LSTM(E -> E)
// (global.txt_enc.lstm.*, torch.nn.LSTM names) -> mean of its outputs over the real tokens ->
// Linear(E -> Dc) (global.txt_enc.fc.*). Trained in the global step. (A mean of the word
// embeddings alone cannot tell "change the red X to blue" from "... blue X to red".)
#pragma once
#include <memory>
#include <string>

#include "model.h"
#include "trunk.h"

namespace dwc {

class Encoder {
 public:
  // Dc: output dim, Ce: channels of the map (own trunk: its width), E: word-embedding dim, V:
  // vocabulary size; own_trunk: kind "small" (else "shared": maps come from the caller); grid: g.
  // be: the backend its kernels (and its trunk's) run on.
  Encoder(int Dc, int Ce, int E, int V, uint64_t seed, bool own_trunk = true, int grid = 1,
          backend::Backend& be = backend::cpu_backend());
  ParamBuffer params;            // pool p, fc, embedding, text fc
  std::unique_ptr<Trunk> trunk;  // kind "small": its own ParamBuffer (global.img_enc.trunk.*); else null
  void init_params(uint64_t seed);
  // Frees all activations (start of a step / eval batch).
  void reset();
  // images [B,3,Hi,Wi] -> e [B,Dc] on slot 0 (reference) or 1 (target); valid until reset().
  const float* forward_image(int slot, const float* x, int B, int Hi, int Wi, bool train);
  // kind "shared": a map [B,Ce,H,W] (the local trunk's, kept alive by the caller) -> e [B,Dc].
  const float* forward_map(int slot, const float* fmap, int B, int H, int W);
  // Accumulates parameter gradients from de [B,Dc] of that slot's last forward (own trunk
  // included; a shared map gets none).
  void backward_image(int slot, const float* de);
  // tokens [B,L] (lengths may be null: all L real) -> e [B,Dc]; valid until reset().
  const float* forward_text(const int32_t* tokens, const int32_t* lengths, int B, int L);
  void backward_text(const float* de);
  int arena_grows() const;
  size_t arena_bytes() const;
  int dim() const { return Dc_; }
  int grid() const { return g_; }

 private:
  backend::Backend* be_;
  int Dc_, Ce_, E_, V_, g_;

  Arena arena_;
  int64_t o_pool_, o_fc_w_, o_fc_b_, o_emb_, o_wih_, o_whh_, o_bih_, o_bhh_, o_tfc_w_, o_tfc_b_;
  struct Slot {
    int B = 0, H = 0, W = 0, k = 0, kw = 0;  // k×kw: window size
    const float* fmap = nullptr;
    const float* win = nullptr;  // [B,Ce,g²,k·kw] (g = 1: the map itself)
    float* pooled = nullptr;
    const float* e = nullptr;
    float p = 0.f;  // GeM exponent of the forward (downloaded once, kept for backward)
  } slot_[2];
  int tB_ = 0, tL_ = 0;
  const int32_t *tok_ = nullptr, *len_ = nullptr;
  float *temb_ = nullptr, *th_ = nullptr, *tcache_ = nullptr, *tmean_ = nullptr;
  const float* te_ = nullptr;
};

}  // namespace dwc

// Local stream of DWC (spec §4): text encoder (Embedding + LSTM), Inception editors, cross
// attention, GeM pooling and the adaptive combiner, on trunk feature maps given by the batch
// (Batch::fmap / fmap_target [B,C,H,W]; the trunk local.img_model.* lives elsewhere).
#pragma once
#include <memory>
#include <string>

#include "inception.h"
#include "model.h"

namespace dwc {

class LocalStream : public Stream {
 public:
  // D: embedding dim, C: feature-map channels, E: word-embedding dim, V: vocabulary size.
  // Declares every parameter (spec §9 names, prefix "local.") and finalizes params.
  // be: the backend its kernels run on (default: the process CPU backend).
  LocalStream(int D, int C, int E, int V, const ModelOptions& opts, backend::Backend& be = backend::cpu_backend());
  const char* name() const override { return "local"; }
  int dim() const override { return D_; }
  StreamOut forward(const Batch& b, bool train, const Rng& rng) override;
  void backward(const Batch& b, const float* dquery, const float* dtarget) override;
  void init_params(uint64_t seed) override;

  // When true, backward also computes the gradients w.r.t. the feature maps (for the trunk):
  // grad_fmap() / grad_fmap_target() [B,C,H,W], valid until the next forward.
  bool input_grads = false;
  const float* grad_fmap() const { return dF_; }
  const float* grad_fmap_target() const { return dFt_; }
  const Arena& arena() const { return arena_; }

  // One-shot hint for step 4 of the iteration (spec §6): the next forward repeats the last
  // train-mode forward (step 1) on the same batch with the same local parameters. Its query path
  // up to the combiner is then taken from that forward (train-mode BN normalises with batch
  // statistics, so the activations are the same) and only the BN running-stat updates are
  // replayed; the combiner (its dropout draws from the new rng) and the target path (its map may
  // differ, §10) are recomputed. The caller promises that `fmap` still holds the same values. Ignored (a full forward runs) when the batch pointers or sizes differ, the last
  // forward was not a train-mode query forward, or a backward ran since. Cleared by forward().
  bool reuse_next_forward = false;
  bool last_forward_reused() const { return reused_; }

 private:
  int64_t off(const std::string& name, int* idx = nullptr) const;
  void touch(int idx);
  int D_, C_, E_, V_;
  Arena arena_;
  Inception imgconv_, imgatt_, txtatt_, txt2img_, img2txt_;
  // offsets / spec indices of the non-Inception parameters
  int64_t o_img_pool_, o_imgfc_w_, o_imgfc_b_, o_emb_, o_wih_, o_whh_, o_bih_, o_bhh_, o_pool_i_, o_pool_t_, o_fctxt_w_, o_fctxt_b_,
      o_ds0_w_, o_ds0_b_, o_ds3_w_, o_ds3_b_;
  int i_img_pool_, i_imgfc_w_, i_imgfc_b_, i_emb_, i_wih_, i_whh_, i_bih_, i_bhh_, i_pool_i_, i_pool_t_, i_fctxt_w_, i_fctxt_b_,
      i_ds0_w_, i_ds0_b_, i_ds3_w_, i_ds3_b_;

  // ---- activations of the last forward (arena) ----
  bool train_ = false, has_q_ = false, has_t_ = false;
  bool fwd_valid_ = false, reused_ = false;  // query-path activations of the last train forward are intact
  const float* last_fmap_ = nullptr;
  const int32_t *last_tokens_ = nullptr, *last_lengths_ = nullptr;
  int B_ = 0, H_ = 0, W_ = 0, L_ = 0;
  const int32_t* lens_ = nullptr;  // lengths used (null when unmasked; backend memory)
  const int32_t* lens_host_ = nullptr;  // their host copy (checks, Inception's real-position count)
  float p_pool_i_ = 0.f, p_pool_t_ = 0.f, p_img_pool_ = 0.f;  // GeM exponents of the last forward (downloaded)
  float* ws_ = nullptr;            // conv workspace shared by all blocks
  // query path
  float *emb_, *T_, *lstm_cache_, *I_, *S_hat_, *I_hat_, *A_s_, *A_w_;
  float *XI_, *gI_, *t2i_, *Phi_, *phi_, *fuse_i_;
  float *Tt_, *XT_, *gT_, *i2t_, *Psi_, *psi_, *fuse_t_;
  float *Xw_, *h1_, *r1_, *drop_, *mask_, *z_, *w_, *fused_, *q_, *qn_;
  // target path
  float *gt_, *t0_, *t_, *tn_;
  float *dF_ = nullptr, *dFt_ = nullptr;
};

}  // namespace dwc

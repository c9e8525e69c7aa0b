// Stage 3 with the CLIP encoder unfrozen (PL4CIR-SPEC.md §1, docs/MODEL.md §16): the global
// stream's encoder is a CLIP (ClipModel's ViT / ModifiedResNet image tower and causal text tower,
// clip.h) trained by the global step with its own Adam learning rate. Same role as Encoder
// (encoder.h): e_img / e_txt / e_target [B,E] from the batch's images and tokens, backward from the
// global stream's d_e_img / d_e_txt / d_e_target.
//  - Pixels: the model's input images [B,3,S,S] are already normalised with CLIP's mean/std
//    (src/data/images.ts normaliseInto defaults), so for S = R (the stage-2 CLIP from scratch is
//    built at the benchmark's image side) they are the tower's input as they are; otherwise a
//    bilinear resize (align_corners = false) to R×R.
//  - Token ids: each word id of the training vocabulary maps to its CLIP BPE pieces, a table
//    `global.clip.token_map` [V+1, K] (float ids, −1 = none) built by the TypeScript side with the
//    CLIP tokenizer and kept in the checkpoint (row V: SOT, EOT). A text is SOT, the pieces of its
//    words, EOT, zeros (cut to the context, the last id EOT). So eval / search / serve need no
//    CLIP folder: the weights and the table are inside the checkpoint.
//  - Reference and target images run as ONE image-tower forward over 2B images (activations of
//    both saved) and one backward from [d_e_img; d_e_target]: nothing is recomputed.
//  - Eval-mode towers always (no BatchNorm statistics updates; the ViT has none). Dropout: none.
// Parameters: ClipModel's buffer with every OpenAI name prefixed `global.clip.` (e.g.
// global.clip.visual.conv1.weight), trained by Model::adam at lr · encoder_lr_factor.
#pragma once
#include <memory>
#include <vector>

#include "clip.h"
#include "model.h"

namespace dwc {

class ClipEncoder {
 public:
  static constexpr const char* kPrefix = "global.clip.";
  // vocab: the DWC vocabulary size V; pieces: K, the most CLIP pieces of one word.
  // be: the backend of the CLIP's kernels and memory.
  ClipEncoder(const ClipArch& arch, int vocab, int pieces, backend::Backend& be = backend::cpu_backend());
  std::unique_ptr<ClipModel> clip;  // its params: the trainable CLIP (names prefixed)
  ParamBuffer maps;                 // global.clip.token_map (non-trainable)
  int dim() const { return clip->arch.embed_dim; }
  void reset();
  // Reference images (and/or targets) [B,3,Hi,Wi] -> e [B,E]; save: keep activations for backward.
  // Either may be null. Outputs valid until reset().
  void forward_images(const float* ref, const float* tgt, int B, int Hi, int Wi, bool save, const float** e_ref, const float** e_tgt);
  // tokens [B,L] of the DWC vocabulary (lengths may be null) -> e [B,E].
  const float* forward_text(const int32_t* tokens, const int32_t* lengths, int B, int L, bool save);
  // Backward of the last saved forward_images (both slots it ran; a null gradient counts as zero)
  // and forward_text; accumulate into clip->params.grads and mark every tensor touched.
  void backward_images(const float* d_ref, const float* d_tgt);
  void backward_text(const float* de);
  // CLIP token ids [B,ctx] of a batch (the table above); exposed for tests.
  void clip_ids(const int32_t* tokens, const int32_t* lengths, int B, int L, std::vector<int32_t>& out) const;
  int arena_grows() const { return arena_.grow_count(); }
  size_t arena_bytes() const { return arena_.capacity(); }

 private:
  int V_, K_;
  int64_t o_map_;
  Arena arena_;
  std::vector<int32_t> ids_;
  // Host copy of the token map (clip_ids reads it on the host), refreshed when maps.version changes.
  mutable std::vector<float> map_host_;
  mutable uint64_t map_version_ = 0;
  int iB_ = 0;             // images per slot of the last saved image forward
  bool iref_ = false, itgt_ = false;
  const float* pixels(const float* ref, const float* tgt, int B, int Hi, int Wi);
  void touch_tower(bool image);
};

}  // namespace dwc

// Native CLIP (CLIP-SPEC.md): the ViT image tower, the causal text tower, the contrastive loss
// and its backward through both towers, Adam fine-tuning. Parameters use the OpenAI / open_clip
// names (the TypeScript loader maps Hugging Face names onto them); all live in one ParamBuffer.
// The image tower is an interface so that a ModifiedResNet tower can sit beside the ViT.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model.h"

namespace dwc {

// Architecture, inferred from the weights' shapes by the loader (spec "Architecture").
struct ClipArch {
  std::string image = "vit";  // image tower kind: "vit" or "resnet" (ModifiedResNet, clip_resnet.h)
  int embed_dim = 0;          // E
  int vision_width = 0, vision_layers = 0, vision_heads = 0, patch = 0, grid = 0;  // ViT
  int resolution = 0;         // image side R (ViT: patch·grid; ResNet: 32·grid)
  // ModifiedResNet: stem width w (= visual.layer1.0.conv1 width), blocks per stage, attnpool heads (32·w/64)
  int rn_width = 0, rn_layers[4] = {0, 0, 0, 0}, rn_heads = 0;
  int context_length = 0, vocab_size = 0, text_width = 0, text_layers = 0, text_heads = 0;
  bool gelu = false;  // exact (erf) GELU in the MLPs instead of QuickGELU
};

// A stack of residual attention blocks (spec "Residual attention block") named
// `<prefix>resblocks.<i>.*`, over [B,T,w] activations kept in an arena for backward.
class TransformerStack {
 public:
  void declare(ParamBuffer& pb, const std::string& prefix, int width, int layers, int heads);
  // x [B,T,w] → output [B,T,w] (arena). save: keep every layer's activations for backward;
  // otherwise the layers share one set of buffers (embedding needs O(1 layer) memory).
  // lens [B]: packed sequences of these lengths instead of B×T (Backend::mha_forward), T the longest.
  // pool_pos [B]: the output is [B,w], row pool_pos[b] of each sequence; without save the last
  // block then runs its query, out_proj and MLP on those rows only.
  const float* forward(ParamBuffer& pb, Arena& arena, const float* x, int B, int T, bool causal, bool gelu, bool save = true,
                       const int32_t* lens = nullptr, const int32_t* pool_pos = nullptr);
  // dy (the rows of the last forward, [B,T,w] or packed) → dx of the same rows (arena);
  // accumulates parameter gradients. Needs a forward with save.
  const float* backward(ParamBuffer& pb, Arena& arena, const float* dy);
  int width() const { return w_; }
  int layers() const { return static_cast<int>(layers_.size()); }

 private:
  struct Layer {
    int64_t ln1_w, ln1_b, in_w, in_b, out_w, out_b, ln2_w, ln2_b, fc_w, fc_b, proj_w, proj_b;
  };
  struct Saved {
    const float* x;
    float *ln1, *m1, *r1, *qkv, *att, *ctx, *xm, *ln2, *m2, *r2, *h;
  };
  backend::Backend* be_ = nullptr;  // pb.be at declare()
  float* g_tmp_ = nullptr;  // act(h) of the layer being computed (forward only)
  std::vector<Layer> layers_;
  std::vector<Saved> saved_;
  std::vector<int32_t> lens_;  // packed lengths of the last forward (empty: uniform)
  int w_ = 0, H_ = 0, B_ = 0, T_ = 0;
  bool gelu_ = false;
};

// Image tower interface: normalised pixels [N,3,R,R] → projected embeddings [N,E].
class ImageTower {
 public:
  virtual ~ImageTower() = default;
  virtual const char* kind() const = 0;
  // Output in the arena (valid until the next reset). train: batch-norm statistics for towers
  // that have them (the ViT has none). save: keep activations for backward().
  virtual const float* forward(ParamBuffer& pb, Arena& arena, const float* pixels, int N, bool train, bool save) = 0;
  // Backward of the last forward from d_embed [N,E]; accumulates parameter gradients.
  virtual void backward(ParamBuffer& pb, Arena& arena, const float* d_embed) = 0;
  // Declares the tower's non-trainable tensors (BatchNorm running statistics); called after every
  // trainable tensor of the model is declared, so that they sit after the Adam range.
  virtual void declare_buffers(ParamBuffer&) {}
};

std::unique_ptr<ImageTower> make_vit_tower(ParamBuffer& pb, const ClipArch& a);  // declares visual.*

// Causal text tower with EOT pooling (argmax of the ids, first maximum).
class TextTower {
 public:
  void declare(ParamBuffer& pb, const ClipArch& a);
  // ids [N,ctx] (checked against the vocabulary) → [N,E] (arena)
  const float* forward(ParamBuffer& pb, Arena& arena, const int32_t* ids, int N, bool save);
  void backward(ParamBuffer& pb, Arena& arena, const float* d_embed);

 private:
  backend::Backend* be_ = nullptr;  // pb.be at declare()
  ClipArch a_;
  TransformerStack stack_;
  int64_t tok_, pos_, lnf_w_, lnf_b_, proj_;
  std::vector<int32_t> eot_, lens_;  // EOT position and packed length (eot + 1) of each text
  std::vector<int64_t> row0_;         // first packed row of each text
  int32_t* row_ids_ = nullptr;        // [2, rows] arena: each packed row's token id, then its position
  int N_ = 0;
  const float *pooled_ = nullptr, *pooled_ln_ = nullptr, *m_ = nullptr, *r_ = nullptr;
};

struct ClipStepOut {
  float loss = 0.f;
  const float* image_embeds = nullptr;  // [N,E] (arena)
  const float* text_embeds = nullptr;   // [N,E]
  const float* logits_per_image = nullptr;  // [N,N]
};

struct ClipAdam {
  float lr = 1e-5f, beta1 = 0.9f, beta2 = 0.98f, eps = 1e-6f, weight_decay = 0.f;
  // BatchNorm towers: true = PyTorch model.train() (batch statistics, running statistics updated),
  // false = eval-mode BN (running statistics used and kept).
  bool bn_train = true;
};

class ClipModel {
 public:
  // be: the backend its kernels run on and its parameters live in (default: the process CPU backend).
  explicit ClipModel(const ClipArch& arch, backend::Backend& be = backend::cpu_backend());
  ClipArch arch;
  ParamBuffer params;
  std::unique_ptr<ImageTower> image;
  TextTower text;
  int64_t logit_scale = 0;  // offset of `logit_scale`
  int64_t adam_floats = 0;  // trainable prefix of the buffer (non-trainable tensors follow it)
  Arena arena;
  backend::Backend& backend() const { return *be_; }

  const float* encode_image(const float* pixels, int N);  // [N,E] in the arena
  const float* encode_text(const int32_t* ids, int N);    // [N,E] in the arena
  // Both towers, the loss; with grad: zeroes and fills params.grads (eval-mode forward).
  ClipStepOut loss_and_grad(const float* pixels, const int32_t* ids, int N, bool grad, bool train = false);
  // loss_and_grad in train mode then one Adam step over the whole buffer. Refuses a non-finite loss.
  ClipStepOut train_step(const float* pixels, const int32_t* ids, int N, const ClipAdam& adam);
  // The public entry points take host pixels [N,3,R,R] (the binding's): on a device backend they
  // are uploaded (docs/CUDA.md "The model on the backend"); upload_pixels does it on the CPU too
  // (DWC_UPLOAD_BATCHES=1, as Model::upload_batches). Ids stay host arrays (the text tower packs
  // them on the host and uploads the packed rows).
  bool upload_pixels = false;

 private:
  backend::Backend* be_;
  BackendArray pixels_;
  const float* on_backend(const float* pixels, int N);
};

}  // namespace dwc

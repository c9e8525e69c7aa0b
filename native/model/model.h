// The DWC model's native interfaces (spec §2–§6, §9): a flat parameter buffer per stream, the
// batch handed over from TypeScript, the Stream interface implemented by the global stream
// (global_stream.cpp) and the local stream (local_stream.cpp), and the options/ablations.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../backend/backend.h"
#include "../core/rng.h"
#include "../core/tensor.h"

namespace dwc {

struct ClipArch;  // clip.h: the unfrozen CLIP encoder's architecture (ModelDims::clip_arch)

// One named tensor inside a stream's buffers (spec §9 names, PyTorch layouts).
struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;     // in floats, into ParamBuffer::params (and grads/m/v when trainable)
  int64_t numel = 0;
  bool trainable = true;  // false: BN running stats and num_batches_tracked (stored as float, saved as I64)
  bool is_counter = false;  // num_batches_tracked
};

// A float array in a backend's memory (host memory on the CPU backend): ParamBuffer's storage.
// Read or write it on the host through the backend (ParamBuffer::read / write).
class BackendArray {
 public:
  BackendArray() = default;
  BackendArray(const BackendArray&) = delete;
  BackendArray& operator=(const BackendArray&) = delete;
  ~BackendArray() { release(); }
  void resize(backend::Backend* be, size_t n);  // (re)allocates from be's pool when the size changes
  void assign(backend::Backend* be, size_t n, float value);  // resize, then fill
  float* data() { return p_; }
  const float* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  void release();
  backend::Backend* be_ = nullptr;
  float* p_ = nullptr;
  size_t n_ = 0;
};

// Parameters, gradients and Adam moments, each one contiguous allocation per stream, so that
// Adam is one pass and a checkpoint is one write. Declare every tensor, then finalize().
class ParamBuffer {
 public:
  // The backend whose kernels run on these parameters (the model's, backend.h); set before
  // finalize(). Sub-objects handed a ParamBuffer (Inception, the CLIP towers) take theirs from it.
  backend::Backend* be = &backend::cpu_backend();
  int64_t add(const std::string& name, const std::vector<int64_t>& shape, bool trainable = true, bool is_counter = false);
  void finalize();  // allocates params/grads/m/v (zeroed)
  float* p(int64_t off) { return params.data() + off; }
  float* g(int64_t off) { return grads.data() + off; }
  const ParamSpec* find(const std::string& name) const;
  int index_of(const std::string& name) const;  // -1 when absent
  void zero_grad();  // zeroes grads and clears touched
  // Marks the tensor starting at float offset `off` (a value returned by add()) as having
  // received a gradient this step (Adam touches it, spec §10).
  void touch(int64_t off);
  int64_t total() const { return total_; }
  std::vector<ParamSpec> specs;
  // Host copies of n floats at float offset `off` of a buffer (params, grads, m or v) through the
  // backend (the bindings' getTensor/setTensor, checkpoints).
  void read(const BackendArray& buf, int64_t off, float* host, int64_t n) const;
  void write(BackendArray& buf, int64_t off, const float* host, int64_t n);
  // Initialisation and small parameter reads through the backend (docs/CUDA.md "The model on the
  // backend"): inits are drawn on the host from the engine's RNG stream and uploaded (an init is
  // not hot; the values are those of fill_uniform / fill_normal, on every backend).
  void init_uniform(int64_t off, int64_t n, float lo, float hi, const Rng& rng);
  void init_normal(int64_t off, int64_t n, float mean, float std, const Rng& rng);
  void init_fill(int64_t off, int64_t n, float value);  // the backend's fill
  float scalar(int64_t off) const;                      // one parameter, downloaded (the GeM exponents p)
  void count(int64_t off) { be->add_scalar(p(off), 1.f, 1); }  // a BN counter num_batches_tracked += 1
  BackendArray params, grads, m, v;  // backend memory; grads/m/v span the same index range as params
  int64_t adam_step = 0;
  // Ranges [offset, offset+numel) that received a gradient in the current step: Adam touches
  // only these (PyTorch skips parameters whose .grad is None, spec §10).
  std::vector<bool> touched;  // per spec index
  // Changes when the values in `params` may have changed: every writer calls changed() (finalize,
  // Adam in Model::adam, Model.setTensor, a trunk's init and its op's overrides). A value is never
  // reused, by this buffer or another one, so (pointer, version) names one state of the weights:
  // the trunks key their cached blocked weight copies on it (conv_dnnl.h BlockedWeights).
  uint64_t version = 0;
  void changed();

 private:
  int64_t total_ = 0;
  bool finalized_ = false;
};

// One batch (all row-major, contiguous): host arrays from the caller, backend memory after
// Model::on_backend (trainer.h). A stream reads only its part; the query and target paths run
// only when their inputs are present (eval embeds them apart).
struct Batch {
  int B = 0;
  // global stream (spec §3): frozen encoder features
  int Dc = 0;
  const float* e_img = nullptr;     // [B,Dc] reference image
  const float* e_txt = nullptr;     // [B,Dc] modification text
  const float* e_target = nullptr;  // [B,Dc] target image
  // local stream (spec §4): trunk feature maps and tokens
  int C = 0, H = 0, W = 0, L = 0;
  const float* fmap = nullptr;         // [B,C,H,W] reference image
  const float* fmap_target = nullptr;  // [B,C,H,W] target image
  const int32_t* tokens = nullptr;     // [B,L]
  const int32_t* lengths = nullptr;    // [B]
  const int32_t* labels = nullptr;     // [B] target ids (equal = same target image)
  // images (spec §12/§13): normalised planar [B,3,Hi,Wi]; the model's trunks (local.img_model.*)
  // and pooled encoder (global.img_enc.*) turn them into fmap / e_img (e_txt from tokens).
  int Hi = 0, Wi = 0;
  const float* images = nullptr;         // [B,3,Hi,Wi] reference image
  const float* images_target = nullptr;  // [B,3,Hi,Wi] target image
  // Self-supervised adaptive weighting (PL4CIR-SPEC.md §3): embeddings of a frozen encoder (stage
  // 2's) of the reference image, the text and the target [B,aw_dim], the source of w*. Absent: the
  // global stream's e_img / e_txt / e_target are used (frozen features, or the pooled encoder's
  // outputs without gradient — an approximation until stage 2 provides a frozen encoder).
  int aw_dim = 0;
  const float* aw_ref = nullptr;
  const float* aw_txt = nullptr;
  const float* aw_tgt = nullptr;
  bool has_query() const { return e_img || fmap || images; }
  // Host copies of tokens / lengths (host-side checks and sizes), set by Model::on_backend when it
  // uploads the batch to a device backend; null: the arrays above are host memory themselves.
  const int32_t* tokens_host = nullptr;
  const int32_t* lengths_host = nullptr;
  const int32_t* host_tokens() const { return tokens_host ? tokens_host : tokens; }
  const int32_t* host_lengths() const { return lengths_host ? lengths_host : lengths; }
  bool uploaded = false;  // the arrays are in the model backend's memory (Model::on_backend did it)
};

struct ModelOptions {
  bool masked = true;                   // §10: mask padded tokens (false = reference behaviour)
  bool mutual_target_reference = false; // §10: other stream's targets from the reference image
  bool detach_soft_labels = false;      // §5: detach softmax(t tᵀ/τ) in the SSG
  float dropout = 0.5f;                 // 0 = dropout off (trace --no-dropout)
  float global_dropout = -1.f;          // the global stream's dropout (< 0: `dropout`; docs/EXPERIMENTS.md "The global half")
  bool text_relu = true;                // §3.1: ReLU in the global text projection f_T (false: f_T = norm(Dropout(W e_T + b)); docs/MODEL.md §3)
  // Ablations (issue 3 item 4)
  bool no_ssg = false;      // α = 0
  bool no_editors = false;  // editor gates fixed to 1
  bool fixed_w = false;     // combiner w fixed to fixed_w_value
  float fixed_w_value = 0.5f;  // global stream only: 1 = image-only, 0 = text-only baselines
  bool no_mutual = false;   // L_mut dropped
  // Loss constants (§5)
  float alpha = 0.2f, tau = 0.07f, mutual_scale = 10.0f;
  // weight of L_mut in each stream's loss (spec §5: 1.0 both; docs/MODEL.md §5)
  float mutual_weight_global = 1.f, mutual_weight_local = 1.f;
  // Adam (§6)
  float lr = 1e-4f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 1e-6f;
  float local_lr_factor = 1.f;  // the local stream's (and its trunk's) step is lr · this; schedules scale both
  float encoder_lr_factor = 1.f;  // encoder "clip": the CLIP's step is lr · this (its own rate, docs/MODEL.md §16)
  // Self-supervised adaptive weighting (PL4CIR-SPEC.md §3): L_w = aw_lambda · mean BCE(w, w*),
  // w* = σ((s_I − s_T)/aw_tau), added to the loss of each stream it is on for. Off by default.
  bool aw_global = false, aw_local = false;
  float aw_tau = 0.1f, aw_lambda = 0.1f;
  uint64_t seed = 0;
  // Dynamic loss scaling of the training step (docs/CUDA.md "Loss scaling", trainer.cpp): on by
  // itself when the backend's GEMMs run fp16 (S starts at 65536); loss_scale > 0 (a power of 2)
  // turns it on at any precision with that first S — the tests force it on the CPU so. S halves
  // after an iteration with an inf/NaN gradient (that stream step is skipped) and doubles after
  // loss_scale_growth_interval clean iterations.
  float loss_scale = 0.f;
  int loss_scale_growth_interval = 2000;
  // Where the model's kernels run and its memory lives: "cpu", "cuda" (= "cuda:0"), "cuda:N"
  // (backend::backend_for; an unavailable device is an error naming why).
  std::string device = "cpu";
};

// Outputs of a forward pass, pointing into the stream's activation arena (valid until the
// next forward). Null when that path did not run.
struct StreamOut {
  const float* query = nullptr;   // [B,D], L2-normalised
  const float* target = nullptr;  // [B,D], L2-normalised
  const float* weight = nullptr;  // [B], combiner w
};

class Stream {
 public:
  virtual ~Stream() = default;
  virtual const char* name() const = 0;  // "global" / "local"
  virtual int dim() const = 0;           // D
  ParamBuffer params;
  // Forward of the query path (if the batch has query inputs) and the target path (if it has
  // target inputs). train: dropout on (options.dropout) and batch-norm batch statistics with
  // running-stat updates; otherwise eval mode. rng: dropout masks for this forward.
  virtual StreamOut forward(const Batch& b, bool train, const Rng& rng) = 0;
  // Backward of the last forward: accumulates into params.grads and marks params.touched.
  virtual void backward(const Batch& b, const float* dquery, const float* dtarget) = 0;
  // Initialise parameters (PyTorch default inits, from the counter-based RNG).
  virtual void init_params(uint64_t seed) = 0;
  ModelOptions options;
  // Extra gradient of the loss w.r.t. the combiner weight w [B] (the adaptive-weighting term,
  // PL4CIR-SPEC.md §3), added to dL/dw by the next backward; null = none. Set by the trainer.
  const float* extra_dw = nullptr;
  // Gradients w.r.t. the batch's global features, filled by backward when want_feature_grads
  // (global stream with the trainable encoder): [B,Dc] each, valid until the next forward.
  bool want_feature_grads = false;
  const float *d_e_img = nullptr, *d_e_txt = nullptr, *d_e_target = nullptr;
  // Activation arena of this stream (no allocation in the step after warm-up). The trainer
  // resets it before every forward (a stream may reset it too at the start of forward());
  // forward and backward allocate their activations and activation gradients from it.
  Arena arena;

 protected:
  Stream() = default;
  explicit Stream(backend::Backend& be) : be_(&be) {
    params.be = be_;
    arena.set_backend(be_);
  }
  backend::Backend* be_ = &backend::cpu_backend();  // where its kernels run (= params.be)
};

// Sizes of a model (spec §12 presets). A zero local size (C, E or vocab) means "no local stream";
// Dc = 0 means "no global stream".
struct ModelDims {
  int Dc = 0;     // frozen feature dim (global stream input)
  int D = 0;      // embedding dim of both streams
  int C = 0;      // feature-map channels (local stream)
  int E = 0;      // word-embedding dim
  int vocab = 0;  // vocabulary size
  std::string trunk;    // "" (fmap given) | "small" | "resnet50": local.img_model.* trunk
  std::string encoder;  // "" (e_* given) | "small": trainable pooled encoder global.img_enc/txt_enc
  int enc_channels = 0; // encoder trunk width (0: C, else 256)
  int enc_E = 0;        // encoder word-embedding dim (0: E, else 128)
  int enc_grid = 0;     // encoder pooling grid g (0: 1, one global GeM)
  // encoder "clip" (clip_encoder.h, docs/MODEL.md §16): the CLIP's architecture (Dc = its embed
  // dim) and K, the most CLIP BPE pieces of one vocabulary word (global.clip.token_map [vocab+1, K])
  std::shared_ptr<const ClipArch> clip_arch;
  int clip_pieces = 0;
};

// Stream factories: parameters declared (spec §9 names), finalized and initialised from `seed`;
// be: the backend the stream's kernels run on (default: the process CPU backend).
std::unique_ptr<Stream> make_global_stream(const ModelDims& dims, const ModelOptions& opt,
                                           backend::Backend& be = backend::cpu_backend());  // global_stream.cpp
std::unique_ptr<Stream> make_local_stream(const ModelDims& dims, const ModelOptions& opt,
                                          backend::Backend& be = backend::cpu_backend());  // local_stream.cpp

}  // namespace dwc

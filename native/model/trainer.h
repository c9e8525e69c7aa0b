// The DWC model: both streams, the losses of spec §5, the alternating iteration of spec §6
// (one Adam per stream over the parameters that received a gradient) and eval embeddings (§7).
#pragma once
#include <array>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "clip_encoder.h"
#include "encoder.h"
#include "model.h"
#include "trunk.h"

namespace dwc {

// What a stream produced in its own train step (spec §13): outputs of its train-mode forward
// and its two losses. Buffers are reused from step to step (no allocation after warm-up).
struct StreamRecord {
  std::vector<float> query, target, weight;  // [B,D], [B,D], [B]
  float contrastive = 0.f, mutual = 0.f;
  // Adaptive weighting (PL4CIR-SPEC.md §3), when on for this stream: L_w, mean |w − w*|, w* [B].
  bool aw = false;
  float aw_loss = 0.f, aw_gap = 0.f;
  std::vector<float> w_star;
};

// Shape of the local trunk beyond its kind (issue 5): ResNet base width and blocks per stage
// (64 and 3,4,6,3 = ResNet-50), small-trunk stem width (32). 0 = the kind's default.
struct TrunkShape {
  int width = 0;
  std::array<int, 4> layers{0, 0, 0, 0};
};

class Model {
 public:
  // be: the backend to run on instead of options.device's (the C++ tests' guarded backend).
  Model(const ModelDims& dims, const ModelOptions& opt, const TrunkShape& trunk_shape = {}, backend::Backend* be = nullptr);
  // Reference schedule of the local trunk (spec §6, §13): it also runs (train mode, no gradient)
  // in step 1, so its BN running stats see 4 updates per iteration as in the reference. Off by
  // default (the maps of steps 1 and 4 are equal; this costs one more trunk forward); trace sets it.
  bool reference_trunk_steps = false;
  ModelDims dims;
  ModelOptions options;
  std::unique_ptr<Stream> global, local;  // global null when Dc = 0, local null without local sizes
  // Image front ends (spec §12): the local stream's trunk local.img_model.* (dims.trunk) and the
  // global stream's trainable pooled encoder global.img_enc/txt_enc (dims.encoder). They run when
  // the batch gives images (Batch::images); with fmap / e_* given they are bypassed.
  std::unique_ptr<Trunk> trunk;
  std::unique_ptr<Encoder> encoder;
  // dims.encoder "clip" (docs/MODEL.md §16): the unfrozen CLIP in the encoder's place (encoder null)
  std::unique_ptr<ClipEncoder> clip_encoder;
  // Every ParamBuffer of the model with the stream it trains with ("global" / "local").
  std::vector<std::pair<std::string, ParamBuffer*>> param_buffers() const;
  int64_t iteration = 0;                  // training iterations done (dropout masks derive from it)

  std::vector<Stream*> streams() const;
  Stream* stream(const std::string& name) const;  // nullptr when absent

  // One iteration of spec §6 on the batch. rec[0] = global step, rec[1] = local step.
  void train_step(const Batch& b);
  StreamRecord rec[2];

  // Loss and gradients of one stream (train-mode forward with the given dropout stream id)
  // against fixed partner outputs q2/t2 [B,D] (host arrays, uploaded on a device backend; null: no
  // mutual term), without any update. Grads are left in s.params.grads. For the finite-difference
  // tests (Model.lossAndGrad); train_step runs the same step on backend memory (loss_and_grad_on).
  void loss_and_grad(Stream& s, const Batch& b, const float* q2, const float* t2, const Rng& rng, StreamRecord& rec);
  // The global stream's loss_and_grad with the trainable encoder in front when the batch carries
  // its inputs (images, or the maps for a shared encoder): encoder gradients included (step 2).
  void global_loss_and_grad(const Batch& b, const float* q2, const float* t2, const Rng& rng, StreamRecord& rec);
  // Adaptive weighting (PL4CIR-SPEC.md §3): is it on for stream s; w* [B] of the batch from its
  // source (Batch::aw_*, else e_img/e_txt/e_target), else the one computed earlier in this
  // iteration (the global step's encoder outputs, for the local step); null when none.
  bool aw_on(const Stream& s) const;
  const float* aw_target(const Batch& b);
  // Forgets the w* of the current iteration (start of train_step / of a lossAndGrad call).
  void aw_reset() { w_star_ready_ = false; }
  // Adam (spec §6) on the stream's trainable parameters that received a gradient (spec §10).
  void adam(Stream& s);
  void adam(ParamBuffer& pb, float lr_scale = 1.f);  // step lr · lr_scale

  // Eval-mode embeddings (spec §7): for each present stream, its query (or target) embedding
  // [B,D] and, for queries, the combiner weight [B]. Pointers into the streams' arenas, valid
  // until the next forward.
  void embed(const Batch& b, bool queries, std::vector<StreamOut>& outs);

  // Eval-mode w* (PL4CIR-SPEC.md §3) of a batch with query and target inputs, into out [B]: from
  // Batch::aw_*, else e_img/e_txt/e_target, else the pooled encoder's eval-mode outputs of the
  // images / maps and tokens (the local trunk runs first for a shared encoder). For the report.
  void aw_targets(const Batch& b, float* out);

  // Eval-mode trunk maps of images [N,3,Hi,Wi] (frozen-trunk cache, issue 5 item 4): [N,C,Ho,Wo]
  // in the trunk's arena, valid until the next trunk call. Needs the local trunk.
  const float* trunk_features(const float* images, int N, int Hi, int Wi, int* Ho, int* Wo);

  // Arena growth events over all arenas (0 changes after the first iteration = no allocation).
  int arena_grows() const;
  size_t arena_bytes() const;

  backend::Backend& backend() const { return *be_; }  // options.device's (backend.h)

  // The batch with its arrays in the backend's memory (docs/CUDA.md "The model on the backend"):
  // on a host-memory backend the batch itself; otherwise each present array uploaded into the
  // model's batch buffers (valid until the next call), tokens_host / lengths_host keeping the host
  // copies. Every public entry point calls it (a batch it returned passes through unchanged).
  // upload_batches: upload on a host-memory backend too (the environment variable
  // DWC_UPLOAD_BATCHES=1 sets it; test/backend_interface.test.js checks the results are the same bits).
  Batch on_backend(const Batch& b);
  bool upload_batches = false;

  // Dynamic loss scaling (ModelOptions::loss_scale; trainer.cpp "Loss scaling"): the state after
  // the last train_step. Tests only: grad_hook sees each ParamBuffer's scaled gradients before
  // they are unscaled and checked (to plant an inf).
  struct LossScaler {
    bool active = false;       // scaling ran in the last train_step
    float scale = 0.f;         // S (0 until the first scaled step)
    int clean = 0;             // clean iterations since S last changed
    int64_t skipped = 0;       // stream steps skipped for inf/NaN gradients, all told
    bool found_inf = false;    // the last iteration had one
  } scaler;
  std::function<void(ParamBuffer&)> grad_hook;

 private:
  // Loss scaling's steps (trainer.cpp "Loss scaling"): decide and set grad_scale_ for the
  // iteration; unscale and check the gradients of one stream step (false: skip its Adam); update S.
  void scaler_begin();
  bool scaler_unscale(std::initializer_list<ParamBuffer*> bufs);
  void scaler_end();
  float grad_scale_ = 1.f;  // dL of the losses' backward: S while scaling, else 1
  BackendArray scaler_flag_;
  backend::Backend* be_ = nullptr;
  Rng phase_rng(int phase) const;
  // Runs the encoder on the batch's images/tokens into e_* (no-op without encoder or images).
  // save: keep the activations for the encoder's backward (the CLIP encoder; Encoder always saves).
  void encode(Batch& b, bool train, bool queries, bool targets, bool save = false);
  // The encoder exists and the batch has its inputs: images (own trunk) or the local trunk's maps (shared).
  bool encoder_ready(const Batch& b) const;
  Batch partner_batch(const Batch& b) const;
  Arena arena_;  // loss buffers
  BackendArray q_other_, t_other_;  // the partner stream's outputs (backend memory)
  void copy_out(BackendArray& dst, const float* src, int64_t n) {
    dst.resize(be_, static_cast<size_t>(n));
    be_->copy(dst.data(), src, static_cast<size_t>(n) * sizeof(float));
  }
  BackendArray w_star_;  // w* of the iteration (backend memory)
  BackendArray batch_[14];  // on_backend's uploads, one per Batch array
  BackendArray partner_[2];  // loss_and_grad's partner outputs, uploaded
  const float* partner_on_backend(int k, const float* host, int64_t n);
  // loss_and_grad / global_loss_and_grad with q2 / t2 in backend memory (train_step's partner outputs)
  void loss_and_grad_on(Stream& s, const Batch& b, const float* q2, const float* t2, const Rng& rng, StreamRecord& rec);
  void global_loss_and_grad_on(const Batch& b, const float* q2, const float* t2, const Rng& rng, StreamRecord& rec);
  bool w_star_ready_ = false;
};

}  // namespace dwc

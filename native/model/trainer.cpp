// The DWC model: losses (spec §5), the four-step alternating iteration (spec §6), Adam per
// stream over touched parameters (spec §10), eval embeddings (spec §7).
#include "trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "local_stream.h"

namespace dwc {

// Default factory of the local stream (weak: a definition in local_stream.cpp takes precedence).
__attribute__((weak)) std::unique_ptr<Stream> make_local_stream(const ModelDims& d, const ModelOptions& opt, backend::Backend& be) {
  auto s = std::make_unique<LocalStream>(d.D, d.C, d.E, d.vocab, opt, be);
  s->init_params(opt.seed);
  return s;
}

// The arena holding a stream's activations (the local stream keeps its own; it exposes it
// read-only, and the trainer only resets it between iterations, when no output is live).
// Default trunk factory (weak: native/model/trunk.cpp takes precedence when compiled in).
__attribute__((weak)) std::unique_ptr<Trunk> make_trunk(const std::string& kind, const std::string&, int, backend::Backend&) {
  DWC_ARG_CHECK(false, "model: trunk '" << kind << "' is not compiled into this build");
  return nullptr;
}

static Arena& arena_of(Stream* s) {
  if (auto* l = dynamic_cast<LocalStream*>(s)) return const_cast<Arena&>(l->arena());
  return s->arena;
}

Model::Model(const ModelDims& d, const ModelOptions& opt, const TrunkShape& ts, backend::Backend* be) : dims(d), options(opt) {
  be_ = be ? be : &backend::backend_for(opt.device);  // throws naming why a device is unavailable
  arena_.set_backend(be_);
  const char* up = std::getenv("DWC_UPLOAD_BATCHES");
  upload_batches = up && std::strcmp(up, "1") == 0;
  DWC_ARG_CHECK(std::isfinite(opt.dropout) && opt.dropout >= 0.f && opt.dropout < 1.f,
                "model: option 'dropout' must be in [0, 1), got " << opt.dropout);
  DWC_ARG_CHECK(std::isfinite(opt.lr) && opt.lr >= 0.f, "model: option 'lr' must be a finite non-negative number");
  DWC_ARG_CHECK(std::isfinite(opt.tau) && opt.tau > 0.f, "model: option 'tau' must be positive");
  DWC_ARG_CHECK(std::isfinite(opt.aw_tau) && opt.aw_tau > 0.f, "model: option 'awTau' (adaptive weighting τ_w) must be positive, got " << opt.aw_tau);
  DWC_ARG_CHECK(std::isfinite(opt.aw_lambda) && opt.aw_lambda >= 0.f, "model: option 'awLambda' (adaptive weighting λ_w) must be >= 0, got " << opt.aw_lambda);
  DWC_ARG_CHECK(std::isfinite(opt.alpha) && opt.alpha >= 0.f && opt.alpha <= 1.f, "model: option 'alpha' must be in [0, 1]");
  DWC_ARG_CHECK(std::isfinite(opt.weight_decay) && std::isfinite(opt.eps) && std::isfinite(opt.beta1) && std::isfinite(opt.beta2) &&
                    std::isfinite(opt.mutual_scale) && std::isfinite(opt.mutual_weight_global) && std::isfinite(opt.mutual_weight_local),
                "model: Adam/loss options must be finite");
  const bool want_local = d.C > 0 || d.E > 0;  // vocab alone: the encoder's text vocabulary
  DWC_ARG_CHECK(d.Dc > 0 || want_local, "model: dimension 'Dc' (global stream) or 'C', 'E', 'vocab' (local stream) must be given");
  if (d.Dc > 0) global = make_global_stream(d, opt, *be_);
  if (want_local) {
    DWC_ARG_CHECK(d.C > 0, "model: dimension 'C' must be a positive integer for the local stream, got " << d.C);
    DWC_ARG_CHECK(d.E > 0, "model: dimension 'E' must be a positive integer for the local stream, got " << d.E);
    DWC_ARG_CHECK(d.vocab > 0, "model: dimension 'vocab' must be a positive integer for the local stream, got " << d.vocab);
    local = make_local_stream(d, opt, *be_);
    DWC_ARG_CHECK(local != nullptr, "model: the local stream is not compiled into this build (dimensions 'C', 'E', 'vocab' given)");
  }
  if (!d.trunk.empty()) {
    DWC_ARG_CHECK(local, "model: 'trunk' needs the local stream (dimensions 'C', 'E', 'vocab')");
    DWC_ARG_CHECK(d.trunk == "small" || d.trunk == "resnet50", "model: 'trunk' must be 'small' or 'resnet50', got '" << d.trunk << "'");
    const bool custom = ts.width > 0 || ts.layers[0] > 0;
    if (d.trunk == "resnet50" && custom)
      trunk = make_resnet_trunk("local.img_model.", ts.width > 0 ? ts.width : 64,
                                ts.layers[0] > 0 ? ts.layers : std::array<int, 4>{3, 4, 6, 3}, *be_);
    else if (d.trunk == "small" && ts.width > 0)
      trunk = make_small_trunk("local.img_model.", d.C, ts.width, *be_);
    else
      trunk = make_trunk(d.trunk, "local.img_model.", d.C, *be_);
    DWC_ARG_CHECK(trunk->out_channels() == d.C,
                  "model: trunk '" << d.trunk << "' gives " << trunk->out_channels() << " channels but dimension 'C' is " << d.C);
    trunk->init_params(opt.seed * 0x9E3779B97F4A7C15ULL + 0x74726BULL);
    if (auto* l = dynamic_cast<LocalStream*>(local.get())) l->input_grads = true;
  }
  if (!d.encoder.empty()) {
    DWC_ARG_CHECK(global, "model: 'encoder' needs the global stream (dimension 'Dc')");
    DWC_ARG_CHECK(d.encoder == "small" || d.encoder == "shared" || d.encoder == "clip",
                  "model: 'encoder' must be 'small', 'shared' or 'clip', got '" << d.encoder << "'");
    DWC_ARG_CHECK(d.vocab > 0, "model: the encoder needs dimension 'vocab'");
  }
  if (d.encoder == "clip") {  // docs/MODEL.md §16: the unfrozen CLIP
    DWC_ARG_CHECK(d.clip_arch, "model: encoder 'clip' needs dimension 'clip' (the CLIP architecture)");
    DWC_ARG_CHECK(d.clip_arch->embed_dim == d.Dc, "model: encoder 'clip' gives " << d.clip_arch->embed_dim << "-dim embeddings but dimension 'Dc' is " << d.Dc);
    DWC_ARG_CHECK(std::isfinite(opt.encoder_lr_factor) && opt.encoder_lr_factor >= 0.f,
                  "model: option 'encoderLrFactor' must be a finite non-negative number, got " << opt.encoder_lr_factor);
    clip_encoder = std::make_unique<ClipEncoder>(*d.clip_arch, d.vocab, d.clip_pieces > 0 ? d.clip_pieces : 8, *be_);
    global->want_feature_grads = true;
  } else if (!d.encoder.empty()) {
    const bool shared = d.encoder == "shared";
    DWC_ARG_CHECK(!shared || trunk, "model: encoder 'shared' reads the local trunk's maps: it needs dimension 'trunk'");
    encoder = std::make_unique<Encoder>(d.Dc, shared ? d.C : (d.enc_channels > 0 ? d.enc_channels : (d.C > 0 ? d.C : 256)),
                                        d.enc_E > 0 ? d.enc_E : (d.E > 0 ? d.E : 128), d.vocab, opt.seed, !shared,
                                        d.enc_grid > 0 ? d.enc_grid : 1, *be_);
    global->want_feature_grads = true;
  }
}

Batch Model::on_backend(const Batch& in) {
  if (in.uploaded || (be_->host_memory() && !upload_batches)) return in;
  Batch b = in;
  const int64_t B = in.B;
  int k = 0;
  auto put = [&](const void* src, int64_t n) -> float* {
    if (!src || n <= 0) return nullptr;
    DWC_CHECK(k < static_cast<int>(sizeof(batch_) / sizeof(batch_[0])), Internal, "Model::on_backend: more batch arrays than buffers");
    BackendArray& a = batch_[k++];
    a.resize(be_, static_cast<size_t>(n));
    be_->upload(a.data(), src, static_cast<size_t>(n) * sizeof(float));
    return a.data();
  };
  auto f32 = [&](const float* src, int64_t n) -> const float* { return put(src, n); };
  auto i32 = [&](const int32_t* src, int64_t n) -> const int32_t* { return reinterpret_cast<const int32_t*>(put(src, n)); };
  const int64_t maps = B * in.C * in.H * in.W, images = B * 3 * in.Hi * in.Wi;
  b.e_img = f32(in.e_img, B * in.Dc);
  b.e_txt = f32(in.e_txt, B * in.Dc);
  b.e_target = f32(in.e_target, B * in.Dc);
  b.fmap = f32(in.fmap, maps);
  b.fmap_target = f32(in.fmap_target, maps);
  b.images = f32(in.images, images);
  b.images_target = f32(in.images_target, images);
  b.aw_ref = f32(in.aw_ref, B * in.aw_dim);
  b.aw_txt = f32(in.aw_txt, B * in.aw_dim);
  b.aw_tgt = f32(in.aw_tgt, B * in.aw_dim);
  b.tokens_host = in.host_tokens();
  b.lengths_host = in.host_lengths();
  b.tokens = i32(in.tokens, B * in.L);
  b.lengths = i32(in.lengths, B);
  b.labels = i32(in.labels, B);
  b.uploaded = true;
  return b;
}

std::vector<std::pair<std::string, ParamBuffer*>> Model::param_buffers() const {
  std::vector<std::pair<std::string, ParamBuffer*>> v;
  if (global) v.emplace_back("global", &global->params);
  if (encoder) {
    v.emplace_back("global", &encoder->params);
    if (encoder->trunk) v.emplace_back("global", &encoder->trunk->params);
  }
  if (clip_encoder) {
    v.emplace_back("global", &clip_encoder->clip->params);
    v.emplace_back("global", &clip_encoder->maps);
  }
  if (local) v.emplace_back("local", &local->params);
  if (trunk) v.emplace_back("local", &trunk->params);
  return v;
}

void Model::encode(Batch& b, bool train, bool queries, bool targets, bool save) {
  if (clip_encoder) {  // eval-mode towers; [ref; target] in one image forward
    clip_encoder->reset();
    const float *er = nullptr, *et = nullptr;
    clip_encoder->forward_images(queries ? b.images : nullptr, targets ? b.images_target : nullptr, b.B, b.Hi, b.Wi, save, &er, &et);
    if (er) {
      b.e_img = er;
      b.e_txt = clip_encoder->forward_text(b.host_tokens(), b.host_lengths(), b.B, b.L, save);  // ids built on the host
    }
    if (et) b.e_target = et;
    b.Dc = dims.Dc;
    return;
  }
  if (!encoder) return;
  encoder->reset();
  // own trunk: from the images; shared: from the local trunk's maps (computed by the caller)
  const bool own = encoder->trunk != nullptr;
  if (queries && (own ? b.images : b.fmap)) {
    b.e_img = own ? encoder->forward_image(0, b.images, b.B, b.Hi, b.Wi, train) : encoder->forward_map(0, b.fmap, b.B, b.H, b.W);
    DWC_ARG_CHECK(b.tokens, "batch: missing 'tokens' (the global stream's text encoder needs them)");
    b.e_txt = encoder->forward_text(b.tokens, b.lengths, b.B, b.L);
  }
  if (targets && (own ? b.images_target : b.fmap_target))
    b.e_target = own ? encoder->forward_image(1, b.images_target, b.B, b.Hi, b.Wi, train) : encoder->forward_map(1, b.fmap_target, b.B, b.H, b.W);
  b.Dc = dims.Dc;
}

std::vector<Stream*> Model::streams() const {
  std::vector<Stream*> v;
  if (global) v.push_back(global.get());
  if (local) v.push_back(local.get());
  return v;
}

Stream* Model::stream(const std::string& name) const {
  if (name == "global") return global.get();
  if (name == "local") return local.get();
  return nullptr;
}

// Dropout masks: a pure function of (seed, iteration, phase, layer) (phase 1..4 of spec §6).
Rng Model::phase_rng(int phase) const { return Rng{options.seed, 0x747261696EULL}.derive(static_cast<uint64_t>(iteration)).derive(phase); }

// The partner's no-gradient forward: its targets come from the reference image under the
// reference-quirk option (spec §10).
Batch Model::partner_batch(const Batch& b) const {
  Batch p = b;
  if (options.mutual_target_reference) {
    p.e_target = b.e_img;
    p.fmap_target = b.fmap;
  }
  return p;
}

const float* Model::partner_on_backend(int k, const float* host, int64_t n) {
  if (!host || (be_->host_memory() && !upload_batches)) return host;
  partner_[k].resize(be_, static_cast<size_t>(n));
  be_->upload(partner_[k].data(), host, static_cast<size_t>(n) * sizeof(float));
  return partner_[k].data();
}

void Model::loss_and_grad(Stream& s, const Batch& hb, const float* q2, const float* t2, const Rng& rng, StreamRecord& rec) {
  const int64_t n = int64_t(hb.B) * s.dim();
  loss_and_grad_on(s, on_backend(hb), partner_on_backend(0, q2, n), partner_on_backend(1, t2, n), rng, rec);
}

void Model::global_loss_and_grad(const Batch& hb, const float* q2, const float* t2, const Rng& rng, StreamRecord& rec) {
  DWC_CHECK(global, Internal, "model: global_loss_and_grad without the global stream");
  const int64_t n = int64_t(hb.B) * global->dim();
  global_loss_and_grad_on(on_backend(hb), partner_on_backend(0, q2, n), partner_on_backend(1, t2, n), rng, rec);
}

void Model::loss_and_grad_on(Stream& s, const Batch& b, const float* q2, const float* t2, const Rng& rng, StreamRecord& rec) {
  DWC_ARG_CHECK(b.labels != nullptr, "batch: missing 'labels' (needed by the " << s.name() << " stream's loss)");
  const int B = b.B, D = s.dim();
  s.params.zero_grad();
  s.arena.reset();
  StreamOut o = s.forward(b, true, rng);
  DWC_ARG_CHECK(o.query != nullptr, "batch: missing query inputs of the " << s.name() << " stream");
  DWC_ARG_CHECK(o.target != nullptr, "batch: missing target inputs of the " << s.name() << " stream");
  arena_.reset();
  const int64_t BB = int64_t(B) * B, BD = int64_t(B) * D;
  const ModelOptions& op = options;
  // §5 soft labels (α = 0 under no_ssg), contrastive loss, mutual loss
  const float alpha = op.no_ssg ? 0.f : op.alpha;
  float* Q = arena_.alloc(BB, false);
  float* sim = arena_.alloc(BB, false);
  be_->soft_labels_forward(o.target, b.labels, Q, sim, B, D, alpha, op.tau);
  float* logp = arena_.alloc(BB, false);
  float* losses = arena_.alloc(3, false);  // L_con, L_mut, L_w: backend memory, downloaded below
  float lcon = 0.f;
  be_->contrastive_forward(o.query, o.target, Q, logp, losses, B, D, op.tau);
  be_->download(&lcon, losses, sizeof(float));
  const bool mutual = !op.no_mutual && q2 && t2;
  float lmut = 0.f;
  float *logp1 = nullptr, *p2 = nullptr;
  if (mutual) {
    logp1 = arena_.alloc(BB, false);
    p2 = arena_.alloc(BB, false);
    be_->mutual_forward(o.query, o.target, q2, t2, logp1, p2, losses + 1, B, D, op.mutual_scale);
    be_->download(&lmut, losses + 1, sizeof(float));
  }
  // PL4CIR §3 adaptive weighting: L_w = λ_w · mean BCE(w, w*), w* a constant (no gradient)
  float* dw_aw = nullptr;
  rec.aw = aw_on(s);
  rec.aw_loss = rec.aw_gap = 0.f;
  if (rec.aw) {
    DWC_ARG_CHECK(o.weight, s.name() << " stream: adaptive weighting needs the combiner weight w");
    const float* ws = aw_target(b);
    DWC_ARG_CHECK(ws, "adaptive weighting on the " << s.name()
                          << " stream needs embeddings for w*: frozen features (e_img, e_txt, e_target), the pooled encoder, or the batch's "
                             "aw_ref / aw_txt / aw_tgt");
    be_->adaptive_weight_loss_forward(o.weight, ws, losses + 2, B, op.aw_lambda);
    be_->download(&rec.aw_loss, losses + 2, sizeof(float));
    rec.w_star.resize(static_cast<size_t>(B));
    be_->download(rec.w_star.data(), ws, sizeof(float) * B);
    rec.weight.resize(static_cast<size_t>(B));
    be_->download(rec.weight.data(), o.weight, sizeof(float) * B);
    double gap = 0;
    for (int i = 0; i < B; ++i) gap += std::fabs(rec.weight[i] - rec.w_star[i]);
    rec.aw_gap = static_cast<float>(gap / B);
    if (!op.fixed_w) {
      dw_aw = arena_.alloc(B);
      be_->adaptive_weight_loss_backward(o.weight, ws, grad_scale_, dw_aw, B, op.aw_lambda);
    }
  } else {
    rec.w_star.clear();
  }
  DWC_CHECK(std::isfinite(lcon) && std::isfinite(lmut) && std::isfinite(rec.aw_loss), Numeric,
            s.name() << " stream: non-finite loss (contrastive " << lcon << ", mutual " << lmut << ", adaptive weighting " << rec.aw_loss
                     << ") at iteration " << iteration);
  // backward of L = L_con + λ_mut·L_mut (times S under loss scaling: grad_scale_, "Loss scaling" below)
  float* dq = arena_.alloc(BD);
  float* dt = arena_.alloc(BD);
  const bool through_softmax = alpha > 0.f && !op.detach_soft_labels;
  float* dQ = through_softmax ? arena_.alloc(BB) : nullptr;
  be_->contrastive_backward(o.query, o.target, Q, logp, grad_scale_, dq, dt, dQ, B, D, op.tau);
  if (through_softmax) be_->soft_labels_backward(o.target, sim, dQ, dt, B, D, alpha, op.tau);
  // L_mut's weight in this stream's loss (spec §5: 1; mutualWeightGlobal / mutualWeightLocal, docs/MODEL.md §5)
  const float mut_w = &s == global.get() ? op.mutual_weight_global : op.mutual_weight_local;
  if (mutual && mut_w != 0.f) be_->mutual_backward(o.query, o.target, logp1, p2, grad_scale_ * mut_w, dq, dt, B, D, op.mutual_scale);
  // record the outputs of this forward before backward (backward may reuse nothing, but be safe)
  rec.query.resize(static_cast<size_t>(BD));
  rec.target.resize(static_cast<size_t>(BD));
  be_->download(rec.query.data(), o.query, sizeof(float) * BD);
  be_->download(rec.target.data(), o.target, sizeof(float) * BD);
  if (o.weight) {
    rec.weight.resize(static_cast<size_t>(B));
    be_->download(rec.weight.data(), o.weight, sizeof(float) * B);
  } else {
    rec.weight.assign(static_cast<size_t>(B), 0.5f);
  }
  rec.contrastive = lcon;
  rec.mutual = lmut;
  s.extra_dw = dw_aw;
  s.backward(b, dq, dt);
  s.extra_dw = nullptr;
}

bool Model::aw_on(const Stream& s) const { return &s == global.get() ? options.aw_global : &s == local.get() ? options.aw_local : false; }

const float* Model::aw_target(const Batch& b) {
  const float *r = b.aw_ref, *t = b.aw_txt, *g = b.aw_tgt;
  int dim = b.aw_dim;
  if (!(r && t && g)) {
    r = b.e_img;
    t = b.e_txt;
    g = b.e_target;
    dim = b.Dc;
  }
  if (r && t && g && dim > 0) {
    w_star_.resize(be_, static_cast<size_t>(b.B));
    be_->adaptive_weight_target(r, t, g, w_star_.data(), nullptr, nullptr, b.B, dim, options.aw_tau);
    w_star_ready_ = true;
  }
  return w_star_ready_ && w_star_.size() == static_cast<size_t>(b.B) ? w_star_.data() : nullptr;
}

void Model::adam(Stream& s) { adam(s.params, &s == local.get() ? options.local_lr_factor : 1.f); }

void Model::adam(ParamBuffer& pb, float lr_scale) {
  const ModelOptions& op = options;
  bool any = false;
  for (size_t i = 0; i < pb.specs.size(); ++i) any = any || (pb.specs[i].trainable && pb.touched[i]);
  if (!any) return;
  ++pb.adam_step;
  // Runs of consecutive touched trainable tensors form one pass each (padding between them has
  // zero params, grads and moments, so Adam leaves it at zero).
  size_t i = 0;
  while (i < pb.specs.size()) {
    if (!(pb.specs[i].trainable && pb.touched[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j + 1 < pb.specs.size() && pb.specs[j + 1].trainable && pb.touched[j + 1]) ++j;
    const int64_t a = pb.specs[i].offset, e = pb.specs[j].offset + pb.specs[j].numel;
    be_->adam_update(pb.params.data() + a, pb.grads.data() + a, pb.m.data() + a, pb.v.data() + a, e - a, op.lr * lr_scale, op.beta1, op.beta2, op.eps,
                     op.weight_decay, pb.adam_step, /*zero_grad=*/false);
    i = j + 1;
  }
  pb.changed();
}

bool Model::encoder_ready(const Batch& b) const {
  if (clip_encoder) return b.images != nullptr;
  return encoder && (encoder->trunk ? b.images != nullptr : b.fmap != nullptr);
}

void Model::global_loss_and_grad_on(const Batch& b, const float* q2, const float* t2, const Rng& rng, StreamRecord& rec) {
  DWC_CHECK(global, Internal, "model: global_loss_and_grad without the global stream");
  Batch bg = b;
  const bool enc = encoder_ready(b);
  if (enc && clip_encoder) {
    clip_encoder->clip->params.zero_grad();
    encode(bg, true, true, true, true);
  } else if (enc) {
    encoder->params.zero_grad();
    if (encoder->trunk) encoder->trunk->params.zero_grad();
    encode(bg, true, true, true);
  }
  // the local step's w* comes from these embeddings too (they are not in its batch with the encoder)
  if (options.aw_local && !options.aw_global) aw_target(bg);
  loss_and_grad_on(*global, bg, q2, t2, rng, rec);
  if (enc && clip_encoder) {
    clip_encoder->backward_text(global->d_e_txt);
    clip_encoder->backward_images(global->d_e_img, global->d_e_target);
  } else if (enc) {
    encoder->backward_image(0, global->d_e_img);
    encoder->backward_text(global->d_e_txt);
    encoder->backward_image(1, global->d_e_target);
  }
}

void Model::train_step(const Batch& host_in) {
  DWC_ARG_CHECK(host_in.B > 0, "batch: 'B' must be a positive integer");
  const Batch in = on_backend(host_in);
  const int B = in.B;
  const bool mutual = local && global && !options.no_mutual;
  const int64_t BD = int64_t(B) * dims.D;
  Batch b = in;
  aw_reset();
  scaler_begin();
  if (trunk) trunk->params.zero_grad();
  if (encoder) {
    encoder->params.zero_grad();
    if (encoder->trunk) encoder->trunk->params.zero_grad();
  }
  // The local trunk (train mode) turns images into maps unless the batch gives maps (frozen
  // trunk: cached fmap, no trunk update). By default it runs once per iteration: its parameters
  // do not change between steps 1 and 4, so the maps are the same in both (the reference runs it
  // in both; reference_trunk_steps restores that, for its BN running stats, spec §6/§13).
  const bool run_trunk = trunk && in.images && !in.fmap;
  auto* lstream = dynamic_cast<LocalStream*>(local.get());
  if (lstream && trunk) lstream->input_grads = run_trunk;
  auto trunk_maps = [&](const float* target_images) {
    trunk->reset();
    int Ho = 0, Wo = 0;
    trunk->out_size(in.Hi, in.Wi, &Ho, &Wo);
    b.fmap = trunk->forward(0, in.images, B, in.Hi, in.Wi, true);
    b.fmap_target = trunk->forward(1, target_images, B, in.Hi, in.Wi, true);
    b.C = dims.C;
    b.H = Ho;
    b.W = Wo;
  };
  if (run_trunk) {
    DWC_ARG_CHECK(in.images_target, "batch: missing 'imagesTarget' (target images for the local trunk)");
    // step 1 of the reference: query and partner-target paths (reference images under
    // mutual_target_reference, spec §10)
    if (reference_trunk_steps && local && global && !options.no_mutual)
      trunk_maps(options.mutual_target_reference ? in.images : in.images_target);
    else
      trunk_maps(in.images_target);
  }
  // 1. local forward, no gradient, train mode → (q_L, t_L)
  if (mutual) {
    Batch pb = partner_batch(b);
    local->arena.reset();
    StreamOut o = local->forward(pb, true, phase_rng(1));
    DWC_ARG_CHECK(o.query && o.target, "batch: missing local-stream inputs ('fmap', 'fmap_target', 'tokens')");
    copy_out(q_other_, o.query, BD);
    copy_out(t_other_, o.target, BD);
  }
  // 2. global step against step-1 outputs (the encoder, when present, trains with it)
  if (global) {
    global_loss_and_grad_on(b, mutual ? q_other_.data() : nullptr, mutual ? t_other_.data() : nullptr, phase_rng(2), rec[0]);
    if (scaler_unscale({&global->params, clip_encoder ? &clip_encoder->clip->params : nullptr, encoder ? &encoder->params : nullptr,
                        encoder && encoder->trunk ? &encoder->trunk->params : nullptr})) {
      adam(*global);
      if (clip_encoder) adam(clip_encoder->clip->params, options.encoder_lr_factor);
      if (encoder) {
        adam(encoder->params);
        if (encoder->trunk) adam(encoder->trunk->params);
      }
    }
  }
  if (local) {
    // 3. global forward, no gradient, after its update → (q_G, t_G)
    if (mutual) {
      Batch bg = b;
      if (encoder_ready(b)) encode(bg, true, true, !options.mutual_target_reference);
      Batch pb = partner_batch(bg);
      global->arena.reset();
      StreamOut o = global->forward(pb, true, phase_rng(3));
      copy_out(q_other_, o.query, BD);
      copy_out(t_other_, o.target, BD);
    }
    // 4. local step against step-3 outputs; the trunk trains with it
    if (run_trunk && reference_trunk_steps && mutual) trunk_maps(in.images_target);
    // Step 2 changed only global weights and train-mode BN uses batch statistics, so step 1's
    // local activations are step 4's: reuse them (the stream falls back to a full forward when
    // the inputs differ) and recompute only the dropout-dependent combiner and the target path.
    if (mutual && lstream) lstream->reuse_next_forward = true;
    loss_and_grad_on(*local, b, mutual ? q_other_.data() : nullptr, mutual ? t_other_.data() : nullptr, phase_rng(4), rec[1]);
    if (run_trunk) {
      trunk->backward(0, lstream->grad_fmap(), nullptr);
      trunk->backward(1, lstream->grad_fmap_target(), nullptr);
    }
    if (scaler_unscale({&local->params, run_trunk ? &trunk->params : nullptr})) {
      if (run_trunk) adam(trunk->params, options.local_lr_factor);
      adam(*local);
    }
  }
  ++iteration;
  scaler_end();
  // Grow every arena to this iteration's high-water mark now, so later iterations never allocate.
  for (Stream* s : streams()) arena_of(s).reset();
  if (trunk) trunk->reset();
  if (encoder) encoder->reset();
  if (clip_encoder) clip_encoder->reset();
  arena_.reset();
}

void Model::embed(const Batch& host_in, bool queries, std::vector<StreamOut>& outs) {
  DWC_ARG_CHECK(host_in.B > 0, "batch: 'B' must be a positive integer");
  const Batch in = on_backend(host_in);
  outs.clear();
  Batch b = in;
  // images of the embedded side: the reference images for queries; for targets `images_target`,
  // else `images`
  const float* img = queries ? in.images : (in.images_target ? in.images_target : in.images);
  if (!queries) {
    b.images_target = img;
    b.images = nullptr;
  }
  if (trunk && img) {
    trunk->reset();
    int Ho = 0, Wo = 0;
    trunk->out_size(in.Hi, in.Wi, &Ho, &Wo);
    (queries ? b.fmap : b.fmap_target) = trunk->forward(0, img, in.B, in.Hi, in.Wi, false);
    b.C = dims.C;
    b.H = Ho;
    b.W = Wo;
  }
  if ((encoder && (img || (queries ? b.fmap : b.fmap_target))) || (clip_encoder && img)) encode(b, false, queries, !queries);
  for (Stream* s : streams()) {
    Batch e = b;
    if (queries) {
      e.e_target = nullptr;
      e.fmap_target = nullptr;
    } else {
      e.e_img = e.e_txt = nullptr;
      e.fmap = nullptr;
      e.tokens = nullptr;
    }
    s->arena.reset();
    StreamOut o = s->forward(e, false, Rng{options.seed, 0});
    DWC_ARG_CHECK(queries ? o.query != nullptr : o.target != nullptr,
                  "batch: missing " << (queries ? "query" : "target") << " inputs of the " << s->name() << " stream");
    outs.push_back(o);
  }
}

void Model::aw_targets(const Batch& host_in, float* out) {
  DWC_ARG_CHECK(host_in.B > 0, "batch: 'B' must be a positive integer");
  const Batch in = on_backend(host_in);
  Batch b = in;
  if (!(b.aw_ref && b.aw_txt && b.aw_tgt) && !(b.e_img && b.e_txt && b.e_target) && clip_encoder) {
    DWC_ARG_CHECK(b.images && b.images_target, "batch: adaptive-weighting targets through the CLIP encoder need 'images' and 'imagesTarget'");
    encode(b, false, true, true);
  } else if (!(b.aw_ref && b.aw_txt && b.aw_tgt) && !(b.e_img && b.e_txt && b.e_target)) {
    DWC_ARG_CHECK(encoder, "adaptive-weighting targets need embeddings: 'awRef'/'awTxt'/'awTgt', 'eImg'/'eTxt'/'eTarget', or the pooled encoder");
    const bool maps = !encoder->trunk && b.fmap && b.fmap_target;  // shared encoder on given maps
    DWC_ARG_CHECK(maps || (b.images && b.images_target),
                  "batch: adaptive-weighting targets through the encoder need 'images' and 'imagesTarget' (or 'fmap' and 'fmapTarget')");
    if (!encoder->trunk && !maps) {
      DWC_ARG_CHECK(trunk, "model: the shared encoder needs the local trunk");
      // shared encoder: its maps are the local trunk's (eval mode); both kept while encoding
      trunk->reset();
      int Ho = 0, Wo = 0;
      trunk->out_size(in.Hi, in.Wi, &Ho, &Wo);
      b.fmap = trunk->forward(0, in.images, in.B, in.Hi, in.Wi, false);
      b.fmap_target = trunk->forward(1, in.images_target, in.B, in.Hi, in.Wi, false);
      b.C = dims.C;
      b.H = Ho;
      b.W = Wo;
    }
    encode(b, false, true, true);
  }
  aw_reset();
  const float* ws = aw_target(b);
  DWC_CHECK(ws, Internal, "model: no w* source after encoding");
  be_->download(out, ws, sizeof(float) * in.B);
  if (trunk) trunk->reset();
  if (encoder) encoder->reset();
  if (clip_encoder) clip_encoder->reset();
}

const float* Model::trunk_features(const float* images, int N, int Hi, int Wi, int* Ho, int* Wo) {
  DWC_ARG_CHECK(trunk, "model: trunk features need the local trunk (dimension 'trunk')");
  DWC_ARG_CHECK(images && N > 0 && Hi > 0 && Wi > 0, "model: trunk features need 'images' [N,3,Hi,Wi]");
  Batch hb;
  hb.B = N;
  hb.Hi = Hi;
  hb.Wi = Wi;
  hb.images = images;
  const Batch b = on_backend(hb);
  trunk->reset();
  trunk->out_size(Hi, Wi, Ho, Wo);
  return trunk->forward(0, b.images, N, Hi, Wi, false);
}

int Model::arena_grows() const {
  int n = arena_.grow_count();
  if (trunk) n += trunk->arena_grows();
  if (encoder) n += encoder->arena_grows();
  if (clip_encoder) n += clip_encoder->arena_grows();
  for (Stream* s : streams()) n += arena_of(s).grow_count();
  return n;
}

size_t Model::arena_bytes() const {
  size_t n = arena_.capacity();
  if (encoder) n += encoder->arena_bytes();
  if (clip_encoder) n += clip_encoder->arena_bytes();
  for (Stream* s : streams()) n += arena_of(s).capacity();
  return n;
}

// ---- Loss scaling (docs/CUDA.md "Loss scaling") ----
// Dynamic loss scaling for fp16 GEMMs (GradScaler's scheme): the losses' backward starts from S
// instead of 1, so every gradient is S times the true one (S a power of 2: exactly the unscaled
// bits times S, barring overflow and underflow); before each stream step's Adam the gradients of
// the buffers it updates are unscaled in place on the backend and checked for inf/NaN, and one
// 4-byte flag comes back; a bad step is skipped (parameters, moments and Adam step unchanged).
// After the iteration S halves if a step was skipped, else doubles after growth_interval clean
// iterations. Off (S = 1, nothing run) unless the GEMMs are fp16 or options.loss_scale > 0.
void Model::scaler_begin() {
  DWC_ARG_CHECK(options.loss_scale >= 0.f && std::isfinite(options.loss_scale),
                "loss scaling: 'loss_scale' must be a finite number >= 0 (0: automatic), got " << options.loss_scale);
  DWC_ARG_CHECK(options.loss_scale_growth_interval > 0,
                "loss scaling: 'loss_scale_growth_interval' must be a positive integer, got " << options.loss_scale_growth_interval);
  scaler.active = options.loss_scale > 0.f || be_->gemm_precision() == backend::GemmPrecision::Fp16;
  scaler.found_inf = false;
  grad_scale_ = 1.f;
  if (!scaler.active) return;
  if (scaler.scale <= 0.f) scaler.scale = options.loss_scale > 0.f ? options.loss_scale : 65536.f;
  grad_scale_ = scaler.scale;
}

bool Model::scaler_unscale(std::initializer_list<ParamBuffer*> bufs) {
  if (!scaler.active) return true;
  scaler_flag_.resize(be_, 1);
  be_->fill(scaler_flag_.data(), 0.f, 1);
  const float inv = 1.f / scaler.scale;
  for (ParamBuffer* pb : bufs) {
    if (!pb || pb->total() == 0) continue;
    if (grad_hook) grad_hook(*pb);
    be_->unscale_check(pb->grads.data(), pb->total(), inv, scaler_flag_.data());
  }
  float found = 0.f;
  be_->download(&found, scaler_flag_.data(), sizeof(float));
  if (found == 0.f) return true;
  ++scaler.skipped;
  scaler.found_inf = true;
  return false;
}

void Model::scaler_end() {
  grad_scale_ = 1.f;
  if (!scaler.active) return;
  constexpr float kMin = 1.f / 16777216.f, kMax = 1.7014118e38f;  // 2^-24 .. 2^127: S stays a finite power of 2
  if (scaler.found_inf) {
    scaler.scale = std::max(scaler.scale * 0.5f, kMin);
    scaler.clean = 0;
  } else if (++scaler.clean >= options.loss_scale_growth_interval) {
    scaler.scale = std::min(scaler.scale * 2.f, kMax);
    scaler.clean = 0;
  }
}

}  // namespace dwc

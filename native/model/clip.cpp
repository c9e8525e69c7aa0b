// Native CLIP towers, loss and fine-tuning step (CLIP-SPEC.md "Architecture", "Output").
#include "clip.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "clip_resnet.h"

namespace dwc {

namespace {
constexpr float kLnEps = 1e-5f;  // spec: LayerNorm eps 1e-5
}  // namespace

// ---- residual attention blocks ---------------------------------------------------------------

void TransformerStack::declare(ParamBuffer& pb, const std::string& prefix, int width, int layers, int heads) {
  be_ = pb.be;
  w_ = width;
  H_ = heads;
  const int64_t w = width;
  for (int i = 0; i < layers; ++i) {
    const std::string p = prefix + "resblocks." + std::to_string(i) + ".";
    Layer L;
    L.ln1_w = pb.add(p + "ln_1.weight", {w});
    L.ln1_b = pb.add(p + "ln_1.bias", {w});
    L.in_w = pb.add(p + "attn.in_proj_weight", {3 * w, w});
    L.in_b = pb.add(p + "attn.in_proj_bias", {3 * w});
    L.out_w = pb.add(p + "attn.out_proj.weight", {w, w});
    L.out_b = pb.add(p + "attn.out_proj.bias", {w});
    L.ln2_w = pb.add(p + "ln_2.weight", {w});
    L.ln2_b = pb.add(p + "ln_2.bias", {w});
    L.fc_w = pb.add(p + "mlp.c_fc.weight", {4 * w, w});
    L.fc_b = pb.add(p + "mlp.c_fc.bias", {4 * w});
    L.proj_w = pb.add(p + "mlp.c_proj.weight", {w, 4 * w});
    L.proj_b = pb.add(p + "mlp.c_proj.bias", {w});
    layers_.push_back(L);
  }
  saved_.resize(layers_.size());
}

// x = x + attn(ln_1(x)); x = x + c_proj(act(c_fc(ln_2(x))))
const float* TransformerStack::forward(ParamBuffer& pb, Arena& ar, const float* x, int B, int T, bool causal, bool gelu, bool save,
                                       const int32_t* lens, const int32_t* pool_pos) {
  B_ = B;
  T_ = T;
  gelu_ = gelu;
  lens_.assign(lens ? lens : nullptr, lens ? lens + B : nullptr);
  const int w = w_;
  const int32_t* ln = lens_.empty() ? nullptr : lens_.data();
  const int64_t BT = be_->mha_rows(B, T, ln), n = BT * w;
  // Row of x that sequence b pools (pool_pos[b] within the sequence).
  std::vector<int64_t> pool_row;
  if (pool_pos) {
    int64_t r0 = 0;
    for (int b = 0; b < B; ++b) {
      pool_row.push_back(r0 + pool_pos[b]);
      r0 += ln ? ln[b] : T;
    }
  }
  // Inference reads the last block at the pooled rows only: its keys and values need every row,
  // everything else (query, out_proj, MLP) just those rows.
  const size_t full_layers = (pool_pos && !save && !layers_.empty()) ? layers_.size() - 1 : layers_.size();
  const backend::Act act = gelu ? backend::Act::Gelu : backend::Act::QuickGelu;
  // !save: one residual stream updated in place (x += attn(ln_1(x)); x += mlp(ln_2(x)), the adds
  // in the GEMM epilogues), the other buffers shared by the layers. save: every layer's own.
  if (!save && full_layers > 0) {
    float* xr = ar.alloc(n, false);
    be_->copy(xr, x, sizeof(float) * n);
    x = xr;
  }
  for (size_t l = 0; l < full_layers; ++l) {
    const Layer& L = layers_[l];
    Saved& s = saved_[l];
    const bool fresh = save || l == 0;
    s.x = x;
    float* ln1 = fresh ? ar.alloc(n, false) : saved_[0].ln1;
    float* m1 = fresh ? ar.alloc(BT, false) : saved_[0].m1;
    float* r1 = fresh ? ar.alloc(BT, false) : saved_[0].r1;
    be_->layernorm_forward(x, pb.p(L.ln1_w), pb.p(L.ln1_b), ln1, m1, r1, BT, w, kLnEps);
    float* qkv = fresh ? ar.alloc(3 * n, false) : saved_[0].qkv;
    float* att = fresh ? ar.alloc(be_->mha_att_floats(B, T, H_, ln), false) : saved_[0].att;
    float* ctx = fresh ? ar.alloc(n, false) : saved_[0].ctx;
    float* xm = save ? ar.alloc(n, false) : const_cast<float*>(x);
    // xm = x + attn(ln1): the residual is added in out_proj's GEMM epilogue (in place without save)
    be_->mha_forward(ln1, pb.p(L.in_w), pb.p(L.in_b), pb.p(L.out_w), pb.p(L.out_b), xm, qkv, att, ctx, B, T, w, H_, causal, nullptr, ln, x);
    float* ln2 = fresh ? ar.alloc(n, false) : saved_[0].ln2;
    float* m2 = fresh ? ar.alloc(BT, false) : saved_[0].m2;
    float* r2 = fresh ? ar.alloc(BT, false) : saved_[0].r2;
    be_->layernorm_forward(xm, pb.p(L.ln2_w), pb.p(L.ln2_b), ln2, m2, r2, BT, w, kLnEps);
    if (l == 0) g_tmp_ = ar.alloc(4 * n, false);  // act(h) is not kept: backward recomputes it from h
    float* g = g_tmp_;
    float* h = nullptr;  // pre-activation, kept for backward only
    if (save) {
      h = ar.alloc(4 * n, false);
      be_->linear_forward_fused(ln2, pb.p(L.fc_w), pb.p(L.fc_b), nullptr, h, static_cast<int>(BT), w, 4 * w, backend::Act::None);
      if (gelu) be_->gelu_forward(h, g, 4 * n);
      else be_->quick_gelu_forward(h, g, 4 * n);
    } else {  // inference: the activation in the GEMM epilogue, h never written
      be_->linear_forward_fused(ln2, pb.p(L.fc_w), pb.p(L.fc_b), nullptr, g, static_cast<int>(BT), w, 4 * w, act);
    }
    float* xo = save ? ar.alloc(n, false) : xm;
    be_->linear_forward_fused(g, pb.p(L.proj_w), pb.p(L.proj_b), xm, xo, static_cast<int>(BT), 4 * w, w, backend::Act::None);  // xo = xm + mlp
    s.ln1 = ln1, s.m1 = m1, s.r1 = r1, s.qkv = qkv, s.att = att, s.ctx = ctx, s.xm = xm, s.ln2 = ln2, s.m2 = m2, s.r2 = r2, s.h = h;
    x = xo;
  }
  if (!pool_pos) return x;
  const int64_t nb = int64_t(B) * w;
  if (full_layers == layers_.size()) {  // every block ran on all rows: gather
    float* pooled = ar.alloc(nb, false);
    for (int b = 0; b < B; ++b) be_->copy(pooled + int64_t(b) * w, x + pool_row[b] * w, sizeof(float) * w);
    return pooled;
  }
  const Layer& L = layers_.back();
  float* ln1 = ar.alloc(n, false);
  be_->layernorm_forward(x, pb.p(L.ln1_w), pb.p(L.ln1_b), ln1, nullptr, nullptr, BT, w, kLnEps);
  float* xm = ar.alloc(nb, false);
  float* scratch = ar.alloc(be_->mha_query_scratch(B, T, w, ln), false);
  be_->mha_forward_query(ln1, pb.p(L.in_w), pb.p(L.in_b), pb.p(L.out_w), pb.p(L.out_b), xm, scratch, B, T, w, H_, causal, ln, pool_pos);
  for (int b = 0; b < B; ++b) be_->add_inplace(xm + int64_t(b) * w, x + pool_row[b] * w, w);
  float* ln2 = ar.alloc(nb, false);
  be_->layernorm_forward(xm, pb.p(L.ln2_w), pb.p(L.ln2_b), ln2, nullptr, nullptr, B, w, kLnEps);
  float* h = ar.alloc(4 * nb, false);
  be_->linear_forward_fused(ln2, pb.p(L.fc_w), pb.p(L.fc_b), nullptr, h, B, w, 4 * w, act);
  be_->linear_forward_fused(h, pb.p(L.proj_w), pb.p(L.proj_b), xm, xm, B, 4 * w, w, backend::Act::None);  // xm += mlp
  return xm;
}

const float* TransformerStack::backward(ParamBuffer& pb, Arena& ar, const float* dy) {
  const int w = w_, B = B_, T = T_;
  const int32_t* ln = lens_.empty() ? nullptr : lens_.data();
  const int64_t BT = be_->mha_rows(B, T, ln), n = BT * w;
  // Work buffers shared by every layer; dx ping-pongs between two.
  float* dg = ar.alloc(4 * n, false);
  float* gw = ar.alloc(4 * n, false);
  float* dh = ar.alloc(4 * n, false);
  float* dln = ar.alloc(n, false);
  float* dxm = ar.alloc(n, false);
  float* dbuf[2] = {ar.alloc(n, false), ar.alloc(n, false)};
  float* scratch = ar.alloc(be_->mha_backward_scratch(B, T, w, H_, ln), false);
  const float* dxo = dy;
  for (size_t li = layers_.size(); li-- > 0;) {
    const Layer& L = layers_[li];
    const Saved& s = saved_[li];
    be_->copy(dxm, dxo, sizeof(float) * n);
    be_->fill(dg, 0.f, 4 * n);
    if (gelu_) be_->gelu_forward(s.h, gw, 4 * n);
    else be_->quick_gelu_forward(s.h, gw, 4 * n);
    be_->linear_backward(gw, pb.p(L.proj_w), dxo, dg, pb.g(L.proj_w), pb.g(L.proj_b), static_cast<int>(BT), 4 * w, w);
    be_->fill(dh, 0.f, 4 * n);
    if (gelu_) be_->gelu_backward(s.h, dg, dh, 4 * n);
    else be_->quick_gelu_backward(s.h, dg, dh, 4 * n);
    be_->fill(dln, 0.f, n);
    be_->linear_backward(s.ln2, pb.p(L.fc_w), dh, dln, pb.g(L.fc_w), pb.g(L.fc_b), static_cast<int>(BT), w, 4 * w);
    be_->layernorm_backward(s.xm, pb.p(L.ln2_w), s.m2, s.r2, dln, dxm, pb.g(L.ln2_w), pb.g(L.ln2_b), BT, w);
    be_->fill(dln, 0.f, n);
    be_->mha_backward(s.ln1, pb.p(L.in_w), pb.p(L.out_w), s.qkv, s.att, s.ctx, dxm, dln, pb.g(L.in_w), pb.g(L.in_b), pb.g(L.out_w),
                      pb.g(L.out_b), scratch, B, T, w, H_, ln);
    float* dx = dbuf[li % 2];
    be_->copy(dx, dxm, sizeof(float) * n);
    be_->layernorm_backward(s.x, pb.p(L.ln1_w), s.m1, s.r1, dln, dx, pb.g(L.ln1_w), pb.g(L.ln1_b), BT, w);
    dxo = dx;
  }
  return dxo;
}

// ---- ViT image tower -------------------------------------------------------------------------
namespace {

// conv1 → class token → + pos → ln_pre → resblocks → ln_post of the class token → @ proj
class VitTower : public ImageTower {
 public:
  VitTower(ParamBuffer& pb, const ClipArch& a) : be_(pb.be), a_(a) {
    const int64_t w = a.vision_width, T = int64_t(a.grid) * a.grid + 1;
    cls_ = pb.add("visual.class_embedding", {w});
    pos_ = pb.add("visual.positional_embedding", {T, w});
    proj_ = pb.add("visual.proj", {w, a.embed_dim});
    conv_ = pb.add("visual.conv1.weight", {w, 3, a.patch, a.patch});
    lnpre_w_ = pb.add("visual.ln_pre.weight", {w});
    lnpre_b_ = pb.add("visual.ln_pre.bias", {w});
    stack_.declare(pb, "visual.transformer.", a.vision_width, a.vision_layers, a.vision_heads);
    lnpost_w_ = pb.add("visual.ln_post.weight", {w});
    lnpost_b_ = pb.add("visual.ln_post.bias", {w});
  }
  const char* kind() const override { return "vit"; }

  const float* forward(ParamBuffer& pb, Arena& ar, const float* pixels, int N, bool, bool save) override {
    N_ = N;
    const int w = a_.vision_width, T = a_.grid * a_.grid + 1, R = a_.resolution, p = a_.patch;
    const int64_t NT = int64_t(N) * T;
    patches_ = ar.alloc(int64_t(N) * (T - 1) * 3 * p * p, false);
    tok_ = ar.alloc(NT * w, false);
    be_->patch_embed_forward(pixels, pb.p(conv_), pb.p(cls_), pb.p(pos_), tok_, patches_, N, 3, R, p, w);
    float* x = ar.alloc(NT * w, false);
    m_pre_ = ar.alloc(NT, false);
    r_pre_ = ar.alloc(NT, false);
    be_->layernorm_forward(tok_, pb.p(lnpre_w_), pb.p(lnpre_b_), x, m_pre_, r_pre_, NT, w, kLnEps);
    cls_pos_.assign(N, 0);  // the class token is row 0 of each image
    cls_out_ = stack_.forward(pb, ar, x, N, T, false, a_.gelu, save, nullptr, cls_pos_.data());
    const float* c = cls_out_;
    cls_ln_ = ar.alloc(int64_t(N) * w, false);
    m_post_ = ar.alloc(N, false);
    r_post_ = ar.alloc(N, false);
    be_->layernorm_forward(c, pb.p(lnpost_w_), pb.p(lnpost_b_), cls_ln_, m_post_, r_post_, N, w, kLnEps);
    float* out = ar.alloc(int64_t(N) * a_.embed_dim, false);
    be_->gemm(false, false, N, a_.embed_dim, w, 1.f, cls_ln_, pb.p(proj_), 0.f, out);
    return out;
  }

  void backward(ParamBuffer& pb, Arena& ar, const float* d_embed) override {
    const int N = N_, w = a_.vision_width, T = a_.grid * a_.grid + 1, E = a_.embed_dim;
    const int64_t NT = int64_t(N) * T;
    float* dln = ar.alloc(int64_t(N) * w);
    be_->gemm(false, true, N, w, E, 1.f, d_embed, pb.p(proj_), 1.f, dln);          // d cls_ln = dE · projᵀ
    be_->gemm(true, false, w, E, N, 1.f, cls_ln_, d_embed, 1.f, pb.g(proj_));     // d proj += cls_lnᵀ · dE
    float* dy = ar.alloc(NT * w);  // only the class rows are nonzero
    float* dc = ar.alloc(int64_t(N) * w);
    be_->layernorm_backward(cls_out_, pb.p(lnpost_w_), m_post_, r_post_, dln, dc, pb.g(lnpost_w_), pb.g(lnpost_b_), N, w);
    for (int i = 0; i < N; ++i) be_->copy(dy + int64_t(i) * T * w, dc + int64_t(i) * w, sizeof(float) * w);
    const float* dx = stack_.backward(pb, ar, dy);
    float* dtok = ar.alloc(NT * w);
    be_->layernorm_backward(tok_, pb.p(lnpre_w_), m_pre_, r_pre_, dx, dtok, pb.g(lnpre_w_), pb.g(lnpre_b_), NT, w);
    be_->patch_embed_backward(patches_, pb.p(conv_), dtok, nullptr, pb.g(conv_), pb.g(cls_), pb.g(pos_), N, 3, a_.resolution, a_.patch, w);
  }

 private:
  backend::Backend* be_;
  ClipArch a_;
  TransformerStack stack_;
  int64_t cls_, pos_, proj_, conv_, lnpre_w_, lnpre_b_, lnpost_w_, lnpost_b_;
  int N_ = 0;
  std::vector<int32_t> cls_pos_;
  float *patches_ = nullptr, *tok_ = nullptr, *m_pre_ = nullptr, *r_pre_ = nullptr;
  const float* cls_out_ = nullptr;
  float *cls_ln_ = nullptr, *m_post_ = nullptr, *r_post_ = nullptr;
};

}  // namespace

std::unique_ptr<ImageTower> make_vit_tower(ParamBuffer& pb, const ClipArch& a) { return std::make_unique<VitTower>(pb, a); }

// ---- text tower ------------------------------------------------------------------------------

void TextTower::declare(ParamBuffer& pb, const ClipArch& a) {
  be_ = pb.be;
  a_ = a;
  const int64_t tw = a.text_width;
  tok_ = pb.add("token_embedding.weight", {a.vocab_size, tw});
  pos_ = pb.add("positional_embedding", {a.context_length, tw});
  stack_.declare(pb, "transformer.", a.text_width, a.text_layers, a.text_heads);
  lnf_w_ = pb.add("ln_final.weight", {tw});
  lnf_b_ = pb.add("ln_final.bias", {tw});
  proj_ = pb.add("text_projection", {tw, a.embed_dim});
}

// token_embedding[ids] + positional_embedding → causal resblocks → ln_final at EOT → @ text_projection
const float* TextTower::forward(ParamBuffer& pb, Arena& ar, const int32_t* ids, int N, bool save) {
  const int T = a_.context_length, w = a_.text_width, E = a_.embed_dim;
  for (int64_t i = 0; i < int64_t(N) * T; ++i)
    DWC_ARG_CHECK(ids[i] >= 0 && ids[i] < a_.vocab_size, "CLIP text: 'ids' holds token id " << ids[i] << " at row " << i / T << ", position "
                                                                                          << i % T << ", outside the vocabulary [0, "
                                                                                          << a_.vocab_size << ")");
  N_ = N;
  eot_.assign(N, 0);
  for (int n = 0; n < N; ++n) {  // EOT = argmax of the ids, first maximum
    const int32_t* row = ids + int64_t(n) * T;  // host ids
    int best = 0;
    for (int t = 1; t < T; ++t)
      if (row[t] > row[best]) best = t;
    eot_[n] = best;
  }
  // Causal attention: a token never sees later ones, and the tower reads the EOT only, so each
  // text runs as its first eot + 1 tokens, packed (exact; the rows after the EOT are never used).
  lens_.resize(N);
  row0_.resize(N);
  int64_t rows = 0;
  for (int n = 0; n < N; ++n) {
    lens_[n] = eot_[n] + 1;
    row0_[n] = rows;
    rows += lens_[n];
  }
  // packed rows: token ids, then positions (host tables uploaded; the sum and its backward are
  // the embedding kernels, in the packing's row order)
  std::vector<int32_t> rid(static_cast<size_t>(2 * rows));
  for (int n = 0; n < N; ++n)
    for (int t = 0; t < lens_[n]; ++t) {
      rid[static_cast<size_t>(row0_[n] + t)] = ids[int64_t(n) * T + t];
      rid[static_cast<size_t>(rows + row0_[n] + t)] = t;
    }
  row_ids_ = reinterpret_cast<int32_t*>(ar.alloc(2 * rows, false));  // backend memory, kept for backward
  be_->upload(row_ids_, rid.data(), rid.size() * sizeof(int32_t));
  float* x = ar.alloc(rows * w, false);
  float* xp = ar.alloc(rows * w, false);
  be_->embedding_forward(row_ids_, pb.p(tok_), x, rows, a_.vocab_size, w);
  be_->embedding_forward(row_ids_ + rows, pb.p(pos_), xp, rows, T, w);
  be_->add_inplace(x, xp, rows * w);  // token + position
  const float* pooled = stack_.forward(pb, ar, x, N, T, true, a_.gelu, save, lens_.data(), eot_.data());
  float* pl = ar.alloc(int64_t(N) * w, false);
  float* m = ar.alloc(N, false);
  float* r = ar.alloc(N, false);
  be_->layernorm_forward(pooled, pb.p(lnf_w_), pb.p(lnf_b_), pl, m, r, N, w, kLnEps);
  pooled_ = pooled, pooled_ln_ = pl, m_ = m, r_ = r;
  float* out = ar.alloc(int64_t(N) * E, false);
  be_->gemm(false, false, N, E, w, 1.f, pl, pb.p(proj_), 0.f, out);
  return out;
}

void TextTower::backward(ParamBuffer& pb, Arena& ar, const float* d_embed) {
  const int N = N_, T = a_.context_length, w = a_.text_width, E = a_.embed_dim;
  float* dpl = ar.alloc(int64_t(N) * w);
  be_->gemm(false, true, N, w, E, 1.f, d_embed, pb.p(proj_), 1.f, dpl);
  be_->gemm(true, false, w, E, N, 1.f, pooled_ln_, d_embed, 1.f, pb.g(proj_));
  float* dp = ar.alloc(int64_t(N) * w);
  be_->layernorm_backward(pooled_, pb.p(lnf_w_), m_, r_, dpl, dp, pb.g(lnf_w_), pb.g(lnf_b_), N, w);
  const int64_t rows = row0_[N - 1] + lens_[N - 1];  // packed as in forward
  float* dy = ar.alloc(rows * w);
  for (int n = 0; n < N; ++n) be_->copy(dy + (row0_[n] + eot_[n]) * w, dp + int64_t(n) * w, sizeof(float) * w);
  const float* dx = stack_.backward(pb, ar, dy);
  be_->embedding_backward(row_ids_, dx, pb.g(tok_), rows, a_.vocab_size, w);
  be_->embedding_backward(row_ids_ + rows, dx, pb.g(pos_), rows, T, w);
}

// ---- the model -------------------------------------------------------------------------------

ClipModel::ClipModel(const ClipArch& a, backend::Backend& be) : arch(a), be_(&be) {
  params.be = be_;
  arena.set_backend(be_);
  const char* up = std::getenv("DWC_UPLOAD_BATCHES");
  upload_pixels = up && std::strcmp(up, "1") == 0;
  DWC_ARG_CHECK(a.image == "vit" || a.image == "resnet", "CLIP: image tower '" << a.image << "' is not implemented ('vit' or 'resnet')");
  DWC_ARG_CHECK(a.embed_dim > 0 && a.context_length > 0 && a.vocab_size > 0 && a.text_width > 0 && a.text_layers >= 0,
                "CLIP: every architecture size must be positive");
  if (a.image == "vit") {
    DWC_ARG_CHECK(a.vision_width > 0 && a.vision_layers >= 0 && a.patch > 0 && a.grid > 0, "CLIP: every architecture size must be positive");
    DWC_ARG_CHECK(a.vision_heads > 0 && a.vision_width % a.vision_heads == 0, "CLIP: vision heads " << a.vision_heads << " must divide the width "
                                                                                                 << a.vision_width);
    DWC_ARG_CHECK(a.resolution == a.patch * a.grid, "CLIP: resolution " << a.resolution << " must be patch · grid = " << a.patch * a.grid);
  } else {
    DWC_ARG_CHECK(a.rn_width >= 2 && a.rn_width % 2 == 0, "CLIP ResNet: the stem width " << a.rn_width << " must be even and >= 2");
    for (int l : a.rn_layers) DWC_ARG_CHECK(l >= 1, "CLIP ResNet: every stage needs at least one block");
    DWC_ARG_CHECK(a.resolution >= 32 && a.resolution % 32 == 0, "CLIP ResNet: resolution " << a.resolution << " must be a positive multiple of 32");
    DWC_ARG_CHECK(a.rn_heads > 0 && (32 * a.rn_width) % a.rn_heads == 0,
                  "CLIP ResNet: attnpool heads " << a.rn_heads << " must divide the width " << 32 * a.rn_width);
  }
  DWC_ARG_CHECK(a.text_heads > 0 && a.text_width % a.text_heads == 0, "CLIP: text heads " << a.text_heads << " must divide the width " << a.text_width);
  image = a.image == "vit" ? make_vit_tower(params, a) : make_resnet_tower(params, a);
  text.declare(params, a);
  logit_scale = params.add("logit_scale", {});
  adam_floats = params.total();
  image->declare_buffers(params);
  params.finalize();
}

const float* ClipModel::on_backend(const float* pixels, int N) {
  if (!pixels || (be_->host_memory() && !upload_pixels)) return pixels;
  const int64_t n = int64_t(N) * 3 * arch.resolution * arch.resolution;
  pixels_.resize(be_, static_cast<size_t>(n));
  be_->upload(pixels_.data(), pixels, static_cast<size_t>(n) * sizeof(float));
  return pixels_.data();
}

const float* ClipModel::encode_image(const float* pixels, int N) {
  DWC_ARG_CHECK(N >= 1, "CLIP: need at least one image");
  arena.reset();
  return image->forward(params, arena, on_backend(pixels, N), N, false, false);
}

const float* ClipModel::encode_text(const int32_t* ids, int N) {
  DWC_ARG_CHECK(N >= 1, "CLIP: need at least one text");
  arena.reset();
  return text.forward(params, arena, ids, N, false);
}

ClipStepOut ClipModel::loss_and_grad(const float* pixels, const int32_t* ids, int N, bool grad, bool train) {
  DWC_ARG_CHECK(N >= 1, "CLIP: need at least one image-text pair");
  arena.reset();
  const int E = arch.embed_dim;
  ClipStepOut o;
  o.image_embeds = image->forward(params, arena, on_backend(pixels, N), N, train, grad);
  o.text_embeds = text.forward(params, arena, ids, N, grad);
  float* img_n = arena.alloc(int64_t(N) * E, false);
  float* txt_n = arena.alloc(int64_t(N) * E, false);
  float* ni = arena.alloc(N, false);
  float* nt = arena.alloc(N, false);
  float* logits = arena.alloc(int64_t(N) * N, false);
  float* lr = arena.alloc(N, false);
  float* lc = arena.alloc(N, false);
  float ls = 0.f;  // a host value for the kernels (backend.h)
  be_->download(&ls, params.p(logit_scale), sizeof(float));
  float* loss = arena.alloc(1, false);
  be_->clip_loss_forward(o.image_embeds, o.text_embeds, ls, N, E, img_n, txt_n, ni, nt, logits, lr, lc, loss);
  be_->download(&o.loss, loss, sizeof(float));
  o.logits_per_image = logits;
  if (!grad) return o;
  params.zero_grad();
  float* di = arena.alloc(int64_t(N) * E);
  float* dt = arena.alloc(int64_t(N) * E);
  float* scratch = arena.alloc(be_->clip_loss_backward_scratch(N, E), false);
  be_->clip_loss_backward(img_n, txt_n, ni, nt, logits, lr, lc, ls, 1.f, N, E, di, dt, params.g(logit_scale), scratch);
  text.backward(params, arena, dt);
  image->backward(params, arena, di);
  return o;
}

ClipStepOut ClipModel::train_step(const float* pixels, const int32_t* ids, int N, const ClipAdam& a) {
  ClipStepOut o = loss_and_grad(pixels, ids, N, true, a.bn_train);
  DWC_CHECK(std::isfinite(o.loss), Numeric, "CLIP train step: the loss is " << o.loss << " (not finite); parameters left unchanged");
  params.adam_step += 1;
  be_->adam_update(params.params.data(), params.grads.data(), params.m.data(), params.v.data(), adam_floats, a.lr, a.beta1, a.beta2, a.eps,
                   a.weight_decay, params.adam_step, false);
  return o;
}

}  // namespace dwc

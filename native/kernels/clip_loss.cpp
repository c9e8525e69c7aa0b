// CLIP loss forward / backward (CLIP-SPEC.md "Output"). Small: N×N logits; the normalisation
// reuses rowops' l2norm, the products gemm.h.
#include "clip_loss.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "../core/op.h"
#include "gemm.h"
#include "rowops.h"

namespace dwc::cpu {

void clip_loss_forward(const float* img, const float* txt, float logit_scale, int N, int E, float* img_n, float* txt_n, float* norms_i,
                       float* norms_t, float* logits, float* lse_r, float* lse_c, float* loss) {
  l2norm_rows_forward(img, img_n, norms_i, N, E);
  l2norm_rows_forward(txt, txt_n, norms_t, N, E);
  const float s = std::exp(logit_scale);
  gemm(false, true, N, N, E, s, img_n, txt_n, 0.f, logits);  // logits_per_image
  double lr = 0, lc = 0;
  for (int i = 0; i < N; ++i) {
    double mr = -INFINITY, mc = -INFINITY;
    for (int j = 0; j < N; ++j) {
      mr = std::fmax(mr, logits[int64_t(i) * N + j]);
      mc = std::fmax(mc, logits[int64_t(j) * N + i]);
    }
    double sr = 0, sc = 0;
    for (int j = 0; j < N; ++j) {
      sr += std::exp(logits[int64_t(i) * N + j] - mr);
      sc += std::exp(logits[int64_t(j) * N + i] - mc);
    }
    lse_r[i] = static_cast<float>(mr + std::log(sr));
    lse_c[i] = static_cast<float>(mc + std::log(sc));
    lr += mr + std::log(sr) - logits[int64_t(i) * N + i];
    lc += mc + std::log(sc) - logits[int64_t(i) * N + i];
  }
  *loss = N > 0 ? static_cast<float>(0.5 * (lr + lc) / N) : 0.f;
}

int64_t clip_loss_backward_scratch(int N, int E) { return int64_t(N) * N + 2 * int64_t(N) * E; }

// dlogits = dloss/(2N)·(softmax_rows − I + softmax_cols − I); d img_n = s·dlogits·txt_n,
// d txt_n = s·dlogitsᵀ·img_n, d logit_scale = Σ dlogits ⊙ logits.
void clip_loss_backward(const float* img_n, const float* txt_n, const float* norms_i, const float* norms_t, const float* logits,
                        const float* lse_r, const float* lse_c, float logit_scale, float dloss, int N, int E, float* dimg, float* dtxt,
                        float* dlogit_scale, float* scratch) {
  if (N <= 0) return;
  float* dl = scratch;
  float* dn_i = dl + int64_t(N) * N;
  float* dn_t = dn_i + int64_t(N) * E;
  const float k = dloss * 0.5f / N;
  double dls = 0;
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < N; ++j) {
      const float l = logits[int64_t(i) * N + j];
      float g = std::exp(l - lse_r[i]) + std::exp(l - lse_c[j]) - (i == j ? 2.f : 0.f);
      g *= k;
      dl[int64_t(i) * N + j] = g;
      dls += double(g) * l;
    }
  if (dlogit_scale) *dlogit_scale += static_cast<float>(dls);
  const float s = std::exp(logit_scale);
  std::memset(dn_i, 0, sizeof(float) * 2 * int64_t(N) * E);
  gemm(false, false, N, E, N, s, dl, txt_n, 0.f, dn_i);
  gemm(true, false, N, E, N, s, dl, img_n, 0.f, dn_t);
  if (dimg) l2norm_rows_backward(img_n, norms_i, dn_i, dimg, N, E);
  if (dtxt) l2norm_rows_backward(txt_n, norms_t, dn_t, dtxt, N, E);
}

// ---- ops ----
DWC_REGISTER_OP("clip_loss_forward",
                "image_embeds[N,E], text_embeds[N,E], logit_scale[1] -> loss[1], logits_per_image[N,N], image_norm, text_norm, norms_image, "
                "norms_text, lse_rows, lse_cols",
                [](OpCtx& c) {
                  const Tensor& a = c.in("image_embeds", 2);
                  const Tensor& b = c.in("text_embeds", 2);
                  const Tensor& ls = c.in("logit_scale");
                  c.expect_shape(b, "text_embeds", a.shape);
                  DWC_ARG_CHECK(ls.numel() == 1, c.op_name << ": argument 'logit_scale' must hold one value, got shape " << shape_str(ls.shape));
                  const int N = static_cast<int>(a.dim(0)), E = static_cast<int>(a.dim(1));
                  clip_loss_forward(a.f32(), b.f32(), ls.f32()[0], N, E, c.out("image_norm", a.shape).f32(), c.out("text_norm", a.shape).f32(),
                                    c.out("norms_image", {N}).f32(), c.out("norms_text", {N}).f32(), c.out("logits_per_image", {N, N}).f32(),
                                    c.out("lse_rows", {N}).f32(), c.out("lse_cols", {N}).f32(), c.out("loss", {1}).f32());
                });

DWC_REGISTER_OP("clip_loss_backward",
                "image_norm, text_norm, norms_image, norms_text, logits_per_image, lse_rows, lse_cols, logit_scale, dloss -> d_image_embeds, "
                "d_text_embeds, d_logit_scale",
                [](OpCtx& c) {
                  const Tensor& a = c.in("image_norm", 2);
                  const Tensor& b = c.in("text_norm", 2);
                  const int N = static_cast<int>(a.dim(0)), E = static_cast<int>(a.dim(1));
                  c.expect_shape(b, "text_norm", a.shape);
                  const Tensor& ni = c.in("norms_image", 1);
                  const Tensor& nt = c.in("norms_text", 1);
                  const Tensor& lg = c.in("logits_per_image", 2);
                  const Tensor& lr = c.in("lse_rows", 1);
                  const Tensor& lc = c.in("lse_cols", 1);
                  c.expect_shape(ni, "norms_image", {N});
                  c.expect_shape(nt, "norms_text", {N});
                  c.expect_shape(lg, "logits_per_image", {N, N});
                  c.expect_shape(lr, "lse_rows", {N});
                  c.expect_shape(lc, "lse_cols", {N});
                  const Tensor& ls = c.in("logit_scale");
                  const Tensor& dl = c.in("dloss");
                  DWC_ARG_CHECK(ls.numel() == 1, c.op_name << ": argument 'logit_scale' must hold one value");
                  DWC_ARG_CHECK(dl.numel() == 1, c.op_name << ": argument 'dloss' must hold one value");
                  std::vector<float> scratch(static_cast<size_t>(clip_loss_backward_scratch(N, E)));
                  clip_loss_backward(a.f32(), b.f32(), ni.f32(), nt.f32(), lg.f32(), lr.f32(), lc.f32(), ls.f32()[0], dl.f32()[0], N, E,
                                     c.out("d_image_embeds", a.shape).f32(), c.out("d_text_embeds", a.shape).f32(),
                                     c.out("d_logit_scale", ls.shape).f32(), scratch.data());
                });

}  // namespace dwc::cpu

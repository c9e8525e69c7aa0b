// The CLIP contrastive loss (CLIP-SPEC.md "Output"): logits = exp(logit_scale)·norm(img)·norm(txt)ᵀ,
// loss = ½(CE over rows + CE over columns) with labels 0..N−1, mean over the batch.
#pragma once
#include <cstdint>

namespace dwc::cpu {

// img, txt [N,E] → img_n, txt_n [N,E] (L2-normalised), norms_i, norms_t [N], logits [N,N],
// lse_r / lse_c [N] (log-sum-exp of each row / column of logits), *loss.
void clip_loss_forward(const float* img, const float* txt, float logit_scale, int N, int E, float* img_n, float* txt_n, float* norms_i,
                       float* norms_t, float* logits, float* lse_r, float* lse_c, float* loss);
// Floats of scratch clip_loss_backward needs: N·N + 2·N·E.
int64_t clip_loss_backward_scratch(int N, int E);
// Accumulates dimg, dtxt [N,E] and *dlogit_scale (each may be null) for an upstream dloss.
void clip_loss_backward(const float* img_n, const float* txt_n, const float* norms_i, const float* norms_t, const float* logits,
                        const float* lse_r, const float* lse_c, float logit_scale, float dloss, int N, int E, float* dimg, float* dtxt,
                        float* dlogit_scale, float* scratch);

}  // namespace dwc::cpu

// AttentionPool2d of CLIP's ModifiedResNet (CLIP-SPEC.md "Architecture", ModifiedResNet): a
// feature map flattened to P positions x [N,P,C] gets the mean over positions prepended and the
// positional embedding added, t [N,P+1,C]; multi-head attention (H heads, head dim d = C/H,
// scale 1/√d) with the mean token as the only query over all P+1 tokens, separate q/k/v
// projections with bias, then c_proj [E,C] (+ bias) → y [N,E]. Backward accumulates (+=) into
// every gradient (kernels/README.md).
#pragma once
#include <cstdint>

namespace dwc::cpu {

struct AttnPoolSaved {  // forward's intermediates, kept for backward (caller-owned buffers)
  float* t;    // [N,T,C] tokens (T = P+1)
  float* q;    // [N,C] query of the mean token (unscaled)
  float* k;    // [N,T,C]
  float* v;    // [N,T,C]
  float* att;  // [N,H,T] attention weights
  float* ctx;  // [N,C]
};
// Floats of the saved buffers above, in that order (one block).
int64_t attnpool_saved_floats(int N, int P, int C, int H);
AttnPoolSaved attnpool_saved_view(float* block, int N, int P, int C, int H);

void attnpool_forward(const float* x, const float* pos, const float* q_w, const float* q_b, const float* k_w, const float* k_b,
                      const float* v_w, const float* v_b, const float* c_w, const float* c_b, float* y, const AttnPoolSaved& s, int N,
                      int P, int C, int H, int E);
// Floats of scratch attnpool_backward needs.
int64_t attnpool_backward_scratch(int N, int P, int C, int H);
// Accumulates dx [N,P,C], dpos and every projection gradient (each may be null except scratch).
void attnpool_backward(const float* q_w, const float* k_w, const float* v_w, const float* c_w, const AttnPoolSaved& s, const float* dy,
                       float* dx, float* dpos, float* dq_w, float* dq_b, float* dk_w, float* dk_b, float* dv_w, float* dv_b, float* dc_w,
                       float* dc_b, float* scratch, int N, int P, int C, int H, int E);

}  // namespace dwc::cpu

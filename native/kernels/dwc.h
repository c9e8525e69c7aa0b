// Fused DWC kernels (spec §3–§5), forward and backward. Each is tested against the
// composition of the plain kernels (gemm, rowops, elementwise).
#pragma once
#include <cstdint>

namespace dwc::cpu {

// Cross-attention of the local stream's editors (spec §4 steps 2–4), one pass per sample b:
//   S = T_b · I_b [L,P] with T [B,L,D], I [B,D,P];
//   A_s = softmax over tokens of S/temp_s (spatial attention, temp_s = 7), Ŝ_b = T_bᵀ A_s [D,P];
//   A_w = softmax over positions of S/temp_w (word attention, temp_w = 4), Î_b = I_b A_wᵀ [D,L].
// lengths (may be null): tokens l >= lengths[b] are masked: weight 0 in A_s, and their A_w row
// (and so their Î column) is 0. A_s [B,L,P] and A_w [B,L,P] are kept for backward.
void cross_attention_forward(const float* T, const float* I, const int32_t* lengths, float* S_hat, float* I_hat, float* A_s, float* A_w,
                             int B, int L, int D, int P, float temp_s, float temp_w);
// Accumulates dT [B,L,D] and dI [B,D,P].
void cross_attention_backward(const float* T, const float* I, const int32_t* lengths, const float* A_s, const float* A_w,
                              const float* dS_hat, const float* dI_hat, float* dT, float* dI, int B, int L, int D, int P, float temp_s,
                              float temp_w);

// Adaptive weighted fusion (spec §3.3, §4.7): out[b,:] = w[b]·a[b,:] + (1−w[b])·b[b,:].
void weighted_fusion_forward(const float* a, const float* b, const float* w, float* out, int B, int D);
void weighted_fusion_backward(const float* a, const float* b, const float* w, const float* dout, float* da, float* db, float* dw, int B,
                              int D);

// Self-supervised adaptive weighting (PL4CIR-SPEC.md §3, this engine's formulation).
// Target: s_I = cos(e_ref, e_tgt), s_T = cos(e_txt, e_tgt) (rows of [B,Dc], norms clamped at 1e-12),
// w*[b] = σ((s_I − s_T)/tau_w). s_img / s_txt [B] may be null. No backward: w* carries no gradient.
void adaptive_weight_target(const float* e_ref, const float* e_txt, const float* e_tgt, float* w_star, float* s_img, float* s_txt, int B,
                            int Dc, float tau_w);
// L_w = λ · (1/B) Σ_b BCE(w_b, w*_b), BCE(w, y) = −[y·log w + (1−y)·log(1−w)] with each log clamped at
// −100 (as torch BCELoss). Returns L_w.
float adaptive_weight_loss_forward(const float* w, const float* w_star, int B, float lambda);
// Accumulates dw += dL · λ/B · (w − w*) / max(w(1−w), 1e-12) (torch BCELoss's gradient); nothing flows to w*.
void adaptive_weight_loss_backward(const float* w, const float* w_star, float dL, float* dw, int B, float lambda);

// Soft-similarity label generator (spec §5): Q = α·softmax_row(t tᵀ/τ) + (1−α)·Y, Y = P/rowsum(P),
// P_ij = [labels_i = labels_j]. sim_softmax [B,B] kept for backward.
void soft_labels_forward(const float* t, const int32_t* labels, float* Q, float* sim_softmax, int B, int D, float alpha, float tau);
// Accumulates dt from dQ (the gradient through the softmax term; skip the call to detach).
void soft_labels_backward(const float* t, const float* sim_softmax, const float* dQ, float* dt, int B, int D, float alpha, float tau);

// Contrastive loss (spec §5): Z = q tᵀ/τ, L = −(1/B) Σ_ij Q_ij log_softmax_row(Z)_ij. Returns L.
// logp [B,B] kept for backward.
float contrastive_forward(const float* q, const float* t, const float* Q, float* logp, int B, int D, float tau);
// Accumulates dq, dt, dQ (each may be null), scaled by dL.
void contrastive_backward(const float* q, const float* t, const float* Q, const float* logp, float dL, float* dq, float* dt, float* dQ,
                          int B, int D, float tau);

// Mutual learning (spec §5): X1 = s·q tᵀ (this stream), X2 = s·q2 t2ᵀ (other stream, constant),
// L = (1/B) Σ_i KL(softmax(X2)_i ‖ softmax(X1)_i). Returns L; logp1 and p2 [B,B] kept for backward.
float mutual_forward(const float* q, const float* t, const float* q2, const float* t2, float* logp1, float* p2, int B, int D, float s);
// Accumulates dq, dt (each may be null), scaled by dL.
void mutual_backward(const float* q, const float* t, const float* logp1, const float* p2, float dL, float* dq, float* dt, int B, int D,
                     float s);

}  // namespace dwc::cpu

// Transformer family of CLIP (CLIP-SPEC.md "Architecture"): LayerNorm, fused multi-head
// self-attention, QuickGELU / exact GELU and the ViT patch embedding. Forward + backward over raw
// row-major buffers; backward kernels accumulate (+=) into every gradient (kernels/README.md).
#pragma once
#include <cstdint>

namespace dwc::cpu {

// LayerNorm over the last axis of x [rows, C]: y = (x − μ)·rstd·γ + β, biased variance,
// rstd = 1/sqrt(var + eps) (CLIP: eps 1e-5). mean/rstd [rows] are saved for backward.
void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd, int64_t rows, int C,
                       float eps);
// Accumulates dx [rows, C], dgamma, dbeta [C] (each may be null).
void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd, const float* dy, float* dx,
                        float* dgamma, float* dbeta, int64_t rows, int C);

// QuickGELU y = x·σ(1.702x) and exact GELU y = ½x(1 + erf(x/√2)). Backward from the input x.
void quick_gelu_forward(const float* x, float* y, int64_t n);
void quick_gelu_backward(const float* x, const float* dy, float* dx, int64_t n);
void gelu_forward(const float* x, float* y, int64_t n);
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n);

// Multi-head self-attention of a batch of B sequences of T tokens of width w, H heads
// (head dim d = w/H), as torch.nn.MultiheadAttention with a stacked in_proj:
//   qkv = x·in_wᵀ + in_b            [B,T,3w]  (q | k | v, head h at columns h·d of each; one GEMM)
//   att = softmax(q kᵀ/√d + mask)   [B,H,T,T] (causal: key j > query i masked;
//                                              key_pad [B,T] nonzero: that key masked)
//   ctx = att·v                     [B,T,w]
//   y   = ctx·out_wᵀ + out_b        [B,T,w]
// qkv, att and ctx are saved for backward (memory B·H·T² for att). A query with every key
// masked gets an all-zero attention row (PyTorch gives NaN there).
// lens [B] (optional): packed sequences of different lengths instead of B×T: sequence b is
// lens[b] rows, following the rows of b − 1 (mha_rows rows in all; key_pad then has one entry per
// row); att holds, per sequence, its H blocks of lens[b]² (mha_att_floats in all). With a causal
// mask, dropping the rows after the last one a tower reads changes nothing (CLIP text: the EOT).
int64_t mha_rows(int B, int T, const int32_t* lens);
int64_t mha_att_floats(int B, int T, int H, const int32_t* lens);
// residual (optional, [rows,w], not aliasing y): y = residual + attention, added in out_proj's
// GEMM epilogue (linear_forward_fused).
void mha_forward(const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y, float* qkv,
                 float* att, float* ctx, int B, int T, int w, int H, bool causal, const int32_t* key_pad, const int32_t* lens = nullptr,
                 const float* residual = nullptr);
// The same attention for one query per sequence (inference of a tower's last block, which is
// read at one token: the ViT class token, the text EOT): y [B,w] = the rows q_pos[b] (position
// in sequence b) of mha_forward's y; keys and values of every row. No key padding. T: the
// longest sequence. scratch: mha_query_scratch floats.
int64_t mha_query_scratch(int B, int T, int w, const int32_t* lens);
void mha_forward_query(const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y, float* scratch,
                       int B, int T, int w, int H, bool causal, const int32_t* lens, const int32_t* q_pos);
// Floats of scratch that mha_backward needs: dqkv [rows,3w] + dctx [rows,w] + datt (att's size).
int64_t mha_backward_scratch(int B, int T, int w, int H, const int32_t* lens = nullptr);
// Accumulates dx, d_in_w, d_in_b, d_out_w, d_out_b (each may be null). No mask needed: masked
// attention weights are exactly 0. scratch: mha_backward_scratch floats (contents overwritten).
void mha_backward(const float* x, const float* in_w, const float* out_w, const float* qkv, const float* att, const float* ctx,
                  const float* dy, float* dx, float* d_in_w, float* d_in_b, float* d_out_w, float* d_out_b, float* scratch, int B, int T,
                  int w, int H, const int32_t* lens = nullptr);

// ViT patch embedding (spec: conv1 kernel = stride = patch, no bias, then the class token and
// the positional embedding): x [N,C,R,R], W [w,C,p,p], cls [w], pos [g²+1, w], g = R/p →
// y [N, g²+1, w]; y[n,0] = cls + pos[0], y[n,1+gy·g+gx] = conv(x)[n,:,gy,gx] + pos[1+…].
// patches [N, g², C·p·p] receives the im2col of x (for backward); may be null.
void patch_embed_forward(const float* x, const float* W, const float* cls, const float* pos, float* y, float* patches, int N, int C, int R,
                         int p, int w);
// Accumulates dx [N,C,R,R], dW, dcls, dpos (each may be null); patches as written by forward.
void patch_embed_backward(const float* patches, const float* W, const float* dy, float* dx, float* dW, float* dcls, float* dpos, int N,
                          int C, int R, int p, int w);
// im2col of non-overlapping p×p patches: patches[n, gy·g+gx, (c·p+ky)·p+kx] = x[n,c,gy·p+ky,gx·p+kx].
void patchify(const float* x, float* patches, int N, int C, int R, int p);

}  // namespace dwc::cpu

// Host declarations of the CUDA twins of native/kernels/*.h (same names, same semantics; all
// pointers are device pointers). Implemented in native/cuda/*.cu; called by the CUDA backend
// (cuda_backend.cpp). Every launch is checked (cuda_check.h) and runs on ctx.stream.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "../core/rng.h"
#include "../kernels/attnpool.h"
#include "../kernels/conv.h"
#include "cublas_loader.h"

namespace dwc::cuda {

// Device scratch that a kernel family needs between its launches: per-slot buffers, grown on
// demand and reused (the stream orders every use). Implemented by the backend.
class Scratch {
 public:
  virtual ~Scratch() = default;
  virtual void* get(int slot, size_t bytes) = 0;
  float* f(int slot, size_t n) { return static_cast<float*>(get(slot, n * sizeof(float))); }
};
// kScratchEpilogue: the backend's own unfused epilogues (linear_forward_fused, mha_forward's residual)
enum ScratchSlot { kScratchA = 0, kScratchB = 1, kScratchC = 2, kScratchD = 3, kScratchConv = 4, kScratchEpilogue = 5, kScratchCount = 6 };

struct Ctx {
  cudaStream_t stream = nullptr;
  cublas::Handle blas = nullptr;
  Scratch* scratch = nullptr;
  // The operand precision of the float32 GEMMs now (backend::GemmPrecision as int: 0 fp32, 1 bf16,
  // 2 fp16), asked at every GEMM (the backend's device_precision()); null = fp32.
  int (*gemm_precision)() = nullptr;
};

// ---- gemm family (gemm.cu): row-major, explicit leading dimensions ----
void gemm_ld(const Ctx& c, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
             float* C, int ldc);
void gemm(const Ctx& c, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C);
void gemm_batched(const Ctx& c, int batch, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int64_t sA, const float* B,
                  int64_t sB, float beta, float* C, int64_t sC);
// Strided-batched with explicit leading dimensions (attention: per-head column blocks of qkv).
void gemm_strided_ld(const Ctx& c, int batch, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int lda, int64_t sA,
                     const float* B, int ldb, int64_t sB, float beta, float* C, int ldc, int64_t sC);
// bf16 operands, float32 accumulation and output (cublasGemmEx); to_bf16 rounds to nearest even.
void to_bf16(const Ctx& c, const float* x, uint16_t* y, int64_t n);
void gemm_bf16(const Ctx& c, bool tA, bool tB, int M, int N, int K, float alpha, const uint16_t* A, const uint16_t* B, float beta, float* C);
void gemm_bf16_batched(const Ctx& c, int batch, bool tA, bool tB, int M, int N, int K, float alpha, const uint16_t* A, int64_t sA,
                       const uint16_t* B, int64_t sB, float beta, float* C, int64_t sC);
void linear_forward(const Ctx& c, const float* x, const float* W, const float* b, float* y, int N, int in, int out);
void linear_backward(const Ctx& c, const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int N, int in, int out);
// col[j] += Σ_r m[r, j] (and col2 too when not null), m [rows, cols].
void colsum_add(const Ctx& c, const float* m, float* col, float* col2, int64_t rows, int64_t cols);
void fill(const Ctx& c, float* p, float v, int64_t n);
void scale(const Ctx& c, float* p, float s, int64_t n);

// ---- elementwise + optim (elementwise.cu) ----
void relu_forward(const Ctx& c, const float* x, float* y, int64_t n);
void relu_backward(const Ctx& c, const float* y, const float* dy, float* dx, int64_t n);
void sigmoid_forward(const Ctx& c, const float* x, float* y, int64_t n);
void sigmoid_backward(const Ctx& c, const float* y, const float* dy, float* dx, int64_t n);
void dropout_forward(const Ctx& c, const float* x, float* y, float* mask, int64_t n, float p, const Rng& rng);
void dropout_backward(const Ctx& c, const float* mask, const float* dy, float* dx, int64_t n);
void mul_forward(const Ctx& c, const float* a, const float* b, float* y, int64_t n);
void mul_backward(const Ctx& c, const float* a, const float* b, const float* dy, float* da, float* db, int64_t n);
void add_inplace(const Ctx& c, float* y, const float* x, int64_t n);
void add_forward(const Ctx& c, const float* a, const float* b, float* y, int64_t n);
void add_relu_forward(const Ctx& c, const float* a, const float* b, float* y, int64_t n);
void add_backward(const Ctx& c, const float* dy, float* da, float* db, int64_t n);
void adam_update(const Ctx& c, float* p, float* g, float* m, float* v, int64_t n, float lr, float b1, float b2, float eps, float wd,
                 int64_t step, bool zero_grad);

// ---- rowops (rowops.cu) ----
void softmax_rows_forward(const Ctx& c, const float* x, float* y, int64_t rows, int64_t cols, float scale);
void softmax_rows_backward(const Ctx& c, const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, float scale);
void log_softmax_rows_forward(const Ctx& c, const float* x, float* y, int64_t rows, int64_t cols, float scale);
void log_softmax_rows_backward(const Ctx& c, const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, float scale);
void l2norm_rows_forward(const Ctx& c, const float* x, float* y, float* norms, int64_t rows, int64_t cols);
void l2norm_rows_backward(const Ctx& c, const float* y, const float* norms, const float* dy, float* dx, int64_t rows, int64_t cols);

// ---- tensorops (tensorops.cu) ----
void concat_forward(const Ctx& c, int n, const float* const* xs, const int64_t* sizes, int64_t outer, int64_t inner, float* y);
void concat_backward(const Ctx& c, int n, float* const* dxs, const int64_t* sizes, int64_t outer, int64_t inner, const float* dy);
void embedding_forward(const Ctx& c, const int32_t* ids, const float* table, float* y, int64_t n, int64_t V, int64_t E);
void embedding_backward(const Ctx& c, const int32_t* ids, const float* dy, float* dtable, int64_t n, int64_t V, int64_t E);

// ---- conv (conv.cu): im2col / col2im + cuBLAS ----
size_t conv2d_general_workspace_floats(const cpu::Conv2dGeom& g);
void conv2d_general_forward(const Ctx& c, const float* x, const float* w, float* y, const cpu::Conv2dGeom& g, float* ws);
void conv2d_general_backward(const Ctx& c, const float* x, const float* w, const float* dy, float* dx, float* dw, const cpu::Conv2dGeom& g,
                             float* ws);

// ---- norm (norm.cu) ----
void batchnorm_forward_train(const Ctx& c, const float* x, const float* gamma, const float* beta, float* rm, float* rv, float* y, float* sm,
                             float* si, int N, int C, int P, float momentum, float eps, bool relu);
void batchnorm_forward_eval(const Ctx& c, const float* x, const float* gamma, const float* beta, const float* rm, const float* rv, float* y,
                            int N, int C, int P, float eps, bool relu);
void batchnorm_backward(const Ctx& c, const float* x, const float* gamma, const float* sm, const float* si, const float* dy, float* dx,
                        float* dg, float* db, int N, int C, int P, bool accumulate_dx,
                        const float* relu_y = nullptr);
void batchnorm_backward_eval(const Ctx& c, const float* x, const float* gamma, const float* rm, const float* rv, const float* dy, float* dx,
                             float* dg, float* db, int N, int C, int P, float eps);
void batchnorm_cm_forward_train(const Ctx& c, const float* x, const float* gamma, const float* beta, float* rm, float* rv, float* y,
                                int64_t ysc, int64_t ysn, float* sm, float* si, float* sv, int N, int C, int P, float momentum, float eps,
                                bool relu, const int32_t* lengths);
void batchnorm_cm_forward_eval(const Ctx& c, const float* x, const float* gamma, const float* beta, const float* rm, const float* rv,
                               float* y, int64_t ysc, int64_t ysn, int N, int C, int P, float eps, bool relu, const int32_t* lengths);
void batchnorm_cm_backward(const Ctx& c, const float* x, const float* gamma, const float* sm, const float* si, const float* dy, int64_t dsc,
                           int64_t dsn, const float* relu_y, float* dx, float* dg, float* db, int N, int C, int P, bool accumulate,
                           const int32_t* lengths);
void batchnorm_update_running(const Ctx& c, float* rm, float* rv, const float* mean, const float* var, int C, int64_t M, float momentum);

// ---- pool (pool.cu) ----
void avgpool3_forward(const Ctx& c, const float* x, float* y, int N, int C, int H, int W);
void avgpool3_backward(const Ctx& c, const float* dy, float* dx, int N, int C, int H, int W);
void avgpool3_len_forward(const Ctx& c, const float* x, float* y, int C, int N, int L, const int32_t* lengths);
void avgpool3_len_backward(const Ctx& c, const float* dy, float* dx, int C, int N, int L, const int32_t* lengths);
void avgpool_k_forward(const Ctx& c, const float* x, float* y, int N, int C, int H, int W, int k);
void avgpool_k_backward(const Ctx& c, const float* dy, float* dx, int N, int C, int H, int W, int k);
void gem_forward(const Ctx& c, const float* x, float p, float* y, int N, int C, int P, const int32_t* lengths, float eps);
void gem_backward(const Ctx& c, const float* x, float p, const float* y, const float* dy, float* dx, float* dp, int N, int C, int P,
                  const int32_t* lengths, float eps);
void maxpool2d_forward(const Ctx& c, const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int stride, int pad);
void maxpool2d_backward(const Ctx& c, const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo);

// ---- lstm (lstm.cu) ----
void lstm_forward(const Ctx& c, const float* x, const int32_t* lengths, const float* w_ih, const float* w_hh, const float* b_ih,
                  const float* b_hh, float* h, float* cache, int B, int L, int E, int D);
void lstm_backward(const Ctx& c, const float* x, const int32_t* lengths, const float* w_ih, const float* w_hh, const float* h,
                   const float* cache, const float* dh, float* dx, float* dw_ih, float* dw_hh, float* db_ih, float* db_hh, int B, int L,
                   int E, int D);

// ---- dwc fused kernels (dwc.cu) ----
void cross_attention_forward(const Ctx& c, const float* T, const float* I, const int32_t* lengths, float* S_hat, float* I_hat, float* A_s,
                             float* A_w, int B, int L, int D, int P, float temp_s, float temp_w);
void cross_attention_backward(const Ctx& c, const float* T, const float* I, const int32_t* lengths, const float* A_s, const float* A_w,
                              const float* dS_hat, const float* dI_hat, float* dT, float* dI, int B, int L, int D, int P, float temp_s,
                              float temp_w);
void weighted_fusion_forward(const Ctx& c, const float* a, const float* b, const float* w, float* out, int B, int D);
void weighted_fusion_backward(const Ctx& c, const float* a, const float* b, const float* w, const float* dout, float* da, float* db,
                              float* dw, int B, int D);
void soft_labels_forward(const Ctx& c, const float* t, const int32_t* labels, float* Q, float* sm, int B, int D, float alpha, float tau);
void soft_labels_backward(const Ctx& c, const float* t, const float* sm, const float* dQ, float* dt, int B, int D, float alpha, float tau);
void contrastive_forward(const Ctx& c, const float* q, const float* t, const float* Q, float* logp, float* loss, int B, int D, float tau);
void contrastive_backward(const Ctx& c, const float* q, const float* t, const float* Q, const float* logp, float dL, float* dq, float* dt,
                          float* dQ, int B, int D, float tau);
void mutual_forward(const Ctx& c, const float* q, const float* t, const float* q2, const float* t2, float* logp1, float* p2, float* loss,
                    int B, int D, float s);
void mutual_backward(const Ctx& c, const float* q, const float* t, const float* logp1, const float* p2, float dL, float* dq, float* dt,
                     int B, int D, float s);
void adaptive_weight_target(const Ctx& c, const float* e_ref, const float* e_txt, const float* e_tgt, float* w_star, float* s_img,
                            float* s_txt, int B, int Dc, float tau_w);
void adaptive_weight_loss_forward(const Ctx& c, const float* w, const float* w_star, float* loss, int B, float lambda);
void adaptive_weight_loss_backward(const Ctx& c, const float* w, const float* w_star, float dL, float* dw, int B, float lambda);

// ---- transformer (transformer.cu); lens and q_pos are host arrays (layout), key_pad device ----
void layernorm_forward(const Ctx& c, const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd, int64_t rows,
                       int C, float eps);
void layernorm_backward(const Ctx& c, const float* x, const float* gamma, const float* mean, const float* rstd, const float* dy, float* dx,
                        float* dgamma, float* dbeta, int64_t rows, int C);
void quick_gelu_forward(const Ctx& c, const float* x, float* y, int64_t n);
void quick_gelu_backward(const Ctx& c, const float* x, const float* dy, float* dx, int64_t n);
void gelu_forward(const Ctx& c, const float* x, float* y, int64_t n);
void gelu_backward(const Ctx& c, const float* x, const float* dy, float* dx, int64_t n);
void mha_forward(const Ctx& c, const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y,
                 float* qkv, float* att, float* ctx, int B, int T, int w, int H, bool causal, const int32_t* key_pad, const int32_t* lens);
void mha_forward_query(const Ctx& c, const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y,
                       float* scratch, int B, int T, int w, int H, bool causal, const int32_t* lens, const int32_t* q_pos);
void mha_backward(const Ctx& c, const float* x, const float* in_w, const float* out_w, const float* qkv, const float* att, const float* ctx,
                  const float* dy, float* dx, float* d_in_w, float* d_in_b, float* d_out_w, float* d_out_b, float* scratch, int B, int T,
                  int w, int H, const int32_t* lens);
void patch_embed_forward(const Ctx& c, const float* x, const float* W, const float* cls, const float* pos, float* y, float* patches, int N,
                         int C, int R, int p, int w);
void patch_embed_backward(const Ctx& c, const float* patches, const float* W, const float* dy, float* dx, float* dW, float* dcls,
                          float* dpos, int N, int C, int R, int p, int w);

// ---- AttentionPool2d (attnpool.cu) and the CLIP loss (clip_loss.cu) ----
void attnpool_forward(const Ctx& c, const float* x, const float* pos, const float* q_w, const float* q_b, const float* k_w, const float* k_b,
                      const float* v_w, const float* v_b, const float* c_w, const float* c_b, float* y, const cpu::AttnPoolSaved& s, int N,
                      int P, int C, int H, int E);
void attnpool_backward(const Ctx& c, const float* q_w, const float* k_w, const float* v_w, const float* c_w, const cpu::AttnPoolSaved& s,
                       const float* dy, float* dx, float* dpos, float* dq_w, float* dq_b, float* dk_w, float* dk_b, float* dv_w,
                       float* dv_b, float* dc_w, float* dc_b, float* scratch, int N, int P, int C, int H, int E);
void clip_loss_forward(const Ctx& c, const float* img, const float* txt, float logit_scale, int N, int E, float* img_n, float* txt_n,
                       float* norms_i, float* norms_t, float* logits, float* lse_r, float* lse_c, float* loss);
void clip_loss_backward(const Ctx& c, const float* img_n, const float* txt_n, const float* norms_i, const float* norms_t, const float* logits,
                        const float* lse_r, const float* lse_c, float logit_scale, float dloss, int N, int E, float* dimg, float* dtxt,
                        float* dlogit_scale, float* scratch);

// ---- layout kernels of the model (layout.cu; kernels/layout.h) ----
void to_channel_major(const Ctx& c, const float* x, float* xc, int N, int C, int P, const int32_t* lengths);
void from_channel_major(const Ctx& c, const float* xc, float* x, int N, int C, int P);
void im2col_cm(const Ctx& c, const float* r, float* cols, int C, int N, int H, int W, int kh, bool flip);
void transpose_batched(const Ctx& c, const float* x, float* y, int B, int R, int K, bool accumulate);
void windows_gather(const Ctx& c, const float* map, float* win, int B, int C, int H, int W, int g, int k, int kw);
void windows_scatter_add(const Ctx& c, float* map, const float* win, int B, int C, int H, int W, int g, int k, int kw);
void seq_mean_forward(const Ctx& c, const float* h, const int32_t* lengths, float* m, int B, int L, int E);
void seq_mean_backward(const Ctx& c, const float* dm, const int32_t* lengths, float* dh, int B, int L, int E);
void resize_bilinear(const Ctx& c, const float* x, float* y, int N, int S, int R);
void relu_mask(const Ctx& c, const float* y, const float* g, float* d, int64_t n);
void add_scalar(const Ctx& c, float* y, float value, int64_t n);

// ---- dynamic loss scaling (loss_scale.cu; kernels/loss_scale.h) ----
void unscale_check(const Ctx& c, float* g, int64_t n, float inv_scale, float* found_inf);

}  // namespace dwc::cuda

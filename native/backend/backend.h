// Backend interface (ARCHITECTURE.md, ggml's idea): memory from a pool, transfers, and the kernel
// list as virtual functions, so that the CPU kernels (native/kernels/*.h) and their CUDA twins
// (native/cuda/) are interchangeable and testable against each other. Every kernel has the
// semantics of its dwc::cpu namesake (read that header for the math): backward kernels
// accumulate, forward kernels overwrite, a null gradient pointer means "not needed". All
// pointers are in the backend's own memory (host memory for the CPU backend, device memory for
// CUDA); only sizes, scalars and the dropout Rng are host values. Two differences from the raw
// CPU kernels, both so that nothing has to wait for the device: the losses write their value to
// a one-float buffer `loss` instead of returning it, and gem_backward's dp is backend memory.
// The model code (native/model/) calls its kernels only through this interface (a test scans it,
// test/backend_interface.test.js); the C++ test executable (native/tests/native_tests.cpp) runs
// every kernel on both backends.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/rng.h"
#include "../kernels/attnpool.h"
#include "../kernels/clip_loss.h"
#include "../kernels/conv.h"
#include "../kernels/conv_dnnl.h"
#include "../kernels/gemm.h"
#include "../kernels/transformer.h"

namespace dwc::backend {

using cpu::Act;
using cpu::AttnPoolSaved;
using cpu::Conv2dGeom;
using cpu::BlockedWeights;

enum class Kind { Cpu, Cuda };

// Operand precision of a backend's float32 GEMMs (docs/CUDA.md "Precision on the GPU"): Fp32, or
// bf16 / fp16 operands with float32 accumulation, C and master weights. The CPU's is the process-wide
// dwc::precision() (core/blas.h: Fp32 | Bf16); every CUDA backend's is device_precision() below.
enum class GemmPrecision { Fp32 = 0, Bf16 = 1, Fp16 = 2 };
const char* gemm_precision_name(GemmPrecision p);  // "fp32" | "bf16" | "fp16"
// "fp32" | "bf16" | "fp16" -> true and *out; anything else -> false.
bool parse_gemm_precision(const std::string& s, GemmPrecision* out);
// The process-wide precision of the CUDA backends' GEMMs (default Fp32; the JS setDevicePrecision).
GemmPrecision device_precision();
void set_device_precision(GemmPrecision p);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Kind kind() const = 0;
  virtual std::string name() const = 0;  // "cpu", "cuda:0 NVIDIA H200 (sm_90)"

  // ---- memory: blocks come from a pool (freed blocks are kept by size and reused) ----
  virtual void* alloc_bytes(size_t bytes) = 0;
  virtual void free_bytes(void* p) = 0;
  virtual void release_pool() = 0;          // return cached blocks to the system / driver
  virtual size_t pool_cached_bytes() const = 0;
  float* alloc(int64_t n) { return static_cast<float*>(alloc_bytes(static_cast<size_t>(n) * 4)); }
  int32_t* alloc_i32(int64_t n) { return static_cast<int32_t*>(alloc_bytes(static_cast<size_t>(n) * 4)); }

  // ---- transfers (ordered on the backend's stream; download returns when the data is there) ----
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill(float* dst, float value, int64_t n) = 0;
  virtual void synchronize() = 0;
  // Median time of fn in milliseconds over `reps` runs after `warmup` runs (CUDA events on GPU).
  virtual double time_ms(const std::function<void()>& fn, int warmup, int reps) = 0;
  // TF32 for float32 GEMMs (CUDA; opt-in, off by default). No effect on the CPU.
  virtual void set_tf32(bool) {}
  // The operand precision of this backend's float32 GEMMs now (GemmPrecision above): the model's
  // training step turns dynamic loss scaling on when it is Fp16 (trainer.cpp "Loss scaling").
  virtual GemmPrecision gemm_precision() const = 0;

  // ---- elementwise (kernels/elementwise.h) ----
  virtual void relu_forward(const float* x, float* y, int64_t n) = 0;
  virtual void relu_backward(const float* y, const float* dy, float* dx, int64_t n) = 0;
  virtual void sigmoid_forward(const float* x, float* y, int64_t n) = 0;
  virtual void sigmoid_backward(const float* y, const float* dy, float* dx, int64_t n) = 0;
  virtual void dropout_forward(const float* x, float* y, float* mask, int64_t n, float p, const Rng& rng) = 0;
  virtual void dropout_backward(const float* mask, const float* dy, float* dx, int64_t n) = 0;
  virtual void mul_forward(const float* a, const float* b, float* y, int64_t n) = 0;
  virtual void mul_backward(const float* a, const float* b, const float* dy, float* da, float* db, int64_t n) = 0;
  virtual void add_inplace(float* y, const float* x, int64_t n) = 0;
  virtual void add_forward(const float* a, const float* b, float* y, int64_t n) = 0;
  virtual void add_relu_forward(const float* a, const float* b, float* y, int64_t n) = 0;
  virtual void add_backward(const float* dy, float* da, float* db, int64_t n) = 0;

  // ---- gemm (kernels/gemm.h), row-major ----
  virtual void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) = 0;
  virtual void gemm_batched(int batch, bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int64_t strideA,
                            const float* B, int64_t strideB, float beta, float* C, int64_t strideC) = 0;
  virtual void linear_forward(const float* x, const float* W, const float* b, float* y, int N, int in, int out) = 0;
  virtual void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int N, int in,
                               int out) = 0;
  // y = act(x·Wᵀ + b) + res (b, res may be null; res == y adds in place), kernels/gemm.h
  virtual void linear_forward_fused(const float* x, const float* W, const float* b, const float* res, float* y, int N, int in, int out,
                                    Act act) = 0;

  // bf16 operands (the start of mixed precision, GPU.md): x -> round-to-nearest-even bf16 bits;
  // C = alpha·op(A)·op(B) + beta·C with bf16 A, B and float32 accumulation and C.
  virtual void to_bf16(const float* x, uint16_t* y, int64_t n) = 0;
  virtual void gemm_bf16(bool transA, bool transB, int M, int N, int K, float alpha, const uint16_t* A, const uint16_t* B, float beta,
                         float* C) = 0;
  virtual void gemm_bf16_batched(int batch, bool transA, bool transB, int M, int N, int K, float alpha, const uint16_t* A,
                                 int64_t strideA, const uint16_t* B, int64_t strideB, float beta, float* C, int64_t strideC) = 0;

  // ---- rowops (kernels/rowops.h) ----
  virtual void softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t cols, float scale) = 0;
  virtual void softmax_rows_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, float scale) = 0;
  virtual void log_softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t cols, float scale) = 0;
  virtual void log_softmax_rows_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, float scale) = 0;
  virtual void l2norm_rows_forward(const float* x, float* y, float* norms, int64_t rows, int64_t cols) = 0;
  virtual void l2norm_rows_backward(const float* y, const float* norms, const float* dy, float* dx, int64_t rows, int64_t cols) = 0;

  // ---- tensorops (kernels/tensorops.h); xs / dxs are host arrays of backend pointers ----
  virtual void concat_forward(int n, const float* const* xs, const int64_t* sizes, int64_t outer, int64_t inner, float* y) = 0;
  virtual void concat_backward(int n, float* const* dxs, const int64_t* sizes, int64_t outer, int64_t inner, const float* dy) = 0;
  virtual void embedding_forward(const int32_t* ids, const float* table, float* y, int64_t n, int64_t V, int64_t E) = 0;
  virtual void embedding_backward(const int32_t* ids, const float* dy, float* dtable, int64_t n, int64_t V, int64_t E) = 0;

  // ---- conv (kernels/conv.h); workspace may be null (the backend then takes one from its pool) ----
  virtual size_t conv2d_general_workspace_floats(const Conv2dGeom& g) = 0;
  virtual void conv2d_general_forward(const float* x, const float* w, float* y, const Conv2dGeom& g, float* workspace) = 0;
  virtual void conv2d_general_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g,
                                       float* workspace, bool accumulate_dx = true) = 0;

  // ---- norm (kernels/norm.h) ----
  virtual void batchnorm_forward_train(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var,
                                       float* y, float* save_mean, float* save_invstd, int N, int C, int P, float momentum,
                                       float eps, bool relu = false) = 0;
  virtual void batchnorm_forward_eval(const float* x, const float* gamma, const float* beta, const float* running_mean,
                                      const float* running_var, float* y, int N, int C, int P, float eps, bool relu = false) = 0;
  virtual void batchnorm_backward(const float* x, const float* gamma, const float* save_mean, const float* save_invstd, const float* dy,
                                  float* dx, float* dgamma, float* dbeta, int N, int C, int P, bool accumulate_dx = true,
                                  const float* relu_y = nullptr) = 0;
  virtual void batchnorm_backward_eval(const float* x, const float* gamma, const float* running_mean, const float* running_var,
                                       const float* dy, float* dx, float* dgamma, float* dbeta, int N, int C, int P, float eps) = 0;
  // channel-major; lengths [N] (backend memory, may be null): padded sequences, as in norm.h
  virtual void batchnorm_cm_forward_train(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var,
                                          float* y, int64_t ysc, int64_t ysn, float* save_mean, float* save_invstd, float* save_var,
                                          int N, int C, int P, float momentum, float eps, bool relu,
                                          const int32_t* lengths = nullptr) = 0;
  virtual void batchnorm_cm_forward_eval(const float* x, const float* gamma, const float* beta, const float* running_mean,
                                         const float* running_var, float* y, int64_t ysc, int64_t ysn, int N, int C, int P, float eps,
                                         bool relu, const int32_t* lengths = nullptr) = 0;
  virtual void batchnorm_cm_backward(const float* x, const float* gamma, const float* save_mean, const float* save_invstd,
                                     const float* dy, int64_t dsc, int64_t dsn, const float* relu_y, float* dx, float* dgamma,
                                     float* dbeta, int N, int C, int P, bool accumulate, const int32_t* lengths = nullptr) = 0;
  virtual void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, int C, int64_t M,
                                        float momentum) = 0;

  // ---- pool (kernels/pool.h) ----
  virtual void avgpool3_forward(const float* x, float* y, int N, int C, int H, int W) = 0;
  virtual void avgpool3_backward(const float* dy, float* dx, int N, int C, int H, int W) = 0;
  // 1-D avgpool3 of padded sequences, channel-major x [C, N, L]; lengths [N] backend memory
  virtual void avgpool3_len_forward(const float* x, float* y, int C, int N, int L, const int32_t* lengths) = 0;
  virtual void avgpool3_len_backward(const float* dy, float* dx, int C, int N, int L, const int32_t* lengths) = 0;
  // kernel = stride = k average pool (ModifiedResNet anti-aliasing)
  virtual void avgpool_k_forward(const float* x, float* y, int N, int C, int H, int W, int k) = 0;
  virtual void avgpool_k_backward(const float* dy, float* dx, int N, int C, int H, int W, int k) = 0;
  virtual void gem_forward(const float* x, float p, float* y, int N, int C, int P, const int32_t* lengths, float eps) = 0;
  virtual void gem_backward(const float* x, float p, const float* y, const float* dy, float* dx, float* dp, int N, int C, int P,
                            const int32_t* lengths, float eps) = 0;
  virtual void maxpool2d_forward(const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int stride, int pad) = 0;
  virtual void maxpool2d_backward(const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo) = 0;

  // ---- layout kernels of the model (kernels/layout.h); lengths are backend memory ----
  virtual void to_channel_major(const float* x, float* xc, int N, int C, int P, const int32_t* lengths = nullptr) = 0;
  virtual void from_channel_major(const float* xc, float* x, int N, int C, int P) = 0;
  virtual void im2col_cm(const float* r, float* cols, int C, int N, int H, int W, int kh, bool flip) = 0;
  virtual void transpose_batched(const float* x, float* y, int B, int R, int K, bool accumulate) = 0;
  virtual void windows_gather(const float* map, float* win, int B, int C, int H, int W, int g, int k, int kw) = 0;
  virtual void windows_scatter_add(float* map, const float* win, int B, int C, int H, int W, int g, int k, int kw) = 0;
  virtual void seq_mean_forward(const float* h, const int32_t* lengths, float* m, int B, int L, int E) = 0;
  virtual void seq_mean_backward(const float* dm, const int32_t* lengths, float* dh, int B, int L, int E) = 0;
  virtual void resize_bilinear(const float* x, float* y, int N, int S, int R) = 0;
  virtual void relu_mask(const float* y, const float* g, float* d, int64_t n) = 0;

  // ---- the blocked layout nChw8c (CPU / oneDNN only; trunk.cpp "Layouts") ----
  // supports_blocked_layout(): this backend runs convs on nChw8c at all (CPU: oneDNN is the conv
  // path); blocked_conv_supported(g): it runs that conv so. A backend that answers false (CUDA)
  // throws from every kernel below, and the model takes the plain NCHW path instead.
  virtual bool supports_blocked_layout() const { return false; }
  virtual bool blocked_conv_supported(const Conv2dGeom&) const { return false; }
  // The blocked width: 8 (nChw8c) or 16 (nChw16c, oneDNN's block on AVX-512: docs/PERFORMANCE.md
  // "AVX-512 machine"). preferred_blocked_width(): this backend's own; blocked_width(): the one its
  // blocked kernels use on the calling thread now; set_blocked_width(cb) sets it, returns the old.
  virtual int preferred_blocked_width() const { return 8; }
  virtual int blocked_width() const { return 8; }
  virtual int set_blocked_width(int) { return 8; }
  virtual void nchw_to_blocked8(const float* a, float* b, int N, int C, int64_t P);
  virtual void blocked8_to_nchw(const float* b, float* a, int N, int C, int64_t P);
  // conv.h's semantics; x_blocked: x (dx) in nChw8c, y_blocked: y (dy) in nChw8c; wc / w_version:
  // the weights' blocked copies kept while the weights are unchanged (conv_dnnl.h BlockedWeights)
  virtual void conv_forward_fmt(const float* x, const float* w, float* y, const Conv2dGeom& g, bool x_blocked, bool y_blocked,
                                BlockedWeights* wc, uint64_t w_version);
  virtual void conv_backward_fmt(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g,
                                 bool accumulate_dx, bool x_blocked, bool y_blocked, BlockedWeights* wc, uint64_t w_version);
  virtual void batchnorm_forward_train_blk(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var,
                                           float* y, float* save_mean, float* save_invstd, int N, int C, int P, float momentum, float eps,
                                           bool relu);
  virtual void batchnorm_forward_eval_blk(const float* x, const float* gamma, const float* beta, const float* running_mean,
                                          const float* running_var, float* y, int N, int C, int P, float eps, bool relu);
  virtual void batchnorm_backward_blk(const float* x, const float* gamma, const float* save_mean, const float* save_invstd, const float* dy,
                                      float* dx, float* dgamma, float* dbeta, int N, int C, int P, bool accumulate_dx, const float* relu_y);
  virtual void maxpool2d_forward_blk(const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int stride, int pad);
  virtual void maxpool2d_backward_blk(const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo);

  // ---- lstm (kernels/lstm.h) ----
  virtual size_t lstm_cache_floats(int B, int L, int D) = 0;
  virtual void lstm_forward(const float* x, const int32_t* lengths, const float* w_ih, const float* w_hh, const float* b_ih,
                            const float* b_hh, float* h, float* cache, int B, int L, int E, int D) = 0;
  virtual void lstm_backward(const float* x, const int32_t* lengths, const float* w_ih, const float* w_hh, const float* h,
                             const float* cache, const float* dh, float* dx, float* dw_ih, float* dw_hh, float* db_ih, float* db_hh,
                             int B, int L, int E, int D) = 0;

  // ---- optim (kernels/optim.h) ----
  // zero_grad: grad is 0 after the pass (the gradient zeroing fused in, model.h ParamBuffer::zero_grad)
  virtual void adam_update(float* param, float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps,
                           float weight_decay, int64_t step, bool zero_grad) = 0;

  // ---- dwc fused kernels (kernels/dwc.h) ----
  virtual void cross_attention_forward(const float* T, const float* I, const int32_t* lengths, float* S_hat, float* I_hat, float* A_s,
                                       float* A_w, int B, int L, int D, int P, float temp_s, float temp_w) = 0;
  virtual void cross_attention_backward(const float* T, const float* I, const int32_t* lengths, const float* A_s, const float* A_w,
                                        const float* dS_hat, const float* dI_hat, float* dT, float* dI, int B, int L, int D, int P,
                                        float temp_s, float temp_w) = 0;
  virtual void weighted_fusion_forward(const float* a, const float* b, const float* w, float* out, int B, int D) = 0;
  virtual void weighted_fusion_backward(const float* a, const float* b, const float* w, const float* dout, float* da, float* db,
                                        float* dw, int B, int D) = 0;
  virtual void soft_labels_forward(const float* t, const int32_t* labels, float* Q, float* sim_softmax, int B, int D, float alpha,
                                   float tau) = 0;
  virtual void soft_labels_backward(const float* t, const float* sim_softmax, const float* dQ, float* dt, int B, int D, float alpha,
                                    float tau) = 0;
  virtual void contrastive_forward(const float* q, const float* t, const float* Q, float* logp, float* loss, int B, int D, float tau) = 0;
  virtual void contrastive_backward(const float* q, const float* t, const float* Q, const float* logp, float dL, float* dq, float* dt,
                                    float* dQ, int B, int D, float tau) = 0;
  virtual void mutual_forward(const float* q, const float* t, const float* q2, const float* t2, float* logp1, float* p2, float* loss,
                              int B, int D, float s) = 0;
  virtual void mutual_backward(const float* q, const float* t, const float* logp1, const float* p2, float dL, float* dq, float* dt, int B,
                               int D, float s) = 0;
  // adaptive weighting (PL4CIR); the loss value goes to the one-float buffer `loss`
  virtual void adaptive_weight_target(const float* e_ref, const float* e_txt, const float* e_tgt, float* w_star, float* s_img,
                                      float* s_txt, int B, int Dc, float tau_w) = 0;
  virtual void adaptive_weight_loss_forward(const float* w, const float* w_star, float* loss, int B, float lambda) = 0;
  virtual void adaptive_weight_loss_backward(const float* w, const float* w_star, float dL, float* dw, int B, float lambda) = 0;

  // ---- transformer (kernels/transformer.h) ----
  // `lens` (packed sequence lengths) and `q_pos` are HOST arrays: they fix the layout and the
  // sizes, as concat's `sizes` do (the size helpers below are host functions). key_pad is
  // backend memory (one int per row, as in the CPU kernel).
  virtual void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd, int64_t rows,
                                 int C, float eps) = 0;
  virtual void layernorm_backward(const float* x, const float* gamma, const float* mean, const float* rstd, const float* dy, float* dx,
                                  float* dgamma, float* dbeta, int64_t rows, int C) = 0;
  virtual void quick_gelu_forward(const float* x, float* y, int64_t n) = 0;
  virtual void quick_gelu_backward(const float* x, const float* dy, float* dx, int64_t n) = 0;
  virtual void gelu_forward(const float* x, float* y, int64_t n) = 0;
  virtual void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) = 0;
  static int64_t mha_rows(int B, int T, const int32_t* lens) { return cpu::mha_rows(B, T, lens); }
  static int64_t mha_att_floats(int B, int T, int H, const int32_t* lens) { return cpu::mha_att_floats(B, T, H, lens); }
  static int64_t mha_query_scratch(int B, int T, int w, const int32_t* lens) { return cpu::mha_query_scratch(B, T, w, lens); }
  static int64_t mha_backward_scratch(int B, int T, int w, int H, const int32_t* lens) {
    return cpu::mha_backward_scratch(B, T, w, H, lens);
  }
  virtual void mha_forward(const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y,
                           float* qkv, float* att, float* ctx, int B, int T, int w, int H, bool causal, const int32_t* key_pad,
                           const int32_t* lens = nullptr, const float* residual = nullptr) = 0;  // y = residual + attention
  // scratch: mha_query_scratch floats of backend memory
  virtual void mha_forward_query(const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y,
                                 float* scratch, int B, int T, int w, int H, bool causal, const int32_t* lens, const int32_t* q_pos) = 0;
  virtual void mha_backward(const float* x, const float* in_w, const float* out_w, const float* qkv, const float* att, const float* ctx,
                            const float* dy, float* dx, float* d_in_w, float* d_in_b, float* d_out_w, float* d_out_b, float* scratch,
                            int B, int T, int w, int H, const int32_t* lens = nullptr) = 0;
  // patches (may be null: the backend then uses its own scratch) receives the im2col of x
  virtual void patch_embed_forward(const float* x, const float* W, const float* cls, const float* pos, float* y, float* patches, int N,
                                   int C, int R, int p, int w) = 0;
  virtual void patch_embed_backward(const float* patches, const float* W, const float* dy, float* dx, float* dW, float* dcls, float* dpos,
                                    int N, int C, int R, int p, int w) = 0;

  // ---- AttentionPool2d (kernels/attnpool.h); the saved block and scratch are backend memory ----
  static int64_t attnpool_saved_floats(int N, int P, int C, int H) { return cpu::attnpool_saved_floats(N, P, C, H); }
  static AttnPoolSaved attnpool_saved_view(float* block, int N, int P, int C, int H) { return cpu::attnpool_saved_view(block, N, P, C, H); }
  static int64_t attnpool_backward_scratch(int N, int P, int C, int H) { return cpu::attnpool_backward_scratch(N, P, C, H); }
  virtual void attnpool_forward(const float* x, const float* pos, const float* q_w, const float* q_b, const float* k_w, const float* k_b,
                                const float* v_w, const float* v_b, const float* c_w, const float* c_b, float* y, const AttnPoolSaved& s,
                                int N, int P, int C, int H, int E) = 0;
  virtual void attnpool_backward(const float* q_w, const float* k_w, const float* v_w, const float* c_w, const AttnPoolSaved& s,
                                 const float* dy, float* dx, float* dpos, float* dq_w, float* dq_b, float* dk_w, float* dk_b, float* dv_w,
                                 float* dv_b, float* dc_w, float* dc_b, float* scratch, int N, int P, int C, int H, int E) = 0;

  // ---- CLIP loss (kernels/clip_loss.h); logit_scale and dloss are host values, loss and
  //      dlogit_scale one-float backend buffers ----
  static int64_t clip_loss_backward_scratch(int N, int E) { return cpu::clip_loss_backward_scratch(N, E); }
  virtual void clip_loss_forward(const float* img, const float* txt, float logit_scale, int N, int E, float* img_n, float* txt_n,
                                 float* norms_i, float* norms_t, float* logits, float* lse_r, float* lse_c, float* loss) = 0;
  virtual void clip_loss_backward(const float* img_n, const float* txt_n, const float* norms_i, const float* norms_t, const float* logits,
                                  const float* lse_r, const float* lse_c, float logit_scale, float dloss, int N, int E, float* dimg,
                                  float* dtxt, float* dlogit_scale, float* scratch) = 0;

  // ---- the model's memory on the backend (issue #15, docs/CUDA.md "The model on the backend") ----
  // True when the backend's memory is host memory (the CPU): the model then hands the batch's host
  // arrays to the kernels as they are; otherwise it uploads them (Model::on_backend).
  virtual bool host_memory() const { return kind() == Kind::Cpu; }
  // y[i] += value (kernels/layout.h): the BN counters num_batches_tracked.
  virtual void add_scalar(float* y, float value, int64_t n) = 0;

  // ---- dynamic loss scaling (kernels/loss_scale.h; trainer.cpp "Loss scaling") ----
  // g[i] *= inv_scale, and *found_inf = 1 when any g[i] is then inf or NaN (found_inf: a one-float
  // buffer the caller zeroes; it is never cleared here, so several calls share one flag).
  virtual void unscale_check(float* g, int64_t n, float inv_scale, float* found_inf) = 0;
};

std::unique_ptr<Backend> make_cpu();
// The process's CPU backend (one instance, never destroyed): the model objects' default.
Backend& cpu_backend();
// The backend of a device string: "cpu", "cuda" (= "cuda:0") or "cuda:N"; one instance per device
// for the process, created on first use. Throws dwc::Error naming the problem (bad string, CUDA
// not compiled in, no such device, no cuBLAS), never aborts.
Backend& backend_for(const std::string& device);
// Throws dwc::Error (Cuda) when the CUDA backend is not compiled in, no device is visible, or
// cuBLAS cannot be loaded; the message says which.
std::unique_ptr<Backend> make_cuda(int device = 0);

struct CudaDevice {
  int index = 0;
  std::string name;
  size_t memory_bytes = 0;
  int cc_major = 0, cc_minor = 0;
};
struct CudaInfo {
  bool compiled = false;
  std::string runtime;      // "CUDA runtime 13.0" when compiled
  std::vector<CudaDevice> devices;
  std::string status;       // "CUDA compiled, no device (…)", "CUDA compiled, 1 device", "CUDA not compiled in"
};
// Never throws; does not load cuBLAS.
CudaInfo cuda_info();

}  // namespace dwc::backend

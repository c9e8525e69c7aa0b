// CUDA implementation of the backend interface (native/backend/backend.h): one device, one
// stream, one cuBLAS handle on that stream, a caching pool of cudaMalloc blocks, per-slot scratch
// for the kernels' temporaries. The kernels are the CUDA twins in native/cuda/*.cu.
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "../backend/backend.h"
#include "../kernels/lstm.h"
#include "cuda_check.h"
#include "kernels.h"

namespace dwc::backend {

namespace {

class CudaBackend final : public Backend, private cuda::Scratch {
 public:
  explicit CudaBackend(int device) : device_(device) {
    int count = 0;
    DWC_CUDA_CHECK(cudaGetDeviceCount(&count));
    DWC_CHECK(device >= 0 && device < count, Cuda, "cuda backend: device " << device << " does not exist (" << count << " visible)");
    DWC_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop{};
    DWC_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    std::ostringstream os;
    os << "cuda:" << device << " " << prop.name << " (sm_" << prop.major << prop.minor << ")";
    name_ = os.str();
    DWC_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const auto& api = cublas::api();  // throws naming every path tried when cuBLAS is missing
    DWC_CUBLAS_CHECK(api.Create(&blas_));
    DWC_CUBLAS_CHECK(api.SetStream(blas_, stream_));
    DWC_CUBLAS_CHECK(api.SetMathMode(blas_, cublas::DEFAULT_MATH));  // strict float32 unless set_tf32(true)
    ctx_.stream = stream_;
    ctx_.blas = blas_;
    ctx_.scratch = this;
    ctx_.gemm_precision = [] { return static_cast<int>(device_precision()); };
  }
  ~CudaBackend() override {
    cudaSetDevice(device_);
    if (stream_) cudaStreamSynchronize(stream_);
    for (auto& s : slots_)
      if (s.p) cudaFree(s.p);
    for (auto& kv : live_) cudaFree(kv.first);
    release_pool();
    if (blas_) cublas::api().Destroy(blas_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  Kind kind() const override { return Kind::Cuda; }
  std::string name() const override { return name_; }

  void* alloc_bytes(size_t bytes) override {
    const size_t sz = std::max<size_t>(512, (bytes + 511) / 512 * 512);
    std::lock_guard<std::mutex> lk(mu_);
    void* p = nullptr;
    auto it = free_.find(sz);
    if (it != free_.end()) {
      p = it->second;
      free_.erase(it);
      cached_ -= sz;
    } else {
      cudaError_t e = cudaMalloc(&p, sz);
      if (e == cudaErrorMemoryAllocation && cached_ > 0) {  // give the cache back and try once more
        (void)cudaGetLastError();
        release_locked();
        e = cudaMalloc(&p, sz);
      }
      DWC_CHECK(e == cudaSuccess, Cuda, "cudaMalloc(" << sz << " bytes) failed on " << name_ << ": " << cudaGetErrorString(e));
    }
    live_[p] = sz;
    return p;
  }
  void free_bytes(void* p) override {
    if (!p) return;
    std::lock_guard<std::mutex> lk(mu_);
    auto it = live_.find(p);
    DWC_CHECK(it != live_.end(), Internal, "cuda backend: free of a pointer this backend did not allocate");
    free_.emplace(it->second, p);  // reuse is safe: every later use is ordered after on the one stream
    cached_ += it->second;
    live_.erase(it);
  }
  void release_pool() override {
    std::lock_guard<std::mutex> lk(mu_);
    release_locked();
  }
  size_t pool_cached_bytes() const override { return cached_; }
  void upload(void* dst, const void* src, size_t bytes) override {
    DWC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    DWC_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host buffer may go away after return
  }
  void download(void* dst, const void* src, size_t bytes) override {
    DWC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    DWC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    DWC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void fill(float* dst, float value, int64_t n) override { cuda::fill(ctx_, dst, value, n); }
  void synchronize() override { DWC_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  double time_ms(const std::function<void()>& fn, int warmup, int reps) override {
    for (int i = 0; i < warmup; ++i) fn();
    DWC_CUDA_CHECK(cudaStreamSynchronize(stream_));
    cudaEvent_t a, b;
    DWC_CUDA_CHECK(cudaEventCreate(&a));
    DWC_CUDA_CHECK(cudaEventCreate(&b));
    std::vector<double> t;
    for (int i = 0; i < std::max(1, reps); ++i) {
      DWC_CUDA_CHECK(cudaEventRecord(a, stream_));
      fn();
      DWC_CUDA_CHECK(cudaEventRecord(b, stream_));
      DWC_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0.f;
      DWC_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      t.push_back(ms);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
    return t[t.size() / 2];
  }
  void set_tf32(bool on) override {
    DWC_CUBLAS_CHECK(cublas::api().SetMathMode(blas_, on ? cublas::TF32_TENSOR_OP_MATH : cublas::DEFAULT_MATH));
  }

  GemmPrecision gemm_precision() const override { return device_precision(); }

  // elementwise
  void relu_forward(const float* x, float* y, int64_t n) override { cuda::relu_forward(ctx_, x, y, n); }
  void relu_backward(const float* y, const float* dy, float* dx, int64_t n) override { cuda::relu_backward(ctx_, y, dy, dx, n); }
  void sigmoid_forward(const float* x, float* y, int64_t n) override { cuda::sigmoid_forward(ctx_, x, y, n); }
  void sigmoid_backward(const float* y, const float* dy, float* dx, int64_t n) override { cuda::sigmoid_backward(ctx_, y, dy, dx, n); }
  void dropout_forward(const float* x, float* y, float* mask, int64_t n, float p, const Rng& rng) override {
    cuda::dropout_forward(ctx_, x, y, mask, n, p, rng);
  }
  void dropout_backward(const float* mask, const float* dy, float* dx, int64_t n) override { cuda::dropout_backward(ctx_, mask, dy, dx, n); }
  void mul_forward(const float* a, const float* b, float* y, int64_t n) override { cuda::mul_forward(ctx_, a, b, y, n); }
  void mul_backward(const float* a, const float* b, const float* dy, float* da, float* db, int64_t n) override {
    cuda::mul_backward(ctx_, a, b, dy, da, db, n);
  }
  void add_inplace(float* y, const float* x, int64_t n) override { cuda::add_inplace(ctx_, y, x, n); }
  void add_forward(const float* a, const float* b, float* y, int64_t n) override { cuda::add_forward(ctx_, a, b, y, n); }
  void add_relu_forward(const float* a, const float* b, float* y, int64_t n) override { cuda::add_relu_forward(ctx_, a, b, y, n); }
  void add_backward(const float* dy, float* da, float* db, int64_t n) override { cuda::add_backward(ctx_, dy, da, db, n); }

  // gemm
  void gemm(bool tA, bool tB, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) override {
    cuda::gemm(ctx_, tA, tB, M, N, K, alpha, A, B, beta, C);
  }
  void gemm_batched(int batch, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int64_t sA, const float* B, int64_t sB,
                    float beta, float* C, int64_t sC) override {
    cuda::gemm_batched(ctx_, batch, tA, tB, M, N, K, alpha, A, sA, B, sB, beta, C, sC);
  }
  void linear_forward(const float* x, const float* W, const float* b, float* y, int N, int in, int out) override {
    cuda::linear_forward(ctx_, x, W, b, y, N, in, out);
  }
  void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int N, int in, int out) override {
    cuda::linear_backward(ctx_, x, W, dy, dx, dW, db, N, in, out);
  }
  // GEMM + bias, then the activation and the residual as separate passes (the CBLAS path's order)
  void linear_forward_fused(const float* x, const float* W, const float* b, const float* res, float* y, int N, int in, int out,
                            Act act) override {
    const int64_t n = int64_t(N) * out;
    float* z = res == y ? f(cuda::kScratchEpilogue, static_cast<size_t>(n)) : y;
    cuda::linear_forward(ctx_, x, W, b, z, N, in, out);
    if (act == Act::QuickGelu) cuda::quick_gelu_forward(ctx_, z, z, n);
    if (act == Act::Gelu) cuda::gelu_forward(ctx_, z, z, n);
    if (res) cuda::add_inplace(ctx_, y, res == y ? z : res, n);
  }

  // bf16 (cublasGemmEx / cublasGemmStridedBatchedEx, float32 accumulation)
  void to_bf16(const float* x, uint16_t* y, int64_t n) override { cuda::to_bf16(ctx_, x, y, n); }
  void gemm_bf16(bool tA, bool tB, int M, int N, int K, float alpha, const uint16_t* A, const uint16_t* B, float beta, float* C) override {
    cuda::gemm_bf16(ctx_, tA, tB, M, N, K, alpha, A, B, beta, C);
  }
  void gemm_bf16_batched(int batch, bool tA, bool tB, int M, int N, int K, float alpha, const uint16_t* A, int64_t sA, const uint16_t* B,
                         int64_t sB, float beta, float* C, int64_t sC) override {
    cuda::gemm_bf16_batched(ctx_, batch, tA, tB, M, N, K, alpha, A, sA, B, sB, beta, C, sC);
  }

  // rowops
  void softmax_rows_forward(const float* x, float* y, int64_t r, int64_t c, float s) override { cuda::softmax_rows_forward(ctx_, x, y, r, c, s); }
  void softmax_rows_backward(const float* y, const float* dy, float* dx, int64_t r, int64_t c, float s) override {
    cuda::softmax_rows_backward(ctx_, y, dy, dx, r, c, s);
  }
  void log_softmax_rows_forward(const float* x, float* y, int64_t r, int64_t c, float s) override {
    cuda::log_softmax_rows_forward(ctx_, x, y, r, c, s);
  }
  void log_softmax_rows_backward(const float* y, const float* dy, float* dx, int64_t r, int64_t c, float s) override {
    cuda::log_softmax_rows_backward(ctx_, y, dy, dx, r, c, s);
  }
  void l2norm_rows_forward(const float* x, float* y, float* norms, int64_t r, int64_t c) override { cuda::l2norm_rows_forward(ctx_, x, y, norms, r, c); }
  void l2norm_rows_backward(const float* y, const float* norms, const float* dy, float* dx, int64_t r, int64_t c) override {
    cuda::l2norm_rows_backward(ctx_, y, norms, dy, dx, r, c);
  }

  // tensorops
  void concat_forward(int n, const float* const* xs, const int64_t* sizes, int64_t outer, int64_t inner, float* y) override {
    cuda::concat_forward(ctx_, n, xs, sizes, outer, inner, y);
  }
  void concat_backward(int n, float* const* dxs, const int64_t* sizes, int64_t outer, int64_t inner, const float* dy) override {
    cuda::concat_backward(ctx_, n, dxs, sizes, outer, inner, dy);
  }
  void embedding_forward(const int32_t* ids, const float* table, float* y, int64_t n, int64_t V, int64_t E) override {
    cuda::embedding_forward(ctx_, ids, table, y, n, V, E);
  }
  void embedding_backward(const int32_t* ids, const float* dy, float* dtable, int64_t n, int64_t V, int64_t E) override {
    cuda::embedding_backward(ctx_, ids, dy, dtable, n, V, E);
  }

  // layout kernels of the model (layout.cu)
  void to_channel_major(const float* x, float* xc, int N, int C, int P, const int32_t* len) override {
    cuda::to_channel_major(ctx_, x, xc, N, C, P, len);
  }
  void from_channel_major(const float* xc, float* x, int N, int C, int P) override { cuda::from_channel_major(ctx_, xc, x, N, C, P); }
  void im2col_cm(const float* r, float* cols, int C, int N, int H, int W, int kh, bool flip) override {
    cuda::im2col_cm(ctx_, r, cols, C, N, H, W, kh, flip);
  }
  void transpose_batched(const float* x, float* y, int B, int R, int K, bool acc) override { cuda::transpose_batched(ctx_, x, y, B, R, K, acc); }
  void windows_gather(const float* map, float* win, int B, int C, int H, int W, int g, int k, int kw) override {
    cuda::windows_gather(ctx_, map, win, B, C, H, W, g, k, kw);
  }
  void windows_scatter_add(float* map, const float* win, int B, int C, int H, int W, int g, int k, int kw) override {
    cuda::windows_scatter_add(ctx_, map, win, B, C, H, W, g, k, kw);
  }
  void seq_mean_forward(const float* h, const int32_t* len, float* m, int B, int L, int E) override {
    cuda::seq_mean_forward(ctx_, h, len, m, B, L, E);
  }
  void seq_mean_backward(const float* dm, const int32_t* len, float* dh, int B, int L, int E) override {
    cuda::seq_mean_backward(ctx_, dm, len, dh, B, L, E);
  }
  void resize_bilinear(const float* x, float* y, int N, int S, int R) override { cuda::resize_bilinear(ctx_, x, y, N, S, R); }
  void relu_mask(const float* y, const float* g, float* d, int64_t n) override { cuda::relu_mask(ctx_, y, g, d, n); }

  // conv
  size_t conv2d_general_workspace_floats(const Conv2dGeom& g) override { return cuda::conv2d_general_workspace_floats(g); }
  void conv2d_general_forward(const float* x, const float* w, float* y, const Conv2dGeom& g, float* ws) override {
    cuda::conv2d_general_forward(ctx_, x, w, y, g, ws);
  }
  void conv2d_general_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g,
                               float* ws, bool accumulate_dx) override {
    if (dx && !accumulate_dx) cuda::fill(ctx_, dx, 0.f, int64_t(g.N) * g.Ci * g.H * g.W);  // the twin accumulates
    cuda::conv2d_general_backward(ctx_, x, w, dy, dx, dw, g, ws);
  }

  // norm
  void batchnorm_forward_train(const float* x, const float* gamma, const float* beta, float* rm, float* rv, float* y, float* sm, float* si,
                               int N, int C, int P, float momentum, float eps, bool relu) override {
    cuda::batchnorm_forward_train(ctx_, x, gamma, beta, rm, rv, y, sm, si, N, C, P, momentum, eps, relu);
  }
  void batchnorm_forward_eval(const float* x, const float* gamma, const float* beta, const float* rm, const float* rv, float* y, int N,
                              int C, int P, float eps, bool relu) override {
    cuda::batchnorm_forward_eval(ctx_, x, gamma, beta, rm, rv, y, N, C, P, eps, relu);
  }
  void batchnorm_backward(const float* x, const float* gamma, const float* sm, const float* si, const float* dy, float* dx, float* dg,
                          float* db, int N, int C, int P, bool accumulate_dx, const float* relu_y) override {
    cuda::batchnorm_backward(ctx_, x, gamma, sm, si, dy, dx, dg, db, N, C, P, accumulate_dx, relu_y);
  }
  void batchnorm_backward_eval(const float* x, const float* gamma, const float* rm, const float* rv, const float* dy, float* dx,
                               float* dg, float* db, int N, int C, int P, float eps) override {
    cuda::batchnorm_backward_eval(ctx_, x, gamma, rm, rv, dy, dx, dg, db, N, C, P, eps);
  }
  void batchnorm_cm_forward_train(const float* x, const float* gamma, const float* beta, float* rm, float* rv, float* y, int64_t ysc,
                                  int64_t ysn, float* sm, float* si, float* sv, int N, int C, int P, float momentum, float eps,
                                  bool relu, const int32_t* len) override {
    cuda::batchnorm_cm_forward_train(ctx_, x, gamma, beta, rm, rv, y, ysc, ysn, sm, si, sv, N, C, P, momentum, eps, relu, len);
  }
  void batchnorm_cm_forward_eval(const float* x, const float* gamma, const float* beta, const float* rm, const float* rv, float* y,
                                 int64_t ysc, int64_t ysn, int N, int C, int P, float eps, bool relu, const int32_t* len) override {
    cuda::batchnorm_cm_forward_eval(ctx_, x, gamma, beta, rm, rv, y, ysc, ysn, N, C, P, eps, relu, len);
  }
  void batchnorm_cm_backward(const float* x, const float* gamma, const float* sm, const float* si, const float* dy, int64_t dsc,
                             int64_t dsn, const float* relu_y, float* dx, float* dg, float* db, int N, int C, int P,
                             bool accumulate, const int32_t* len) override {
    cuda::batchnorm_cm_backward(ctx_, x, gamma, sm, si, dy, dsc, dsn, relu_y, dx, dg, db, N, C, P, accumulate, len);
  }
  void batchnorm_update_running(float* rm, float* rv, const float* mean, const float* var, int C, int64_t M, float momentum) override {
    cuda::batchnorm_update_running(ctx_, rm, rv, mean, var, C, M, momentum);
  }

  // pool
  void avgpool3_forward(const float* x, float* y, int N, int C, int H, int W) override { cuda::avgpool3_forward(ctx_, x, y, N, C, H, W); }
  void avgpool3_backward(const float* dy, float* dx, int N, int C, int H, int W) override { cuda::avgpool3_backward(ctx_, dy, dx, N, C, H, W); }
  void avgpool3_len_forward(const float* x, float* y, int C, int N, int L, const int32_t* len) override {
    cuda::avgpool3_len_forward(ctx_, x, y, C, N, L, len);
  }
  void avgpool3_len_backward(const float* dy, float* dx, int C, int N, int L, const int32_t* len) override {
    cuda::avgpool3_len_backward(ctx_, dy, dx, C, N, L, len);
  }
  void avgpool_k_forward(const float* x, float* y, int N, int C, int H, int W, int k) override {
    cuda::avgpool_k_forward(ctx_, x, y, N, C, H, W, k);
  }
  void avgpool_k_backward(const float* dy, float* dx, int N, int C, int H, int W, int k) override {
    cuda::avgpool_k_backward(ctx_, dy, dx, N, C, H, W, k);
  }
  void gem_forward(const float* x, float p, float* y, int N, int C, int P, const int32_t* len, float eps) override {
    cuda::gem_forward(ctx_, x, p, y, N, C, P, len, eps);
  }
  void gem_backward(const float* x, float p, const float* y, const float* dy, float* dx, float* dp, int N, int C, int P,
                    const int32_t* len, float eps) override {
    cuda::gem_backward(ctx_, x, p, y, dy, dx, dp, N, C, P, len, eps);
  }
  void maxpool2d_forward(const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int s, int pad) override {
    cuda::maxpool2d_forward(ctx_, x, y, idx, N, C, H, W, k, s, pad);
  }
  void maxpool2d_backward(const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo) override {
    cuda::maxpool2d_backward(ctx_, dy, idx, dx, N, C, H, W, Ho, Wo);
  }

  // lstm
  size_t lstm_cache_floats(int B, int L, int D) override { return cpu::lstm_cache_floats(B, L, D); }
  void lstm_forward(const float* x, const int32_t* len, const float* w_ih, const float* w_hh, const float* b_ih, const float* b_hh,
                    float* h, float* cache, int B, int L, int E, int D) override {
    cuda::lstm_forward(ctx_, x, len, w_ih, w_hh, b_ih, b_hh, h, cache, B, L, E, D);
  }
  void lstm_backward(const float* x, const int32_t* len, const float* w_ih, const float* w_hh, const float* h, const float* cache,
                     const float* dh, float* dx, float* dw_ih, float* dw_hh, float* db_ih, float* db_hh, int B, int L, int E,
                     int D) override {
    cuda::lstm_backward(ctx_, x, len, w_ih, w_hh, h, cache, dh, dx, dw_ih, dw_hh, db_ih, db_hh, B, L, E, D);
  }

  // optim
  void adam_update(float* p, float* g, float* m, float* v, int64_t n, float lr, float b1, float b2, float eps, float wd,
                   int64_t step, bool zero_grad) override {
    cuda::adam_update(ctx_, p, g, m, v, n, lr, b1, b2, eps, wd, step, zero_grad);
  }

  // dwc
  void cross_attention_forward(const float* T, const float* I, const int32_t* len, float* S_hat, float* I_hat, float* A_s, float* A_w,
                               int B, int L, int D, int P, float ts, float tw) override {
    cuda::cross_attention_forward(ctx_, T, I, len, S_hat, I_hat, A_s, A_w, B, L, D, P, ts, tw);
  }
  void cross_attention_backward(const float* T, const float* I, const int32_t* len, const float* A_s, const float* A_w,
                                const float* dS_hat, const float* dI_hat, float* dT, float* dI, int B, int L, int D, int P, float ts,
                                float tw) override {
    cuda::cross_attention_backward(ctx_, T, I, len, A_s, A_w, dS_hat, dI_hat, dT, dI, B, L, D, P, ts, tw);
  }
  void weighted_fusion_forward(const float* a, const float* b, const float* w, float* out, int B, int D) override {
    cuda::weighted_fusion_forward(ctx_, a, b, w, out, B, D);
  }
  void weighted_fusion_backward(const float* a, const float* b, const float* w, const float* dout, float* da, float* db, float* dw, int B,
                                int D) override {
    cuda::weighted_fusion_backward(ctx_, a, b, w, dout, da, db, dw, B, D);
  }
  void soft_labels_forward(const float* t, const int32_t* labels, float* Q, float* sm, int B, int D, float alpha, float tau) override {
    cuda::soft_labels_forward(ctx_, t, labels, Q, sm, B, D, alpha, tau);
  }
  void soft_labels_backward(const float* t, const float* sm, const float* dQ, float* dt, int B, int D, float alpha, float tau) override {
    cuda::soft_labels_backward(ctx_, t, sm, dQ, dt, B, D, alpha, tau);
  }
  void contrastive_forward(const float* q, const float* t, const float* Q, float* logp, float* loss, int B, int D, float tau) override {
    cuda::contrastive_forward(ctx_, q, t, Q, logp, loss, B, D, tau);
  }
  void contrastive_backward(const float* q, const float* t, const float* Q, const float* logp, float dL, float* dq, float* dt, float* dQ,
                            int B, int D, float tau) override {
    cuda::contrastive_backward(ctx_, q, t, Q, logp, dL, dq, dt, dQ, B, D, tau);
  }
  void mutual_forward(const float* q, const float* t, const float* q2, const float* t2, float* logp1, float* p2, float* loss, int B, int D,
                      float s) override {
    cuda::mutual_forward(ctx_, q, t, q2, t2, logp1, p2, loss, B, D, s);
  }
  void mutual_backward(const float* q, const float* t, const float* logp1, const float* p2, float dL, float* dq, float* dt, int B, int D,
                       float s) override {
    cuda::mutual_backward(ctx_, q, t, logp1, p2, dL, dq, dt, B, D, s);
  }
  void adaptive_weight_target(const float* e_ref, const float* e_txt, const float* e_tgt, float* w_star, float* s_img, float* s_txt, int B,
                              int Dc, float tau_w) override {
    cuda::adaptive_weight_target(ctx_, e_ref, e_txt, e_tgt, w_star, s_img, s_txt, B, Dc, tau_w);
  }
  void adaptive_weight_loss_forward(const float* w, const float* w_star, float* loss, int B, float lambda) override {
    cuda::adaptive_weight_loss_forward(ctx_, w, w_star, loss, B, lambda);
  }
  void adaptive_weight_loss_backward(const float* w, const float* w_star, float dL, float* dw, int B, float lambda) override {
    cuda::adaptive_weight_loss_backward(ctx_, w, w_star, dL, dw, B, lambda);
  }

  // transformer
  void layernorm_forward(const float* x, const float* g, const float* b, float* y, float* mean, float* rstd, int64_t rows, int C,
                         float eps) override {
    cuda::layernorm_forward(ctx_, x, g, b, y, mean, rstd, rows, C, eps);
  }
  void layernorm_backward(const float* x, const float* g, const float* mean, const float* rstd, const float* dy, float* dx, float* dg,
                          float* db, int64_t rows, int C) override {
    cuda::layernorm_backward(ctx_, x, g, mean, rstd, dy, dx, dg, db, rows, C);
  }
  void quick_gelu_forward(const float* x, float* y, int64_t n) override { cuda::quick_gelu_forward(ctx_, x, y, n); }
  void quick_gelu_backward(const float* x, const float* dy, float* dx, int64_t n) override { cuda::quick_gelu_backward(ctx_, x, dy, dx, n); }
  void gelu_forward(const float* x, float* y, int64_t n) override { cuda::gelu_forward(ctx_, x, y, n); }
  void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) override { cuda::gelu_backward(ctx_, x, dy, dx, n); }
  void mha_forward(const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y, float* qkv,
                   float* att, float* ctx, int B, int T, int w, int H, bool causal, const int32_t* key_pad, const int32_t* lens,
                   const float* residual) override {
    // the residual as a separate pass after out_proj (into a scratch copy when it is y itself)
    const int64_t n = Backend::mha_rows(B, T, lens) * w;
    float* out = residual == y ? f(cuda::kScratchEpilogue, static_cast<size_t>(n)) : y;
    cuda::mha_forward(ctx_, x, in_w, in_b, out_w, out_b, out, qkv, att, ctx, B, T, w, H, causal, key_pad, lens);
    if (residual) cuda::add_inplace(ctx_, y, residual == y ? out : residual, n);
  }
  void mha_forward_query(const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y,
                         float* scratch, int B, int T, int w, int H, bool causal, const int32_t* lens, const int32_t* q_pos) override {
    cuda::mha_forward_query(ctx_, x, in_w, in_b, out_w, out_b, y, scratch, B, T, w, H, causal, lens, q_pos);
  }
  void mha_backward(const float* x, const float* in_w, const float* out_w, const float* qkv, const float* att, const float* ctx,
                    const float* dy, float* dx, float* d_in_w, float* d_in_b, float* d_out_w, float* d_out_b, float* scratch, int B, int T,
                    int w, int H, const int32_t* lens) override {
    cuda::mha_backward(ctx_, x, in_w, out_w, qkv, att, ctx, dy, dx, d_in_w, d_in_b, d_out_w, d_out_b, scratch, B, T, w, H, lens);
  }
  void patch_embed_forward(const float* x, const float* W, const float* cls, const float* pos, float* y, float* patches, int N, int C,
                           int R, int p, int w) override {
    cuda::patch_embed_forward(ctx_, x, W, cls, pos, y, patches, N, C, R, p, w);
  }
  void patch_embed_backward(const float* patches, const float* W, const float* dy, float* dx, float* dW, float* dcls, float* dpos, int N,
                            int C, int R, int p, int w) override {
    cuda::patch_embed_backward(ctx_, patches, W, dy, dx, dW, dcls, dpos, N, C, R, p, w);
  }

  // attnpool
  void attnpool_forward(const float* x, const float* pos, const float* q_w, const float* q_b, const float* k_w, const float* k_b,
                        const float* v_w, const float* v_b, const float* c_w, const float* c_b, float* y, const AttnPoolSaved& s, int N,
                        int P, int C, int H, int E) override {
    cuda::attnpool_forward(ctx_, x, pos, q_w, q_b, k_w, k_b, v_w, v_b, c_w, c_b, y, s, N, P, C, H, E);
  }
  void attnpool_backward(const float* q_w, const float* k_w, const float* v_w, const float* c_w, const AttnPoolSaved& s, const float* dy,
                         float* dx, float* dpos, float* dq_w, float* dq_b, float* dk_w, float* dk_b, float* dv_w, float* dv_b, float* dc_w,
                         float* dc_b, float* scratch, int N, int P, int C, int H, int E) override {
    cuda::attnpool_backward(ctx_, q_w, k_w, v_w, c_w, s, dy, dx, dpos, dq_w, dq_b, dk_w, dk_b, dv_w, dv_b, dc_w, dc_b, scratch, N, P, C, H,
                            E);
  }

  // CLIP loss
  void clip_loss_forward(const float* img, const float* txt, float logit_scale, int N, int E, float* img_n, float* txt_n, float* norms_i,
                         float* norms_t, float* logits, float* lse_r, float* lse_c, float* loss) override {
    cuda::clip_loss_forward(ctx_, img, txt, logit_scale, N, E, img_n, txt_n, norms_i, norms_t, logits, lse_r, lse_c, loss);
  }
  void clip_loss_backward(const float* img_n, const float* txt_n, const float* norms_i, const float* norms_t, const float* logits,
                          const float* lse_r, const float* lse_c, float logit_scale, float dloss, int N, int E, float* dimg, float* dtxt,
                          float* dlogit_scale, float* scratch) override {
    cuda::clip_loss_backward(ctx_, img_n, txt_n, norms_i, norms_t, logits, lse_r, lse_c, logit_scale, dloss, N, E, dimg, dtxt,
                             dlogit_scale, scratch);
  }

  // the model's memory on the backend (issue #15)
  void add_scalar(float* y, float value, int64_t n) override { cuda::add_scalar(ctx_, y, value, n); }
  void unscale_check(float* g, int64_t n, float inv_scale, float* found_inf) override {
    cuda::unscale_check(ctx_, g, n, inv_scale, found_inf);
  }

 private:
  // cuda::Scratch: grow-only per-slot device buffers (a grow frees the old one: cudaFree waits for
  // the device, so no queued kernel still reads it).
  void* get(int slot, size_t bytes) override {
    DWC_CHECK(slot >= 0 && slot < cuda::kScratchCount, Internal, "cuda backend: scratch slot " << slot << " out of range");
    Slot& s = slots_[slot];
    if (s.bytes < bytes) {
      if (s.p) DWC_CUDA_CHECK(cudaFree(s.p));
      s.p = nullptr;
      s.bytes = 0;
      const size_t sz = std::max<size_t>(bytes, 4096);
      DWC_CUDA_CHECK(cudaMalloc(&s.p, sz));
      s.bytes = sz;
    }
    return s.p;
  }
  void release_locked() {
    for (auto& kv : free_) cudaFree(kv.second);
    free_.clear();
    cached_ = 0;
  }

  struct Slot {
    void* p = nullptr;
    size_t bytes = 0;
  };
  int device_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cublas::Handle blas_ = nullptr;
  cuda::Ctx ctx_;
  Slot slots_[cuda::kScratchCount];
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> live_;
  size_t cached_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cuda(int device) { return std::make_unique<CudaBackend>(device); }

CudaInfo cuda_info() {
  CudaInfo info;
  info.compiled = true;
  int rv = 0;
  if (cudaRuntimeGetVersion(&rv) == cudaSuccess) {
    std::ostringstream os;
    os << "CUDA runtime " << rv / 1000 << "." << (rv % 1000) / 10;
    info.runtime = os.str();
  }
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    std::ostringstream os;
    os << "CUDA compiled, no device";
    void* drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!drv && (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice))
      os << " (no NVIDIA driver on this machine: libcuda.so.1 not found)";
    else if (e != cudaSuccess)
      os << " (cudaGetDeviceCount: " << cudaGetErrorName(e) << ": " << cudaGetErrorString(e) << ")";
    if (drv) dlclose(drv);
    info.status = os.str();
    return info;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    CudaDevice d;
    d.index = i;
    d.name = p.name;
    d.memory_bytes = p.totalGlobalMem;
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    info.devices.push_back(d);
  }
  std::ostringstream os;
  os << "CUDA compiled, " << info.devices.size() << (info.devices.size() == 1 ? " device" : " devices");
  info.status = os.str();
  return info;
}

}  // namespace dwc::backend

// CPU implementation of the backend interface: a thin wrapper over dwc::cpu (native/kernels/).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "../core/blas.h"
#include "../core/errors.h"
#include "../core/tensor.h"
#include "../kernels/attnpool.h"
#include "../kernels/clip_loss.h"
#include "../kernels/conv_dnnl.h"
#include "../kernels/dwc.h"
#include "../kernels/elementwise.h"
#include "../kernels/gemm.h"
#include "../kernels/layout.h"
#include "../kernels/loss_scale.h"
#include "../kernels/lstm.h"
#include "../kernels/norm.h"
#include "../kernels/optim.h"
#include "../kernels/pool.h"
#include "../kernels/rowops.h"
#include "../kernels/tensorops.h"
#include "../kernels/transformer.h"
#include "backend.h"

namespace dwc::backend {

namespace {

class CpuBackend final : public Backend {
 public:
  ~CpuBackend() override {
    for (auto& kv : live_) {
      if (kv.second >= kUnpooled) block_free(kv.first);
      else std::free(kv.first);
    }
    release_pool();
  }
  Kind kind() const override { return Kind::Cpu; }
  std::string name() const override { return "cpu"; }

  // Blocks of 1 MiB or more are not pooled: block_alloc maps them and free_bytes unmaps them, so a
  // freed block (an arena's warm-up side blocks, a grown arena's old base) goes back to the OS
  // instead of staying resident in the pool (+520 MiB in the paper step when they were pooled).
  static constexpr size_t kUnpooled = size_t(1) << 20;
  void* alloc_bytes(size_t bytes) override {
    const size_t sz = std::max<size_t>(64, (bytes + 63) / 64 * 64);
    std::lock_guard<std::mutex> lk(mu_);
    void* p = nullptr;
    if (sz >= kUnpooled) {
      p = block_alloc(sz);
      live_[p] = sz;
      return p;
    }
    auto it = free_.find(sz);
    if (it != free_.end()) {
      p = it->second;
      free_.erase(it);
      cached_ -= sz;
    } else {
      p = std::aligned_alloc(64, sz);
      DWC_CHECK(p != nullptr, Internal, "cpu backend: out of memory allocating " << sz << " bytes");
    }
    live_[p] = sz;
    return p;
  }
  void free_bytes(void* p) override {
    if (!p) return;
    std::lock_guard<std::mutex> lk(mu_);
    auto it = live_.find(p);
    DWC_CHECK(it != live_.end(), Internal, "cpu backend: free of a pointer this backend did not allocate");
    if (it->second >= kUnpooled) {
      block_free(p);
      live_.erase(it);
      return;
    }
    free_.emplace(it->second, p);
    cached_ += it->second;
    live_.erase(it);
  }
  void release_pool() override {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& kv : free_) std::free(kv.second);
    free_.clear();
    cached_ = 0;
  }
  size_t pool_cached_bytes() const override { return cached_; }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); }
  // Large fills (a stream's gradient buffer before its backward: 225 MB at the paper preset) over
  // the engine's threads, in chunks of 256 Ki floats; the same values as one std::fill.
  void fill(float* dst, float value, int64_t n) override {
    constexpr int64_t kChunk = int64_t(1) << 18;
    if (n <= 4 * kChunk) {
      std::fill(dst, dst + n, value);
      return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < (n + kChunk - 1) / kChunk; ++c) std::fill(dst + c * kChunk, dst + std::min(n, (c + 1) * kChunk), value);
  }
  void synchronize() override {}
  double time_ms(const std::function<void()>& fn, int warmup, int reps) override {
    for (int i = 0; i < warmup; ++i) fn();
    std::vector<double> t;
    for (int i = 0; i < std::max(1, reps); ++i) {
      auto t0 = std::chrono::steady_clock::now();
      fn();
      t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
    return t[t.size() / 2];
  }

  // elementwise
  void relu_forward(const float* x, float* y, int64_t n) override { cpu::relu_forward(x, y, n); }
  void relu_backward(const float* y, const float* dy, float* dx, int64_t n) override { cpu::relu_backward(y, dy, dx, n); }
  void sigmoid_forward(const float* x, float* y, int64_t n) override { cpu::sigmoid_forward(x, y, n); }
  void sigmoid_backward(const float* y, const float* dy, float* dx, int64_t n) override { cpu::sigmoid_backward(y, dy, dx, n); }
  void dropout_forward(const float* x, float* y, float* mask, int64_t n, float p, const Rng& rng) override {
    cpu::dropout_forward(x, y, mask, n, p, rng);
  }
  void dropout_backward(const float* mask, const float* dy, float* dx, int64_t n) override { cpu::dropout_backward(mask, dy, dx, n); }
  void mul_forward(const float* a, const float* b, float* y, int64_t n) override { cpu::mul_forward(a, b, y, n); }
  void mul_backward(const float* a, const float* b, const float* dy, float* da, float* db, int64_t n) override {
    cpu::mul_backward(a, b, dy, da, db, n);
  }
  void add_inplace(float* y, const float* x, int64_t n) override { cpu::add_inplace(y, x, n); }
  void add_forward(const float* a, const float* b, float* y, int64_t n) override { cpu::add_forward(a, b, y, n); }
  void add_relu_forward(const float* a, const float* b, float* y, int64_t n) override { cpu::add_relu_forward(a, b, y, n); }
  void add_backward(const float* dy, float* da, float* db, int64_t n) override { cpu::add_backward(dy, da, db, n); }

  // gemm
  void gemm(bool tA, bool tB, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) override {
    cpu::gemm(tA, tB, M, N, K, alpha, A, B, beta, C);
  }
  void gemm_batched(int batch, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int64_t sA, const float* B, int64_t sB,
                    float beta, float* C, int64_t sC) override {
    cpu::gemm_batched(batch, tA, tB, M, N, K, alpha, A, sA, B, sB, beta, C, sC);
  }
  void linear_forward(const float* x, const float* W, const float* b, float* y, int N, int in, int out) override {
    cpu::linear_forward(x, W, b, y, N, in, out);
  }
  void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int N, int in, int out) override {
    cpu::linear_backward(x, W, dy, dx, dW, db, N, in, out);
  }
  void linear_forward_fused(const float* x, const float* W, const float* b, const float* res, float* y, int N, int in, int out,
                            Act act) override {
    cpu::linear_forward_fused(x, W, b, res, y, N, in, out, act);
  }

  // bf16: a reference (operands widened to float32, then the float32 GEMM: products of bf16
  // values are exact in float32, so this is what a float32-accumulating bf16 GEMM computes)
  void to_bf16(const float* x, uint16_t* y, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) {
      uint32_t b;
      std::memcpy(&b, &x[i], 4);
      if ((b & 0x7fffffffu) > 0x7f800000u) {
        y[i] = static_cast<uint16_t>((b >> 16) | 0x40);  // quiet NaN
      } else {
        y[i] = static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
      }
    }
  }
  void gemm_bf16(bool tA, bool tB, int M, int N, int K, float alpha, const uint16_t* A, const uint16_t* B, float beta, float* C) override {
    gemm_bf16_batched(1, tA, tB, M, N, K, alpha, A, 0, B, 0, beta, C, 0);
  }
  void gemm_bf16_batched(int batch, bool tA, bool tB, int M, int N, int K, float alpha, const uint16_t* A, int64_t sA, const uint16_t* B,
                         int64_t sB, float beta, float* C, int64_t sC) override {
    const int64_t na = int64_t(M) * K, nb = int64_t(K) * N;
    std::vector<float> a(static_cast<size_t>(na)), b(static_cast<size_t>(nb));
    auto widen = [](const uint16_t* s, float* d, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        const uint32_t u = uint32_t(s[i]) << 16;
        std::memcpy(&d[i], &u, 4);
      }
    };
    for (int p = 0; p < batch; ++p) {
      widen(A + p * sA, a.data(), na);
      widen(B + p * sB, b.data(), nb);
      cpu::gemm(tA, tB, M, N, K, alpha, a.data(), b.data(), beta, C + p * sC);
    }
  }

  // rowops
  void softmax_rows_forward(const float* x, float* y, int64_t r, int64_t c, float s) override { cpu::softmax_rows_forward(x, y, r, c, s); }
  void softmax_rows_backward(const float* y, const float* dy, float* dx, int64_t r, int64_t c, float s) override {
    cpu::softmax_rows_backward(y, dy, dx, r, c, s);
  }
  void log_softmax_rows_forward(const float* x, float* y, int64_t r, int64_t c, float s) override {
    cpu::log_softmax_rows_forward(x, y, r, c, s);
  }
  void log_softmax_rows_backward(const float* y, const float* dy, float* dx, int64_t r, int64_t c, float s) override {
    cpu::log_softmax_rows_backward(y, dy, dx, r, c, s);
  }
  void l2norm_rows_forward(const float* x, float* y, float* norms, int64_t r, int64_t c) override { cpu::l2norm_rows_forward(x, y, norms, r, c); }
  void l2norm_rows_backward(const float* y, const float* norms, const float* dy, float* dx, int64_t r, int64_t c) override {
    cpu::l2norm_rows_backward(y, norms, dy, dx, r, c);
  }

  // tensorops
  void concat_forward(int n, const float* const* xs, const int64_t* sizes, int64_t outer, int64_t inner, float* y) override {
    cpu::concat_forward(n, xs, sizes, outer, inner, y);
  }
  void concat_backward(int n, float* const* dxs, const int64_t* sizes, int64_t outer, int64_t inner, const float* dy) override {
    cpu::concat_backward(n, dxs, sizes, outer, inner, dy);
  }
  void embedding_forward(const int32_t* ids, const float* table, float* y, int64_t n, int64_t V, int64_t E) override {
    cpu::embedding_forward(ids, table, y, n, V, E);
  }
  void embedding_backward(const int32_t* ids, const float* dy, float* dtable, int64_t n, int64_t V, int64_t E) override {
    cpu::embedding_backward(ids, dy, dtable, n, V, E);
  }

  // conv
  size_t conv2d_general_workspace_floats(const Conv2dGeom& g) override { return cpu::conv2d_general_workspace_floats(g); }
  void conv2d_general_forward(const float* x, const float* w, float* y, const Conv2dGeom& g, float* ws) override {
    cpu::conv2d_general_forward(x, w, y, g, ws);
  }
  void conv2d_general_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g,
                               float* ws, bool accumulate_dx) override {
    cpu::conv2d_general_backward(x, w, dy, dx, dw, g, ws, accumulate_dx);
  }

  // norm
  void batchnorm_forward_train(const float* x, const float* gamma, const float* beta, float* rm, float* rv, float* y, float* sm, float* si,
                               int N, int C, int P, float momentum, float eps, bool relu) override {
    cpu::batchnorm_forward_train(x, gamma, beta, rm, rv, y, sm, si, N, C, P, momentum, eps, relu);
  }
  void batchnorm_forward_eval(const float* x, const float* gamma, const float* beta, const float* rm, const float* rv, float* y, int N,
                              int C, int P, float eps, bool relu) override {
    cpu::batchnorm_forward_eval(x, gamma, beta, rm, rv, y, N, C, P, eps, relu);
  }
  void batchnorm_backward(const float* x, const float* gamma, const float* sm, const float* si, const float* dy, float* dx, float* dg,
                          float* db, int N, int C, int P, bool accumulate_dx, const float* relu_y) override {
    cpu::batchnorm_backward(x, gamma, sm, si, dy, dx, dg, db, N, C, P, accumulate_dx, relu_y);
  }
  void batchnorm_backward_eval(const float* x, const float* gamma, const float* rm, const float* rv, const float* dy, float* dx,
                               float* dg, float* db, int N, int C, int P, float eps) override {
    cpu::batchnorm_backward_eval(x, gamma, rm, rv, dy, dx, dg, db, N, C, P, eps);
  }
  void batchnorm_cm_forward_train(const float* x, const float* gamma, const float* beta, float* rm, float* rv, float* y, int64_t ysc,
                                  int64_t ysn, float* sm, float* si, float* sv, int N, int C, int P, float momentum, float eps,
                                  bool relu, const int32_t* len) override {
    cpu::batchnorm_cm_forward_train(x, gamma, beta, rm, rv, y, ysc, ysn, sm, si, sv, N, C, P, momentum, eps, relu, len);
  }
  void batchnorm_cm_forward_eval(const float* x, const float* gamma, const float* beta, const float* rm, const float* rv, float* y,
                                 int64_t ysc, int64_t ysn, int N, int C, int P, float eps, bool relu, const int32_t* len) override {
    cpu::batchnorm_cm_forward_eval(x, gamma, beta, rm, rv, y, ysc, ysn, N, C, P, eps, relu, len);
  }
  void batchnorm_cm_backward(const float* x, const float* gamma, const float* sm, const float* si, const float* dy, int64_t dsc,
                             int64_t dsn, const float* relu_y, float* dx, float* dg, float* db, int N, int C, int P,
                             bool accumulate, const int32_t* len) override {
    cpu::batchnorm_cm_backward(x, gamma, sm, si, dy, dsc, dsn, relu_y, dx, dg, db, N, C, P, accumulate, len);
  }
  void batchnorm_update_running(float* rm, float* rv, const float* mean, const float* var, int C, int64_t M, float momentum) override {
    cpu::batchnorm_update_running(rm, rv, mean, var, C, M, momentum);
  }

  // pool
  void avgpool3_forward(const float* x, float* y, int N, int C, int H, int W) override { cpu::avgpool3_forward(x, y, N, C, H, W); }
  void avgpool3_backward(const float* dy, float* dx, int N, int C, int H, int W) override { cpu::avgpool3_backward(dy, dx, N, C, H, W); }
  void avgpool3_len_forward(const float* x, float* y, int C, int N, int L, const int32_t* len) override {
    cpu::avgpool3_len_forward(x, y, C, N, L, len);
  }
  void avgpool3_len_backward(const float* dy, float* dx, int C, int N, int L, const int32_t* len) override {
    cpu::avgpool3_len_backward(dy, dx, C, N, L, len);
  }
  void avgpool_k_forward(const float* x, float* y, int N, int C, int H, int W, int k) override { cpu::avgpool_k_forward(x, y, N, C, H, W, k); }
  void avgpool_k_backward(const float* dy, float* dx, int N, int C, int H, int W, int k) override {
    cpu::avgpool_k_backward(dy, dx, N, C, H, W, k);
  }
  void gem_forward(const float* x, float p, float* y, int N, int C, int P, const int32_t* len, float eps) override {
    cpu::gem_forward(x, p, y, N, C, P, len, eps);
  }
  void gem_backward(const float* x, float p, const float* y, const float* dy, float* dx, float* dp, int N, int C, int P,
                    const int32_t* len, float eps) override {
    cpu::gem_backward(x, p, y, dy, dx, dp, N, C, P, len, eps);
  }
  void maxpool2d_forward(const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int s, int pad) override {
    cpu::maxpool2d_forward(x, y, idx, N, C, H, W, k, s, pad);
  }
  void maxpool2d_backward(const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo) override {
    cpu::maxpool2d_backward(dy, idx, dx, N, C, H, W, Ho, Wo);
  }

  // layout kernels of the model
  void to_channel_major(const float* x, float* xc, int N, int C, int P, const int32_t* len) override { cpu::to_channel_major(x, xc, N, C, P, len); }
  void from_channel_major(const float* xc, float* x, int N, int C, int P) override { cpu::from_channel_major(xc, x, N, C, P); }
  void im2col_cm(const float* r, float* cols, int C, int N, int H, int W, int kh, bool flip) override {
    cpu::im2col_cm(r, cols, C, N, H, W, kh, flip);
  }
  void transpose_batched(const float* x, float* y, int B, int R, int K, bool acc) override { cpu::transpose_batched(x, y, B, R, K, acc); }
  void windows_gather(const float* map, float* win, int B, int C, int H, int W, int g, int k, int kw) override {
    cpu::windows_gather(map, win, B, C, H, W, g, k, kw);
  }
  void windows_scatter_add(float* map, const float* win, int B, int C, int H, int W, int g, int k, int kw) override {
    cpu::windows_scatter_add(map, win, B, C, H, W, g, k, kw);
  }
  void seq_mean_forward(const float* h, const int32_t* len, float* m, int B, int L, int E) override { cpu::seq_mean_forward(h, len, m, B, L, E); }
  void seq_mean_backward(const float* dm, const int32_t* len, float* dh, int B, int L, int E) override {
    cpu::seq_mean_backward(dm, len, dh, B, L, E);
  }
  void resize_bilinear(const float* x, float* y, int N, int S, int R) override { cpu::resize_bilinear(x, y, N, S, R); }
  void relu_mask(const float* y, const float* g, float* d, int64_t n) override { cpu::relu_mask(y, g, d, n); }

  // blocked layout (oneDNN): the convs must be on oneDNN (docs/PERFORMANCE.md "Layouts")
  bool supports_blocked_layout() const override {
    if (!have_dnnl()) return false;
    const cpu::ConvImpl impl = cpu::conv_impl();
    return !(impl == cpu::ConvImpl::Im2col || (impl == cpu::ConvImpl::Auto && gemm_impl() != GemmImpl::Dnnl));
  }
  bool blocked_conv_supported(const Conv2dGeom& g) const override { return have_dnnl() && cpu::dnnl_conv_supported(g); }
  int preferred_blocked_width() const override { return cpu::dnnl_preferred_blocked_width(); }
  int blocked_width() const override { return cpu::blocked_width(); }
  int set_blocked_width(int cb) override {
    const int prev = cpu::blocked_width();
    cpu::set_blocked_width(cb);
    return prev;
  }
  void nchw_to_blocked8(const float* a, float* b, int N, int C, int64_t P) override { cpu::nchw_to_blocked8(a, b, N, C, P); }
  void blocked8_to_nchw(const float* b, float* a, int N, int C, int64_t P) override { cpu::blocked8_to_nchw(b, a, N, C, P); }
  void conv_forward_fmt(const float* x, const float* w, float* y, const Conv2dGeom& g, bool xb, bool yb, cpu::BlockedWeights* wc,
                        uint64_t wv) override {
    cpu::dnnl_conv_forward_fmt(x, w, y, g, xb, yb, wc, wv);
  }
  void conv_backward_fmt(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g, bool acc, bool xb,
                         bool yb, cpu::BlockedWeights* wc, uint64_t wv) override {
    cpu::dnnl_conv_backward_fmt(x, w, dy, dx, dw, g, acc, xb, yb, wc, wv);
  }
  void batchnorm_forward_train_blk(const float* x, const float* gamma, const float* beta, float* rm, float* rv, float* y, float* sm,
                                   float* si, int N, int C, int P, float momentum, float eps, bool relu) override {
    cpu::batchnorm_forward_train_blk(x, gamma, beta, rm, rv, y, sm, si, N, C, P, momentum, eps, relu);
  }
  void batchnorm_forward_eval_blk(const float* x, const float* gamma, const float* beta, const float* rm, const float* rv, float* y, int N,
                                  int C, int P, float eps, bool relu) override {
    cpu::batchnorm_forward_eval_blk(x, gamma, beta, rm, rv, y, N, C, P, eps, relu);
  }
  void batchnorm_backward_blk(const float* x, const float* gamma, const float* sm, const float* si, const float* dy, float* dx, float* dg,
                              float* db, int N, int C, int P, bool acc, const float* relu_y) override {
    cpu::batchnorm_backward_blk(x, gamma, sm, si, dy, dx, dg, db, N, C, P, acc, relu_y);
  }
  void maxpool2d_forward_blk(const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int s, int pad) override {
    cpu::maxpool2d_forward_blk(x, y, idx, N, C, H, W, k, s, pad);
  }
  void maxpool2d_backward_blk(const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo) override {
    cpu::maxpool2d_backward_blk(dy, idx, dx, N, C, H, W, Ho, Wo);
  }

  // lstm
  size_t lstm_cache_floats(int B, int L, int D) override { return cpu::lstm_cache_floats(B, L, D); }
  void lstm_forward(const float* x, const int32_t* len, const float* w_ih, const float* w_hh, const float* b_ih, const float* b_hh,
                    float* h, float* cache, int B, int L, int E, int D) override {
    cpu::lstm_forward(x, len, w_ih, w_hh, b_ih, b_hh, h, cache, B, L, E, D);
  }
  void lstm_backward(const float* x, const int32_t* len, const float* w_ih, const float* w_hh, const float* h, const float* cache,
                     const float* dh, float* dx, float* dw_ih, float* dw_hh, float* db_ih, float* db_hh, int B, int L, int E,
                     int D) override {
    cpu::lstm_backward(x, len, w_ih, w_hh, h, cache, dh, dx, dw_ih, dw_hh, db_ih, db_hh, B, L, E, D);
  }

  // optim
  void adam_update(float* p, float* g, float* m, float* v, int64_t n, float lr, float b1, float b2, float eps, float wd,
                   int64_t step, bool zero_grad) override {
    cpu::adam_update(p, g, m, v, n, lr, b1, b2, eps, wd, step, zero_grad);
  }

  // dwc
  void cross_attention_forward(const float* T, const float* I, const int32_t* len, float* S_hat, float* I_hat, float* A_s, float* A_w,
                               int B, int L, int D, int P, float ts, float tw) override {
    cpu::cross_attention_forward(T, I, len, S_hat, I_hat, A_s, A_w, B, L, D, P, ts, tw);
  }
  void cross_attention_backward(const float* T, const float* I, const int32_t* len, const float* A_s, const float* A_w,
                                const float* dS_hat, const float* dI_hat, float* dT, float* dI, int B, int L, int D, int P, float ts,
                                float tw) override {
    cpu::cross_attention_backward(T, I, len, A_s, A_w, dS_hat, dI_hat, dT, dI, B, L, D, P, ts, tw);
  }
  void weighted_fusion_forward(const float* a, const float* b, const float* w, float* out, int B, int D) override {
    cpu::weighted_fusion_forward(a, b, w, out, B, D);
  }
  void weighted_fusion_backward(const float* a, const float* b, const float* w, const float* dout, float* da, float* db, float* dw, int B,
                                int D) override {
    cpu::weighted_fusion_backward(a, b, w, dout, da, db, dw, B, D);
  }
  void soft_labels_forward(const float* t, const int32_t* labels, float* Q, float* sm, int B, int D, float alpha, float tau) override {
    cpu::soft_labels_forward(t, labels, Q, sm, B, D, alpha, tau);
  }
  void soft_labels_backward(const float* t, const float* sm, const float* dQ, float* dt, int B, int D, float alpha, float tau) override {
    cpu::soft_labels_backward(t, sm, dQ, dt, B, D, alpha, tau);
  }
  void contrastive_forward(const float* q, const float* t, const float* Q, float* logp, float* loss, int B, int D, float tau) override {
    *loss = cpu::contrastive_forward(q, t, Q, logp, B, D, tau);
  }
  void contrastive_backward(const float* q, const float* t, const float* Q, const float* logp, float dL, float* dq, float* dt, float* dQ,
                            int B, int D, float tau) override {
    cpu::contrastive_backward(q, t, Q, logp, dL, dq, dt, dQ, B, D, tau);
  }
  void mutual_forward(const float* q, const float* t, const float* q2, const float* t2, float* logp1, float* p2, float* loss, int B, int D,
                      float s) override {
    *loss = cpu::mutual_forward(q, t, q2, t2, logp1, p2, B, D, s);
  }
  void mutual_backward(const float* q, const float* t, const float* logp1, const float* p2, float dL, float* dq, float* dt, int B, int D,
                       float s) override {
    cpu::mutual_backward(q, t, logp1, p2, dL, dq, dt, B, D, s);
  }
  void adaptive_weight_target(const float* e_ref, const float* e_txt, const float* e_tgt, float* w_star, float* s_img, float* s_txt, int B,
                              int Dc, float tau_w) override {
    cpu::adaptive_weight_target(e_ref, e_txt, e_tgt, w_star, s_img, s_txt, B, Dc, tau_w);
  }
  void adaptive_weight_loss_forward(const float* w, const float* w_star, float* loss, int B, float lambda) override {
    *loss = cpu::adaptive_weight_loss_forward(w, w_star, B, lambda);
  }
  void adaptive_weight_loss_backward(const float* w, const float* w_star, float dL, float* dw, int B, float lambda) override {
    cpu::adaptive_weight_loss_backward(w, w_star, dL, dw, B, lambda);
  }

  // transformer
  void layernorm_forward(const float* x, const float* g, const float* b, float* y, float* mean, float* rstd, int64_t rows, int C,
                         float eps) override {
    cpu::layernorm_forward(x, g, b, y, mean, rstd, rows, C, eps);
  }
  void layernorm_backward(const float* x, const float* g, const float* mean, const float* rstd, const float* dy, float* dx, float* dg,
                          float* db, int64_t rows, int C) override {
    cpu::layernorm_backward(x, g, mean, rstd, dy, dx, dg, db, rows, C);
  }
  void quick_gelu_forward(const float* x, float* y, int64_t n) override { cpu::quick_gelu_forward(x, y, n); }
  void quick_gelu_backward(const float* x, const float* dy, float* dx, int64_t n) override { cpu::quick_gelu_backward(x, dy, dx, n); }
  void gelu_forward(const float* x, float* y, int64_t n) override { cpu::gelu_forward(x, y, n); }
  void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) override { cpu::gelu_backward(x, dy, dx, n); }
  void mha_forward(const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y, float* qkv,
                   float* att, float* ctx, int B, int T, int w, int H, bool causal, const int32_t* key_pad, const int32_t* lens,
                   const float* residual) override {
    cpu::mha_forward(x, in_w, in_b, out_w, out_b, y, qkv, att, ctx, B, T, w, H, causal, key_pad, lens, residual);
  }
  void mha_forward_query(const float* x, const float* in_w, const float* in_b, const float* out_w, const float* out_b, float* y,
                         float* scratch, int B, int T, int w, int H, bool causal, const int32_t* lens, const int32_t* q_pos) override {
    cpu::mha_forward_query(x, in_w, in_b, out_w, out_b, y, scratch, B, T, w, H, causal, lens, q_pos);
  }
  void mha_backward(const float* x, const float* in_w, const float* out_w, const float* qkv, const float* att, const float* ctx,
                    const float* dy, float* dx, float* d_in_w, float* d_in_b, float* d_out_w, float* d_out_b, float* scratch, int B, int T,
                    int w, int H, const int32_t* lens) override {
    cpu::mha_backward(x, in_w, out_w, qkv, att, ctx, dy, dx, d_in_w, d_in_b, d_out_w, d_out_b, scratch, B, T, w, H, lens);
  }
  void patch_embed_forward(const float* x, const float* W, const float* cls, const float* pos, float* y, float* patches, int N, int C,
                           int R, int p, int w) override {
    cpu::patch_embed_forward(x, W, cls, pos, y, patches, N, C, R, p, w);
  }
  void patch_embed_backward(const float* patches, const float* W, const float* dy, float* dx, float* dW, float* dcls, float* dpos, int N,
                            int C, int R, int p, int w) override {
    cpu::patch_embed_backward(patches, W, dy, dx, dW, dcls, dpos, N, C, R, p, w);
  }

  // attnpool
  void attnpool_forward(const float* x, const float* pos, const float* q_w, const float* q_b, const float* k_w, const float* k_b,
                        const float* v_w, const float* v_b, const float* c_w, const float* c_b, float* y, const AttnPoolSaved& s, int N,
                        int P, int C, int H, int E) override {
    cpu::attnpool_forward(x, pos, q_w, q_b, k_w, k_b, v_w, v_b, c_w, c_b, y, s, N, P, C, H, E);
  }
  void attnpool_backward(const float* q_w, const float* k_w, const float* v_w, const float* c_w, const AttnPoolSaved& s, const float* dy,
                         float* dx, float* dpos, float* dq_w, float* dq_b, float* dk_w, float* dk_b, float* dv_w, float* dv_b, float* dc_w,
                         float* dc_b, float* scratch, int N, int P, int C, int H, int E) override {
    cpu::attnpool_backward(q_w, k_w, v_w, c_w, s, dy, dx, dpos, dq_w, dq_b, dk_w, dk_b, dv_w, dv_b, dc_w, dc_b, scratch, N, P, C, H, E);
  }

  // CLIP loss
  void clip_loss_forward(const float* img, const float* txt, float logit_scale, int N, int E, float* img_n, float* txt_n, float* norms_i,
                         float* norms_t, float* logits, float* lse_r, float* lse_c, float* loss) override {
    cpu::clip_loss_forward(img, txt, logit_scale, N, E, img_n, txt_n, norms_i, norms_t, logits, lse_r, lse_c, loss);
  }
  void clip_loss_backward(const float* img_n, const float* txt_n, const float* norms_i, const float* norms_t, const float* logits,
                          const float* lse_r, const float* lse_c, float logit_scale, float dloss, int N, int E, float* dimg, float* dtxt,
                          float* dlogit_scale, float* scratch) override {
    cpu::clip_loss_backward(img_n, txt_n, norms_i, norms_t, logits, lse_r, lse_c, logit_scale, dloss, N, E, dimg, dtxt, dlogit_scale,
                            scratch);
  }

  // the model's memory on the backend (issue #15)
  void add_scalar(float* y, float value, int64_t n) override { cpu::add_scalar(y, value, n); }
  void unscale_check(float* g, int64_t n, float inv_scale, float* found_inf) override { cpu::unscale_check(g, n, inv_scale, found_inf); }
  GemmPrecision gemm_precision() const override { return dwc::precision() == dwc::Precision::Bf16 ? GemmPrecision::Bf16 : GemmPrecision::Fp32; }

 private:
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> live_;
  size_t cached_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cpu() { return std::make_unique<CpuBackend>(); }

// Never destroyed: model objects may outlive static destruction at exit.
Backend& cpu_backend() {
  static Backend* const b = make_cpu().release();
  return *b;
}

const char* gemm_precision_name(GemmPrecision p) { return p == GemmPrecision::Bf16 ? "bf16" : p == GemmPrecision::Fp16 ? "fp16" : "fp32"; }

bool parse_gemm_precision(const std::string& s, GemmPrecision* out) {
  for (GemmPrecision p : {GemmPrecision::Fp32, GemmPrecision::Bf16, GemmPrecision::Fp16})
    if (s == gemm_precision_name(p)) {
      *out = p;
      return true;
    }
  return false;
}

namespace {
std::atomic<int> g_device_precision{0};
}
GemmPrecision device_precision() { return static_cast<GemmPrecision>(g_device_precision.load(std::memory_order_relaxed)); }
void set_device_precision(GemmPrecision p) { g_device_precision = static_cast<int>(p); }

Backend& backend_for(const std::string& device) {
  if (device.empty() || device == "cpu") return cpu_backend();
  int index = -1;
  if (device == "cuda") {
    index = 0;
  } else if (device.rfind("cuda:", 0) == 0 && device.size() > 5 && device.size() <= 8 &&
             device.find_first_not_of("0123456789", 5) == std::string::npos) {
    index = std::stoi(device.substr(5));
  }
  DWC_ARG_CHECK(index >= 0, "device '" << device << "' is not one of 'cpu', 'cuda', 'cuda:N'");
  const CudaInfo info = cuda_info();
  DWC_CHECK(info.compiled, Cuda, "device '" << device << "': the CUDA backend is not compiled into this build (" << info.status
                                               << "); rebuild with cmake-js on a machine with the CUDA toolkit, or use 'cpu'");
  DWC_CHECK(index < static_cast<int>(info.devices.size()), Cuda,
            "device '" << device << "': no such CUDA device (" << info.status << "); use 'cpu'");
  static std::mutex mu;
  static std::map<int, Backend*> made;  // never destroyed, as cpu_backend()
  std::lock_guard<std::mutex> lk(mu);
  Backend*& b = made[index];
  if (!b) b = make_cuda(index).release();
  return *b;
}

// The blocked layout's kernels on a backend without it (backend.h): a clear error, never a crash.
#define DWC_NO_BLOCKED(fn) \
  DWC_CHECK(false, Internal, name() << ": " fn ": the blocked layout nChw8c is a CPU (oneDNN) layout this backend does not offer")
void Backend::nchw_to_blocked8(const float*, float*, int, int, int64_t) { DWC_NO_BLOCKED("nchw_to_blocked8"); }
void Backend::blocked8_to_nchw(const float*, float*, int, int, int64_t) { DWC_NO_BLOCKED("blocked8_to_nchw"); }
void Backend::conv_forward_fmt(const float*, const float*, float*, const Conv2dGeom&, bool, bool, cpu::BlockedWeights*, uint64_t) {
  DWC_NO_BLOCKED("conv_forward_fmt");
}
void Backend::conv_backward_fmt(const float*, const float*, const float*, float*, float*, const Conv2dGeom&, bool, bool, bool,
                                cpu::BlockedWeights*, uint64_t) {
  DWC_NO_BLOCKED("conv_backward_fmt");
}
void Backend::batchnorm_forward_train_blk(const float*, const float*, const float*, float*, float*, float*, float*, float*, int, int, int,
                                          float, float, bool) {
  DWC_NO_BLOCKED("batchnorm_forward_train_blk");
}
void Backend::batchnorm_forward_eval_blk(const float*, const float*, const float*, const float*, const float*, float*, int, int, int, float,
                                         bool) {
  DWC_NO_BLOCKED("batchnorm_forward_eval_blk");
}
void Backend::batchnorm_backward_blk(const float*, const float*, const float*, const float*, const float*, float*, float*, float*, int, int,
                                     int, bool, const float*) {
  DWC_NO_BLOCKED("batchnorm_backward_blk");
}
void Backend::maxpool2d_forward_blk(const float*, float*, int32_t*, int, int, int, int, int, int, int) {
  DWC_NO_BLOCKED("maxpool2d_forward_blk");
}
void Backend::maxpool2d_backward_blk(const float*, const int32_t*, float*, int, int, int, int, int, int) {
  DWC_NO_BLOCKED("maxpool2d_backward_blk");
}
#undef DWC_NO_BLOCKED

#ifndef DWC_WITH_CUDA
// Built without the CUDA backend (no nvcc, or node-gyp): say so, never pretend.
std::unique_ptr<Backend> make_cuda(int) {
  DWC_CHECK(false, Cuda, "the CUDA backend is not compiled into this build (no nvcc was found when it was built, or it was built with "
                         "node-gyp); rebuild with cmake-js on a machine with the CUDA toolkit");
  return nullptr;
}
CudaInfo cuda_info() {
  CudaInfo i;
  i.status = "CUDA not compiled in";
  return i;
}
#endif

}  // namespace dwc::backend

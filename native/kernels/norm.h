// Batch norm over x viewed as [N, C, P] (P = H·W for BatchNorm2d, L for BatchNorm1d), spec §4.
// Train: batch statistics (biased variance to normalise), running stats updated in place with
// momentum (unbiased variance), as torch.nn.BatchNorm. Eval: running statistics.
#pragma once
#include <cstdint>

namespace dwc {
class OpCtx;
}

namespace dwc::cpu {

void batchnorm_forward_train(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var, float* y,
                             float* save_mean, float* save_invstd, int N, int C, int P, float momentum, float eps, bool relu = false);
// relu (both forwards): y = max(BN(x), 0) in the same pass (the same floats as BN, then ReLU).
void batchnorm_forward_eval(const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var,
                            float* y, int N, int C, int P, float eps, bool relu = false);
// Train-mode backward (batch statistics). Accumulates dx, dgamma, dbeta (each may be null);
// accumulate_dx = false writes dx instead (no zeroing pass before it). relu_y (may be null): the
// output of a ReLU applied after this BN (forward `relu`); dy is then that ReLU's output gradient
// and is masked inside (bit-identical to a separate ReLU backward first).
void batchnorm_backward(const float* x, const float* gamma, const float* save_mean, const float* save_invstd, const float* dy, float* dx,
                        float* dgamma, float* dbeta, int N, int C, int P, bool accumulate_dx = true, const float* relu_y = nullptr);

// Eval-mode backward (running statistics are constants): dx += γ·invstd·dy, dγ += Σ dy·x̂,
// dβ += Σ dy with x̂ = (x − running_mean)·invstd, invstd = 1/sqrt(running_var + eps). Each output may be null.
void batchnorm_backward_eval(const float* x, const float* gamma, const float* running_mean, const float* running_var, const float* dy,
                             float* dx, float* dgamma, float* dbeta, int N, int C, int P, float eps);

// ---- blocked layout (nChw{cb}c: x[n, c, p] at ((n·C/cb + c/cb)·P + p)·cb + c%cb; C a multiple of cb) ----
// The same operations as the three functions above on the trunk's oneDNN layout (native/model/
// trunk.cpp); results equal the plain kernels' up to float rounding (other summation order).
// The width cb is the calling thread's blocked_width(): 8 (nChw8c, oneDNN's block on AVX2) unless
// a BlockedWidth scope sets 16 (nChw16c, its block on AVX-512; docs/PERFORMANCE.md "AVX-512
// machine"). Every blocked kernel (these, maxpool2d_*_blk, conv_dnnl.h's *_fmt) reads it.
int blocked_width();
void set_blocked_width(int cb);  // cb: 8 or 16, on this thread (the backend's set_blocked_width)
class BlockedWidth {  // sets blocked_width() on this thread for the scope's lifetime
 public:
  explicit BlockedWidth(int cb);  // cb: 8 or 16
  ~BlockedWidth();
  BlockedWidth(const BlockedWidth&) = delete;
  BlockedWidth& operator=(const BlockedWidth&) = delete;

 private:
  int prev_;
};
// The ops' option 'blocked' (batch norm, max pool): 0 plain, 1 or 8 nChw8c, 16 nChw16c; checks
// that C is a multiple of it and returns the width (0: plain).
int blocked_option(OpCtx& c, int C);
// NCHW <-> nChw{cb}c copies (C a multiple of cb, P = H·W), for the trunk's input/output and the
// ops (the names keep the backend's; the width is blocked_width()).
void nchw_to_blocked8(const float* a, float* b, int N, int C, int64_t P);
void blocked8_to_nchw(const float* b, float* a, int N, int C, int64_t P);
void batchnorm_forward_train_blk(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var, float* y,
                                 float* save_mean, float* save_invstd, int N, int C, int P, float momentum, float eps, bool relu = false);
void batchnorm_forward_eval_blk(const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var,
                                float* y, int N, int C, int P, float eps, bool relu = false);
void batchnorm_backward_blk(const float* x, const float* gamma, const float* save_mean, const float* save_invstd, const float* dy, float* dx,
                            float* dgamma, float* dbeta, int N, int C, int P, bool accumulate_dx = true, const float* relu_y = nullptr);

// ---- channel-major variants (Inception blocks, spec §4) ----
// x is [C, N·P]: one contiguous row of N·P values per channel (row c = channel c of an [N, C, P]
// batch). The output is addressed y[c·ysc + n·ysn + p]: channel-major (ysc = N·P, ysn = P) or an
// [N, Ctot, P] map at a channel offset (ysc = P, ysn = Ctot·P). relu: y = max(BN(x), 0).
// save_var (may be null) receives the biased batch variance, for batchnorm_update_running.
// lengths [N] (may be null = all P): padded sequences (Inc1d over texts, DWC-SPEC §10): only
// positions p < lengths[n] of sample n are real. The batch statistics are taken over the real
// positions only (Σ lengths values per channel), and y is 0 at every padded position.
void batchnorm_cm_forward_train(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var, float* y,
                                int64_t ysc, int64_t ysn, float* save_mean, float* save_invstd, float* save_var, int N, int C, int P,
                                float momentum, float eps, bool relu, const int32_t* lengths = nullptr);
void batchnorm_cm_forward_eval(const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var,
                               float* y, int64_t ysc, int64_t ysn, int N, int C, int P, float eps, bool relu,
                               const int32_t* lengths = nullptr);
// Backward of batchnorm_cm_forward_train: dy addressed like y (dsc, dsn); relu_y (may be null) is
// the ReLU output of a relu forward, addressed like dy (gradient passes where relu_y > 0).
// dx [C, N·P] is overwritten (accumulate = false) or accumulated; dgamma, dbeta accumulate.
// lengths as in the forward: dy at padded positions is ignored (y is constant 0 there), and dx
// there is 0 (overwrite) or left as it was (accumulate).
void batchnorm_cm_backward(const float* x, const float* gamma, const float* save_mean, const float* save_invstd, const float* dy,
                           int64_t dsc, int64_t dsn, const float* relu_y, float* dx, float* dgamma, float* dbeta, int N, int C, int P,
                           bool accumulate, const int32_t* lengths = nullptr);
// Running-stat update of a train-mode forward from its saved batch mean and biased variance over
// M values per channel (momentum as torch.nn.BatchNorm, unbiased variance; masked: M = Σ lengths).
void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, int C, int64_t M,
                              float momentum);

}  // namespace dwc::cpu

// Batch norm over [N, C, P] (spec §4: train mode uses batch statistics, momentum 0.1, eps 1e-5),
// as torch.nn.BatchNorm1d/2d: biased variance normalises, unbiased variance feeds running_var.
// OpenMP over channels; statistics in double (shifted sums: one pass, no cancellation).
#include "norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/op.h"
#include "../core/vmath.h"

namespace dwc::cpu {

namespace {
// Channel c's statistics from its shifted sums s = Σ(x − shift), s2 = Σ(x − shift)² over M values:
// saves mean / invstd, updates the running statistics (unbiased variance); returns invstd and the
// shifted mean dmean (spec §4).
inline float finish_channel(int c, double s, double s2, float shift, int64_t M, float momentum, float eps, float* save_mean,
                            float* save_invstd, float* running_mean, float* running_var, double& dmean, float* save_var = nullptr) {
  dmean = s / M;
  double var = s2 / M - dmean * dmean;
  if (var < 0) var = 0;
  const double mean = shift + dmean;
  const float invstd = static_cast<float>(1.0 / std::sqrt(var + eps));
  if (save_mean) save_mean[c] = static_cast<float>(mean);
  if (save_invstd) save_invstd[c] = invstd;
  if (save_var) save_var[c] = static_cast<float>(var);
  if (running_mean) running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * mean);
  if (running_var) {
    const double unbiased = M > 1 ? var * M / (M - 1) : var;
    running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * unbiased);
  }
  return invstd;
}
}  // namespace

void batchnorm_forward_train(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var, float* y,
                             float* save_mean, float* save_invstd, int N, int C, int P, float momentum, float eps, bool relu) {
  const int64_t M = int64_t(N) * P, sC = int64_t(C) * P;
  if (M == 0) return;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    const float* xc = x + int64_t(c) * P;
    const float shift = xc[0];
    double s = 0, s2 = 0;
    for (int n = 0; n < N; ++n) {
      const float* xp = xc + n * sC;
      float a = 0.f, a2 = 0.f;  // per-row partial sums in float (P is small), folded into double
#pragma omp simd reduction(+ : a, a2)
      for (int p = 0; p < P; ++p) {
        const float v = xp[p] - shift;
        a += v;
        a2 += v * v;
      }
      s += a;
      s2 += a2;
    }
    double dmean;
    const float invstd = finish_channel(c, s, s2, shift, M, momentum, eps, save_mean, save_invstd, running_mean, running_var, dmean);
    // y = ((x − shift) − (mean − shift))·γ·invstd + β: no cancellation when |mean| ≫ std.
    const float g = gamma ? gamma[c] * invstd : invstd;
    const float b = beta ? beta[c] : 0.f, dm = static_cast<float>(dmean);
    for (int n = 0; n < N; ++n) {
      const float* xp = xc + n * sC;
      float* yp = y + int64_t(c) * P + n * sC;
      if (relu) {
#pragma omp simd
        for (int p = 0; p < P; ++p) {
          const float v = ((xp[p] - shift) - dm) * g + b;
          yp[p] = v > 0.f ? v : 0.f;
        }
      } else {
#pragma omp simd
        for (int p = 0; p < P; ++p) yp[p] = ((xp[p] - shift) - dm) * g + b;
      }
    }
  }
}

void batchnorm_forward_eval(const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var,
                            float* y, int N, int C, int P, float eps, bool relu) {
  const int64_t sC = int64_t(C) * P;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    const float invstd = static_cast<float>(1.0 / std::sqrt(double(running_var[c]) + eps));
    const float g = gamma ? gamma[c] * invstd : invstd;
    const float b = (beta ? beta[c] : 0.f) - running_mean[c] * g;
    for (int n = 0; n < N; ++n) {
      const float* xp = x + int64_t(c) * P + n * sC;
      float* yp = y + int64_t(c) * P + n * sC;
      if (relu) {
#pragma omp simd
        for (int p = 0; p < P; ++p) {
          const float v = xp[p] * g + b;
          yp[p] = v > 0.f ? v : 0.f;
        }
      } else {
#pragma omp simd
        for (int p = 0; p < P; ++p) yp[p] = xp[p] * g + b;
      }
    }
  }
}

// dβ = Σ dy, dγ = Σ dy·x̂, dx = γ·invstd·(dy − dβ/M − x̂·dγ/M). relu_y: dy is the gradient of
// ReLU(BN(x)) = relu_y; each channel's masked dy (dy where relu_y > 0, else 0) is copied into a
// per-thread buffer of N·P floats first and the same loops then run on it, so every float is the
// one a separate ReLU backward pass followed by the plain BN backward gives (one DRAM pass fewer).
void batchnorm_backward(const float* x, const float* gamma, const float* save_mean, const float* save_invstd, const float* dy, float* dx,
                        float* dgamma, float* dbeta, int N, int C, int P, bool accumulate_dx, const float* relu_y) {
  const int64_t M = int64_t(N) * P, sC = int64_t(C) * P;
  if (M == 0) return;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    const float mean = save_mean[c], invstd = save_invstd[c];
    // dy of channel c, sample n: g0 + n·gs
    const float* g0 = dy + int64_t(c) * P;
    int64_t gs = sC;
    if (relu_y) {
      static thread_local std::vector<float> masked;
      if (static_cast<int64_t>(masked.size()) < M) masked.resize(static_cast<size_t>(M));
      for (int n = 0; n < N; ++n) {
        const float* gp = g0 + n * sC;
        const float* rp = relu_y + int64_t(c) * P + n * sC;
        float* mp = masked.data() + int64_t(n) * P;
#pragma omp simd
        for (int p = 0; p < P; ++p) mp[p] = rp[p] > 0.f ? gp[p] : 0.f;
      }
      g0 = masked.data();
      gs = P;
    }
    double sdy = 0, sdyx = 0;
    for (int n = 0; n < N; ++n) {
      const float* xp = x + int64_t(c) * P + n * sC;
      const float* gp = g0 + n * gs;
      float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
      for (int p = 0; p < P; ++p) {
        a += gp[p];
        b += gp[p] * (xp[p] - mean);
      }
      sdy += a;
      sdyx += b;
    }
    const float db = static_cast<float>(sdy), dg = static_cast<float>(sdyx * invstd);
    if (dbeta) dbeta[c] += db;
    if (dgamma) dgamma[c] += dg;
    if (!dx) continue;
    const float k = (gamma ? gamma[c] : 1.f) * invstd;
    const float mdb = static_cast<float>(sdy / M), mdg = static_cast<float>(sdyx * invstd / M) * invstd;
    for (int n = 0; n < N; ++n) {
      const float* xp = x + int64_t(c) * P + n * sC;
      const float* gp = g0 + n * gs;
      float* op = dx + int64_t(c) * P + n * sC;
      if (accumulate_dx) {
#pragma omp simd
        for (int p = 0; p < P; ++p) op[p] += k * (gp[p] - mdb - (xp[p] - mean) * mdg);
      } else {
#pragma omp simd
        for (int p = 0; p < P; ++p) op[p] = k * (gp[p] - mdb - (xp[p] - mean) * mdg);
      }
    }
  }
}

// ---- blocked layout (nChw8c / nChw16c, the trunk's oneDNN path; docs/PERFORMANCE.md "Layouts") ----
// x[n, c, p] lives at ((n·C/kL + c/kL)·P + p)·kL + c%kL: the kL channels of a block are the lanes
// of one vector, so every loop below runs over (n, p) with a kL-wide inner loop. The statistics are
// summed per lane in float over spans of kBlkSpan positions and folded into double (as the plain
// kernels' per-row partial sums), so the floats differ from the plain kernels' only by rounding;
// each channel's sums run in the same order whatever kL (8 and 16 give the same floats).
namespace {
thread_local int t_blocked_width = 8;
}  // namespace
int blocked_width() { return t_blocked_width; }
void set_blocked_width(int cb) {
  DWC_CHECK(cb == 8 || cb == 16, Internal, "blocked layout: width " << cb << " is not 8 or 16");
  t_blocked_width = cb;
}
BlockedWidth::BlockedWidth(int cb) : prev_(t_blocked_width) { set_blocked_width(cb); }
BlockedWidth::~BlockedWidth() { t_blocked_width = prev_; }
int blocked_option(OpCtx& c, int C) {
  const int64_t b = c.int_attr_or("blocked", 0);
  DWC_ARG_CHECK(b == 0 || b == 1 || b == 8 || b == 16, c.op_name << ": option 'blocked' must be 0, 1 (= 8), 8 or 16, got " << b);
  const int cb = b == 0 ? 0 : b == 16 ? 16 : 8;
  DWC_ARG_CHECK(cb == 0 || C % cb == 0, c.op_name << ": option 'blocked' needs channels a multiple of " << cb << ", got C = " << C);
  return cb;
}

namespace {
constexpr int kBlkSpan = 64;   // positions per float partial sum

template <int kL>
DWC_AVX2_CLONES void blk_stats(const float* __restrict xb, int64_t bs, int N, int P, const float* __restrict shift, double* __restrict s,
                               double* __restrict s2) {
  for (int n = 0; n < N; ++n) {
    const float* xp = xb + n * bs;
    for (int p0 = 0; p0 < P; p0 += kBlkSpan) {
      const int p1 = std::min(P, p0 + kBlkSpan);
      float a[kL] = {}, a2[kL] = {};
      for (int p = p0; p < p1; ++p)
#pragma omp simd
        for (int l = 0; l < kL; ++l) {
          const float v = xp[int64_t(p) * kL + l] - shift[l];
          a[l] += v;
          a2[l] += v * v;
        }
      for (int l = 0; l < kL; ++l) s[l] += a[l], s2[l] += a2[l];
    }
  }
}

// y = ((x − shift) − dm)·g + b (train) or x·g + b (eval: shift = dm = 0), ReLU optional.
template <int kL>
DWC_AVX2_CLONES void blk_affine(const float* __restrict xb, float* __restrict yb, int64_t bs, int N, int P, const float* __restrict shift,
                                const float* __restrict dm, const float* __restrict g, const float* __restrict b, bool relu) {
  for (int n = 0; n < N; ++n) {
    const float* xp = xb + n * bs;
    float* yp = yb + n * bs;
    for (int p = 0; p < P; ++p)
#pragma omp simd
      for (int l = 0; l < kL; ++l) {
        const float v = ((xp[int64_t(p) * kL + l] - shift[l]) - dm[l]) * g[l] + b[l];
        yp[int64_t(p) * kL + l] = relu ? (v > 0.f ? v : 0.f) : v;
      }
  }
}

// Σ dy and Σ dy·(x − mean) per lane; dy masked by relu_y > 0 when relu_y is given.
template <int kL>
DWC_AVX2_CLONES void blk_grad_sums(const float* __restrict xb, const float* __restrict gb, const float* __restrict rb, int64_t bs, int N, int P,
                                   const float* __restrict mean, double* __restrict sdy, double* __restrict sdyx) {
  for (int n = 0; n < N; ++n) {
    const float* xp = xb + n * bs;
    const float* gp = gb + n * bs;
    const float* rp = rb ? rb + n * bs : nullptr;
    for (int p0 = 0; p0 < P; p0 += kBlkSpan) {
      const int p1 = std::min(P, p0 + kBlkSpan);
      float a[kL] = {}, b[kL] = {};
      for (int p = p0; p < p1; ++p)
#pragma omp simd
        for (int l = 0; l < kL; ++l) {
          const int64_t i = int64_t(p) * kL + l;
          const float gv = rp ? (rp[i] > 0.f ? gp[i] : 0.f) : gp[i];
          a[l] += gv;
          b[l] += gv * (xp[i] - mean[l]);
        }
      for (int l = 0; l < kL; ++l) sdy[l] += a[l], sdyx[l] += b[l];
    }
  }
}

template <int kL>
DWC_AVX2_CLONES void blk_dx(const float* __restrict xb, const float* __restrict gb, const float* __restrict rb, float* __restrict db, int64_t bs,
                            int N, int P, const float* __restrict mean, const float* __restrict k, const float* __restrict mdb,
                            const float* __restrict mdg, bool accumulate) {
  for (int n = 0; n < N; ++n) {
    const float* xp = xb + n * bs;
    const float* gp = gb + n * bs;
    const float* rp = rb ? rb + n * bs : nullptr;
    float* op = db + n * bs;
    for (int p = 0; p < P; ++p)
#pragma omp simd
      for (int l = 0; l < kL; ++l) {
        const int64_t i = int64_t(p) * kL + l;
        const float gv = rp ? (rp[i] > 0.f ? gp[i] : 0.f) : gp[i];
        const float v = k[l] * (gv - mdb[l] - (xp[i] - mean[l]) * mdg[l]);
        op[i] = accumulate ? op[i] + v : v;
      }
  }
}
}  // namespace

// NCHW <-> nChw{kL}c (C a multiple of kL = blocked_width()):
// b[((n·C/kL + c/kL)·P + p)·kL + c%kL] = a[(n·C + c)·P + p].
namespace {
template <int kL>
void nchw_to_blocked_t(const float* a, float* b, int N, int C, int64_t P) {
  const int64_t planes = int64_t(N) * (C / kL);
#pragma omp parallel for schedule(static) if (planes * P * kL > 65536)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* src = a + pl * kL * P;  // the block's kL channel planes are consecutive in NCHW
    float* dst = b + pl * kL * P;
    for (int64_t p = 0; p < P; ++p)
      for (int l = 0; l < kL; ++l) dst[p * kL + l] = src[l * P + p];
  }
}
template <int kL>
void blocked_to_nchw_t(const float* b, float* a, int N, int C, int64_t P) {
  const int64_t planes = int64_t(N) * (C / kL);
#pragma omp parallel for schedule(static) if (planes * P * kL > 65536)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* src = b + pl * kL * P;
    float* dst = a + pl * kL * P;
    for (int l = 0; l < kL; ++l)
      for (int64_t p = 0; p < P; ++p) dst[l * P + p] = src[p * kL + l];
  }
}
void check_width(int C, int kL) {
  DWC_CHECK(C % kL == 0, Internal, "batchnorm (blocked): C = " << C << " is not a multiple of " << kL);
}
}  // namespace
void nchw_to_blocked8(const float* a, float* b, int N, int C, int64_t P) {
  const int kL = blocked_width();
  check_width(C, kL);
  (kL == 16 ? nchw_to_blocked_t<16> : nchw_to_blocked_t<8>)(a, b, N, C, P);
}
void blocked8_to_nchw(const float* b, float* a, int N, int C, int64_t P) {
  const int kL = blocked_width();
  check_width(C, kL);
  (kL == 16 ? blocked_to_nchw_t<16> : blocked_to_nchw_t<8>)(b, a, N, C, P);
}

namespace {
template <int kL>
void bn_fwd_train_blk(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var, float* y,
                                 float* save_mean, float* save_invstd, int N, int C, int P, float momentum, float eps, bool relu) {
  const int64_t M = int64_t(N) * P, bs = int64_t(C) * P;  // bs: sample stride
  if (M == 0) return;
  const int CB = C / kL;
#pragma omp parallel for schedule(static)
  for (int cb = 0; cb < CB; ++cb) {
    const float* xb = x + int64_t(cb) * P * kL;
    float shift[kL], dm[kL], g[kL], b[kL];
    double s[kL] = {}, s2[kL] = {};
    for (int l = 0; l < kL; ++l) shift[l] = xb[l];
    blk_stats<kL>(xb, bs, N, P, shift, s, s2);
    for (int l = 0; l < kL; ++l) {
      const int c = cb * kL + l;
      double dmean;
      const float invstd = finish_channel(c, s[l], s2[l], shift[l], M, momentum, eps, save_mean, save_invstd, running_mean, running_var, dmean);
      g[l] = gamma ? gamma[c] * invstd : invstd;
      b[l] = beta ? beta[c] : 0.f;
      dm[l] = static_cast<float>(dmean);
    }
    blk_affine<kL>(xb, y + int64_t(cb) * P * kL, bs, N, P, shift, dm, g, b, relu);
  }
}

template <int kL>
void bn_fwd_eval_blk(const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var,
                                float* y, int N, int C, int P, float eps, bool relu) {
  const int64_t bs = int64_t(C) * P;
  const int CB = C / kL;
#pragma omp parallel for schedule(static)
  for (int cb = 0; cb < CB; ++cb) {
    float zero[kL] = {}, g[kL], b[kL];
    for (int l = 0; l < kL; ++l) {
      const int c = cb * kL + l;
      const float invstd = static_cast<float>(1.0 / std::sqrt(double(running_var[c]) + eps));
      g[l] = gamma ? gamma[c] * invstd : invstd;
      b[l] = (beta ? beta[c] : 0.f) - running_mean[c] * g[l];
    }
    blk_affine<kL>(x + int64_t(cb) * P * kL, y + int64_t(cb) * P * kL, bs, N, P, zero, zero, g, b, relu);
  }
}

template <int kL>
void bn_bwd_blk(const float* x, const float* gamma, const float* save_mean, const float* save_invstd, const float* dy, float* dx,
                            float* dgamma, float* dbeta, int N, int C, int P, bool accumulate_dx, const float* relu_y) {
  const int64_t M = int64_t(N) * P, bs = int64_t(C) * P;
  if (M == 0) return;
  const int CB = C / kL;
#pragma omp parallel for schedule(static)
  for (int cb = 0; cb < CB; ++cb) {
    const int64_t off = int64_t(cb) * P * kL;
    const float* mean = save_mean + cb * kL;
    const float* rb = relu_y ? relu_y + off : nullptr;
    double sdy[kL] = {}, sdyx[kL] = {};
    blk_grad_sums<kL>(x + off, dy + off, rb, bs, N, P, mean, sdy, sdyx);
    float k[kL], mdb[kL], mdg[kL];
    for (int l = 0; l < kL; ++l) {
      const int c = cb * kL + l;
      const float invstd = save_invstd[c];
      if (dbeta) dbeta[c] += static_cast<float>(sdy[l]);
      if (dgamma) dgamma[c] += static_cast<float>(sdyx[l] * invstd);
      k[l] = (gamma ? gamma[c] : 1.f) * invstd;
      mdb[l] = static_cast<float>(sdy[l] / M);
      mdg[l] = static_cast<float>(sdyx[l] * invstd / M) * invstd;
    }
    if (dx) blk_dx<kL>(x + off, dy + off, rb, dx + off, bs, N, P, mean, k, mdb, mdg, accumulate_dx);
  }
}

}  // namespace

void batchnorm_forward_train_blk(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var, float* y,
                                 float* save_mean, float* save_invstd, int N, int C, int P, float momentum, float eps, bool relu) {
  const int kL = blocked_width();
  check_width(C, kL);
  (kL == 16 ? bn_fwd_train_blk<16> : bn_fwd_train_blk<8>)(x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd, N, C, P,
                                                          momentum, eps, relu);
}
void batchnorm_forward_eval_blk(const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var,
                                float* y, int N, int C, int P, float eps, bool relu) {
  const int kL = blocked_width();
  check_width(C, kL);
  (kL == 16 ? bn_fwd_eval_blk<16> : bn_fwd_eval_blk<8>)(x, gamma, beta, running_mean, running_var, y, N, C, P, eps, relu);
}
void batchnorm_backward_blk(const float* x, const float* gamma, const float* save_mean, const float* save_invstd, const float* dy, float* dx,
                            float* dgamma, float* dbeta, int N, int C, int P, bool accumulate_dx, const float* relu_y) {
  const int kL = blocked_width();
  check_width(C, kL);
  (kL == 16 ? bn_bwd_blk<16> : bn_bwd_blk<8>)(x, gamma, save_mean, save_invstd, dy, dx, dgamma, dbeta, N, C, P, accumulate_dx, relu_y);
}

// ---- channel-major variants ----

namespace {
// Values per channel: N·P, or Σ lengths[n] (each clamped to [0, P]) when masked.
inline int real_len(const int32_t* lengths, int n, int P) { return lengths ? std::clamp<int>(lengths[n], 0, P) : P; }
int64_t real_count(const int32_t* lengths, int N, int P) {
  int64_t m = 0;
  for (int n = 0; n < N; ++n) m += real_len(lengths, n, P);
  return m;
}
}  // namespace

void batchnorm_cm_forward_train(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var, float* y,
                                int64_t ysc, int64_t ysn, float* save_mean, float* save_invstd, float* save_var, int N, int C, int P,
                                float momentum, float eps, bool relu, const int32_t* lengths) {
  const int64_t MP = int64_t(N) * P, M = real_count(lengths, N, P);  // row stride, values per channel
  if (M == 0) return;
#pragma omp parallel for schedule(static) if (int64_t(C) * MP > 16384)
  for (int c = 0; c < C; ++c) {
    const float* xc = x + int64_t(c) * MP;
    const float shift = xc[0];
    double s = 0, s2 = 0;
    for (int n = 0; n < N; ++n) {  // float partial sums per sample row, folded into double
      const float* xp = xc + int64_t(n) * P;
      const int Pn = real_len(lengths, n, P);
      float a = 0.f, a2 = 0.f;
#pragma omp simd reduction(+ : a, a2)
      for (int p = 0; p < Pn; ++p) {
        const float v = xp[p] - shift;
        a += v;
        a2 += v * v;
      }
      s += a;
      s2 += a2;
    }
    double dmean;
    const float invstd = finish_channel(c, s, s2, shift, M, momentum, eps, save_mean, save_invstd, running_mean, running_var, dmean, save_var);
    const float g = gamma ? gamma[c] * invstd : invstd;
    const float b = beta ? beta[c] : 0.f, dm = static_cast<float>(dmean);
    for (int n = 0; n < N; ++n) {
      const float* xp = xc + int64_t(n) * P;
      float* yp = y + int64_t(c) * ysc + int64_t(n) * ysn;
      const int Pn = real_len(lengths, n, P);
      if (relu) {
#pragma omp simd
        for (int p = 0; p < Pn; ++p) yp[p] = std::max(((xp[p] - shift) - dm) * g + b, 0.f);
      } else {
#pragma omp simd
        for (int p = 0; p < Pn; ++p) yp[p] = ((xp[p] - shift) - dm) * g + b;
      }
      std::fill(yp + Pn, yp + P, 0.f);  // padded positions (lengths)
    }
  }
}

void batchnorm_cm_forward_eval(const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var,
                               float* y, int64_t ysc, int64_t ysn, int N, int C, int P, float eps, bool relu, const int32_t* lengths) {
  const int64_t M = int64_t(N) * P;
#pragma omp parallel for schedule(static) if (int64_t(C) * M > 16384)
  for (int c = 0; c < C; ++c) {
    const float invstd = static_cast<float>(1.0 / std::sqrt(double(running_var[c]) + eps));
    const float g = gamma ? gamma[c] * invstd : invstd;
    const float b = (beta ? beta[c] : 0.f) - running_mean[c] * g;
    for (int n = 0; n < N; ++n) {
      const float* xp = x + int64_t(c) * M + int64_t(n) * P;
      float* yp = y + int64_t(c) * ysc + int64_t(n) * ysn;
      const int Pn = real_len(lengths, n, P);
      if (relu) {
#pragma omp simd
        for (int p = 0; p < Pn; ++p) yp[p] = std::max(xp[p] * g + b, 0.f);
      } else {
#pragma omp simd
        for (int p = 0; p < Pn; ++p) yp[p] = xp[p] * g + b;
      }
      std::fill(yp + Pn, yp + P, 0.f);  // padded positions (lengths)
    }
  }
}

namespace {
// One row of batchnorm_cm_backward's dx (elementwise: the AVX2 clone rounds as the baseline).
// (arena outputs may hold garbage: the overwrite path never reads op)
DWC_AVX2_CLONES void cm_dx_row(const float* xp, const float* gp, const float* rp, float* op,
                               int Pn, int P, float k, float mean, float mdb, float mdg, bool accumulate) {
  if (rp && accumulate) {
#pragma omp simd
    for (int p = 0; p < Pn; ++p) op[p] += k * ((rp[p] > 0.f ? gp[p] : 0.f) - mdb - (xp[p] - mean) * mdg);
  } else if (rp) {
#pragma omp simd
    for (int p = 0; p < Pn; ++p) op[p] = k * ((rp[p] > 0.f ? gp[p] : 0.f) - mdb - (xp[p] - mean) * mdg);
  } else if (accumulate) {
#pragma omp simd
    for (int p = 0; p < Pn; ++p) op[p] += k * (gp[p] - mdb - (xp[p] - mean) * mdg);
  } else {
#pragma omp simd
    for (int p = 0; p < Pn; ++p) op[p] = k * (gp[p] - mdb - (xp[p] - mean) * mdg);
  }
  if (!accumulate) std::fill(op + Pn, op + P, 0.f);  // padded positions get no gradient
}
}  // namespace

void batchnorm_cm_backward(const float* x, const float* gamma, const float* save_mean, const float* save_invstd, const float* dy,
                           int64_t dsc, int64_t dsn, const float* relu_y, float* dx, float* dgamma, float* dbeta, int N, int C, int P,
                           bool accumulate, const int32_t* lengths) {
  const int64_t MP = int64_t(N) * P, M = real_count(lengths, N, P);  // row stride, values per channel
  if (M == 0) return;
#pragma omp parallel for schedule(static) if (int64_t(C) * MP > 16384)
  for (int c = 0; c < C; ++c) {
    const float mean = save_mean[c], invstd = save_invstd[c];
    const float* xc = x + int64_t(c) * MP;
    thread_local std::vector<float> gm;
    if (relu_y && gm.size() < size_t(P)) gm.resize(P);
    double sdy = 0, sdyx = 0;
    for (int n = 0; n < N; ++n) {
      const float* xp = xc + int64_t(n) * P;
      const int64_t o = int64_t(c) * dsc + int64_t(n) * dsn;
      const int Pn = real_len(lengths, n, P);
      const float* gp = dy + o;
      if (relu_y) {  // masked copy first: the sums below then round as in batchnorm_backward
        const float* rp = relu_y + o;
#pragma omp simd
        for (int p = 0; p < Pn; ++p) gm[p] = rp[p] > 0.f ? gp[p] : 0.f;
        gp = gm.data();
      }
      float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
      for (int p = 0; p < Pn; ++p) {
        a += gp[p];
        b += gp[p] * (xp[p] - mean);
      }
      sdy += a;
      sdyx += b;
    }
    if (dbeta) dbeta[c] += static_cast<float>(sdy);
    if (dgamma) dgamma[c] += static_cast<float>(sdyx * invstd);
    if (!dx) continue;
    const float k = (gamma ? gamma[c] : 1.f) * invstd;
    const float mdb = static_cast<float>(sdy / M), mdg = static_cast<float>(sdyx * invstd / M) * invstd;
    for (int n = 0; n < N; ++n) {
      const int64_t o = int64_t(c) * dsc + int64_t(n) * dsn;
      cm_dx_row(xc + int64_t(n) * P, dy + o, relu_y ? relu_y + o : nullptr, dx + int64_t(c) * MP + int64_t(n) * P, real_len(lengths, n, P), P,
                k, mean, mdb, mdg, accumulate);
    }
  }
}

void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var, int C, int64_t M,
                              float momentum) {
  for (int c = 0; c < C; ++c) {
    running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + double(momentum) * mean[c]);
    const double unbiased = M > 1 ? double(var[c]) * M / (M - 1) : double(var[c]);
    running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * unbiased);
  }
}

// ---- ops (JS tests / benchmarks) ----
namespace {

struct BnDims {
  int N, C, P;
};

BnDims bn_dims(OpCtx& c, const Tensor& x) {
  DWC_ARG_CHECK(x.ndim() >= 2, c.op_name << ": argument 'x' must be [N, C, ...], got shape " << shape_str(x.shape));
  int64_t P = 1;
  for (int i = 2; i < x.ndim(); ++i) P *= x.dim(i);
  return {static_cast<int>(x.dim(0)), static_cast<int>(x.dim(1)), static_cast<int>(P)};
}

// blocked (1 or 8: nChw8c, 16: nChw16c): the op runs the blocked kernel on blocked copies of its
// NCHW tensors (tests).
struct BlockedIo {
  bool on = false;
  BnDims d{};
  std::vector<std::vector<float>> bufs;
  BlockedWidth width;
  BlockedIo(OpCtx& c, const BnDims& dims) : BlockedIo(dims, blocked_option(c, dims.C)) {}
  BlockedIo(const BnDims& dims, int cb) : on(cb != 0), d(dims), width(cb ? cb : 8) {}
  // the blocked copy of an NCHW tensor (or the tensor itself when off)
  const float* in(const float* a) {
    if (!on || !a) return a;
    bufs.emplace_back(size_t(int64_t(d.N) * d.C * d.P));
    nchw_to_blocked8(a, bufs.back().data(), d.N, d.C, d.P);
    return bufs.back().data();
  }
  float* inout(float* a) { return const_cast<float*>(in(a)); }
  void out(const float* b, float* a) const {
    if (on) blocked8_to_nchw(b, a, d.N, d.C, d.P);
  }
};

const Tensor& per_channel(OpCtx& c, const char* name, int C) {
  const Tensor& t = c.in(name, 1);
  c.expect_dim(t, name, 0, C, "C (channels of x)");
  return t;
}

}  // namespace

DWC_REGISTER_OP("batchnorm_forward",
                "x [N,C,...], gamma, beta, running_mean, running_var [C]; train, momentum (0.1), eps (1e-5), relu (0: y = max(BN, 0)), blocked (0; 1 or 8 runs "
                "the nChw8c kernel, 16 nChw16c) -> y, running_mean, "
                "running_var (updated copies), save_mean, save_invstd (train only)",
                [](OpCtx& c) {
                  const Tensor& x = c.in("x");
                  BnDims d = bn_dims(c, x);
                  const Tensor& g = per_channel(c, "gamma", d.C);
                  const Tensor& b = per_channel(c, "beta", d.C);
                  const Tensor& rm = per_channel(c, "running_mean", d.C);
                  const Tensor& rv = per_channel(c, "running_var", d.C);
                  const bool train = c.flag("train", false), relu = c.flag("relu", false);
                  const double momentum = c.attr_or("momentum", 0.1), eps = c.attr_or("eps", 1e-5);
                  DWC_ARG_CHECK(momentum >= 0 && momentum <= 1, c.op_name << ": option 'momentum' must be in [0, 1], got " << momentum);
                  DWC_ARG_CHECK(eps > 0, c.op_name << ": option 'eps' must be > 0, got " << eps);
                  Tensor& y = c.out("y", x.shape);
                  Tensor& orm = c.out_copy("running_mean", rm);
                  Tensor& orv = c.out_copy("running_var", rv);
                  BlockedIo io(c, d);
                  const float* xi = io.in(x.f32());
                  float* yo = io.inout(y.f32());
                  if (train) {
                    DWC_ARG_CHECK(int64_t(d.N) * d.P > 1, c.op_name << ": argument 'x' has shape " << shape_str(x.shape)
                                                                    << ": train mode needs more than 1 value per channel");
                    Tensor& sm = c.out("save_mean", {d.C});
                    Tensor& si = c.out("save_invstd", {d.C});
                    (io.on ? batchnorm_forward_train_blk : batchnorm_forward_train)(xi, g.f32(), b.f32(), orm.f32(), orv.f32(), yo, sm.f32(), si.f32(),
                                                                                   d.N, d.C, d.P, static_cast<float>(momentum), static_cast<float>(eps), relu);
                  } else {
                    (io.on ? batchnorm_forward_eval_blk : batchnorm_forward_eval)(xi, g.f32(), b.f32(), rm.f32(), rv.f32(), yo, d.N, d.C, d.P,
                                                                                 static_cast<float>(eps), relu);
                  }
                  io.out(yo, y.f32());
                });

// dx_init (optional): dx's starting value; accumulate (1) adds to it, 0 overwrites it.
// relu_y (optional): the ReLU output after this BN; dy is then the gradient of that ReLU's output.
DWC_REGISTER_OP("batchnorm_backward", "x, gamma, save_mean, save_invstd, dy, dx_init?, relu_y?; accumulate (1), blocked (0; 8 or 16) -> dx, dgamma, dbeta (train mode)",
                [](OpCtx& c) {
  const Tensor& x = c.in("x");
  BnDims d = bn_dims(c, x);
  const Tensor& g = per_channel(c, "gamma", d.C);
  const Tensor& sm = per_channel(c, "save_mean", d.C);
  const Tensor& si = per_channel(c, "save_invstd", d.C);
  const Tensor& dy = c.in("dy");
  c.expect_shape(dy, "dy", x.shape);
  Tensor& dx = c.out("dx", x.shape);
  if (const Tensor* d0 = c.in_opt("dx_init")) {
    c.expect_shape(*d0, "dx_init", x.shape);
    std::copy(d0->f32(), d0->f32() + x.numel(), dx.f32());
  }
  const Tensor* ry = c.in_opt("relu_y");
  if (ry) c.expect_shape(*ry, "relu_y", x.shape);
  BlockedIo io(c, d);
  float* dxo = io.inout(dx.f32());
  (io.on ? batchnorm_backward_blk : batchnorm_backward)(io.in(x.f32()), g.f32(), sm.f32(), si.f32(), io.in(dy.f32()), dxo,
                                                        c.out("dgamma", {d.C}).f32(), c.out("dbeta", {d.C}).f32(), d.N, d.C, d.P,
                                                        c.flag("accumulate", true), io.in(ry ? ry->f32() : nullptr));
  io.out(dxo, dx.f32());
});

}  // namespace dwc::cpu

namespace dwc::cpu {

void batchnorm_backward_eval(const float* x, const float* gamma, const float* running_mean, const float* running_var, const float* dy,
                             float* dx, float* dgamma, float* dbeta, int N, int C, int P, float eps) {
  const int64_t sC = int64_t(C) * P;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    const float invstd = static_cast<float>(1.0 / std::sqrt(double(running_var[c]) + eps));
    const float mean = running_mean[c];
    const float k = (gamma ? gamma[c] : 1.f) * invstd;
    double sdy = 0, sdyx = 0;
    for (int n = 0; n < N; ++n) {
      const float* xp = x + int64_t(c) * P + n * sC;
      const float* gp = dy + int64_t(c) * P + n * sC;
      float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
      for (int p = 0; p < P; ++p) {
        a += gp[p];
        b += gp[p] * (xp[p] - mean);
      }
      sdy += a;
      sdyx += b;
      if (dx) {
        float* dp = dx + int64_t(c) * P + n * sC;
#pragma omp simd
        for (int p = 0; p < P; ++p) dp[p] += k * gp[p];
      }
    }
    if (dbeta) dbeta[c] += static_cast<float>(sdy);
    if (dgamma) dgamma[c] += static_cast<float>(sdyx * invstd);
  }
}

}  // namespace dwc::cpu

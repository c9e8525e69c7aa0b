// CUDA twin of native/kernels/norm.h. One kernel per pass for both layouts: x is addressed
// x[c·xsc + n·xsn + p] ([N,C,P]: xsc = P, xsn = C·P; channel-major [C, N·P]: xsc = N·P, xsn = P),
// y / dy have their own strides. One block per channel; statistics in double, shifted by the
// channel's first value (as the CPU kernel: no cancellation when |mean| ≫ std). lengths [N]
// (channel-major only, may be null): padded sequences, positions p >= lengths[n] are not data:
// left out of the statistics, y = 0 there, dx = 0 there (overwrite) or untouched (accumulate).
#include "common.cuh"

namespace dwc::cuda {

namespace {

constexpr int kBnThreads = 256;

struct Lay {
  int64_t xsc, xsn, ysc, ysn;  // x (and dx) strides, y (and dy, relu_y) strides
};

__device__ __forceinline__ int real_len(const int32_t* len, int64_t n, int P) { return len ? min(max(len[n], 0), P) : P; }
// Σ real lengths (every thread of the block computes it; N is a batch size).
__device__ int64_t real_count(const int32_t* len, int N, int P) {
  if (!len) return int64_t(N) * P;
  int64_t m = 0;
  for (int n = 0; n < N; ++n) m += real_len(len, n, P);
  return m;
}

__global__ void bn_train_k(const float* x, const float* gamma, const float* beta, float* rm, float* rv, float* y, float* sm, float* si,
                           float* sv, int N, int P, Lay l, float momentum, float eps, bool relu, const int32_t* len) {
  __shared__ double sh[32];
  __shared__ float coef[3];
  const int c = blockIdx.x;
  const int64_t MP = int64_t(N) * P, M = real_count(len, N, P);
  if (M == 0) return;  // as the CPU kernel: nothing written
  const float* xc = x + c * l.xsc;
  const float shift = xc[0];
  double s = 0, s2 = 0;
  for (int64_t i = threadIdx.x; i < MP; i += blockDim.x) {
    if (i % P >= real_len(len, i / P, P)) continue;
    const double v = double(xc[(i / P) * l.xsn + i % P] - shift);
    s += v;
    s2 += v * v;
  }
  s = block_sum(s, sh);
  s2 = block_sum(s2, sh);
  if (threadIdx.x == 0) {
    const double dmean = s / M;
    double var = s2 / M - dmean * dmean;
    if (var < 0) var = 0;
    const double mean = shift + dmean;
    const float invstd = static_cast<float>(1.0 / sqrt(var + eps));
    if (sm) sm[c] = static_cast<float>(mean);
    if (si) si[c] = invstd;
    if (sv) sv[c] = static_cast<float>(var);
    if (rm) rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mean);
    if (rv) {
      const double unbiased = M > 1 ? var * M / (M - 1) : var;
      rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * unbiased);
    }
    coef[0] = gamma ? gamma[c] * invstd : invstd;
    coef[1] = beta ? beta[c] : 0.f;
    coef[2] = static_cast<float>(dmean);
  }
  __syncthreads();
  const float g = coef[0], b = coef[1], dm = coef[2];
  for (int64_t i = threadIdx.x; i < MP; i += blockDim.x) {
    const int64_t n = i / P, p = i % P;
    float v = 0.f;
    if (p < real_len(len, n, P)) {
      v = ((xc[n * l.xsn + p] - shift) - dm) * g + b;
      if (relu) v = fmaxf(v, 0.f);
    }
    y[c * l.ysc + n * l.ysn + p] = v;
  }
}

__global__ void bn_eval_k(const float* x, const float* gamma, const float* beta, const float* rm, const float* rv, float* y, int N, int P,
                          Lay l, float eps, bool relu, const int32_t* len) {
  const int c = blockIdx.x;
  const int64_t M = int64_t(N) * P;
  const float invstd = static_cast<float>(1.0 / sqrt(double(rv[c]) + eps));
  const float g = gamma ? gamma[c] * invstd : invstd;
  const float b = (beta ? beta[c] : 0.f) - rm[c] * g;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t n = i / P, p = i % P;
    float v = 0.f;
    if (p < real_len(len, n, P)) {
      v = x[c * l.xsc + n * l.xsn + p] * g + b;
      if (relu) v = fmaxf(v, 0.f);
    }
    y[c * l.ysc + n * l.ysn + p] = v;
  }
}

// dβ = Σ g, dγ = Σ g·x̂, dx (+)= γ·invstd·(g − dβ/M − x̂·dγ/M), g = dy masked by relu_y > 0.
__global__ void bn_backward_k(const float* x, const float* gamma, const float* sm, const float* si, const float* dy, const float* relu_y,
                              float* dx, float* dg, float* db, int N, int P, Lay l, bool accumulate, const int32_t* len) {
  __shared__ double sh[32];
  const int c = blockIdx.x;
  const int64_t MP = int64_t(N) * P, M = real_count(len, N, P);
  if (M == 0) return;
  const float mean = sm[c], invstd = si[c];
  double sdy = 0, sdyx = 0;
  for (int64_t i = threadIdx.x; i < MP; i += blockDim.x) {
    const int64_t n = i / P, p = i % P, o = c * l.ysc + n * l.ysn + p;
    if (p >= real_len(len, n, P)) continue;
    const float g = (!relu_y || relu_y[o] > 0.f) ? dy[o] : 0.f;
    sdy += g;
    sdyx += double(g) * (x[c * l.xsc + n * l.xsn + p] - mean);
  }
  sdy = block_sum(sdy, sh);
  sdyx = block_sum(sdyx, sh);
  if (threadIdx.x == 0) {
    if (db) db[c] += static_cast<float>(sdy);
    if (dg) dg[c] += static_cast<float>(sdyx * invstd);
  }
  if (!dx) return;
  const float k = (gamma ? gamma[c] : 1.f) * invstd;
  const float mdb = static_cast<float>(sdy / M), mdg = static_cast<float>(sdyx * invstd / M) * invstd;
  for (int64_t i = threadIdx.x; i < MP; i += blockDim.x) {
    const int64_t n = i / P, p = i % P, o = c * l.ysc + n * l.ysn + p, ox = c * l.xsc + n * l.xsn + p;
    if (p >= real_len(len, n, P)) {
      if (!accumulate) dx[ox] = 0.f;
      continue;
    }
    const float g = (!relu_y || relu_y[o] > 0.f) ? dy[o] : 0.f;
    const float v = k * (g - mdb - (x[ox] - mean) * mdg);
    if (accumulate)
      dx[ox] += v;
    else
      dx[ox] = v;
  }
}

// Eval-mode backward: dβ += Σ dy, dγ += Σ dy·x̂, dx += γ·invstd·dy (running statistics), [N,C,P].
__global__ void bn_backward_eval_k(const float* x, const float* gamma, const float* rm, const float* rv, const float* dy, float* dx, float* dg,
                                   float* db, int N, int C, int P, float eps) {
  __shared__ double sh[32];
  const int c = blockIdx.x;
  const int64_t M = int64_t(N) * P;
  const float invstd = static_cast<float>(1.0 / sqrt(double(rv[c]) + eps));
  const float mean = rm[c], k = (gamma ? gamma[c] : 1.f) * invstd;
  double sdy = 0, sdyx = 0;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t o = (i / P) * C * P + int64_t(c) * P + i % P;
    const float g = dy[o];
    sdy += g;
    sdyx += double(g) * (x[o] - mean);
    if (dx) dx[o] += k * g;
  }
  if (!dg && !db) return;
  sdy = block_sum(sdy, sh);
  sdyx = block_sum(sdyx, sh);
  if (threadIdx.x == 0) {
    if (db) db[c] += static_cast<float>(sdy);
    if (dg) dg[c] += static_cast<float>(sdyx * invstd);
  }
}

__global__ void bn_update_running_k(float* rm, float* rv, const float* mean, const float* var, int C, int64_t M, float momentum) {
  DWC_GRID_STRIDE(c, C) {
    rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + double(momentum) * mean[c]);
    const double unbiased = M > 1 ? double(var[c]) * M / (M - 1) : double(var[c]);
    rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * unbiased);
  }
}

Lay nc_layout(int N, int C, int P) {
  (void)N;
  return Lay{P, int64_t(C) * P, P, int64_t(C) * P};
}
Lay cm_layout(int N, int P, int64_t ysc, int64_t ysn) { return Lay{int64_t(N) * P, P, ysc, ysn}; }

}  // namespace

void batchnorm_forward_train(const Ctx& c, const float* x, const float* gamma, const float* beta, float* rm, float* rv, float* y, float* sm,
                             float* si, int N, int C, int P, float momentum, float eps, bool relu) {
  if (int64_t(N) * P == 0 || C == 0) return;
  bn_train_k<<<C, kBnThreads, 0, c.stream>>>(x, gamma, beta, rm, rv, y, sm, si, nullptr, N, P, nc_layout(N, C, P), momentum, eps, relu,
                                             nullptr);
  DWC_CUDA_LAUNCH_CHECK("bn_train_k");
}
void batchnorm_forward_eval(const Ctx& c, const float* x, const float* gamma, const float* beta, const float* rm, const float* rv, float* y,
                            int N, int C, int P, float eps, bool relu) {
  if (int64_t(N) * P == 0 || C == 0) return;
  bn_eval_k<<<C, kBnThreads, 0, c.stream>>>(x, gamma, beta, rm, rv, y, N, P, nc_layout(N, C, P), eps, relu, nullptr);
  DWC_CUDA_LAUNCH_CHECK("bn_eval_k");
}
void batchnorm_backward(const Ctx& c, const float* x, const float* gamma, const float* sm, const float* si, const float* dy, float* dx,
                        float* dg, float* db, int N, int C, int P, bool accumulate_dx, const float* relu_y) {
  if (int64_t(N) * P == 0 || C == 0) return;
  bn_backward_k<<<C, kBnThreads, 0, c.stream>>>(x, gamma, sm, si, dy, relu_y, dx, dg, db, N, P, nc_layout(N, C, P), accumulate_dx, nullptr);
  DWC_CUDA_LAUNCH_CHECK("bn_backward_k");
}
void batchnorm_backward_eval(const Ctx& c, const float* x, const float* gamma, const float* rm, const float* rv, const float* dy, float* dx,
                             float* dg, float* db, int N, int C, int P, float eps) {
  if (int64_t(N) * P == 0 || C == 0) return;
  bn_backward_eval_k<<<C, kBnThreads, 0, c.stream>>>(x, gamma, rm, rv, dy, dx, dg, db, N, C, P, eps);
  DWC_CUDA_LAUNCH_CHECK("bn_backward_eval_k");
}
void batchnorm_cm_forward_train(const Ctx& c, const float* x, const float* gamma, const float* beta, float* rm, float* rv, float* y,
                                int64_t ysc, int64_t ysn, float* sm, float* si, float* sv, int N, int C, int P, float momentum, float eps,
                                bool relu, const int32_t* lengths) {
  if (int64_t(N) * P == 0 || C == 0) return;
  bn_train_k<<<C, kBnThreads, 0, c.stream>>>(x, gamma, beta, rm, rv, y, sm, si, sv, N, P, cm_layout(N, P, ysc, ysn), momentum, eps, relu,
                                             lengths);
  DWC_CUDA_LAUNCH_CHECK("bn_train_k (channel-major)");
}
void batchnorm_cm_forward_eval(const Ctx& c, const float* x, const float* gamma, const float* beta, const float* rm, const float* rv,
                               float* y, int64_t ysc, int64_t ysn, int N, int C, int P, float eps, bool relu, const int32_t* lengths) {
  if (int64_t(N) * P == 0 || C == 0) return;
  bn_eval_k<<<C, kBnThreads, 0, c.stream>>>(x, gamma, beta, rm, rv, y, N, P, cm_layout(N, P, ysc, ysn), eps, relu, lengths);
  DWC_CUDA_LAUNCH_CHECK("bn_eval_k (channel-major)");
}
void batchnorm_cm_backward(const Ctx& c, const float* x, const float* gamma, const float* sm, const float* si, const float* dy, int64_t dsc,
                           int64_t dsn, const float* relu_y, float* dx, float* dg, float* db, int N, int C, int P, bool accumulate,
                           const int32_t* lengths) {
  if (int64_t(N) * P == 0 || C == 0) return;
  bn_backward_k<<<C, kBnThreads, 0, c.stream>>>(x, gamma, sm, si, dy, relu_y, dx, dg, db, N, P, cm_layout(N, P, dsc, dsn), accumulate,
                                                lengths);
  DWC_CUDA_LAUNCH_CHECK("bn_backward_k (channel-major)");
}
void batchnorm_update_running(const Ctx& c, float* rm, float* rv, const float* mean, const float* var, int C, int64_t M, float momentum) {
  if (C <= 0) return;
  bn_update_running_k<<<blocks_for(C), kThreads, 0, c.stream>>>(rm, rv, mean, var, C, M, momentum);
  DWC_CUDA_LAUNCH_CHECK("bn_update_running_k");
}

}  // namespace dwc::cuda

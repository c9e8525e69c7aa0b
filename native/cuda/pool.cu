// CUDA twin of native/kernels/pool.h: avgpool3 and its padded-sequence variant avgpool3_len (as
// gathers, no atomics), GeM (one block per (n, c) row; dp summed in double), max pool 2-D
// (backward with atomics: windows overlap), the k×k / stride k average pool (gathers).
#include <cfloat>

#include "common.cuh"

namespace dwc::cuda {

namespace {

__device__ __forceinline__ float taps3(int i, int n) { return static_cast<float>(1 + (i > 0) + (i + 1 < n)); }

__global__ void avgpool3_fwd_k(const float* x, float* y, int64_t planes, int H, int W) {
  const int64_t HW = int64_t(H) * W, n = planes * HW;
  DWC_GRID_STRIDE(i, n) {
    const int64_t pl = i / HW;
    const int h = static_cast<int>((i % HW) / W), w = static_cast<int>(i % W);
    const float* xp = x + pl * HW;
    float s = 0.f;
    for (int a = max(h - 1, 0); a <= min(h + 1, H - 1); ++a)
      for (int b = max(w - 1, 0); b <= min(w + 1, W - 1); ++b) s += xp[int64_t(a) * W + b];
    y[i] = s * (1.f / taps3(h, H)) * (1.f / taps3(w, W));
  }
}
// dx[h][w] += Σ over windows (i, j) containing (h, w) of dy[i][j] / (taps(i)·taps(j)).
__global__ void avgpool3_bwd_k(const float* dy, float* dx, int64_t planes, int H, int W) {
  const int64_t HW = int64_t(H) * W, n = planes * HW;
  DWC_GRID_STRIDE(i, n) {
    const int64_t pl = i / HW;
    const int h = static_cast<int>((i % HW) / W), w = static_cast<int>(i % W);
    const float* gp = dy + pl * HW;
    float s = 0.f;
    for (int a = max(h - 1, 0); a <= min(h + 1, H - 1); ++a)
      for (int b = max(w - 1, 0); b <= min(w + 1, W - 1); ++b) s += gp[int64_t(a) * W + b] * (1.f / taps3(a, H)) * (1.f / taps3(b, W));
    dx[i] += s;
  }
}

// z = max(x, lo), lo = max(eps, FLT_MIN) (ln needs z > 0).
__global__ void gem_fwd_k(const float* x, float p, float* y, int C, int P, const int32_t* lengths, float lo) {
  __shared__ float sh[32];
  const int64_t r = blockIdx.x;
  const int len = lengths ? lengths[r / C] : P;
  const float* xr = x + r * P;
  float s = 0.f;
  for (int i = threadIdx.x; i < len; i += blockDim.x) s += expf(p * logf(fmaxf(xr[i], lo)));
  s = block_sum(s, sh);
  if (threadIdx.x == 0) y[r] = static_cast<float>(pow(double(s) / len, 1.0 / p));
}
// dy/dx_i = y · z_i^{p−1} / (len · m) where x_i ≥ eps; dy/dp = y · (mean(z^p ln z)/(p m) − ln m / p²).
__global__ void gem_bwd_k(const float* x, float p, const float* y, const float* dy, float* dx, double* dp_acc, int C, int P,
                          const int32_t* lengths, float lo, float eps) {
  __shared__ float sh[32];
  const int64_t r = blockIdx.x;
  const int len = lengths ? lengths[r / C] : P;
  const float* xr = x + r * P;
  float s = 0.f, t = 0.f;
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    const float lz = logf(fmaxf(xr[i], lo)), zp = expf(p * lz);
    s += zp;
    t += zp * lz;
  }
  s = block_sum(s, sh);
  t = block_sum(t, sh);
  const double m = double(s) / len, g = dy[r], yr = y[r];
  if (dp_acc && threadIdx.x == 0) atomicAdd(dp_acc, g * yr * ((double(t) / len) / (p * m) - log(m) / (double(p) * p)));
  if (dx) {
    const float k = static_cast<float>(g * yr / (len * m));
    float* dr = dx + r * P;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
      const float v = xr[i];
      if (v >= eps) dr[i] += k * expf((p - 1.f) * logf(fmaxf(v, lo)));
    }
  }
}
__global__ void add_double_k(float* dst, const double* src) { *dst += static_cast<float>(*src); }

// torch max_pool2d: padding −inf, floor mode, first maximum wins, NaN propagates.
__global__ void maxpool_fwd_k(const float* x, float* y, int32_t* idx, int64_t planes, int H, int W, int Ho, int Wo, int k, int stride,
                              int pad) {
  const int64_t Po = int64_t(Ho) * Wo, n = planes * Po;
  DWC_GRID_STRIDE(i, n) {
    const int64_t pl = i / Po;
    const int oh = static_cast<int>((i % Po) / Wo), ow = static_cast<int>(i % Wo);
    const float* xp = x + pl * int64_t(H) * W;
    const int h0 = max(oh * stride - pad, 0), h1 = min(oh * stride - pad + k, H);
    const int w0 = max(ow * stride - pad, 0), w1 = min(ow * stride - pad + k, W);
    float m = -INFINITY;
    int32_t mi = h0 * W + w0;
    for (int h = h0; h < h1; ++h)
      for (int w = w0; w < w1; ++w) {
        const float v = xp[h * W + w];
        if (v > m || isnan(v)) {
          m = v;
          mi = h * W + w;
        }
      }
    y[i] = m;
    idx[i] = mi;
  }
}
__global__ void maxpool_bwd_k(const float* dy, const int32_t* idx, float* dx, int64_t planes, int64_t HW, int64_t Po) {
  const int64_t n = planes * Po;
  DWC_GRID_STRIDE(i, n) atomicAdd(dx + (i / Po) * HW + idx[i], dy[i]);
}

// Channel-major [C, N, L] rows r = c·N + n; sample n has Ln = clamp(lengths[n], 0, L) real positions.
__device__ __forceinline__ int len_of(const int32_t* lengths, int64_t r, int N, int L) { return min(max(lengths[r % N], 0), L); }
__global__ void avgpool3_len_fwd_k(const float* x, float* y, int64_t rows, int N, int L, const int32_t* lengths) {
  const int64_t n = rows * L;
  DWC_GRID_STRIDE(i, n) {
    const int64_t r = i / L;
    const int j = static_cast<int>(i % L), Ln = len_of(lengths, r, N, L);
    const float* xr = x + r * L;
    float v = 0.f;
    if (j < Ln) {
      const float a = j > 0 ? xr[j - 1] : 0.f, b = j + 1 < Ln ? xr[j + 1] : 0.f;
      v = (a + xr[j] + b) * (1.f * (1.f / taps3(j, Ln)));
    }
    y[i] = v;
  }
}
__global__ void avgpool3_len_bwd_k(const float* dy, float* dx, int64_t rows, int N, int L, const int32_t* lengths) {
  const int64_t n = rows * L;
  DWC_GRID_STRIDE(i, n) {
    const int64_t r = i / L;
    const int j = static_cast<int>(i % L), Ln = len_of(lengths, r, N, L);
    if (j >= Ln) continue;
    const float* g = dy + r * L;
    float s = 0.f;
    for (int a = j - 1; a <= j + 1; ++a)
      if (a >= 0 && a < Ln) s += g[a] * (1.f / taps3(a, Ln));
    dx[i] += s;
  }
}
__global__ void avgpool_k_fwd_k(const float* x, float* y, int64_t planes, int H, int W, int k) {
  const int Ho = H / k, Wo = W / k;
  const int64_t Po = int64_t(Ho) * Wo, n = planes * Po;
  const float inv = 1.f / static_cast<float>(k * k);
  DWC_GRID_STRIDE(i, n) {
    const int64_t pl = i / Po;
    const int oh = static_cast<int>((i % Po) / Wo), ow = static_cast<int>(i % Wo);
    const float* xp = x + pl * H * W;
    float s = 0.f;
    for (int a = 0; a < k; ++a)
      for (int b = 0; b < k; ++b) s += xp[int64_t(oh * k + a) * W + ow * k + b];
    y[i] = s * inv;
  }
}
// Each input element in the pooled area gets its window's dy / k² (floor mode: the rest nothing).
__global__ void avgpool_k_bwd_k(const float* dy, float* dx, int64_t planes, int H, int W, int k) {
  const int Ho = H / k, Wo = W / k;
  const int64_t HW = int64_t(H) * W, n = planes * HW;
  const float inv = 1.f / static_cast<float>(k * k);
  DWC_GRID_STRIDE(i, n) {
    const int64_t pl = i / HW;
    const int h = static_cast<int>((i % HW) / W), w = static_cast<int>(i % W);
    const int oh = h / k, ow = w / k;
    if (oh < Ho && ow < Wo) dx[i] += dy[pl * Ho * Wo + int64_t(oh) * Wo + ow] * inv;
  }
}

inline int gem_threads(int P) { return P <= 32 ? 32 : P <= 64 ? 64 : P <= 128 ? 128 : 256; }

}  // namespace

void avgpool3_forward(const Ctx& c, const float* x, float* y, int N, int C, int H, int W) {
  const int64_t n = int64_t(N) * C * H * W;
  if (n <= 0) return;
  avgpool3_fwd_k<<<blocks_for(n), kThreads, 0, c.stream>>>(x, y, int64_t(N) * C, H, W);
  DWC_CUDA_LAUNCH_CHECK("avgpool3_fwd_k");
}
void avgpool3_backward(const Ctx& c, const float* dy, float* dx, int N, int C, int H, int W) {
  const int64_t n = int64_t(N) * C * H * W;
  if (n <= 0) return;
  avgpool3_bwd_k<<<blocks_for(n), kThreads, 0, c.stream>>>(dy, dx, int64_t(N) * C, H, W);
  DWC_CUDA_LAUNCH_CHECK("avgpool3_bwd_k");
}
void avgpool3_len_forward(const Ctx& c, const float* x, float* y, int C, int N, int L, const int32_t* lengths) {
  const int64_t n = int64_t(C) * N * L;
  if (n <= 0) return;
  avgpool3_len_fwd_k<<<blocks_for(n), kThreads, 0, c.stream>>>(x, y, int64_t(C) * N, N, L, lengths);
  DWC_CUDA_LAUNCH_CHECK("avgpool3_len_fwd_k");
}
void avgpool3_len_backward(const Ctx& c, const float* dy, float* dx, int C, int N, int L, const int32_t* lengths) {
  const int64_t n = int64_t(C) * N * L;
  if (n <= 0) return;
  avgpool3_len_bwd_k<<<blocks_for(n), kThreads, 0, c.stream>>>(dy, dx, int64_t(C) * N, N, L, lengths);
  DWC_CUDA_LAUNCH_CHECK("avgpool3_len_bwd_k");
}
void avgpool_k_forward(const Ctx& c, const float* x, float* y, int N, int C, int H, int W, int k) {
  const int64_t n = int64_t(N) * C * (H / k) * (W / k);
  if (n <= 0) return;
  avgpool_k_fwd_k<<<blocks_for(n), kThreads, 0, c.stream>>>(x, y, int64_t(N) * C, H, W, k);
  DWC_CUDA_LAUNCH_CHECK("avgpool_k_fwd_k");
}
void avgpool_k_backward(const Ctx& c, const float* dy, float* dx, int N, int C, int H, int W, int k) {
  const int64_t n = int64_t(N) * C * H * W;
  if (n <= 0 || H / k <= 0 || W / k <= 0) return;
  avgpool_k_bwd_k<<<blocks_for(n), kThreads, 0, c.stream>>>(dy, dx, int64_t(N) * C, H, W, k);
  DWC_CUDA_LAUNCH_CHECK("avgpool_k_bwd_k");
}
void gem_forward(const Ctx& c, const float* x, float p, float* y, int N, int C, int P, const int32_t* lengths, float eps) {
  const int64_t rows = int64_t(N) * C;
  if (rows <= 0) return;
  gem_fwd_k<<<static_cast<unsigned>(rows), gem_threads(P), 0, c.stream>>>(x, p, y, C, P, lengths, fmaxf(eps, FLT_MIN));
  DWC_CUDA_LAUNCH_CHECK("gem_fwd_k");
}
void gem_backward(const Ctx& c, const float* x, float p, const float* y, const float* dy, float* dx, float* dp, int N, int C, int P,
                  const int32_t* lengths, float eps) {
  const int64_t rows = int64_t(N) * C;
  if (rows <= 0 || (!dx && !dp)) return;
  double* acc = nullptr;
  if (dp) {
    acc = static_cast<double*>(c.scratch->get(kScratchA, sizeof(double)));
    DWC_CUDA_CHECK(cudaMemsetAsync(acc, 0, sizeof(double), c.stream));
  }
  gem_bwd_k<<<static_cast<unsigned>(rows), gem_threads(P), 0, c.stream>>>(x, p, y, dy, dx, acc, C, P, lengths, fmaxf(eps, FLT_MIN), eps);
  DWC_CUDA_LAUNCH_CHECK("gem_bwd_k");
  if (dp) {
    add_double_k<<<1, 1, 0, c.stream>>>(dp, acc);
    DWC_CUDA_LAUNCH_CHECK("add_double_k");
  }
}
void maxpool2d_forward(const Ctx& c, const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int stride, int pad) {
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  const int64_t n = int64_t(N) * C * Ho * Wo;
  if (n <= 0) return;
  maxpool_fwd_k<<<blocks_for(n), kThreads, 0, c.stream>>>(x, y, idx, int64_t(N) * C, H, W, Ho, Wo, k, stride, pad);
  DWC_CUDA_LAUNCH_CHECK("maxpool_fwd_k");
}
void maxpool2d_backward(const Ctx& c, const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo) {
  const int64_t n = int64_t(N) * C * Ho * Wo;
  if (n <= 0) return;
  maxpool_bwd_k<<<blocks_for(n), kThreads, 0, c.stream>>>(dy, idx, dx, int64_t(N) * C, int64_t(H) * W, int64_t(Ho) * Wo);
  DWC_CUDA_LAUNCH_CHECK("maxpool_bwd_k");
}

}  // namespace dwc::cuda

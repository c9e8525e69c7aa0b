// CUDA twins of native/kernels/elementwise.h and optim.h (no cuBLAS needed, so CI compiles
// this file wherever nvcc exists). Same semantics as the CPU kernels: backward accumulates,
// dropout masks come from the same counter-based RNG, so CPU and GPU masks are identical.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_check.h"

namespace dwc::cuda {

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Same as dwc::Rng::uniform (native/core/rng.cpp).
__device__ __forceinline__ float rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  uint64_t b = mix64(mix64(seed ^ mix64(stream)) + index);
  return static_cast<float>(b >> 40) * (1.0f / 16777216.0f);
}

__global__ void relu_forward_k(const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] = x[i] > 0.f ? x[i] : 0.f;
}
__global__ void relu_backward_k(const float* y, const float* dy, float* dx, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) dx[i] += y[i] > 0.f ? dy[i] : 0.f;
}
__global__ void sigmoid_forward_k(const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] = 1.f / (1.f + __expf(-x[i]));
}
__global__ void sigmoid_backward_k(const float* y, const float* dy, float* dx, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) dx[i] += dy[i] * y[i] * (1.f - y[i]);
}
__global__ void dropout_forward_k(const float* x, float* y, float* mask, int64_t n, float p, uint64_t seed, uint64_t stream) {
  const float scale = 1.f / (1.f - p);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float m = p <= 0.f ? 1.f : (rng_uniform(seed, stream, (uint64_t)i) >= p ? scale : 0.f);
    mask[i] = m;
    y[i] = x[i] * m;
  }
}
// torch.optim.Adam with L2 weight decay (spec §6), one pass over a parameter range.
__global__ void adam_k(float* p, const float* g, float* m, float* v, int64_t n, float lr, float b1, float b2, float eps, float wd, float bc1,
                       float bc2_sqrt) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float gi = g[i] + wd * p[i];
    float mi = b1 * m[i] + (1.f - b1) * gi;
    float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= (lr / bc1) * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

static inline int blocks_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

void relu_forward(const float* x, float* y, int64_t n, cudaStream_t s) {
  relu_forward_k<<<blocks_for(n), 256, 0, s>>>(x, y, n);
  DWC_CUDA_CHECK(cudaGetLastError());
}
void relu_backward(const float* y, const float* dy, float* dx, int64_t n, cudaStream_t s) {
  relu_backward_k<<<blocks_for(n), 256, 0, s>>>(y, dy, dx, n);
  DWC_CUDA_CHECK(cudaGetLastError());
}
void sigmoid_forward(const float* x, float* y, int64_t n, cudaStream_t s) {
  sigmoid_forward_k<<<blocks_for(n), 256, 0, s>>>(x, y, n);
  DWC_CUDA_CHECK(cudaGetLastError());
}
void sigmoid_backward(const float* y, const float* dy, float* dx, int64_t n, cudaStream_t s) {
  sigmoid_backward_k<<<blocks_for(n), 256, 0, s>>>(y, dy, dx, n);
  DWC_CUDA_CHECK(cudaGetLastError());
}
void dropout_forward(const float* x, float* y, float* mask, int64_t n, float p, uint64_t seed, uint64_t stream, cudaStream_t s) {
  dropout_forward_k<<<blocks_for(n), 256, 0, s>>>(x, y, mask, n, p, seed, stream);
  DWC_CUDA_CHECK(cudaGetLastError());
}
void adam_update(float* p, const float* g, float* m, float* v, int64_t n, float lr, float b1, float b2, float eps, float wd, int64_t step,
                 cudaStream_t s) {
  float bc1 = 1.f - powf(b1, (float)step);
  float bc2_sqrt = sqrtf(1.f - powf(b2, (float)step));
  adam_k<<<blocks_for(n), 256, 0, s>>>(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2_sqrt);
  DWC_CUDA_CHECK(cudaGetLastError());
}

}  // namespace dwc::cuda

// Shared device helpers of the CUDA twins: launch sizes, block reductions, the cuBLAS row-major
// GEMM wrapper. Included by native/cuda/*.cu only.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_check.h"
#include "kernels.h"

namespace dwc::cuda {

constexpr int kThreads = 256;

inline int blocks_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<int>(b < 1048576 ? (b > 0 ? b : 1) : 1048576);  // grid-stride loops cover the rest
}

// Launch a 1-D elementwise kernel over n items on the context's stream (nothing for n = 0), checked.
#define DWC_LAUNCH_1D(kernel, n, ...)                                \
  do {                                                               \
    if ((n) > 0) {                                                   \
      kernel<<<blocks_for(n), kThreads, 0, c.stream>>>(__VA_ARGS__); \
      DWC_CUDA_LAUNCH_CHECK(#kernel);                                \
    }                                                                \
  } while (0)

#define DWC_GRID_STRIDE(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

// Sum over the block (any blockDim multiple of 32, up to 1024); every thread gets the result.
// sh: __shared__ T[32]. Safe to call repeatedly with the same sh.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    v = lane < nw ? sh[lane] : T(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) sh[0] = v;
  }
  __syncthreads();
  return sh[0];
}

__device__ __forceinline__ float block_max(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    v = lane < nw ? sh[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0) sh[0] = v;
  }
  __syncthreads();
  return sh[0];
}

}  // namespace dwc::cuda

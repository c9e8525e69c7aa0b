// CUDA twin of native/kernels/tensorops.h: concat / split and embedding lookup.
#include "common.cuh"

namespace dwc::cuda {

namespace {

// y[o, off + k] (row length total·inner) = x[o, k] for k < len = size·inner.
__global__ void concat_part_k(const float* x, float* y, int64_t outer, int64_t len, int64_t off, int64_t row) {
  const int64_t n = outer * len;
  DWC_GRID_STRIDE(i, n) y[(i / len) * row + off + (i % len)] = x[i];
}
__global__ void split_part_add_k(float* dx, const float* dy, int64_t outer, int64_t len, int64_t off, int64_t row) {
  const int64_t n = outer * len;
  DWC_GRID_STRIDE(i, n) dx[i] += dy[(i / len) * row + off + (i % len)];
}
__global__ void embedding_fwd_k(const int32_t* ids, const float* table, float* y, int64_t n, int64_t E) {
  const int64_t m = n * E;
  DWC_GRID_STRIDE(i, m) y[i] = table[static_cast<int64_t>(ids[i / E]) * E + (i % E)];
}
// Scatter-add with atomics (duplicate ids): the sum order is not fixed, unlike the CPU kernel's.
__global__ void embedding_bwd_k(const int32_t* ids, const float* dy, float* dtable, int64_t n, int64_t E) {
  const int64_t m = n * E;
  DWC_GRID_STRIDE(i, m) atomicAdd(dtable + static_cast<int64_t>(ids[i / E]) * E + (i % E), dy[i]);
}

}  // namespace

void concat_forward(const Ctx& c, int n, const float* const* xs, const int64_t* sizes, int64_t outer, int64_t inner, float* y) {
  int64_t total = 0;
  for (int i = 0; i < n; ++i) total += sizes[i];
  int64_t off = 0;
  for (int i = 0; i < n; ++i) {
    const int64_t len = sizes[i] * inner;
    if (outer * len > 0) {
      concat_part_k<<<blocks_for(outer * len), kThreads, 0, c.stream>>>(xs[i], y, outer, len, off, total * inner);
      DWC_CUDA_LAUNCH_CHECK("concat_part_k");
    }
    off += len;
  }
}

void concat_backward(const Ctx& c, int n, float* const* dxs, const int64_t* sizes, int64_t outer, int64_t inner, const float* dy) {
  int64_t total = 0;
  for (int i = 0; i < n; ++i) total += sizes[i];
  int64_t off = 0;
  for (int i = 0; i < n; ++i) {
    const int64_t len = sizes[i] * inner;
    if (dxs[i] && outer * len > 0) {
      split_part_add_k<<<blocks_for(outer * len), kThreads, 0, c.stream>>>(dxs[i], dy, outer, len, off, total * inner);
      DWC_CUDA_LAUNCH_CHECK("split_part_add_k");
    }
    off += len;
  }
}

void embedding_forward(const Ctx& c, const int32_t* ids, const float* table, float* y, int64_t n, int64_t V, int64_t E) {
  (void)V;
  if (n * E <= 0) return;
  embedding_fwd_k<<<blocks_for(n * E), kThreads, 0, c.stream>>>(ids, table, y, n, E);
  DWC_CUDA_LAUNCH_CHECK("embedding_fwd_k");
}

void embedding_backward(const Ctx& c, const int32_t* ids, const float* dy, float* dtable, int64_t n, int64_t V, int64_t E) {
  (void)V;
  if (n * E <= 0) return;
  embedding_bwd_k<<<blocks_for(n * E), kThreads, 0, c.stream>>>(ids, dy, dtable, n, E);
  DWC_CUDA_LAUNCH_CHECK("embedding_bwd_k");
}

}  // namespace dwc::cuda

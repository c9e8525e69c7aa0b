// CUDA twin of native/kernels/rowops.h: one block per row, block reductions.
#include "common.cuh"

namespace dwc::cuda {

namespace {

constexpr float kNormEps = 1e-12f;  // spec §2 norm(x)

__device__ __forceinline__ float row_max(const float* x, int64_t cols, float scale, float* sh) {
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, scale * x[j]);
  return block_max(m, sh);
}

__global__ void softmax_fwd_k(const float* x, float* y, int64_t cols, float scale) {
  __shared__ float sh[32];
  const float* xr = x + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float m = row_max(xr, cols, scale, sh);
  if (!isfinite(m)) m = 0.f;
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += expf(scale * xr[j] - m);
  s = block_sum(s, sh);
  const float inv = 1.f / s;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = expf(scale * xr[j] - m) * inv;
}
__global__ void softmax_bwd_k(const float* y, const float* dy, float* dx, int64_t cols, float scale) {
  __shared__ float sh[32];
  const int64_t o = blockIdx.x * cols;
  float d = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) d += dy[o + j] * y[o + j];
  d = block_sum(d, sh);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) dx[o + j] += scale * y[o + j] * (dy[o + j] - d);
}
__global__ void log_softmax_fwd_k(const float* x, float* y, int64_t cols, float scale) {
  __shared__ float sh[32];
  const float* xr = x + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float m = row_max(xr, cols, scale, sh);
  if (!isfinite(m)) m = 0.f;
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += expf(scale * xr[j] - m);
  s = block_sum(s, sh);
  const float ls = logf(s);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = (scale * xr[j] - m) - ls;  // as torch: (z − max) − log Σ
}
__global__ void log_softmax_bwd_k(const float* y, const float* dy, float* dx, int64_t cols, float scale) {
  __shared__ float sh[32];
  const int64_t o = blockIdx.x * cols;
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += dy[o + j];
  s = block_sum(s, sh);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) dx[o + j] += scale * (dy[o + j] - expf(y[o + j]) * s);
}
__global__ void l2norm_fwd_k(const float* x, float* y, float* norms, int64_t cols) {
  __shared__ float sh[32];
  const int64_t o = blockIdx.x * cols;
  float ss = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) ss += x[o + j] * x[o + j];
  ss = block_sum(ss, sh);
  const float n = fmaxf(sqrtf(ss), kNormEps);
  if (threadIdx.x == 0) norms[blockIdx.x] = n;
  const float inv = 1.f / n;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) y[o + j] = x[o + j] * inv;
}
// dx += (dy − y·⟨y, dy⟩) / n; a clamped norm has no gradient through the clamp (dx += dy / n).
__global__ void l2norm_bwd_k(const float* y, const float* norms, const float* dy, float* dx, int64_t cols) {
  __shared__ double sh[32];
  const int64_t o = blockIdx.x * cols;
  const float nr = norms[blockIdx.x];
  double dd = 0.0;  // double: g − y(y·g) cancels
  if (nr > kNormEps)
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) dd += static_cast<double>(y[o + j]) * dy[o + j];
  const float d = static_cast<float>(block_sum(dd, sh));
  const float inv = 1.f / nr;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) dx[o + j] += (dy[o + j] - y[o + j] * d) * inv;
}

inline int row_threads(int64_t cols) { return cols <= 64 ? 64 : cols <= 128 ? 128 : 256; }

}  // namespace

// rows become grid.x (up to 2^31 − 1 blocks).
#define DWC_ROW_LAUNCH(kernel, rows, cols, ...)                                   \
  do {                                                                            \
    if ((rows) > 0 && (cols) > 0) {                                               \
      kernel<<<static_cast<unsigned>(rows), row_threads(cols), 0, c.stream>>>(__VA_ARGS__); \
      DWC_CUDA_LAUNCH_CHECK(#kernel);                                             \
    }                                                                             \
  } while (0)

void softmax_rows_forward(const Ctx& c, const float* x, float* y, int64_t rows, int64_t cols, float scale) {
  DWC_ROW_LAUNCH(softmax_fwd_k, rows, cols, x, y, cols, scale);
}
void softmax_rows_backward(const Ctx& c, const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, float scale) {
  DWC_ROW_LAUNCH(softmax_bwd_k, rows, cols, y, dy, dx, cols, scale);
}
void log_softmax_rows_forward(const Ctx& c, const float* x, float* y, int64_t rows, int64_t cols, float scale) {
  DWC_ROW_LAUNCH(log_softmax_fwd_k, rows, cols, x, y, cols, scale);
}
void log_softmax_rows_backward(const Ctx& c, const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, float scale) {
  DWC_ROW_LAUNCH(log_softmax_bwd_k, rows, cols, y, dy, dx, cols, scale);
}
void l2norm_rows_forward(const Ctx& c, const float* x, float* y, float* norms, int64_t rows, int64_t cols) {
  DWC_ROW_LAUNCH(l2norm_fwd_k, rows, cols, x, y, norms, cols);
}
void l2norm_rows_backward(const Ctx& c, const float* y, const float* norms, const float* dy, float* dx, int64_t rows, int64_t cols) {
  DWC_ROW_LAUNCH(l2norm_bwd_k, rows, cols, y, norms, dy, dx, cols);
}

}  // namespace dwc::cuda

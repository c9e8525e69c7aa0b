// CUDA twins of native/kernels/elementwise.h and optim.h. Same semantics as the CPU kernels:
// backward accumulates; dropout masks come from the same counter-based RNG (core/rng.h), so CPU
// and GPU masks are identical for the same (seed, stream).
#include <cmath>

#include "common.cuh"

namespace dwc::cuda {

namespace {

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
// dwc::Rng::uniform (core/rng.cpp); base = mix(seed ^ mix(stream)) is computed once on the host.
__device__ __forceinline__ float rng_uniform(uint64_t base, uint64_t index) {
  return static_cast<float>(mix64(base + index) >> 40) * (1.0f / 16777216.0f);
}

__global__ void relu_forward_k(const float* x, float* y, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] = x[i] > 0.f ? x[i] : 0.f; }
__global__ void relu_backward_k(const float* y, const float* dy, float* dx, int64_t n) {
  DWC_GRID_STRIDE(i, n) dx[i] += y[i] > 0.f ? dy[i] : 0.f;
}
__global__ void sigmoid_forward_k(const float* x, float* y, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] = 1.f / (1.f + expf(-x[i])); }
__global__ void sigmoid_backward_k(const float* y, const float* dy, float* dx, int64_t n) {
  DWC_GRID_STRIDE(i, n) dx[i] += dy[i] * y[i] * (1.f - y[i]);
}
__global__ void dropout_forward_k(const float* x, float* y, float* mask, int64_t n, float p, float scale, uint64_t base) {
  DWC_GRID_STRIDE(i, n) {
    const float m = p <= 0.f ? 1.f : (rng_uniform(base, static_cast<uint64_t>(i)) >= p ? scale : 0.f);
    mask[i] = m;
    y[i] = x[i] * m;
  }
}
__global__ void mul_k(const float* a, const float* b, float* y, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] = a[i] * b[i]; }
__global__ void mul_add_k(const float* a, const float* b, float* y, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] += a[i] * b[i]; }
__global__ void add_inplace_k(float* y, const float* x, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] += x[i]; }
__global__ void add_k(const float* a, const float* b, float* y, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] = a[i] + b[i]; }
__global__ void add_relu_k(const float* a, const float* b, float* y, int64_t n) {
  DWC_GRID_STRIDE(i, n) {
    const float v = a[i] + b[i];
    y[i] = v > 0.f ? v : 0.f;
  }
}
// torch.optim.Adam (spec §6), the CPU kernel's operation order (kernels/optim.cpp); zero_grad
// writes 0 into g after reading it (the fused zeroing, kernels/optim.h).
__global__ void adam_k(float* p, float* g, float* m, float* v, int64_t n, float b1, float b2, float a1, float a2, float step_size,
                       float bc2_sqrt, float eps, float wd, bool zero_grad) {
  DWC_GRID_STRIDE(i, n) {
    const float pi = p[i];
    const float gi = g[i] + wd * pi;
    if (zero_grad) g[i] = 0.f;
    const float mi = b1 * m[i] + a1 * gi;
    const float vi = b2 * v[i] + a2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
  }
}

}  // namespace

void relu_forward(const Ctx& c, const float* x, float* y, int64_t n) { DWC_LAUNCH_1D(relu_forward_k, n, x, y, n); }
void relu_backward(const Ctx& c, const float* y, const float* dy, float* dx, int64_t n) { DWC_LAUNCH_1D(relu_backward_k, n, y, dy, dx, n); }
void sigmoid_forward(const Ctx& c, const float* x, float* y, int64_t n) { DWC_LAUNCH_1D(sigmoid_forward_k, n, x, y, n); }
void sigmoid_backward(const Ctx& c, const float* y, const float* dy, float* dx, int64_t n) {
  DWC_LAUNCH_1D(sigmoid_backward_k, n, y, dy, dx, n);
}
void dropout_forward(const Ctx& c, const float* x, float* y, float* mask, int64_t n, float p, const Rng& rng) {
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
  const uint64_t base = Rng::mix(rng.seed ^ Rng::mix(rng.stream));
  DWC_LAUNCH_1D(dropout_forward_k, n, x, y, mask, n, p, scale, base);
}
void dropout_backward(const Ctx& c, const float* mask, const float* dy, float* dx, int64_t n) { DWC_LAUNCH_1D(mul_add_k, n, mask, dy, dx, n); }
void mul_forward(const Ctx& c, const float* a, const float* b, float* y, int64_t n) { DWC_LAUNCH_1D(mul_k, n, a, b, y, n); }
void mul_backward(const Ctx& c, const float* a, const float* b, const float* dy, float* da, float* db, int64_t n) {
  if (da) DWC_LAUNCH_1D(mul_add_k, n, dy, b, da, n);
  if (db) DWC_LAUNCH_1D(mul_add_k, n, dy, a, db, n);
}
void add_inplace(const Ctx& c, float* y, const float* x, int64_t n) { DWC_LAUNCH_1D(add_inplace_k, n, y, x, n); }
void add_forward(const Ctx& c, const float* a, const float* b, float* y, int64_t n) { DWC_LAUNCH_1D(add_k, n, a, b, y, n); }
void add_relu_forward(const Ctx& c, const float* a, const float* b, float* y, int64_t n) { DWC_LAUNCH_1D(add_relu_k, n, a, b, y, n); }
void add_backward(const Ctx& c, const float* dy, float* da, float* db, int64_t n) {
  if (da) DWC_LAUNCH_1D(add_inplace_k, n, da, dy, n);
  if (db) DWC_LAUNCH_1D(add_inplace_k, n, db, dy, n);
}
void adam_update(const Ctx& c, float* p, float* g, float* m, float* v, int64_t n, float lr, float b1, float b2, float eps, float wd,
                 int64_t step, bool zero_grad) {
  const double t = static_cast<double>(step);
  const float step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(b1), t)));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(b2), t)));
  DWC_LAUNCH_1D(adam_k, n, p, g, m, v, n, b1, b2, 1.f - b1, 1.f - b2, step_size, bc2_sqrt, eps, wd, zero_grad);
}

}  // namespace dwc::cuda

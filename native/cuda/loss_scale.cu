// CUDA twin of native/kernels/loss_scale.h (dynamic loss scaling, docs/CUDA.md "Loss scaling"):
// one pass that unscales the gradients and raises a device flag on inf/NaN; nothing is read back
// here (the trainer downloads the flag once per step).
#include "common.cuh"

namespace dwc::cuda {

namespace {

__global__ void unscale_check_k(float* g, int64_t n, float inv_scale, float* found_inf) {
  bool bad = false;
  DWC_GRID_STRIDE(i, n) {
    const float v = g[i] * inv_scale;
    g[i] = v;
    bad = bad || !isfinite(v);
  }
  // one write per warp that saw a bad value (every writer stores the same 1)
  if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) *found_inf = 1.f;
}

}  // namespace

void unscale_check(const Ctx& c, float* g, int64_t n, float inv_scale, float* found_inf) {
  DWC_LAUNCH_1D(unscale_check_k, n, g, n, inv_scale, found_inf);
}

}  // namespace dwc::cuda

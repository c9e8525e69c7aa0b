// Dynamic loss scaling's one kernel (docs/CUDA.md "Loss scaling"; the scaler is model code,
// trainer.cpp): unscale a gradient buffer and note whether any element is not finite.
#pragma once
#include <cstdint>

namespace dwc::cpu {

// g[i] *= inv_scale; *found_inf = 1 when any g[i] is then inf or NaN (left as it was otherwise).
void unscale_check(float* g, int64_t n, float inv_scale, float* found_inf);

}  // namespace dwc::cpu

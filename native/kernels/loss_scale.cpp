// Dynamic loss scaling's kernel (loss_scale.h).
#include "loss_scale.h"

#include <cmath>

namespace dwc::cpu {

void unscale_check(float* g, int64_t n, float inv_scale, float* found_inf) {
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    g[i] *= inv_scale;
    bad = bad || !std::isfinite(g[i]);
  }
  if (bad) *found_inf = 1.f;
}

}  // namespace dwc::cpu

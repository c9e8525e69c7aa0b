#include "optim.h"

#include <cmath>

#include "../core/op.h"

namespace dwc::cpu {

// torch.optim.Adam (single-tensor path, spec §6): g += wd·p; m = β1·m + (1−β1)·g;
// v = β2·v + (1−β2)·g²; p −= (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps).
void adam_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps,
                 float weight_decay, int64_t step) {
  const double t = static_cast<double>(step);
  const float step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(beta1), t)));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), t)));
  const float a1 = 1.f - beta1, a2 = 1.f - beta2;
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] + weight_decay * param[i];
    const float mi = beta1 * m[i] + a1 * g;
    const float vi = beta2 * v[i] + a2 * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
  }
}

// ---- ops (JS tests / benchmarks) ----
DWC_REGISTER_OP("adam_update",
                "param, grad, m, v; lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0, step (>= 1) -> param, m, v (new tensors)",
                [](OpCtx& c) {
                  const Tensor& p = c.in("param");
                  const Tensor& g = c.in("grad");
                  const Tensor& m = c.in("m");
                  const Tensor& v = c.in("v");
                  c.expect_shape(g, "grad", p.shape);
                  c.expect_shape(m, "m", p.shape);
                  c.expect_shape(v, "v", p.shape);
                  const double lr = c.attr("lr");
                  const double b1 = c.attr_or("beta1", 0.9), b2 = c.attr_or("beta2", 0.999);
                  const double eps = c.attr_or("eps", 1e-8), wd = c.attr_or("weight_decay", 0.0);
                  const int64_t step = c.int_attr("step");
                  DWC_ARG_CHECK(lr >= 0, c.op_name << ": option 'lr' must be >= 0, got " << lr);
                  DWC_ARG_CHECK(b1 >= 0 && b1 < 1, c.op_name << ": option 'beta1' must be in [0, 1), got " << b1);
                  DWC_ARG_CHECK(b2 >= 0 && b2 < 1, c.op_name << ": option 'beta2' must be in [0, 1), got " << b2);
                  DWC_ARG_CHECK(eps >= 0, c.op_name << ": option 'eps' must be >= 0, got " << eps);
                  DWC_ARG_CHECK(wd >= 0, c.op_name << ": option 'weight_decay' must be >= 0, got " << wd);
                  DWC_ARG_CHECK(step >= 1, c.op_name << ": option 'step' must be >= 1 (the step number after increment), got " << step);
                  Tensor& po = c.out_copy("param", p);
                  Tensor& mo = c.out_copy("m", m);
                  Tensor& vo = c.out_copy("v", v);
                  adam_update(po.f32(), g.f32(), mo.f32(), vo.f32(), p.numel(), static_cast<float>(lr), static_cast<float>(b1),
                              static_cast<float>(b2), static_cast<float>(eps), static_cast<float>(wd), step);
                });

}  // namespace dwc::cpu

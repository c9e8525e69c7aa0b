#include "optim.h"

#include <cmath>
#ifdef __SSE2__
#include <immintrin.h>
#endif

#include "../core/op.h"

namespace dwc::cpu {

// torch.optim.Adam (single-tensor path, spec §6): g += wd·p; m = β1·m + (1−β1)·g;
// v = β2·v + (1−β2)·g²; p −= (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps).
namespace {
inline void adam_elem(float& p, float g, float& m, float& v, float b1, float b2, float a1, float a2, float step_size, float bc2_sqrt,
                      float eps, float wd) {
  g += wd * p;
  m = b1 * m + a1 * g;
  v = b2 * v + a2 * g * g;
  p -= step_size * (m / (std::sqrt(v) / bc2_sqrt + eps));
}
}  // namespace

void adam_update(float* param, float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps,
                 float weight_decay, int64_t step, bool zero_grad) {
  const double t = static_cast<double>(step);
  const float step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(beta1), t)));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), t)));
  const float a1 = 1.f - beta1, a2 = 1.f - beta2;
#ifdef __SSE2__
  // SSE by hand: GCC will not vectorise std::sqrt under -fmath-errno. Same operation order as torch.
  const int64_t nv = n / 4;
  const __m128 vb1 = _mm_set1_ps(beta1), vb2 = _mm_set1_ps(beta2), va1 = _mm_set1_ps(a1), va2 = _mm_set1_ps(a2);
  const __m128 vss = _mm_set1_ps(step_size), vbc = _mm_set1_ps(bc2_sqrt), veps = _mm_set1_ps(eps), vwd = _mm_set1_ps(weight_decay);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t k = 0; k < nv; ++k) {
    const int64_t i = 4 * k;
    __m128 p = _mm_loadu_ps(param + i);
    const __m128 g = _mm_add_ps(_mm_loadu_ps(grad + i), _mm_mul_ps(vwd, p));
    if (zero_grad) _mm_storeu_ps(grad + i, _mm_setzero_ps());
    const __m128 mi = _mm_add_ps(_mm_mul_ps(vb1, _mm_loadu_ps(m + i)), _mm_mul_ps(va1, g));
    const __m128 vi = _mm_add_ps(_mm_mul_ps(vb2, _mm_loadu_ps(v + i)), _mm_mul_ps(_mm_mul_ps(va2, g), g));
    _mm_storeu_ps(m + i, mi);
    _mm_storeu_ps(v + i, vi);
    const __m128 denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vi), vbc), veps);
    p = _mm_sub_ps(p, _mm_mul_ps(vss, _mm_div_ps(mi, denom)));
    _mm_storeu_ps(param + i, p);
  }
  for (int64_t i = 4 * nv; i < n; ++i) {
    adam_elem(param[i], grad[i], m[i], v[i], beta1, beta2, a1, a2, step_size, bc2_sqrt, eps, weight_decay);
    if (zero_grad) grad[i] = 0.f;
  }
#else
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    adam_elem(param[i], grad[i], m[i], v[i], beta1, beta2, a1, a2, step_size, bc2_sqrt, eps, weight_decay);
    if (zero_grad) grad[i] = 0.f;
  }
#endif
}

// ---- ops (JS tests / benchmarks) ----
DWC_REGISTER_OP("adam_update",
                "param, grad, m, v; lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0, step (>= 1), zero_grad=0 -> param, m, v, "
                "grad (new tensors; grad: zeros under zero_grad, else a copy)",
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
                  Tensor& go = c.out_copy("grad", g);
                  adam_update(po.f32(), go.f32(), mo.f32(), vo.f32(), p.numel(), static_cast<float>(lr), static_cast<float>(b1),
                              static_cast<float>(b2), static_cast<float>(eps), static_cast<float>(wd), step, c.int_attr_or("zero_grad", 0) != 0);
                });

}  // namespace dwc::cpu

#include "optim.h"

#include <algorithm>
#include <cmath>
#ifdef __SSE2__
#include <immintrin.h>
#endif

#include "../core/cpu_features.h"
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

namespace {
struct AdamK {
  float b1, b2, a1, a2, step_size, bc2_sqrt, eps, wd;
};

// One span [0, n) of the update; the vector paths do exactly the scalar operations (separate
// multiplies and adds, no FMA; IEEE division and square root), so every width rounds alike.
void adam_span_base(float* param, float* grad, float* m, float* v, int64_t n, const AdamK& k, bool zero_grad) {
  int64_t i = 0;
#ifdef __SSE2__
  // SSE by hand: GCC will not vectorise std::sqrt under -fmath-errno. Same operation order as torch.
  const __m128 vb1 = _mm_set1_ps(k.b1), vb2 = _mm_set1_ps(k.b2), va1 = _mm_set1_ps(k.a1), va2 = _mm_set1_ps(k.a2);
  const __m128 vss = _mm_set1_ps(k.step_size), vbc = _mm_set1_ps(k.bc2_sqrt), veps = _mm_set1_ps(k.eps), vwd = _mm_set1_ps(k.wd);
  for (; i + 4 <= n; i += 4) {
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
#endif
  for (; i < n; ++i) {
    adam_elem(param[i], grad[i], m[i], v[i], k.b1, k.b2, k.a1, k.a2, k.step_size, k.bc2_sqrt, k.eps, k.wd);
    if (zero_grad) grad[i] = 0.f;
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// AVX2 without FMA ("avx2" does not enable FMA in GCC, so nothing is contracted): the same values
// as adam_span_base, 8 lanes at a time.
__attribute__((target("avx2"))) void adam_span_avx2(float* param, float* grad, float* m, float* v, int64_t n, const AdamK& k,
                                                    bool zero_grad) {
  const __m256 vb1 = _mm256_set1_ps(k.b1), vb2 = _mm256_set1_ps(k.b2), va1 = _mm256_set1_ps(k.a1), va2 = _mm256_set1_ps(k.a2);
  const __m256 vss = _mm256_set1_ps(k.step_size), vbc = _mm256_set1_ps(k.bc2_sqrt), veps = _mm256_set1_ps(k.eps),
               vwd = _mm256_set1_ps(k.wd);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 p = _mm256_loadu_ps(param + i);
    const __m256 g = _mm256_add_ps(_mm256_loadu_ps(grad + i), _mm256_mul_ps(vwd, p));
    if (zero_grad) _mm256_storeu_ps(grad + i, _mm256_setzero_ps());
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(va1, g));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(va2, g), g));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbc), veps);
    p = _mm256_sub_ps(p, _mm256_mul_ps(vss, _mm256_div_ps(mi, denom)));
    _mm256_storeu_ps(param + i, p);
  }
  adam_span_base(param + i, grad + i, m + i, v + i, n - i, k, zero_grad);
}
#endif
}  // namespace

void adam_update(float* param, float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps,
                 float weight_decay, int64_t step, bool zero_grad) {
  const double t = static_cast<double>(step);
  AdamK k;
  k.b1 = beta1;
  k.b2 = beta2;
  k.a1 = 1.f - beta1;
  k.a2 = 1.f - beta2;
  k.step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(beta1), t)));
  k.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), t)));
  k.eps = eps;
  k.wd = weight_decay;
  auto span = &adam_span_base;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  if (cpu_features().avx2) span = &adam_span_avx2;
#endif
  // spans of 16 Ki floats (a multiple of every vector width), shared out statically
  constexpr int64_t kSpan = 16384;
  const int64_t spans = (n + kSpan - 1) / kSpan;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t s = 0; s < spans; ++s) {
    const int64_t a = s * kSpan;
    span(param + a, grad + a, m + a, v + a, std::min(kSpan, n - a), k, zero_grad);
  }
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

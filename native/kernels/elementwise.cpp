#include "elementwise.h"

#include <cmath>

#include "../core/op.h"

namespace dwc::cpu {

void relu_forward(const float* x, float* y, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
}

void relu_backward(const float* y, const float* dy, float* dx, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dx[i] += y[i] > 0.f ? dy[i] : 0.f;
}

void sigmoid_forward(const float* x, float* y, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = 1.f / (1.f + std::exp(-x[i]));
}

void sigmoid_backward(const float* y, const float* dy, float* dx, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dx[i] += dy[i] * y[i] * (1.f - y[i]);
}

void dropout_forward(const float* x, float* y, float* mask, int64_t n, float p, const Rng& rng) {
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float m = p <= 0.f ? 1.f : (rng.uniform(static_cast<uint64_t>(i)) >= p ? scale : 0.f);
    mask[i] = m;
    y[i] = x[i] * m;
  }
}

void dropout_backward(const float* mask, const float* dy, float* dx, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dx[i] += dy[i] * mask[i];
}

void mul_forward(const float* a, const float* b, float* y, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}

void mul_backward(const float* a, const float* b, const float* dy, float* da, float* db, int64_t n) {
  if (da) {
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; ++i) da[i] += dy[i] * b[i];
  }
  if (db) {
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; ++i) db[i] += dy[i] * a[i];
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void add_forward(const float* a, const float* b, float* y, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void add_relu_forward(const float* a, const float* b, float* y, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float v = a[i] + b[i];
    y[i] = v > 0.f ? v : 0.f;
  }
}

void add_backward(const float* dy, float* da, float* db, int64_t n) {
  if (da) add_inplace(da, dy, n);
  if (db) add_inplace(db, dy, n);
}

// ---- ops (JS tests / benchmarks) ----
DWC_REGISTER_OP("relu_forward", "x -> y", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  relu_forward(x.f32(), c.out("y", x.shape).f32(), x.numel());
});
DWC_REGISTER_OP("relu_backward", "y, dy -> dx", [](OpCtx& c) {
  const Tensor& y = c.in("y");
  const Tensor& dy = c.in("dy");
  c.expect_shape(dy, "dy", y.shape);
  relu_backward(y.f32(), dy.f32(), c.out("dx", y.shape).f32(), y.numel());
});
DWC_REGISTER_OP("sigmoid_forward", "x -> y", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  sigmoid_forward(x.f32(), c.out("y", x.shape).f32(), x.numel());
});
DWC_REGISTER_OP("sigmoid_backward", "y, dy -> dx", [](OpCtx& c) {
  const Tensor& y = c.in("y");
  const Tensor& dy = c.in("dy");
  c.expect_shape(dy, "dy", y.shape);
  sigmoid_backward(y.f32(), dy.f32(), c.out("dx", y.shape).f32(), y.numel());
});
DWC_REGISTER_OP("dropout_forward", "x; p, seed, stream -> y, mask", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  double p = c.attr("p");
  DWC_ARG_CHECK(p >= 0 && p < 1, c.op_name << ": option 'p' must be in [0, 1), got " << p);
  Rng rng{static_cast<uint64_t>(c.int_attr_or("seed", 0)), static_cast<uint64_t>(c.int_attr_or("stream", 0))};
  dropout_forward(x.f32(), c.out("y", x.shape).f32(), c.out("mask", x.shape).f32(), x.numel(), static_cast<float>(p), rng);
});
DWC_REGISTER_OP("dropout_backward", "mask, dy -> dx", [](OpCtx& c) {
  const Tensor& m = c.in("mask");
  const Tensor& dy = c.in("dy");
  c.expect_shape(dy, "dy", m.shape);
  dropout_backward(m.f32(), dy.f32(), c.out("dx", m.shape).f32(), m.numel());
});
DWC_REGISTER_OP("mul_forward", "a, b -> y", [](OpCtx& c) {
  const Tensor& a = c.in("a");
  const Tensor& b = c.in("b");
  c.expect_shape(b, "b", a.shape);
  mul_forward(a.f32(), b.f32(), c.out("y", a.shape).f32(), a.numel());
});
DWC_REGISTER_OP("mul_backward", "a, b, dy -> da, db", [](OpCtx& c) {
  const Tensor& a = c.in("a");
  const Tensor& b = c.in("b");
  const Tensor& dy = c.in("dy");
  c.expect_shape(b, "b", a.shape);
  c.expect_shape(dy, "dy", a.shape);
  mul_backward(a.f32(), b.f32(), dy.f32(), c.out("da", a.shape).f32(), c.out("db", a.shape).f32(), a.numel());
});

DWC_REGISTER_OP("add_forward", "a, b -> y = a + b (residual add)", [](OpCtx& c) {
  const Tensor& a = c.in("a");
  const Tensor& b = c.in("b");
  c.expect_shape(b, "b", a.shape);
  add_forward(a.f32(), b.f32(), c.out("y", a.shape).f32(), a.numel());
});
DWC_REGISTER_OP("add_backward", "dy -> da, db", [](OpCtx& c) {
  const Tensor& dy = c.in("dy");
  add_backward(dy.f32(), c.out("da", dy.shape).f32(), c.out("db", dy.shape).f32(), dy.numel());
});
DWC_REGISTER_OP("add_relu_forward", "a, b -> y = relu(a + b) (residual block output)", [](OpCtx& c) {
  const Tensor& a = c.in("a");
  const Tensor& b = c.in("b");
  c.expect_shape(b, "b", a.shape);
  add_relu_forward(a.f32(), b.f32(), c.out("y", a.shape).f32(), a.numel());
});
DWC_REGISTER_OP("add_relu_backward", "y, dy -> da, db", [](OpCtx& c) {
  const Tensor& y = c.in("y");
  const Tensor& dy = c.in("dy");
  c.expect_shape(dy, "dy", y.shape);
  Tensor& da = c.out("da", y.shape);
  relu_backward(y.f32(), dy.f32(), da.f32(), y.numel());
  add_inplace(c.out("db", y.shape).f32(), da.f32(), y.numel());
});

}  // namespace dwc::cpu

#include "rowops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "../core/op.h"
#include "../core/vmath.h"

namespace dwc::cpu {

namespace {

constexpr float kNormEps = 1e-12f;  // spec §2 norm(x)
constexpr int64_t kParWork = 32768;  // below this a row op runs on one thread

// exp of max-subtracted inputs (x ≤ 0; exp(−inf) = 0): the shared vectorised exp (native/core/vmath.h).
inline float exp_neg(float x) { return vm::exp(x); }

// max_j scale*x_j of one row.
inline float row_max(const float* x, int64_t cols, float scale) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < cols; ++j) m = std::max(m, scale * x[j]);
  return m;
}

// y_j = exp(scale*x_j − m); returns Σ_j y_j.
inline float row_exp(const float* x, float* y, int64_t cols, float scale, float m) {
  float s = 0.f;
  if (!std::isfinite(m)) m = 0.f;  // all −inf row: every term is exp(−inf) = 0
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < cols; ++j) {
    const float e = exp_neg(scale * x[j] - m);
    y[j] = e;
    s += e;
  }
  return s;
}

}  // namespace

void softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t cols, float scale) {
#pragma omp parallel for schedule(static) if (rows * cols > kParWork && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const float s = row_exp(xr, yr, cols, scale, row_max(xr, cols, scale));
    const float inv = 1.f / s;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
  }
}

void softmax_rows_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, float scale) {
#pragma omp parallel for schedule(static) if (rows * cols > kParWork && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    float d = 0.f;
#pragma omp simd reduction(+ : d)
    for (int64_t j = 0; j < cols; ++j) d += gr[j] * yr[j];
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) dr[j] += scale * yr[j] * (gr[j] - d);
  }
}

void log_softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t cols, float scale) {
#pragma omp parallel for schedule(static) if (rows * cols > kParWork && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float m = row_max(xr, cols, scale);
    const float s = row_exp(xr, yr, cols, scale, m);  // y used as scratch
    if (!std::isfinite(m)) m = 0.f;
    const float ls = std::log(s);
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) yr[j] = (scale * xr[j] - m) - ls;  // as torch: (z − max) − log Σ
  }
}

void log_softmax_rows_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, float scale) {
#pragma omp parallel for schedule(static) if (rows * cols > kParWork && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; ++j) s += gr[j];
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) dr[j] += scale * (gr[j] - exp_neg(yr[j]) * s);
  }
}

void l2norm_rows_forward(const float* x, float* y, float* norms, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kParWork && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < cols; ++j) ss += xr[j] * xr[j];
    const float n = std::max(std::sqrt(ss), kNormEps);
    norms[r] = n;
    const float inv = 1.f / n;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) yr[j] = xr[j] * inv;
  }
}

// y = x / n: dx += (dy − y·⟨y, dy⟩) / n; where the norm was clamped to 1e-12 the clamp has no
// gradient (as torch clamp_min), so dx += dy / n.
void l2norm_rows_backward(const float* y, const float* norms, const float* dy, float* dx, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kParWork && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    const float inv = 1.f / norms[r];
    double dd = 0.0;  // double: g − y(y·g) cancels, float32 sums lose the small remainder
    if (norms[r] > kNormEps) {
#pragma omp simd reduction(+ : dd)
      for (int64_t j = 0; j < cols; ++j) dd += static_cast<double>(yr[j]) * gr[j];
    }
    const float d = static_cast<float>(dd);
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) dr[j] += (gr[j] - yr[j] * d) * inv;
  }
}

// ---- ops (JS tests / benchmarks) ----
namespace {

// The last axis is the row; leading dims are rows.
void rows_cols(const OpCtx& c, const Tensor& t, const char* name, int64_t& rows, int64_t& cols) {
  DWC_ARG_CHECK(t.ndim() >= 1, c.op_name << ": argument '" << name << "' must have at least 1 dimension");
  cols = t.dim(-1);
  rows = cols == 0 ? 0 : t.numel() / cols;
}

float scale_attr(const OpCtx& c) { return static_cast<float>(c.attr_or("scale", 1.0)); }

std::vector<int64_t> norms_shape(const Tensor& x) {
  if (x.ndim() <= 1) return {1};
  return std::vector<int64_t>(x.shape.begin(), x.shape.end() - 1);
}

template <void (*FWD)(const float*, float*, int64_t, int64_t, float)>
void row_fwd_op(OpCtx& c) {
  const Tensor& x = c.in("x");
  int64_t rows, cols;
  rows_cols(c, x, "x", rows, cols);
  FWD(x.f32(), c.out("y", x.shape).f32(), rows, cols, scale_attr(c));
}

template <void (*BWD)(const float*, const float*, float*, int64_t, int64_t, float)>
void row_bwd_op(OpCtx& c) {
  const Tensor& y = c.in("y");
  const Tensor& dy = c.in("dy");
  int64_t rows, cols;
  rows_cols(c, y, "y", rows, cols);
  c.expect_shape(dy, "dy", y.shape);
  BWD(y.f32(), dy.f32(), c.out("dx", y.shape).f32(), rows, cols, scale_attr(c));
}

}  // namespace

DWC_REGISTER_OP("softmax_rows_forward", "x[..,C]; scale=1 -> y = softmax(scale*x) over the last axis", row_fwd_op<softmax_rows_forward>);
DWC_REGISTER_OP("softmax_rows_backward", "y, dy; scale=1 -> dx", row_bwd_op<softmax_rows_backward>);
DWC_REGISTER_OP("log_softmax_rows_forward", "x[..,C]; scale=1 -> y = log_softmax(scale*x) over the last axis",
                row_fwd_op<log_softmax_rows_forward>);
DWC_REGISTER_OP("log_softmax_rows_backward", "y, dy; scale=1 -> dx", row_bwd_op<log_softmax_rows_backward>);

DWC_REGISTER_OP("l2norm_rows_forward", "x[..,C] -> y = x / max(|x|, 1e-12), norms[..]", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  int64_t rows, cols;
  rows_cols(c, x, "x", rows, cols);
  Tensor& y = c.out("y", x.shape);
  Tensor& n = c.out("norms", norms_shape(x));
  l2norm_rows_forward(x.f32(), y.f32(), n.f32(), rows, cols);
});

DWC_REGISTER_OP("l2norm_rows_backward", "y, norms, dy -> dx", [](OpCtx& c) {
  const Tensor& y = c.in("y");
  const Tensor& n = c.in("norms");
  const Tensor& dy = c.in("dy");
  int64_t rows, cols;
  rows_cols(c, y, "y", rows, cols);
  c.expect_shape(dy, "dy", y.shape);
  c.expect_shape(n, "norms", norms_shape(y));
  l2norm_rows_backward(y.f32(), n.f32(), dy.f32(), c.out("dx", y.shape).f32(), rows, cols);
});

}  // namespace dwc::cpu

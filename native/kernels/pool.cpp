// Pooling (spec §4): avgpool3 (stride 1, pad 1, padding not counted, as torch avg_pool2d with
// count_include_pad=False) and GeM with a learnable exponent p (spec §4, §10: masked by lengths).
// OpenMP over planes / (n, c) rows.
#include "pool.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "../core/op.h"
#include "../core/vmath.h"
#include "norm.h"

namespace dwc::cpu {

namespace {

// Number of valid taps of the 3-window centred at i in [0, n).
inline float taps(int i, int n) { return static_cast<float>(1 + (i > 0) + (i + 1 < n)); }

// out[i][j] (+)= Σ_{|h-i|≤1, |w-j|≤1} in[h][w]·rs[h]·cs[w] per plane (rs, cs: row/column scales).
// Forward: rs = cs = 1 and the result divided by the window count; backward: rs = 1/taps.
template <bool kAccumulate, bool kForward>
void box3(const float* in, float* out, int N, int C, int H, int W) {
  const int64_t planes = int64_t(N) * C, HW = int64_t(H) * W;
  if (planes == 0 || HW == 0) return;
#pragma omp parallel
  {
    std::vector<float> s(W + 2), inv_h(H), inv_w(W);
    for (int i = 0; i < H; ++i) inv_h[i] = 1.f / taps(i, H);
    for (int j = 0; j < W; ++j) inv_w[j] = 1.f / taps(j, W);
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < planes; ++pl) {
      const float* x = in + pl * HW;
      float* y = out + pl * HW;
      float* sp = s.data() + 1;  // sp[-1] = sp[W] = 0 (padding)
      for (int i = 0; i < H; ++i) {
        const int h0 = std::max(i - 1, 0), h1 = std::min(i + 1, H - 1);
        for (int j = 0; j < W; ++j) sp[j] = 0.f;
        for (int h = h0; h <= h1; ++h) {
          const float* xr = x + int64_t(h) * W;
          const float sh = kForward ? 1.f : inv_h[h];
#pragma omp simd
          for (int j = 0; j < W; ++j) sp[j] += xr[j] * sh;
        }
        if (!kForward) {
#pragma omp simd
          for (int j = 0; j < W; ++j) sp[j] *= inv_w[j];
        }
        float* yr = y + int64_t(i) * W;
        const float rs = kForward ? inv_h[i] : 1.f;
#pragma omp simd
        for (int j = 0; j < W; ++j) {
          const float v = (sp[j - 1] + sp[j] + sp[j + 1]) * (kForward ? rs * inv_w[j] : 1.f);
          if (kAccumulate)
            yr[j] += v;
          else
            yr[j] = v;
        }
      }
    }
  }
}

}  // namespace

void avgpool3_forward(const float* x, float* y, int N, int C, int H, int W) { box3<false, true>(x, y, N, C, H, W); }

// dx[h][w] += Σ over windows containing (h, w) of dy / count, count = taps_h · taps_w.
void avgpool3_backward(const float* dy, float* dx, int N, int C, int H, int W) { box3<true, false>(dy, dx, N, C, H, W); }

// Padded sequences (DWC-SPEC §10): row r = c·N + n of length Ln = lengths[n]; the same sums and
// scales as box3 with H = 1 on the row cut to Ln (so bit-identical to the unpadded row).
void avgpool3_len_forward(const float* x, float* y, int C, int N, int L, const int32_t* lengths) {
  const int64_t R = int64_t(C) * N;
#pragma omp parallel for schedule(static) if (R * L > 65536)
  for (int64_t r = 0; r < R; ++r) {
    const int Ln = std::clamp<int>(lengths[r % N], 0, L);
    const float* xr = x + r * L;
    float* yr = y + r * L;
    for (int j = 0; j < Ln; ++j) {
      const float a = j > 0 ? xr[j - 1] : 0.f, c = j + 1 < Ln ? xr[j + 1] : 0.f;
      yr[j] = (a + xr[j] + c) * (1.f * (1.f / taps(j, Ln)));
    }
    std::fill(yr + Ln, yr + L, 0.f);
  }
}

void avgpool3_len_backward(const float* dy, float* dx, int C, int N, int L, const int32_t* lengths) {
  const int64_t R = int64_t(C) * N;
#pragma omp parallel for schedule(static) if (R * L > 65536)
  for (int64_t r = 0; r < R; ++r) {
    const int Ln = std::clamp<int>(lengths[r % N], 0, L);
    const float* g = dy + r * L;
    float* o = dx + r * L;
    auto s = [&](int j) { return j >= 0 && j < Ln ? g[j] * (1.f / taps(j, Ln)) : 0.f; };
    for (int j = 0; j < Ln; ++j) o[j] += s(j - 1) + s(j) + s(j + 1);
  }
}

// GeM (spec §4). x^p = exp(p·ln x) with the shared vectorised exp / log (native/core/vmath.h);
// every select on integer bit patterns so that the loops vectorise.
using vm::as_float;
using vm::as_int;

// max(x, lo) for lo > 0 (bit patterns of floats ≥ 0 order like the values; negatives are < 0).
inline float max_pos(float x, int32_t lo_bits) { return as_float(vm::sel(vm::mask(as_int(x) < lo_bits), lo_bits, as_int(x))); }

// The GeM row loops run in two passes per span of kSpan elements: the terms (vectorised, with AVX2
// clones) into a small buffer, then their serial float sum in the same order as a one-pass loop —
// a serial sum in the loop itself keeps GCC from vectorising the exp / log (same bits either way).
constexpr int kSpan = 64;

// t_i = z_i^p, z = max(x, lo).
DWC_AVX2_CLONES void pow_terms(const float* __restrict x, float* __restrict t, int n, float p, int32_t lo) {
  for (int i = 0; i < n; ++i) t[i] = vm::exp(p * vm::log(max_pos(x[i], lo)));
}

// Σ z^p over z = max(x, lo).
float sum_pow(const float* __restrict x, int len, float p, int32_t lo) {
  float t[kSpan], s = 0.f;
  for (int i0 = 0; i0 < len; i0 += kSpan) {
    const int n = std::min(kSpan, len - i0);
    pow_terms(x + i0, t, n, p, lo);
    for (int i = 0; i < n; ++i) s += t[i];
  }
  return s;
}

// h(v) = v·eᵛ − eᵛ + 1 ≥ 0 (ev = eᵛ); for |v| < 1, where that form cancels, its series
// v²·Σ_k (k+1)/(k+2)!·vᵏ (to k = 10: relative error < 1e-8).
inline float gem_h(float v, float ev) {
  float q = 1.f / 43545600.f;
  q = q * v + 1.f / 3991680.f;
  q = q * v + 1.f / 403200.f;
  q = q * v + 1.f / 45360.f;
  q = q * v + 1.f / 5760.f;
  q = q * v + 1.f / 840.f;
  q = q * v + 1.f / 144.f;
  q = q * v + 1.f / 30.f;
  q = q * v + 1.f / 8.f;
  q = q * v + 1.f / 3.f;
  q = q * v + 0.5f;
  const float series = v * v * q, closed = (v - 1.f) * ev + 1.f;
  return as_float(vm::sel(vm::mask((as_int(v) & 0x7fffffff) < 0x3f800000), as_int(series), as_int(closed)));
}

// The terms of one span: t_i = h(v_i), and o_i += k·eᵛⁱ/q_i where x_i ≥ eps (o may be null).
DWC_AVX2_CLONES void gem_back_terms(const float* __restrict x, float* __restrict o, float* __restrict t, int n, float p, float y, float k,
                                    int32_t lo, int32_t eps_bits) {
  if (o) {
    for (int i = 0; i < n; ++i) {
      const float q = max_pos(x[i], lo) / y, v = p * vm::log(q), ev = vm::exp(v);
      t[i] = gem_h(v, ev);
      const float d = k * ev / q;
      o[i] += as_float(as_int(d) & vm::mask(as_int(x[i]) >= eps_bits));
    }
  } else {
    for (int i = 0; i < n; ++i) {
      const float q = max_pos(x[i], lo) / y, v = p * vm::log(q);
      t[i] = gem_h(v, vm::exp(v));
    }
  }
}

// Backward of one row with y = its forward output. With q_i = z_i / y and v_i = p·ln q_i
// (so that mean eᵛ = 1): dy/dx_i = eᵛⁱ / (len·q_i) (x_i ≥ eps), and
//   dy/dp = y·(Σ w_i ln z_i − ln y)/p, w_i = z_iᵖ / Σ zᵖ,  = y / (p²·len) · Σ_i h(v_i),
// a sum of non-negative terms. (The textbook form mean(zᵖ ln z)/(p m) − ln m / p² cancels to a
// few digits when the z_i of a row are close, and loses them all in float; issue 12 item 4.)
// Adds k·eᵛⁱ/q_i to o (o may be null); returns Σ h(v_i).
float gem_row_backward(const float* __restrict x, float* __restrict o, int len, float p, float y, float k, int32_t lo, int32_t eps_bits) {
  float t[kSpan], sh = 0.f;
  for (int i0 = 0; i0 < len; i0 += kSpan) {
    const int n = std::min(kSpan, len - i0);
    gem_back_terms(x + i0, o ? o + i0 : nullptr, t, n, p, y, k, lo, eps_bits);
    for (int i = 0; i < n; ++i) sh += t[i];
  }
  return sh;
}

// z = max(x, eps), m = mean z^p, y = m^{1/p}.
void gem_forward(const float* x, float p, float* y, int N, int C, int P, const int32_t* lengths, float eps) {
  const int64_t rows = int64_t(N) * C;
  const int32_t lo = as_int(std::max(eps, FLT_MIN));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int len = lengths ? lengths[r / C] : P;
    const float* xr = x + r * P;
    const float s = sum_pow(xr, len, p, lo);
    y[r] = static_cast<float>(std::pow(double(s) / len, 1.0 / p));
  }
}

void gem_backward(const float* x, float p, const float* y, const float* dy, float* dx, float* dp, int N, int C, int P,
                  const int32_t* lengths, float eps) {
  const int64_t rows = int64_t(N) * C;
  const int32_t lo = as_int(std::max(eps, FLT_MIN));
  double gp = 0;
#pragma omp parallel for schedule(static) reduction(+ : gp)
  for (int64_t r = 0; r < rows; ++r) {
    const int len = lengths ? lengths[r / C] : P;
    const float yr = y[r], g = dy[r];
    // y = 0 only when every zᵖ underflowed in the forward: no usable gradient for the row
    if (!(yr > 0.f) || !std::isfinite(yr)) continue;
    const float sh = gem_row_backward(x + r * P, dx ? dx + r * P : nullptr, len, p, yr, g / len, lo, as_int(eps));
    gp += double(g) * yr * sh / (double(p) * p * len);
  }
  if (dp) *dp += static_cast<float>(gp);
}

// ---- max pool (issue 5) ----
void maxpool2d_forward(const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int stride, int pad) {
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  const int64_t planes = int64_t(N) * C, HW = int64_t(H) * W, Po = int64_t(Ho) * Wo;
#pragma omp parallel for schedule(static) if (planes * Po * k * k >= (1 << 16))
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * HW;
    float* yp = y + pl * Po;
    int32_t* ip = idx + pl * Po;
    for (int oh = 0; oh < Ho; ++oh) {
      const int h0 = std::max(oh * stride - pad, 0), h1 = std::min(oh * stride - pad + k, H);
      for (int ow = 0; ow < Wo; ++ow) {
        const int w0 = std::max(ow * stride - pad, 0), w1 = std::min(ow * stride - pad + k, W);
        float m = -INFINITY;
        int32_t mi = h0 * W + w0;
        for (int h = h0; h < h1; ++h)
          for (int w = w0; w < w1; ++w) {
            const float v = xp[h * W + w];
            if (v > m || std::isnan(v)) {
              m = v;
              mi = h * W + w;
            }
          }
        yp[oh * Wo + ow] = m;
        ip[oh * Wo + ow] = mi;
      }
    }
  }
}

void maxpool2d_backward(const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo) {
  const int64_t planes = int64_t(N) * C, HW = int64_t(H) * W, Po = int64_t(Ho) * Wo;
#pragma omp parallel for schedule(static) if (planes * Po >= (1 << 16))
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* g = dy + pl * Po;
    const int32_t* ip = idx + pl * Po;
    float* d = dx + pl * HW;
    for (int64_t i = 0; i < Po; ++i) d[ip[i]] += g[i];
  }
}

// Blocked layout (nChw{kL}c, kL = blocked_width() (norm.h), C a multiple of kL; the trunk's oneDNN
// path): the same window scan per lane, idx[n, c, oh, ow] = h·W + w of the maximum (as the plain
// kernel), stored blocked like y.
namespace {
template <int kL>
void maxpool_fwd_blk(const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int stride, int pad) {
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  const int64_t planes = int64_t(N) * (C / kL), HW = int64_t(H) * W, Po = int64_t(Ho) * Wo;
#pragma omp parallel for schedule(static) if (planes * Po * k * k * kL >= (1 << 16))
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * HW * kL;
    float* yp = y + pl * Po * kL;
    int32_t* ip = idx + pl * Po * kL;
    for (int oh = 0; oh < Ho; ++oh) {
      const int h0 = std::max(oh * stride - pad, 0), h1 = std::min(oh * stride - pad + k, H);
      for (int ow = 0; ow < Wo; ++ow) {
        const int w0 = std::max(ow * stride - pad, 0), w1 = std::min(ow * stride - pad + k, W);
        float m[kL];
        int32_t mi[kL];
        for (int l = 0; l < kL; ++l) m[l] = -INFINITY, mi[l] = h0 * W + w0;
        for (int h = h0; h < h1; ++h)
          for (int w = w0; w < w1; ++w) {
            const float* v = xp + (int64_t(h) * W + w) * kL;
            for (int l = 0; l < kL; ++l)
              if (v[l] > m[l] || std::isnan(v[l])) {
                m[l] = v[l];
                mi[l] = h * W + w;
              }
          }
        const int64_t o = (int64_t(oh) * Wo + ow) * kL;
        for (int l = 0; l < kL; ++l) yp[o + l] = m[l], ip[o + l] = mi[l];
      }
    }
  }
}

template <int kL>
void maxpool_bwd_blk(const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo) {
  const int64_t planes = int64_t(N) * (C / kL), HW = int64_t(H) * W, Po = int64_t(Ho) * Wo;
#pragma omp parallel for schedule(static) if (planes * Po * kL >= (1 << 16))
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* g = dy + pl * Po * kL;
    const int32_t* ip = idx + pl * Po * kL;
    float* d = dx + pl * HW * kL;
    for (int64_t i = 0; i < Po; ++i)
      for (int l = 0; l < kL; ++l) d[int64_t(ip[i * kL + l]) * kL + l] += g[i * kL + l];
  }
}
}  // namespace
void maxpool2d_forward_blk(const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int stride, int pad) {
  const int kL = blocked_width();
  DWC_CHECK(C % kL == 0, Internal, "maxpool (blocked): C = " << C << " is not a multiple of " << kL);
  (kL == 16 ? maxpool_fwd_blk<16> : maxpool_fwd_blk<8>)(x, y, idx, N, C, H, W, k, stride, pad);
}
void maxpool2d_backward_blk(const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo) {
  const int kL = blocked_width();
  DWC_CHECK(C % kL == 0, Internal, "maxpool (blocked): C = " << C << " is not a multiple of " << kL);
  (kL == 16 ? maxpool_bwd_blk<16> : maxpool_bwd_blk<8>)(dy, idx, dx, N, C, H, W, Ho, Wo);
}

// ---- ops (JS tests / benchmarks) ----
namespace {

struct PoolDims {
  int N, C, H, W;
};

// x [N,C,H,W] or [N,C,L] (H = 1).
PoolDims pool_dims(OpCtx& c, const Tensor& x, const char* name) {
  DWC_ARG_CHECK(x.ndim() == 3 || x.ndim() == 4,
                c.op_name << ": argument '" << name << "' must be [N,C,H,W] or [N,C,L], got shape " << shape_str(x.shape));
  if (x.ndim() == 4) return {int(x.dim(0)), int(x.dim(1)), int(x.dim(2)), int(x.dim(3))};
  return {int(x.dim(0)), int(x.dim(1)), 1, int(x.dim(2))};
}

struct GemArgs {
  PoolDims d;
  int P;
  float p, eps;
  const int32_t* lengths;
};

GemArgs gem_args(OpCtx& c, const Tensor& x) {
  GemArgs a;
  a.d = pool_dims(c, x, "x");
  a.P = a.d.H * a.d.W;
  const Tensor& pt = c.in("p");
  c.expect_shape(pt, "p", {1});
  a.p = pt.f32()[0];
  DWC_ARG_CHECK(std::isfinite(a.p) && a.p != 0.f, c.op_name << ": argument 'p' must be finite and non-zero, got " << a.p);
  const double eps = c.attr_or("eps", 1e-6);
  DWC_ARG_CHECK(eps > 0, c.op_name << ": option 'eps' must be > 0, got " << eps);
  a.eps = static_cast<float>(eps);
  a.lengths = nullptr;
  if (const Tensor* l = c.in_i32_opt("lengths", 1)) {
    c.expect_dim(*l, "lengths", 0, a.d.N, "N (batch of x)");
    a.lengths = l->i32();
    for (int n = 0; n < a.d.N; ++n)
      DWC_ARG_CHECK(a.lengths[n] >= 1 && a.lengths[n] <= a.P,
                    c.op_name << ": argument 'lengths' [" << n << "] = " << a.lengths[n] << " must be in [1, " << a.P << "]");
  }
  DWC_ARG_CHECK(a.P >= 1, c.op_name << ": argument 'x' has no positions: shape " << shape_str(x.shape));
  return a;
}

}  // namespace

DWC_REGISTER_OP("avgpool3_forward", "x [N,C,H,W] | [N,C,L] -> y (3-window, stride 1, pad 1, padding not counted)", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  PoolDims d = pool_dims(c, x, "x");
  avgpool3_forward(x.f32(), c.out("y", x.shape).f32(), d.N, d.C, d.H, d.W);
});
DWC_REGISTER_OP("avgpool3_backward", "dy [N,C,H,W] | [N,C,L] -> dx", [](OpCtx& c) {
  const Tensor& dy = c.in("dy");
  PoolDims d = pool_dims(c, dy, "dy");
  avgpool3_backward(dy.f32(), c.out("dx", dy.shape).f32(), d.N, d.C, d.H, d.W);
});
// Masked 1-D avgpool3 on channel-major sequences: x [C,N,L], lengths int32 [N] (each in [0, L]).
namespace {
const int32_t* pool_lengths(OpCtx& c, const Tensor& x) {
  const Tensor& l = c.in_i32("lengths", 1);
  c.expect_dim(l, "lengths", 0, x.dim(1), "N (dim 1 of the channel-major [C,N,L] input)");
  for (int64_t n = 0; n < l.numel(); ++n)
    DWC_ARG_CHECK(l.i32()[n] >= 0 && l.i32()[n] <= x.dim(2),
                  c.op_name << ": argument 'lengths' [" << n << "] = " << l.i32()[n] << " must be in [0, " << x.dim(2) << "]");
  return l.i32();
}
}  // namespace
DWC_REGISTER_OP("avgpool3_len_forward", "x [C,N,L] (channel-major), lengths int32 [N] -> y (padded positions 0)", [](OpCtx& c) {
  const Tensor& x = c.in("x", 3);
  const int32_t* len = pool_lengths(c, x);
  avgpool3_len_forward(x.f32(), c.out("y", x.shape).f32(), int(x.dim(0)), int(x.dim(1)), int(x.dim(2)), len);
});
DWC_REGISTER_OP("avgpool3_len_backward", "dy [C,N,L], lengths int32 [N] -> dx", [](OpCtx& c) {
  const Tensor& dy = c.in("dy", 3);
  const int32_t* len = pool_lengths(c, dy);
  avgpool3_len_backward(dy.f32(), c.out("dx", dy.shape).f32(), int(dy.dim(0)), int(dy.dim(1)), int(dy.dim(2)), len);
});
DWC_REGISTER_OP("gem_forward", "x [N,C,H,W] | [N,C,L], p [1], lengths int32 [N]?; eps (1e-6) -> y [N,C]", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  GemArgs a = gem_args(c, x);
  gem_forward(x.f32(), a.p, c.out("y", {a.d.N, a.d.C}).f32(), a.d.N, a.d.C, a.P, a.lengths, a.eps);
});
DWC_REGISTER_OP("gem_backward", "x, p, y, dy, lengths? -> dx, dp", [](OpCtx& c) {
  const Tensor& x = c.in("x");
  GemArgs a = gem_args(c, x);
  const Tensor& y = c.in("y");
  c.expect_shape(y, "y", {a.d.N, a.d.C});
  const Tensor& dy = c.in("dy");
  c.expect_shape(dy, "dy", {a.d.N, a.d.C});
  gem_backward(x.f32(), a.p, y.f32(), dy.f32(), c.out("dx", x.shape).f32(), c.out("dp", {1}).f32(), a.d.N, a.d.C, a.P, a.lengths, a.eps);
});

// Max pool: attrs k (3), stride (2), pad (1); idx is int32 [N,C,Ho,Wo] (ih·W + iw per plane).
namespace {
struct MaxPoolArgs {
  int N, C, H, W, k, s, pad, Ho, Wo;
};
MaxPoolArgs maxpool_args(OpCtx& c, const Tensor& x, const char* name) {
  const int64_t k = c.int_attr_or("k", 3), s = c.int_attr_or("stride", 2), pad = c.int_attr_or("pad", 1);
  DWC_ARG_CHECK(k >= 1 && k <= 64, c.op_name << ": option 'k' must be an integer in [1, 64], got " << k);
  DWC_ARG_CHECK(s >= 1 && s <= 64, c.op_name << ": option 'stride' must be an integer in [1, 64], got " << s);
  DWC_ARG_CHECK(pad >= 0 && 2 * pad <= k, c.op_name << ": option 'pad' must be in [0, k/2] (as torch), got " << pad);
  MaxPoolArgs a{int(x.dim(0)), int(x.dim(1)), int(x.dim(2)), int(x.dim(3)), int(k), int(s), int(pad), 0, 0};
  DWC_ARG_CHECK(a.H + 2 * a.pad >= a.k && a.W + 2 * a.pad >= a.k,
                c.op_name << ": argument '" << name << "' has shape " << shape_str(x.shape) << ": padded plane smaller than the "
                          << k << "x" << k << " window");
  a.Ho = (a.H + 2 * a.pad - a.k) / a.s + 1;
  a.Wo = (a.W + 2 * a.pad - a.k) / a.s + 1;
  return a;
}
}  // namespace

// blocked (1 or 8: nChw8c, 16: nChw16c): the blocked kernel on blocked copies (tests; C a multiple
// of the width). idx stays NCHW-ordered.
DWC_REGISTER_OP("maxpool_forward", "x [N,C,H,W]; k=3, stride=2, pad=1, blocked=0 (8 or 16) -> y [N,C,Ho,Wo], idx int32 [N,C,Ho,Wo]", [](OpCtx& c) {
  const Tensor& x = c.in("x", 4);
  const MaxPoolArgs a = maxpool_args(c, x, "x");
  Tensor& y = c.out("y", {a.N, a.C, a.Ho, a.Wo});
  Tensor& idx = c.out("idx", {a.N, a.C, a.Ho, a.Wo}, DType::I32);
  const int cb = blocked_option(c, a.C);
  if (!cb) {
    maxpool2d_forward(x.f32(), y.f32(), idx.i32(), a.N, a.C, a.H, a.W, a.k, a.s, a.pad);
    return;
  }
  BlockedWidth width(cb);
  const int64_t Pi = int64_t(a.H) * a.W, Po = int64_t(a.Ho) * a.Wo, no = int64_t(a.N) * a.C * Po;
  const size_t nb = static_cast<size_t>(no);
  std::vector<float> xb(static_cast<size_t>(int64_t(a.N) * a.C * Pi)), yb(nb), ib(nb), idxf(nb);
  std::vector<int32_t> ii(nb);
  nchw_to_blocked8(x.f32(), xb.data(), a.N, a.C, Pi);
  maxpool2d_forward_blk(xb.data(), yb.data(), ii.data(), a.N, a.C, a.H, a.W, a.k, a.s, a.pad);
  blocked8_to_nchw(yb.data(), y.f32(), a.N, a.C, Po);
  for (int64_t i = 0; i < no; ++i) ib[size_t(i)] = static_cast<float>(ii[size_t(i)]);  // indices < 2^24: exact as floats
  blocked8_to_nchw(ib.data(), idxf.data(), a.N, a.C, Po);
  for (int64_t i = 0; i < no; ++i) idx.i32()[i] = static_cast<int32_t>(idxf[size_t(i)]);
});
DWC_REGISTER_OP("maxpool_backward", "x (shape only), idx int32, dy [N,C,Ho,Wo]; k=3, stride=2, pad=1, blocked=0 (8 or 16) -> dx [N,C,H,W]", [](OpCtx& c) {
  const Tensor& x = c.in("x", 4);
  const MaxPoolArgs a = maxpool_args(c, x, "x");
  const Tensor& idx = c.in_i32("idx", 4);
  c.expect_shape(idx, "idx", {a.N, a.C, a.Ho, a.Wo});
  const Tensor& dy = c.in("dy", 4);
  c.expect_shape(dy, "dy", {a.N, a.C, a.Ho, a.Wo});
  const int32_t* ip = idx.i32();
  const int64_t n = idx.numel(), HW = int64_t(a.H) * a.W;
  for (int64_t i = 0; i < n; ++i)
    DWC_ARG_CHECK(ip[i] >= 0 && ip[i] < HW, c.op_name << ": argument 'idx' [" << i << "] = " << ip[i] << " lies outside the " << a.H << "x"
                                                      << a.W << " plane");
  float* dx = c.out("dx", x.shape).f32();
  const int cb = blocked_option(c, a.C);
  if (!cb) {
    maxpool2d_backward(dy.f32(), ip, dx, a.N, a.C, a.H, a.W, a.Ho, a.Wo);
    return;
  }
  BlockedWidth width(cb);
  const int64_t Po = int64_t(a.Ho) * a.Wo;
  const size_t nb = static_cast<size_t>(n);
  std::vector<float> dyb(nb), idxf(nb), ib(nb), dxb(static_cast<size_t>(x.numel()));
  std::vector<int32_t> ii(nb);
  nchw_to_blocked8(dy.f32(), dyb.data(), a.N, a.C, Po);
  for (int64_t i = 0; i < n; ++i) idxf[size_t(i)] = static_cast<float>(ip[i]);
  nchw_to_blocked8(idxf.data(), ib.data(), a.N, a.C, Po);
  for (int64_t i = 0; i < n; ++i) ii[size_t(i)] = static_cast<int32_t>(ib[size_t(i)]);
  nchw_to_blocked8(dx, dxb.data(), a.N, a.C, HW);  // dx starts as the op's zeroed output
  maxpool2d_backward_blk(dyb.data(), ii.data(), dxb.data(), a.N, a.C, a.H, a.W, a.Ho, a.Wo);
  blocked8_to_nchw(dxb.data(), dx, a.N, a.C, HW);
});

}  // namespace dwc::cpu

namespace dwc::cpu {

void avgpool_k_forward(const float* x, float* y, int N, int C, int H, int W, int k) {
  const int Ho = H / k, Wo = W / k;
  const float inv = 1.f / static_cast<float>(k * k);
#pragma omp parallel for schedule(static) if (int64_t(N) * C * H * W > 65536)
  for (int64_t pl = 0; pl < int64_t(N) * C; ++pl) {
    const float* xp = x + pl * H * W;
    float* yp = y + pl * Ho * Wo;
    for (int oh = 0; oh < Ho; ++oh)
      for (int ow = 0; ow < Wo; ++ow) {
        float s = 0.f;
        for (int i = 0; i < k; ++i)
          for (int j = 0; j < k; ++j) s += xp[int64_t(oh * k + i) * W + ow * k + j];
        yp[int64_t(oh) * Wo + ow] = s * inv;
      }
  }
}

void avgpool_k_backward(const float* dy, float* dx, int N, int C, int H, int W, int k) {
  const int Ho = H / k, Wo = W / k;
  const float inv = 1.f / static_cast<float>(k * k);
#pragma omp parallel for schedule(static) if (int64_t(N) * C * H * W > 65536)
  for (int64_t pl = 0; pl < int64_t(N) * C; ++pl) {
    const float* gp = dy + pl * Ho * Wo;
    float* xp = dx + pl * H * W;
    for (int oh = 0; oh < Ho; ++oh)
      for (int ow = 0; ow < Wo; ++ow) {
        const float g = gp[int64_t(oh) * Wo + ow] * inv;
        for (int i = 0; i < k; ++i)
          for (int j = 0; j < k; ++j) xp[int64_t(oh * k + i) * W + ow * k + j] += g;
      }
  }
}

}  // namespace dwc::cpu

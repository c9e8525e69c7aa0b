// Pooling (spec §4): avgpool3 (stride 1, pad 1, padding not counted, as torch avg_pool2d with
// count_include_pad=False) and GeM with a learnable exponent p (spec §4, §10: masked by lengths).
// OpenMP over planes / (n, c) rows.
#include "pool.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "../core/op.h"

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

// Branch-free float log / exp (Cephes polynomials, ~2 ulp) so that the GeM loops vectorise:
// x^p = exp(p·ln x) is the whole cost of GeM. Every select is done on integer bit patterns
// (float compares may trap, which stops GCC from if-converting them). ln needs normal x > 0.
inline float bits_to_float(int32_t i) { return __builtin_bit_cast(float, i); }
inline int32_t float_to_bits(float f) { return __builtin_bit_cast(int32_t, f); }

// max(x, lo) for lo > 0 (bit patterns of floats ≥ 0 order like the values; negatives are < 0).
inline float max_pos(float x, int32_t lo_bits) {
  const int32_t xb = float_to_bits(x), take = -static_cast<int32_t>(xb < lo_bits);
  return bits_to_float((xb & ~take) | (lo_bits & take));
}

inline float fast_logf(float x) {
  const int32_t bits = float_to_bits(x);
  const int32_t mb = (bits & 0x007fffff) | 0x3f000000;              // mantissa in [0.5, 1)
  const int32_t small = -static_cast<int32_t>(mb < 0x3f3504f3);      // mantissa < √½: use 2m
  const float e = static_cast<float>((bits >> 23) - 126 + small);
  const float m = bits_to_float(mb) * bits_to_float(0x3f800000 + (small & 0x00800000)) - 1.f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return m + y + 0.693359375f * e;
}

// Results saturate (no inf / 0) outside about [-174, 176].
inline float fast_expf(float x) {
  // n = round(x / ln 2) by the 1.5·2^23 trick (std::floor does not vectorise here); |x| < 2^21.
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.f;
  // 2^n as two factors so that every exponent field stays in range.
  const int32_t ni = std::min(std::max(static_cast<int32_t>(n), -252), 254);
  const int32_t h = ni >> 1;
  return y * bits_to_float((h + 127) << 23) * bits_to_float((ni - h + 127) << 23);
}

// Σ z^p (and Σ z^p·ln z into *sl) over z = max(x, lo); a plain function so that GCC vectorises it.
float sum_pow(const float* __restrict x, int len, float p, int32_t lo, float* sl = nullptr) {
  float s = 0.f, t = 0.f;
  for (int i = 0; i < len; ++i) {
    const float lz = fast_logf(max_pos(x[i], lo)), zp = fast_expf(p * lz);
    s += zp;
    t += zp * lz;
  }
  if (sl) *sl = t;
  return s;
}

// o += k·z^q where x ≥ eps (an integer compare and mask: branch-free), z = max(x, lo).
void add_scaled_pow(const float* __restrict x, float* __restrict o, int len, float q, float k, int32_t lo, int32_t eps_bits) {
  for (int i = 0; i < len; ++i) {
    const float v = x[i];
    const float d = k * fast_expf(q * fast_logf(max_pos(v, lo)));
    const int32_t keep = -static_cast<int32_t>(float_to_bits(v) >= eps_bits);
    o[i] += bits_to_float(float_to_bits(d) & keep);
  }
}

// z = max(x, eps), m = mean z^p, y = m^{1/p}.
void gem_forward(const float* x, float p, float* y, int N, int C, int P, const int32_t* lengths, float eps) {
  const int64_t rows = int64_t(N) * C;
  const int32_t lo = float_to_bits(std::max(eps, FLT_MIN));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int len = lengths ? lengths[r / C] : P;
    const float* xr = x + r * P;
    const float s = sum_pow(xr, len, p, lo);
    y[r] = static_cast<float>(std::pow(double(s) / len, 1.0 / p));
  }
}

// dy/dx_i = y · z_i^{p-1} / (len · m) (x_i ≥ eps),  dy/dp = y · (mean(z^p ln z) / (p m) − ln m / p²).
void gem_backward(const float* x, float p, const float* y, const float* dy, float* dx, float* dp, int N, int C, int P,
                  const int32_t* lengths, float eps) {
  const int64_t rows = int64_t(N) * C;
  const int32_t lo = float_to_bits(std::max(eps, FLT_MIN));
  double gp = 0;
#pragma omp parallel for schedule(static) reduction(+ : gp)
  for (int64_t r = 0; r < rows; ++r) {
    const int len = lengths ? lengths[r / C] : P;
    const float* xr = x + r * P;
    float sl = 0.f;
    const float s = sum_pow(xr, len, p, lo, &sl);
    const double m = double(s) / len, g = dy[r], yr = y[r];
    if (dp) gp += g * yr * ((double(sl) / len) / (p * m) - std::log(m) / (double(p) * p));
    if (dx) {
      add_scaled_pow(xr, dx + r * P, len, p - 1.f, static_cast<float>(g * yr / (len * m)), lo, float_to_bits(eps));
    }
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

DWC_REGISTER_OP("maxpool_forward", "x [N,C,H,W]; k=3, stride=2, pad=1 -> y [N,C,Ho,Wo], idx int32 [N,C,Ho,Wo]", [](OpCtx& c) {
  const Tensor& x = c.in("x", 4);
  const MaxPoolArgs a = maxpool_args(c, x, "x");
  Tensor& y = c.out("y", {a.N, a.C, a.Ho, a.Wo});
  Tensor& idx = c.out("idx", {a.N, a.C, a.Ho, a.Wo}, DType::I32);
  maxpool2d_forward(x.f32(), y.f32(), idx.i32(), a.N, a.C, a.H, a.W, a.k, a.s, a.pad);
});
DWC_REGISTER_OP("maxpool_backward", "x (shape only), idx int32, dy [N,C,Ho,Wo]; k=3, stride=2, pad=1 -> dx [N,C,H,W]", [](OpCtx& c) {
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
  maxpool2d_backward(dy.f32(), ip, c.out("dx", x.shape).f32(), a.N, a.C, a.H, a.W, a.Ho, a.Wo);
});

}  // namespace dwc::cpu

// Convolutions of the Inception blocks (spec §4). The whole minibatch is one GEMM:
//   cols[K = Ci·kh·kw, N·H·W] = im2col(x)            (k = 1: a transpose-pack of x)
//   Y[Co, N·H·W] = W[Co, K] · cols                     y = scatter(Y) to [N, Co, H, W]
//   dW[Co, K] += dY · colsᵀ,  dcols = Wᵀ · dY,  dx += col2im(dcols)
// Workspace: cols (K·NP floats) followed by Y / dY (Co·NP); backward reuses cols for dcols.
#include "conv.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#include "../core/blas.h"
#include "../core/op.h"

namespace dwc::cpu {

namespace {

struct Dims {
  int64_t N, Ci, Co, H, W, kh, kw, ph, pw, HW, NP, K;
  Dims(int n, int ci, int co, int h, int w, int kh_, int kw_)
      : N(n), Ci(ci), Co(co), H(h), W(w), kh(kh_), kw(kw_), ph(kh_ / 2), pw(kw_ / 2), HW(int64_t(h) * w), NP(int64_t(n) * h * w),
        K(int64_t(ci) * kh_ * kw_) {}
};

// cols[(ci,dh,dw), n, oh, ow] = x[n, ci, oh+dh-ph, ow+dw-pw] (0 outside).
void im2col(const float* x, float* cols, const Dims& d) {
  if (d.kh == 1 && d.kw == 1) {
#pragma omp parallel for schedule(static)
    for (int64_t ci = 0; ci < d.Ci; ++ci)
      for (int64_t n = 0; n < d.N; ++n) std::memcpy(cols + ci * d.NP + n * d.HW, x + (n * d.Ci + ci) * d.HW, d.HW * sizeof(float));
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < d.K; ++r) {
    const int64_t ci = r / (d.kh * d.kw), dh = (r / d.kw) % d.kh, dw = r % d.kw;
    const int64_t sw = dw - d.pw;  // source column = ow + sw
    const int64_t w0 = sw < 0 ? -sw : 0, w1 = sw > 0 ? d.W - sw : d.W;  // valid ow range [w0, w1)
    float* dst = cols + r * d.NP;
    for (int64_t n = 0; n < d.N; ++n) {
      const float* xp = x + (n * d.Ci + ci) * d.HW;
      for (int64_t oh = 0; oh < d.H; ++oh, dst += d.W) {
        const int64_t ih = oh + dh - d.ph;
        if (ih < 0 || ih >= d.H || w1 <= w0) {
          std::memset(dst, 0, d.W * sizeof(float));
          continue;
        }
        const float* src = xp + ih * d.W + sw;
        for (int64_t ow = 0; ow < w0; ++ow) dst[ow] = 0.f;
#pragma omp simd
        for (int64_t ow = w0; ow < w1; ++ow) dst[ow] = src[ow];
        for (int64_t ow = w1; ow < d.W; ++ow) dst[ow] = 0.f;
      }
    }
  }
}

// dx[n, ci, ih, iw] += Σ dcols[(ci,dh,dw), n, ih-dh+ph, iw-dw+pw]. Parallel over ci: no races.
void col2im_add(const float* dcols, float* dx, const Dims& d) {
  if (d.kh == 1 && d.kw == 1) {
#pragma omp parallel for schedule(static)
    for (int64_t ci = 0; ci < d.Ci; ++ci)
      for (int64_t n = 0; n < d.N; ++n) {
        float* o = dx + (n * d.Ci + ci) * d.HW;
        const float* s = dcols + ci * d.NP + n * d.HW;
#pragma omp simd
        for (int64_t i = 0; i < d.HW; ++i) o[i] += s[i];
      }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t ci = 0; ci < d.Ci; ++ci) {
    for (int64_t dh = 0; dh < d.kh; ++dh)
      for (int64_t dw = 0; dw < d.kw; ++dw) {
        const int64_t r = (ci * d.kh + dh) * d.kw + dw;
        const int64_t sw = dw - d.pw;
        const int64_t w0 = sw < 0 ? -sw : 0, w1 = sw > 0 ? d.W - sw : d.W;
        const float* src = dcols + r * d.NP;
        for (int64_t n = 0; n < d.N; ++n) {
          float* xp = dx + (n * d.Ci + ci) * d.HW;
          for (int64_t oh = 0; oh < d.H; ++oh, src += d.W) {
            const int64_t ih = oh + dh - d.ph;
            if (ih < 0 || ih >= d.H) continue;
            float* dst = xp + ih * d.W + sw;
#pragma omp simd
            for (int64_t ow = w0; ow < w1; ++ow) dst[ow] += src[ow];
          }
        }
      }
  }
}

// y[n, co, :] = Y[co, n·HW : (n+1)·HW]
void scatter_out(const float* Y, float* y, const Dims& d) {
#pragma omp parallel for schedule(static)
  for (int64_t co = 0; co < d.Co; ++co)
    for (int64_t n = 0; n < d.N; ++n) std::memcpy(y + (n * d.Co + co) * d.HW, Y + co * d.NP + n * d.HW, d.HW * sizeof(float));
}

void gather_dy(const float* dy, float* dY, const Dims& d) {
#pragma omp parallel for schedule(static)
  for (int64_t co = 0; co < d.Co; ++co)
    for (int64_t n = 0; n < d.N; ++n) std::memcpy(dY + co * d.NP + n * d.HW, dy + (n * d.Co + co) * d.HW, d.HW * sizeof(float));
}

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Buf = std::unique_ptr<float, FreeDeleter>;

Buf alloc_floats(size_t n) {
  size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
  float* p = static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64));
  DWC_CHECK(p != nullptr, Internal, "conv: out of memory allocating a " << bytes << "-byte workspace");
  return Buf(p);
}

}  // namespace

size_t conv2d_workspace_floats(int N, int Ci, int Co, int H, int W, int kh, int kw) {
  Dims d(N, Ci, Co, H, W, kh, kw);
  return static_cast<size_t>((d.K + d.Co) * d.NP);
}

void conv2d_forward(const float* x, const float* w, float* y, int N, int Ci, int Co, int H, int W, int kh, int kw, float* workspace) {
  Dims d(N, Ci, Co, H, W, kh, kw);
  if (d.NP == 0 || d.Co == 0) return;
  Buf own;
  if (!workspace) {
    own = alloc_floats(conv2d_workspace_floats(N, Ci, Co, H, W, kh, kw));
    workspace = own.get();
  }
  float* cols = workspace;
  float* Y = workspace + d.K * d.NP;
  if (d.K == 0) {
    std::memset(y, 0, sizeof(float) * d.N * d.Co * d.HW);
    return;
  }
  im2col(x, cols, d);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Co, static_cast<int>(d.NP), static_cast<int>(d.K), 1.f, w,
              static_cast<int>(d.K), cols, static_cast<int>(d.NP), 0.f, Y, static_cast<int>(d.NP));
  scatter_out(Y, y, d);
}

void conv2d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int N, int Ci, int Co, int H, int W, int kh,
                     int kw, float* workspace) {
  Dims d(N, Ci, Co, H, W, kh, kw);
  if (d.NP == 0 || d.Co == 0 || d.K == 0 || (!dx && !dw)) return;
  Buf own;
  if (!workspace) {
    own = alloc_floats(conv2d_workspace_floats(N, Ci, Co, H, W, kh, kw));
    workspace = own.get();
  }
  float* cols = workspace;
  float* dY = workspace + d.K * d.NP;
  const int M = Co, NP = static_cast<int>(d.NP), K = static_cast<int>(d.K);
  gather_dy(dy, dY, d);
  if (dw) {
    im2col(x, cols, d);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, NP, 1.f, dY, NP, cols, NP, 1.f, dw, K);
  }
  if (dx) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, NP, M, 1.f, w, K, dY, NP, 0.f, cols, NP);
    col2im_add(cols, dx, d);
  }
}

// ---- ops (JS tests / benchmarks) ----
namespace {

// The ops keep one workspace between calls (as the engine's arena would); a concurrent call
// that finds it busy allocates its own.
std::mutex g_ws_mutex;
Buf g_ws;
size_t g_ws_size = 0;

struct OpWorkspace {
  std::unique_lock<std::mutex> lock;
  Buf own;
  float* ptr = nullptr;
  explicit OpWorkspace(size_t n) : lock(g_ws_mutex, std::try_to_lock) {
    if (lock.owns_lock()) {
      if (g_ws_size < n) {
        g_ws.reset();
        g_ws = alloc_floats(n);
        g_ws_size = n;
      }
      ptr = g_ws.get();
    } else {
      own = alloc_floats(n);
      ptr = own.get();
    }
  }
};

struct ConvArgs {
  const Tensor* x;
  const Tensor* w;
  int N, Ci, Co, H, W, kh, kw;
};

// conv2d: x[N,Ci,H,W], w[Co,Ci,k,k]; conv1d: x[N,Ci,L], w[Co,Ci,k] (H = kh = 1). k ∈ {1, 3}.
ConvArgs conv_args(OpCtx& c, bool two_d) {
  const int rank = two_d ? 4 : 3;
  const Tensor& x = c.in("x", rank);
  const Tensor& w = c.in("w", rank);
  c.expect_dim(w, "w", 1, x.dim(1), "Ci (channels of x)");
  const int64_t kh = two_d ? w.dim(2) : 1, kw = w.dim(rank - 1);
  DWC_ARG_CHECK((kw == 1 || kw == 3) && kh == (two_d ? kw : 1),
                c.op_name << ": argument 'w' has shape " << shape_str(w.shape) << ": kernel size must be 1 or 3"
                          << (two_d ? " (square)" : ""));
  ConvArgs a;
  a.x = &x;
  a.w = &w;
  a.N = static_cast<int>(x.dim(0));
  a.Ci = static_cast<int>(x.dim(1));
  a.Co = static_cast<int>(w.dim(0));
  a.H = two_d ? static_cast<int>(x.dim(2)) : 1;
  a.W = static_cast<int>(x.dim(rank - 1));
  a.kh = static_cast<int>(kh);
  a.kw = static_cast<int>(kw);
  return a;
}

std::vector<int64_t> y_shape(const ConvArgs& a, bool two_d) {
  if (two_d) return {a.N, a.Co, a.H, a.W};
  return {a.N, a.Co, a.W};
}

void conv_forward_op(OpCtx& c, bool two_d) {
  ConvArgs a = conv_args(c, two_d);
  Tensor& y = c.out("y", y_shape(a, two_d));
  OpWorkspace ws(conv2d_workspace_floats(a.N, a.Ci, a.Co, a.H, a.W, a.kh, a.kw));
  conv2d_forward(a.x->f32(), a.w->f32(), y.f32(), a.N, a.Ci, a.Co, a.H, a.W, a.kh, a.kw, ws.ptr);
}

void conv_backward_op(OpCtx& c, bool two_d) {
  ConvArgs a = conv_args(c, two_d);
  const Tensor& dy = c.in("dy");
  c.expect_shape(dy, "dy", y_shape(a, two_d));
  Tensor& dx = c.out("dx", a.x->shape);
  Tensor& dw = c.out("dw", a.w->shape);
  OpWorkspace ws(conv2d_workspace_floats(a.N, a.Ci, a.Co, a.H, a.W, a.kh, a.kw));
  conv2d_backward(a.x->f32(), a.w->f32(), dy.f32(), dx.f32(), dw.f32(), a.N, a.Ci, a.Co, a.H, a.W, a.kh, a.kw, ws.ptr);
}

}  // namespace

DWC_REGISTER_OP("conv2d_forward", "x [N,Ci,H,W], w [Co,Ci,k,k] (k 1|3, stride 1, pad k/2) -> y [N,Co,H,W]",
                [](OpCtx& c) { conv_forward_op(c, true); });
DWC_REGISTER_OP("conv2d_backward", "x, w, dy -> dx, dw", [](OpCtx& c) { conv_backward_op(c, true); });
DWC_REGISTER_OP("conv1d_forward", "x [N,Ci,L], w [Co,Ci,k] (k 1|3, stride 1, pad k/2) -> y [N,Co,L]",
                [](OpCtx& c) { conv_forward_op(c, false); });
DWC_REGISTER_OP("conv1d_backward", "x, w, dy -> dx, dw", [](OpCtx& c) { conv_backward_op(c, false); });

}  // namespace dwc::cpu

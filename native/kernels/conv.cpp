// Convolutions of the Inception blocks (spec §4). The whole minibatch is one GEMM:
//   cols[K = Ci·kh·kw, N·H·W] = im2col(x)            (k = 1: a transpose-pack of x)
//   Y[Co, N·H·W] = W[Co, K] · cols                     y = scatter(Y) to [N, Co, H, W]
//   dW[Co, K] += dY · colsᵀ,  dcols = Wᵀ · dY,  dx += col2im(dcols)
// Workspace: cols (K·NP floats), Y / dY (Co·NP), column masks (kw·H·W); backward reuses cols
// for dcols.
// The packing loops are deliberately serial: they are memory-bound (≈2 ms of a 35 ms GEMM at the
// paper's 1×1 shape), and an OpenMP region right before a GEMM leaves libgomp workers spinning
// while OpenBLAS's threads start, which measured 80-89 % of the SGEMM peak for 1×1 fwd+bwd
// against 92-93 % serial (bench/kernels.js).
#include "conv.h"

#include <algorithm>
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

// Tap (dh, dw) as a flat shift of an H×W plane: cols index j = oh·W + ow reads plane index
// j + off. Rows outside the plane fall outside [jlo, jhi); columns that would wrap into the
// neighbouring row are cut by colmask[dw] (1 where 0 <= ow + dw - pw < W).
struct Tap {
  int64_t off, jlo, jhi;
  const float* mask;
};

inline Tap make_tap(const Dims& d, int64_t dh, int64_t dw, const float* colmask) {
  const int64_t sh = dh - d.ph, sw = dw - d.pw, off = sh * d.W + sw;
  const int64_t oh0 = sh < 0 ? -sh : 0, oh1 = sh > 0 ? d.H - sh : d.H;
  Tap t;
  t.off = off;
  t.jlo = std::max(oh0 * d.W, -off);
  t.jhi = std::max(t.jlo, std::min(oh1 * d.W, d.HW - off));
  t.mask = colmask + dw * d.HW;
  return t;
}

// colmask[dw][oh·W + ow] = 1 if the source column ow + dw − pw is inside the plane.
void fill_colmask(float* colmask, const Dims& d) {
  for (int64_t dw = 0; dw < d.kw; ++dw)
    for (int64_t j = 0; j < d.HW; ++j) {
      const int64_t iw = j % d.W + dw - d.pw;
      colmask[dw * d.HW + j] = (iw >= 0 && iw < d.W) ? 1.f : 0.f;
    }
}

// cols[(ci,dh,dw), n, oh, ow] = x[n, ci, oh+dh-ph, ow+dw-pw] (0 outside).
void im2col(const float* x, float* cols, const float* colmask, const Dims& d) {
  if (d.kh == 1 && d.kw == 1) {
    for (int64_t ci = 0; ci < d.Ci; ++ci)
      for (int64_t n = 0; n < d.N; ++n) std::memcpy(cols + ci * d.NP + n * d.HW, x + (n * d.Ci + ci) * d.HW, d.HW * sizeof(float));
    return;
  }
  for (int64_t r = 0; r < d.K; ++r) {
    const int64_t ci = r / (d.kh * d.kw), dh = (r / d.kw) % d.kh, dw = r % d.kw;
    const Tap t = make_tap(d, dh, dw, colmask);
    const float* m = t.mask;
    for (int64_t n = 0; n < d.N; ++n) {
      const float* src = x + (n * d.Ci + ci) * d.HW;
      float* dst = cols + r * d.NP + n * d.HW;
      for (int64_t j = 0; j < t.jlo; ++j) dst[j] = 0.f;
#pragma omp simd
      for (int64_t j = t.jlo; j < t.jhi; ++j) {
        const float v = src[j + t.off];  // unconditional load: the select vectorises
        dst[j] = m[j] != 0.f ? v : 0.f;
      }
      for (int64_t j = t.jhi; j < d.HW; ++j) dst[j] = 0.f;
    }
  }
}

// dx[n, ci, ih, iw] += Σ dcols[(ci,dh,dw), n, ih-dh+ph, iw-dw+pw]. Parallel over ci: no races.
void col2im_add(const float* dcols, float* dx, const float* colmask, const Dims& d) {
  if (d.kh == 1 && d.kw == 1) {
    for (int64_t ci = 0; ci < d.Ci; ++ci)
      for (int64_t n = 0; n < d.N; ++n) {
        float* o = dx + (n * d.Ci + ci) * d.HW;
        const float* s = dcols + ci * d.NP + n * d.HW;
#pragma omp simd
        for (int64_t i = 0; i < d.HW; ++i) o[i] += s[i];
      }
    return;
  }
  const int64_t taps = d.kh * d.kw;
  for (int64_t ci = 0; ci < d.Ci; ++ci) {
    for (int64_t n = 0; n < d.N; ++n) {
      float* plane = dx + (n * d.Ci + ci) * d.HW;
      for (int64_t tp = 0; tp < taps; ++tp) {
        const Tap t = make_tap(d, tp / d.kw, tp % d.kw, colmask);
        const float* m = t.mask;
        const float* s = dcols + (ci * taps + tp) * d.NP + n * d.HW;
#pragma omp simd
        for (int64_t j = t.jlo; j < t.jhi; ++j) {
          const float v = s[j];
          plane[j + t.off] += m[j] != 0.f ? v : 0.f;
        }
      }
    }
  }
}

// y[n, co, :] = Y[co, n·HW : (n+1)·HW]
void scatter_out(const float* Y, float* y, const Dims& d) {
  for (int64_t co = 0; co < d.Co; ++co)
    for (int64_t n = 0; n < d.N; ++n) std::memcpy(y + (n * d.Co + co) * d.HW, Y + co * d.NP + n * d.HW, d.HW * sizeof(float));
}

void gather_dy(const float* dy, float* dY, const Dims& d) {
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
  return static_cast<size_t>((d.K + d.Co) * d.NP + d.kw * d.HW);
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
  float* colmask = Y + d.Co * d.NP;
  if (d.K == 0) {
    std::memset(y, 0, sizeof(float) * d.N * d.Co * d.HW);
    return;
  }
  fill_colmask(colmask, d);
  im2col(x, cols, colmask, d);
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
  float* colmask = dY + d.Co * d.NP;
  fill_colmask(colmask, d);
  const int M = Co, NP = static_cast<int>(d.NP), K = static_cast<int>(d.K);
  gather_dy(dy, dY, d);
  if (dw) {
    im2col(x, cols, colmask, d);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, NP, 1.f, dY, NP, cols, NP, 1.f, dw, K);
  }
  if (dx) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, NP, M, 1.f, w, K, dY, NP, 0.f, cols, NP);
    col2im_add(cols, dx, colmask, d);
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

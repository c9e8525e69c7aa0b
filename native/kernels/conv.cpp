// 2-D convolutions (spec §4 Inception blocks, issue 5 trunks). One im2col/col2im for every
// kernel size, stride and padding:
//   cols[K = Ci·kh·kw, n, oh, ow] = x[n, ci, oh·sh − ph + dh, ow·sw − pw + dw]   (0 outside)
// Small output planes (Ho·Wo < kPerSamplePlane): the whole minibatch is one GEMM,
//   Y[Co, N·Po] = W[Co, K] · cols,  y = scatter(Y);  dW += dY · colsᵀ,  dx += col2im(Wᵀ · dY).
// Large planes: one GEMM per sample straight into y / from dy (no scatter), and 1×1/1 pad-0 convs
// use x's planes as the GEMM operand directly (no packing at all). The samples run in parallel,
// one thread each with a single-threaded GEMM and its own K·Po slice of the workspace (these
// GEMMs are too small to split well); dW sums per-thread partials.
// Packing loops run OpenMP-parallel above kOmpMinFloats; GEMMs go through dwc::sgemm (one thread
// pool for both, core/blas.h). The dW partials buffer is shared: one native computation runs at a
// time (core/threads.h).
#include "conv.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "../core/blas.h"
#include "../core/op.h"
#include "../core/threads.h"
#include "conv_dnnl.h"
#ifdef _OPENMP
#include <omp.h>
#endif

namespace dwc::cpu {

namespace {

constexpr int64_t kPerSamplePlane = 512;     // Ho·Wo from which each sample gets its own GEMM
constexpr int64_t kOmpMinFloats = 1 << 16;   // packing work below this stays serial

struct Plan {
  int64_t N, Ci, Co, H, W, kh, kw, sh, sw, ph, pw;
  int64_t Ho, Wo, Po, HW, K, NP;
  bool pointwise;   // 1×1, stride 1, pad 0
  bool per_sample;  // one GEMM per sample
};

Plan make_plan(const Conv2dGeom& g) {
  Plan p;
  p.N = g.N, p.Ci = g.Ci, p.Co = g.Co, p.H = g.H, p.W = g.W, p.kh = g.kh, p.kw = g.kw;
  p.sh = g.sh, p.sw = g.sw, p.ph = g.ph, p.pw = g.pw;
  p.Ho = g.Ho(), p.Wo = g.Wo();
  p.Po = p.Ho * p.Wo, p.HW = p.H * p.W, p.K = p.Ci * p.kh * p.kw, p.NP = p.N * p.Po;
  p.pointwise = p.kh == 1 && p.kw == 1 && p.sh == 1 && p.sw == 1 && p.ph == 0 && p.pw == 0;
  p.per_sample = p.Po >= kPerSamplePlane || p.N == 1;
  return p;
}

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Outputs o in [lo, hi) whose input index o·s − pad + tap lies in [0, n).
inline void valid_range(int64_t n, int64_t outn, int64_t s, int64_t pad, int64_t tap, int64_t* lo, int64_t* hi) {
  *lo = std::max<int64_t>(0, -floor_div(tap - pad, s));  // ceil((pad − tap) / s)
  *hi = std::min<int64_t>(outn, floor_div(n - 1 + pad - tap, s) + 1);
  if (*hi < *lo) *hi = *lo;
}

// cols[r, n − n0, :] for samples [n0, n0 + nb); ldc = row stride of cols (nb·Po).
void im2col(const float* x, float* cols, int64_t ldc, int64_t n0, int64_t nb, const Plan& p) {
  const int64_t taps = p.kh * p.kw;
#pragma omp parallel for schedule(static) if (p.K * nb * p.Po >= kOmpMinFloats)
  for (int64_t r = 0; r < p.K; ++r) {
    const int64_t ci = r / taps, dh = (r / p.kw) % p.kh, dw = r % p.kw;
    int64_t oh0, oh1, ow0, ow1;
    valid_range(p.H, p.Ho, p.sh, p.ph, dh, &oh0, &oh1);
    valid_range(p.W, p.Wo, p.sw, p.pw, dw, &ow0, &ow1);
    for (int64_t n = 0; n < nb; ++n) {
      const float* src = x + ((n0 + n) * p.Ci + ci) * p.HW;
      float* dst = cols + r * ldc + n * p.Po;
      if (p.pointwise) {
        std::memcpy(dst, src, p.Po * sizeof(float));
        continue;
      }
      std::memset(dst, 0, oh0 * p.Wo * sizeof(float));
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        float* d = dst + oh * p.Wo;
        const float* s = src + (oh * p.sh - p.ph + dh) * p.W - p.pw + dw;  // s[ow·sw] for ow in [ow0, ow1)
        for (int64_t ow = 0; ow < ow0; ++ow) d[ow] = 0.f;
        if (p.sw == 1) {
          std::memcpy(d + ow0, s + ow0, (ow1 - ow0) * sizeof(float));
        } else {
          for (int64_t ow = ow0; ow < ow1; ++ow) d[ow] = s[ow * p.sw];
        }
        for (int64_t ow = ow1; ow < p.Wo; ++ow) d[ow] = 0.f;
      }
      std::memset(dst + oh1 * p.Wo, 0, (p.Ho - oh1) * p.Wo * sizeof(float));
    }
  }
}

// dx[n, ci, ih, iw] += Σ dcols[(ci,dh,dw), n − n0, oh, ow] over the taps that read (ih, iw).
// Parallel over ci: every thread owns whole input planes, no races.
void col2im_add(const float* dcols, int64_t ldc, float* dx, int64_t n0, int64_t nb, const Plan& p) {
  const int64_t taps = p.kh * p.kw;
#pragma omp parallel for schedule(static) if (p.K * nb * p.Po >= kOmpMinFloats)
  for (int64_t ci = 0; ci < p.Ci; ++ci) {
    for (int64_t n = 0; n < nb; ++n) {
      float* plane = dx + ((n0 + n) * p.Ci + ci) * p.HW;
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t dh = t / p.kw, dw = t % p.kw;
        const float* s = dcols + (ci * taps + t) * ldc + n * p.Po;
        if (p.pointwise) {
#pragma omp simd
          for (int64_t i = 0; i < p.Po; ++i) plane[i] += s[i];
          continue;
        }
        int64_t oh0, oh1, ow0, ow1;
        valid_range(p.H, p.Ho, p.sh, p.ph, dh, &oh0, &oh1);
        valid_range(p.W, p.Wo, p.sw, p.pw, dw, &ow0, &ow1);
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          float* d = plane + (oh * p.sh - p.ph + dh) * p.W - p.pw + dw;
          const float* sr = s + oh * p.Wo;
          if (p.sw == 1) {
#pragma omp simd
            for (int64_t ow = ow0; ow < ow1; ++ow) d[ow] += sr[ow];
          } else {
            for (int64_t ow = ow0; ow < ow1; ++ow) d[ow * p.sw] += sr[ow];
          }
        }
      }
    }
  }
}

// y[n, co, :] = Y[co, n·Po : (n+1)·Po]
void scatter_out(const float* Y, float* y, const Plan& p) {
#pragma omp parallel for schedule(static) if (p.Co * p.NP >= kOmpMinFloats)
  for (int64_t co = 0; co < p.Co; ++co)
    for (int64_t n = 0; n < p.N; ++n) std::memcpy(y + (n * p.Co + co) * p.Po, Y + co * p.NP + n * p.Po, p.Po * sizeof(float));
}

void gather_dy(const float* dy, float* dY, const Plan& p) {
#pragma omp parallel for schedule(static) if (p.Co * p.NP >= kOmpMinFloats)
  for (int64_t co = 0; co < p.Co; ++co)
    for (int64_t n = 0; n < p.N; ++n) std::memcpy(dY + co * p.NP + n * p.Po, dy + (n * p.Co + co) * p.Po, p.Po * sizeof(float));
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

// Threads working on samples at once (the per-sample path).
int sample_workers(const Plan& p) { return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), p.N))); }

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

size_t plan_workspace(const Plan& p) {
  if (p.per_sample) return p.pointwise ? 0 : static_cast<size_t>(sample_workers(p) * p.K * p.Po);
  return static_cast<size_t>((p.K + p.Co) * p.NP);
}

inline int I(int64_t v) { return static_cast<int>(v); }

}  // namespace

size_t conv2d_general_workspace_floats(const Conv2dGeom& g) { return plan_workspace(make_plan(g)); }

namespace {
std::atomic<ConvImpl> g_conv_impl{ConvImpl::Auto};
}

void set_conv_impl(ConvImpl impl) {
  DWC_ARG_CHECK(impl != ConvImpl::Dnnl || have_dnnl(),
                "conv: the oneDNN backend is not compiled in (install libdnnl-dev and rebuild: npm run build:native)");
  g_conv_impl = impl;
}
ConvImpl conv_impl() { return g_conv_impl.load(std::memory_order_relaxed); }
const char* conv_impl_name(ConvImpl impl) {
  return impl == ConvImpl::Dnnl ? "onednn" : impl == ConvImpl::Im2col ? "im2col" : "auto";
}

bool conv_uses_dnnl(const Conv2dGeom& g) {
  if (!have_dnnl() || !dnnl_conv_supported(g)) return false;
  switch (conv_impl()) {
    case ConvImpl::Dnnl: return true;
    case ConvImpl::Im2col: return false;
    case ConvImpl::Auto: break;
  }
  if (gemm_impl() != GemmImpl::Dnnl) return false;
  return dnnl_conv_rule(g);
}

void conv2d_general_forward(const float* x, const float* w, float* y, const Conv2dGeom& g, float* workspace) {
  const Plan p = make_plan(g);
  if (p.NP <= 0 || p.Co == 0) return;
  if (conv_uses_dnnl(g)) {
    dnnl_conv_forward(x, w, y, g);
    return;
  }
  if (p.K == 0) {
    std::memset(y, 0, sizeof(float) * p.Co * p.NP);
    return;
  }
  Buf own;
  if (!workspace && plan_workspace(p) > 0) {
    own = alloc_floats(plan_workspace(p));
    workspace = own.get();
  }
  if (p.per_sample) {
    const int T = sample_workers(p);
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
    for (int64_t n = 0; n < p.N; ++n) {
      const float* B = x + n * p.Ci * p.HW;
      if (!p.pointwise) {
        float* ws = workspace + thread_id() * p.K * p.Po;
        im2col(x, ws, p.Po, n, 1, p);
        B = ws;
      }
      sgemm(CblasNoTrans, CblasNoTrans, I(p.Co), I(p.Po), I(p.K), 1.f, w, I(p.K), B, I(p.Po), 0.f, y + n * p.Co * p.Po, I(p.Po));
    }
    return;
  }
  float* cols = workspace;
  float* Y = workspace + p.K * p.NP;
  im2col(x, cols, p.NP, 0, p.N, p);
  sgemm(CblasNoTrans, CblasNoTrans, I(p.Co), I(p.NP), I(p.K), 1.f, w, I(p.K), cols, I(p.NP), 0.f, Y, I(p.NP));
  scatter_out(Y, y, p);
}

void conv2d_general_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g,
                             float* workspace, bool accumulate_dx) {
  const Plan p = make_plan(g);
  if (p.NP <= 0 || p.Co == 0 || p.K == 0 || (!dx && !dw)) return;
  if (conv_uses_dnnl(g)) {
    dnnl_conv_backward(x, w, dy, dx, dw, g, accumulate_dx);
    return;
  }
  Buf own;
  if (!workspace && plan_workspace(p) > 0) {
    own = alloc_floats(plan_workspace(p));
    workspace = own.get();
  }
  if (p.per_sample) {
    const int T = sample_workers(p);
    // dW partials of threads 1..T-1 (thread 0 adds into dw): kept between calls, grown once
    static std::vector<float> partial;
    const int64_t nw = p.Co * p.K;
    if (dw && T > 1 && static_cast<int64_t>(partial.size()) < (T - 1) * nw) partial.resize(static_cast<size_t>((T - 1) * nw));
    if (dw && T > 1) std::fill(partial.begin(), partial.begin() + (T - 1) * nw, 0.f);
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
    for (int64_t n = 0; n < p.N; ++n) {
      const int tid = thread_id();
      float* ws = p.pointwise ? nullptr : workspace + tid * p.K * p.Po;
      const float* dyn = dy + n * p.Co * p.Po;
      if (dw) {
        const float* B = x + n * p.Ci * p.HW;
        if (!p.pointwise) {
          im2col(x, ws, p.Po, n, 1, p);
          B = ws;
        }
        float* dwt = tid == 0 ? dw : partial.data() + (tid - 1) * nw;
        sgemm(CblasNoTrans, CblasTrans, I(p.Co), I(p.K), I(p.Po), 1.f, dyn, I(p.Po), B, I(p.Po), 1.f, dwt, I(p.K));
      }
      if (dx) {
        float* dxn = dx + n * p.Ci * p.HW;
        if (p.pointwise) {
          sgemm(CblasTrans, CblasNoTrans, I(p.K), I(p.Po), I(p.Co), 1.f, w, I(p.K), dyn, I(p.Po), accumulate_dx ? 1.f : 0.f, dxn, I(p.Po));
        } else {
          sgemm(CblasTrans, CblasNoTrans, I(p.K), I(p.Po), I(p.Co), 1.f, w, I(p.K), dyn, I(p.Po), 0.f, ws, I(p.Po));
          if (!accumulate_dx) std::memset(dxn, 0, static_cast<size_t>(p.Ci * p.HW) * sizeof(float));
          col2im_add(ws, p.Po, dx, n, 1, p);
        }
      }
    }
    if (dw && T > 1)
      for (int t = 1; t < T; ++t) {
        const float* src = partial.data() + (t - 1) * nw;
#pragma omp parallel for schedule(static) if (nw >= kOmpMinFloats)
        for (int64_t i = 0; i < nw; ++i) dw[i] += src[i];
      }
    return;
  }
  float* cols = workspace;
  float* dY = workspace + p.K * p.NP;
  gather_dy(dy, dY, p);
  if (dw) {
    im2col(x, cols, p.NP, 0, p.N, p);
    sgemm(CblasNoTrans, CblasTrans, I(p.Co), I(p.K), I(p.NP), 1.f, dY, I(p.NP), cols, I(p.NP), 1.f, dw, I(p.K));
  }
  if (dx) {
    sgemm(CblasTrans, CblasNoTrans, I(p.K), I(p.NP), I(p.Co), 1.f, w, I(p.K), dY, I(p.NP), 0.f, cols, I(p.NP));
    if (!accumulate_dx) std::memset(dx, 0, static_cast<size_t>(p.N * p.Ci * p.HW) * sizeof(float));
    col2im_add(cols, p.NP, dx, 0, p.N, p);
  }
}

// ---- stride-1 "same" wrappers (Inception blocks) ----
namespace {
Conv2dGeom same_geom(int N, int Ci, int Co, int H, int W, int kh, int kw) {
  Conv2dGeom g;
  g.N = N, g.Ci = Ci, g.Co = Co, g.H = H, g.W = W, g.kh = kh, g.kw = kw, g.ph = kh / 2, g.pw = kw / 2;
  return g;
}
}  // namespace

size_t conv2d_workspace_floats(int N, int Ci, int Co, int H, int W, int kh, int kw) {
  return conv2d_general_workspace_floats(same_geom(N, Ci, Co, H, W, kh, kw));
}

void conv2d_forward(const float* x, const float* w, float* y, int N, int Ci, int Co, int H, int W, int kh, int kw, float* workspace) {
  conv2d_general_forward(x, w, y, same_geom(N, Ci, Co, H, W, kh, kw), workspace);
}

void conv2d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int N, int Ci, int Co, int H, int W, int kh,
                     int kw, float* workspace) {
  conv2d_general_backward(x, w, dy, dx, dw, same_geom(N, Ci, Co, H, W, kh, kw), workspace);
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

// ---- general conv ops: any kernel, square stride and padding ----
namespace {

Conv2dGeom general_args(OpCtx& c) {
  const Tensor& x = c.in("x", 4);
  const Tensor& w = c.in("w", 4);
  c.expect_dim(w, "w", 1, x.dim(1), "Ci (channels of x)");
  const int64_t stride = c.int_attr_or("stride", 1), pad = c.int_attr_or("pad", 0);
  DWC_ARG_CHECK(stride >= 1 && stride <= 1024, c.op_name << ": option 'stride' must be an integer in [1, 1024], got " << stride);
  DWC_ARG_CHECK(pad >= 0 && pad <= 1024, c.op_name << ": option 'pad' must be an integer in [0, 1024], got " << pad);
  DWC_ARG_CHECK(w.dim(0) >= 1 && w.dim(2) >= 1 && w.dim(3) >= 1,
                c.op_name << ": argument 'w' has shape " << shape_str(w.shape) << ": Co, kh and kw must be positive");
  Conv2dGeom g;
  g.N = static_cast<int>(x.dim(0));
  g.Ci = static_cast<int>(x.dim(1));
  g.H = static_cast<int>(x.dim(2));
  g.W = static_cast<int>(x.dim(3));
  g.Co = static_cast<int>(w.dim(0));
  g.kh = static_cast<int>(w.dim(2));
  g.kw = static_cast<int>(w.dim(3));
  g.sh = g.sw = static_cast<int>(stride);
  g.ph = g.pw = static_cast<int>(pad);
  DWC_ARG_CHECK(g.H + 2 * g.ph >= g.kh && g.W + 2 * g.pw >= g.kw,
                c.op_name << ": argument 'x' has shape " << shape_str(x.shape) << ": padded input " << g.H + 2 * g.ph << "x"
                          << g.W + 2 * g.pw << " is smaller than the " << g.kh << "x" << g.kw << " kernel of 'w'");
  return g;
}

}  // namespace

DWC_REGISTER_OP("conv2d_general_forward", "x [N,Ci,H,W], w [Co,Ci,kh,kw]; stride=1, pad=0 -> y [N,Co,Ho,Wo]", [](OpCtx& c) {
  const Conv2dGeom g = general_args(c);
  Tensor& y = c.out("y", {g.N, g.Co, g.Ho(), g.Wo()});
  OpWorkspace ws(conv2d_general_workspace_floats(g));
  conv2d_general_forward(c.in("x").f32(), c.in("w").f32(), y.f32(), g, ws.ptr);
});

// dx_init (optional): dx's starting value; accumulate (1) adds to it, 0 overwrites it.
DWC_REGISTER_OP("conv2d_general_backward", "x, w, dy [N,Co,Ho,Wo], dx_init?; stride=1, pad=0, accumulate=1 -> dx, dw", [](OpCtx& c) {
  const Conv2dGeom g = general_args(c);
  const Tensor& x = c.in("x");
  const Tensor& w = c.in("w");
  const Tensor& dy = c.in("dy");
  c.expect_shape(dy, "dy", {g.N, g.Co, g.Ho(), g.Wo()});
  Tensor& dx = c.out("dx", x.shape);
  Tensor& dw = c.out("dw", w.shape);
  if (const Tensor* d0 = c.in_opt("dx_init")) {
    c.expect_shape(*d0, "dx_init", x.shape);
    std::copy(d0->f32(), d0->f32() + x.numel(), dx.f32());
  }
  OpWorkspace ws(conv2d_general_workspace_floats(g));
  conv2d_general_backward(x.f32(), w.f32(), dy.f32(), dx.f32(), dw.f32(), g, ws.ptr, c.flag("accumulate", true));
});

}  // namespace dwc::cpu

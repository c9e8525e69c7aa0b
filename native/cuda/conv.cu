// CUDA twin of native/kernels/conv.h: im2col into [nb, K, Po] for a chunk of nb samples, then
// one strided-batched cuBLAS GEMM per chunk, y[n] = W[Co,K] · cols[n] (W shared: stride 0).
// Backward: dW += Σ_n dy[n] · cols[n]ᵀ (one GEMM per sample, serial on the stream, into the same
// dW), dcols[n] = Wᵀ · dy[n] (strided batched), dx += col2im(dcols) as a gather (each dx element
// sums the taps that read it: no atomics). 1×1/1 pad-0 convs use x and dx directly.
#include <algorithm>

#include "common.cuh"

namespace dwc::cuda {

namespace {

constexpr int64_t kMaxChunkFloats = int64_t(1) << 26;  // 256 MiB of im2col workspace at most

struct Plan {
  int64_t N, Ci, Co, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, Po, HW, K;
  bool pointwise;
  int64_t chunk;  // samples per im2col chunk
};

Plan make_plan(const cpu::Conv2dGeom& g) {
  Plan p;
  p.N = g.N, p.Ci = g.Ci, p.Co = g.Co, p.H = g.H, p.W = g.W, p.kh = g.kh, p.kw = g.kw, p.sh = g.sh, p.sw = g.sw, p.ph = g.ph, p.pw = g.pw;
  p.Ho = g.Ho(), p.Wo = g.Wo(), p.Po = p.Ho * p.Wo, p.HW = p.H * p.W, p.K = p.Ci * p.kh * p.kw;
  p.pointwise = p.kh == 1 && p.kw == 1 && p.sh == 1 && p.sw == 1 && p.ph == 0 && p.pw == 0;
  const int64_t per = std::max<int64_t>(1, p.K * p.Po);
  p.chunk = std::max<int64_t>(1, std::min<int64_t>(p.N, kMaxChunkFloats / per));
  return p;
}

// cols[n − n0, r, oh, ow] = x[n, ci, oh·sh − ph + dh, ow·sw − pw + dw] (0 outside), r = (ci, dh, dw).
__global__ void im2col_k(const float* x, float* cols, int64_t n0, int64_t nb, Plan p) {
  const int64_t total = nb * p.K * p.Po;
  const int64_t taps = p.kh * p.kw;
  DWC_GRID_STRIDE(i, total) {
    const int64_t ow = i % p.Wo, oh = (i / p.Wo) % p.Ho, r = (i / p.Po) % p.K, n = i / (p.Po * p.K);
    const int64_t ci = r / taps, dh = (r / p.kw) % p.kh, dw = r % p.kw;
    const int64_t ih = oh * p.sh - p.ph + dh, iw = ow * p.sw - p.pw + dw;
    cols[i] = (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W) ? x[((n0 + n) * p.Ci + ci) * p.HW + ih * p.W + iw] : 0.f;
  }
}

// dx[n, ci, ih, iw] += Σ over taps (dh, dw) with ih = oh·sh − ph + dh, iw = ow·sw − pw + dw of dcols.
__global__ void col2im_add_k(const float* dcols, float* dx, int64_t n0, int64_t nb, Plan p) {
  const int64_t total = nb * p.Ci * p.HW;
  const int64_t taps = p.kh * p.kw;
  DWC_GRID_STRIDE(i, total) {
    const int64_t iw = i % p.W, ih = (i / p.W) % p.H, ci = (i / p.HW) % p.Ci, n = i / (p.HW * p.Ci);
    float s = 0.f;
    for (int64_t dh = 0; dh < p.kh; ++dh) {
      const int64_t a = ih + p.ph - dh;
      if (a < 0 || a % p.sh) continue;
      const int64_t oh = a / p.sh;
      if (oh >= p.Ho) continue;
      for (int64_t dw = 0; dw < p.kw; ++dw) {
        const int64_t b = iw + p.pw - dw;
        if (b < 0 || b % p.sw) continue;
        const int64_t ow = b / p.sw;
        if (ow >= p.Wo) continue;
        s += dcols[(n * p.K + ci * taps + dh * p.kw + dw) * p.Po + oh * p.Wo + ow];
      }
    }
    dx[(n0 * p.Ci) * p.HW + i] += s;
  }
}

inline int I(int64_t v) { return static_cast<int>(v); }

}  // namespace

size_t conv2d_general_workspace_floats(const cpu::Conv2dGeom& g) {
  const Plan p = make_plan(g);
  return p.pointwise ? 0 : static_cast<size_t>(p.chunk * p.K * p.Po);
}

void conv2d_general_forward(const Ctx& c, const float* x, const float* w, float* y, const cpu::Conv2dGeom& g, float* ws) {
  const Plan p = make_plan(g);
  if (p.N * p.Po <= 0 || p.Co == 0) return;
  if (p.K == 0) {
    fill(c, y, 0.f, p.N * p.Co * p.Po);
    return;
  }
  if (p.pointwise) {
    gemm_batched(c, I(p.N), false, false, I(p.Co), I(p.Po), I(p.K), 1.f, w, 0, x, p.Ci * p.HW, 0.f, y, p.Co * p.Po);
    return;
  }
  if (!ws) ws = c.scratch->f(kScratchConv, cuda::conv2d_general_workspace_floats(g));
  for (int64_t n0 = 0; n0 < p.N; n0 += p.chunk) {
    const int64_t nb = std::min(p.chunk, p.N - n0);
    im2col_k<<<blocks_for(nb * p.K * p.Po), kThreads, 0, c.stream>>>(x, ws, n0, nb, p);
    DWC_CUDA_LAUNCH_CHECK("im2col_k");
    gemm_batched(c, I(nb), false, false, I(p.Co), I(p.Po), I(p.K), 1.f, w, 0, ws, p.K * p.Po, 0.f, y + n0 * p.Co * p.Po, p.Co * p.Po);
  }
}

void conv2d_general_backward(const Ctx& c, const float* x, const float* w, const float* dy, float* dx, float* dw, const cpu::Conv2dGeom& g,
                             float* ws) {
  const Plan p = make_plan(g);
  if (p.N * p.Po <= 0 || p.Co == 0 || p.K == 0 || (!dx && !dw)) return;
  if (p.pointwise) {
    if (dw)
      for (int64_t n = 0; n < p.N; ++n)
        gemm(c, false, true, I(p.Co), I(p.K), I(p.Po), 1.f, dy + n * p.Co * p.Po, x + n * p.Ci * p.HW, 1.f, dw);
    if (dx) gemm_batched(c, I(p.N), true, false, I(p.K), I(p.Po), I(p.Co), 1.f, w, 0, dy, p.Co * p.Po, 1.f, dx, p.Ci * p.HW);
    return;
  }
  if (!ws) ws = c.scratch->f(kScratchConv, cuda::conv2d_general_workspace_floats(g));
  for (int64_t n0 = 0; n0 < p.N; n0 += p.chunk) {
    const int64_t nb = std::min(p.chunk, p.N - n0);
    const float* dyc = dy + n0 * p.Co * p.Po;
    if (dw) {
      im2col_k<<<blocks_for(nb * p.K * p.Po), kThreads, 0, c.stream>>>(x, ws, n0, nb, p);
      DWC_CUDA_LAUNCH_CHECK("im2col_k");
      for (int64_t n = 0; n < nb; ++n)
        gemm(c, false, true, I(p.Co), I(p.K), I(p.Po), 1.f, dyc + n * p.Co * p.Po, ws + n * p.K * p.Po, 1.f, dw);
    }
    if (dx) {
      gemm_batched(c, I(nb), true, false, I(p.K), I(p.Po), I(p.Co), 1.f, w, 0, dyc, p.Co * p.Po, 0.f, ws, p.K * p.Po);
      col2im_add_k<<<blocks_for(nb * p.Ci * p.HW), kThreads, 0, c.stream>>>(ws, dx, n0, nb, p);
      DWC_CUDA_LAUNCH_CHECK("col2im_add_k");
    }
  }
}

}  // namespace dwc::cuda

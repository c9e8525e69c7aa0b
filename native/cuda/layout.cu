// CUDA twins of native/kernels/layout.h: one thread per output element, sums in the CPU kernels'
// order (so the results are the CPU's bit for bit where only copies and adds are involved).
#include <cmath>

#include "common.cuh"

namespace dwc::cuda {

namespace {

__device__ __forceinline__ int real_len(const int32_t* len, int64_t n, int P) {
  if (!len) return P;
  const int v = len[n];
  return v < 0 ? 0 : (v > P ? P : v);
}

__global__ void to_cm_k(const float* x, float* xc, int N, int C, int P, const int32_t* len) {
  const int64_t total = int64_t(N) * C * P;
  DWC_GRID_STRIDE(i, total) {  // i indexes xc [C, N, P]
    const int64_t p = i % P, n = (i / P) % N, c = i / (int64_t(P) * N);
    xc[i] = p < real_len(len, n, P) ? x[(n * C + c) * P + p] : 0.f;
  }
}
__global__ void from_cm_k(const float* xc, float* x, int N, int C, int P) {
  const int64_t total = int64_t(N) * C * P;
  DWC_GRID_STRIDE(i, total) {  // i indexes x [N, C, P]
    const int64_t p = i % P, c = (i / P) % C, n = i / (int64_t(P) * C);
    x[i] = xc[(c * N + n) * P + p];
  }
}
// cols [(ci, t), n, h, w] = r[ci, n, h + oy, w + ox] (0 outside), t = dh·3 + dw; flip negates (oy, ox)
__global__ void im2col_cm_k(const float* r, float* cols, int C, int N, int H, int W, int kh, bool flip) {
  const int taps = kh * 3, ph = kh / 2;
  const int64_t P = int64_t(H) * W, M = N * P, total = int64_t(C) * taps * M;
  DWC_GRID_STRIDE(i, total) {
    const int64_t row = i / M, m = i % M, ci = row / taps;
    const int t = static_cast<int>(row % taps), sy = t / 3 - ph, sx = t % 3 - 1, oy = flip ? -sy : sy, ox = flip ? -sx : sx;
    const int64_t n = m / P, hw = m % P;
    const int h = static_cast<int>(hw / W) + oy, w = static_cast<int>(hw % W) + ox;
    cols[i] = (h >= 0 && h < H && w >= 0 && w < W) ? r[ci * M + n * P + int64_t(h) * W + w] : 0.f;
  }
}
__global__ void transpose_batched_k(const float* x, float* y, int B, int R, int K, bool acc) {
  const int64_t total = int64_t(B) * R * K;
  DWC_GRID_STRIDE(o, total) {  // o indexes y [B, K, R]
    const int64_t i = o % R, j = (o / R) % K, b = o / (int64_t(R) * K);
    const float v = x[(b * R + i) * K + j];
    if (acc) y[o] += v;
    else y[o] = v;
  }
}
__device__ __forceinline__ int window_start(int i, int g, int n, int k) {
  return g == 1 ? 0 : static_cast<int>(llround(double(i) * (n - k) / (g - 1)));
}
__global__ void windows_gather_k(const float* map, float* win, int64_t BC, int H, int W, int g, int k, int kw) {
  const int R = g * g, kk = k * kw;
  const int64_t total = BC * R * kk;
  DWC_GRID_STRIDE(i, total) {
    const int64_t bc = i / (int64_t(R) * kk);
    const int r = static_cast<int>((i / kk) % R), e = static_cast<int>(i % kk);
    const int y0 = window_start(r / g, g, H, k), x0 = window_start(r % g, g, W, kw);
    win[i] = map[bc * H * W + int64_t(y0 + e / kw) * W + x0 + e % kw];
  }
}
// one thread per map element: the windows covering it, in window order (as the CPU loop)
__global__ void windows_scatter_k(float* map, const float* win, int64_t BC, int H, int W, int g, int k, int kw) {
  const int R = g * g, kk = k * kw;
  const int64_t total = BC * H * W;
  DWC_GRID_STRIDE(i, total) {
    const int64_t bc = i / (int64_t(H) * W);
    const int yy = static_cast<int>((i / W) % H), xx = static_cast<int>(i % W);
    float s = map[i];
    for (int r = 0; r < R; ++r) {
      const int y = yy - window_start(r / g, g, H, k), x = xx - window_start(r % g, g, W, kw);
      if (y >= 0 && y < k && x >= 0 && x < kw) s += win[(bc * R + r) * kk + y * kw + x];
    }
    map[i] = s;
  }
}
__global__ void seq_mean_fwd_k(const float* h, const int32_t* len, float* m, int B, int L, int E) {
  const int64_t total = int64_t(B) * E;
  DWC_GRID_STRIDE(i, total) {
    const int64_t b = i / E, k = i % E;
    const int n = len ? len[b] : L;
    float s = 0.f;
    for (int t = 0; t < n; ++t) s += h[(b * L + t) * E + k];
    m[i] = s * (1.f / float(n > 0 ? n : 1));
  }
}
__global__ void seq_mean_bwd_k(const float* dm, const int32_t* len, float* dh, int B, int L, int E) {
  const int64_t total = int64_t(B) * L * E;
  DWC_GRID_STRIDE(i, total) {
    const int64_t b = i / (int64_t(L) * E), t = (i / E) % L, k = i % E;
    const int n = len ? len[b] : L;
    dh[i] = t < n ? dm[b * E + k] * (1.f / float(n > 0 ? n : 1)) : 0.f;
  }
}
// F.interpolate bilinear, align_corners = False; the CPU's double source coordinate
__global__ void resize_bilinear_k(const float* x, float* y, int N, int S, int R) {
  const int64_t total = int64_t(N) * 3 * R * R;
  const double scale = double(S) / R;
  DWC_GRID_STRIDE(i, total) {
    const int64_t p = i / (int64_t(R) * R);
    const int oy = static_cast<int>((i / R) % R), ox = static_cast<int>(i % R);
    auto src = [&](int o, int* a0, int* a1, float* f) {
      double s = (o + 0.5) * scale - 0.5;
      if (s < 0) s = 0;
      int a = int(s);
      if (a > S - 1) a = S - 1;
      *a0 = a;
      *a1 = a + 1 < S ? a + 1 : S - 1;
      *f = float(s - a);
    };
    int y0, y1, x0, x1;
    float fy, fx;
    src(oy, &y0, &y1, &fy);
    src(ox, &x0, &x1, &fx);
    const float* r0 = x + p * S * S + int64_t(y0) * S;
    const float* r1 = x + p * S * S + int64_t(y1) * S;
    const float a = r0[x0] + (r0[x1] - r0[x0]) * fx;
    const float b = r1[x0] + (r1[x1] - r1[x0]) * fx;
    y[i] = a + (b - a) * fy;
  }
}
__global__ void add_scalar_k(float* y, float value, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] += value; }
__global__ void relu_mask_k(const float* y, const float* g, float* d, int64_t n) { DWC_GRID_STRIDE(i, n) d[i] = y[i] > 0.f ? g[i] : 0.f; }

}  // namespace

void to_channel_major(const Ctx& c, const float* x, float* xc, int N, int C, int P, const int32_t* lengths) {
  DWC_LAUNCH_1D(to_cm_k, int64_t(N) * C * P, x, xc, N, C, P, lengths);
}
void from_channel_major(const Ctx& c, const float* xc, float* x, int N, int C, int P) {
  DWC_LAUNCH_1D(from_cm_k, int64_t(N) * C * P, xc, x, N, C, P);
}
void im2col_cm(const Ctx& c, const float* r, float* cols, int C, int N, int H, int W, int kh, bool flip) {
  DWC_LAUNCH_1D(im2col_cm_k, int64_t(C) * kh * 3 * N * H * W, r, cols, C, N, H, W, kh, flip);
}
void transpose_batched(const Ctx& c, const float* x, float* y, int B, int R, int K, bool accumulate) {
  DWC_LAUNCH_1D(transpose_batched_k, int64_t(B) * R * K, x, y, B, R, K, accumulate);
}
void windows_gather(const Ctx& c, const float* map, float* win, int B, int C, int H, int W, int g, int k, int kw) {
  DWC_LAUNCH_1D(windows_gather_k, int64_t(B) * C * g * g * k * kw, map, win, int64_t(B) * C, H, W, g, k, kw);
}
void windows_scatter_add(const Ctx& c, float* map, const float* win, int B, int C, int H, int W, int g, int k, int kw) {
  DWC_LAUNCH_1D(windows_scatter_k, int64_t(B) * C * H * W, map, win, int64_t(B) * C, H, W, g, k, kw);
}
void seq_mean_forward(const Ctx& c, const float* h, const int32_t* lengths, float* m, int B, int L, int E) {
  DWC_LAUNCH_1D(seq_mean_fwd_k, int64_t(B) * E, h, lengths, m, B, L, E);
}
void seq_mean_backward(const Ctx& c, const float* dm, const int32_t* lengths, float* dh, int B, int L, int E) {
  DWC_LAUNCH_1D(seq_mean_bwd_k, int64_t(B) * L * E, dm, lengths, dh, B, L, E);
}
void resize_bilinear(const Ctx& c, const float* x, float* y, int N, int S, int R) {
  DWC_LAUNCH_1D(resize_bilinear_k, int64_t(N) * 3 * R * R, x, y, N, S, R);
}
void relu_mask(const Ctx& c, const float* y, const float* g, float* d, int64_t n) { DWC_LAUNCH_1D(relu_mask_k, n, y, g, d, n); }
void add_scalar(const Ctx& c, float* y, float value, int64_t n) { DWC_LAUNCH_1D(add_scalar_k, n, y, value, n); }

}  // namespace dwc::cuda

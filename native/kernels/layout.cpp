// Layout kernels of the model code (layout.h): the code as it was in native/model/, moved.
#include "layout.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace dwc::cpu {

namespace {
constexpr int64_t kOmpMin = 1 << 15;  // floats moved below which loops stay serial (Inception's)

// Start of window i of g along an axis of length n with window side k (encoder.h).
int window_start(int i, int g, int n, int k) { return g == 1 ? 0 : int(std::lround(double(i) * (n - k) / (g - 1))); }

template <bool kScatter>
void windows(float* map, float* win, int B, int C, int H, int W, int g, int k, int kw) {
  const int R = g * g, kk = k * kw;
#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < int64_t(B) * C; ++bc) {
    float* m = map + bc * H * W;
    for (int r = 0; r < R; ++r) {
      const int y0 = window_start(r / g, g, H, k), x0 = window_start(r % g, g, W, kw);
      float* w = win + (bc * R + r) * kk;
      for (int y = 0; y < k; ++y)
        for (int x = 0; x < kw; ++x) {
          if (kScatter) m[(y0 + y) * W + x0 + x] += w[y * kw + x];
          else w[y * kw + x] = m[(y0 + y) * W + x0 + x];
        }
    }
  }
}
}  // namespace

void to_channel_major(const float* x, float* xc, int N, int C, int P, const int32_t* lengths) {
#pragma omp parallel for schedule(static) if (int64_t(N) * C * P > kOmpMin)
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < N; ++n) {
      float* d = xc + (int64_t(c) * N + n) * P;
      const int Pn = lengths ? std::clamp<int>(lengths[n], 0, P) : P;
      std::memcpy(d, x + (int64_t(n) * C + c) * P, sizeof(float) * Pn);
      std::memset(d + Pn, 0, sizeof(float) * (P - Pn));
    }
}

void from_channel_major(const float* xc, float* x, int N, int C, int P) {
#pragma omp parallel for schedule(static) if (int64_t(N) * C * P > kOmpMin)
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < N; ++n) std::memcpy(x + (int64_t(n) * C + c) * P, xc + (int64_t(c) * N + n) * P, sizeof(float) * P);
}

void im2col_cm(const float* r, float* cols, int C, int N, int H, int W, int kh, bool flip) {
  const int kw = 3, taps = kh * kw, ph = kh / 2, P = H * W;
  const int64_t M = int64_t(N) * P;
#pragma omp parallel for schedule(static) if (int64_t(C) * taps * M > kOmpMin)
  for (int64_t row = 0; row < int64_t(C) * taps; ++row) {
    const int64_t ci = row / taps;
    const int dh = static_cast<int>(row % taps) / kw, dw = static_cast<int>(row % taps) % kw;
    const int oy = flip ? ph - dh : dh - ph, ox = flip ? 1 - dw : dw - 1;  // source offset
    const int h0 = std::max(0, -oy), h1 = std::min(H, H - oy);
    // destination span [lo, hi) of a plane copied from source index + off
    const int off = oy * W + ox;
    const int lo = std::min(h0 * W + (ox < 0 ? 1 : 0), P), hi = std::max(lo, h1 * W - (ox > 0 ? 1 : 0));
    for (int n = 0; n < N; ++n) {
      const float* src = r + ci * M + int64_t(n) * P;
      float* d = cols + row * M + int64_t(n) * P;
      std::memset(d, 0, sizeof(float) * lo);
      std::memcpy(d + lo, src + lo + off, sizeof(float) * (hi - lo));
      std::memset(d + hi, 0, sizeof(float) * (P - hi));
      if (ox < 0)  // w = 0 reads column −1
        for (int h = h0; h < h1; ++h) d[int64_t(h) * W] = 0.f;
      else if (ox > 0)  // w = W − 1 reads column W
        for (int h = h0; h < h1; ++h) d[int64_t(h) * W + W - 1] = 0.f;
    }
  }
}


void transpose_batched(const float* x, float* y, int B, int R, int K, bool accumulate) {
#pragma omp parallel for collapse(2) if (static_cast<int64_t>(B) * R * K > 65536)
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < K; ++j) {
      const float* xs = x + static_cast<int64_t>(b) * R * K + j;
      float* yd = y + (static_cast<int64_t>(b) * K + j) * R;
      if (accumulate)
        for (int i = 0; i < R; ++i) yd[i] += xs[static_cast<int64_t>(i) * K];
      else
        for (int i = 0; i < R; ++i) yd[i] = xs[static_cast<int64_t>(i) * K];
    }
}

void windows_gather(const float* map, float* win, int B, int C, int H, int W, int g, int k, int kw) {
  windows<false>(const_cast<float*>(map), const_cast<float*>(win), B, C, H, W, g, k, kw);  // reads the map only
}
void windows_scatter_add(float* map, const float* win, int B, int C, int H, int W, int g, int k, int kw) {
  windows<true>(map, const_cast<float*>(win), B, C, H, W, g, k, kw);  // reads the windows only
}

void seq_mean_forward(const float* h, const int32_t* lengths, float* m, int B, int L, int E) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < B; ++i) {
    const int n = lengths ? lengths[i] : L;
    float* mi = m + int64_t(i) * E;
    std::fill(mi, mi + E, 0.f);
    for (int t = 0; t < n; ++t) {
      const float* ht = h + (int64_t(i) * L + t) * E;
      for (int k = 0; k < E; ++k) mi[k] += ht[k];
    }
    const float inv = 1.f / float(n > 0 ? n : 1);
    for (int k = 0; k < E; ++k) mi[k] *= inv;
  }
}

void seq_mean_backward(const float* dm, const int32_t* lengths, float* dh, int B, int L, int E) {
  for (int i = 0; i < B; ++i) {
    const int n = lengths ? lengths[i] : L;
    const float inv = 1.f / float(n > 0 ? n : 1);
    const float* d = dm + int64_t(i) * E;
    for (int t = 0; t < L; ++t) {
      float* r = dh + (int64_t(i) * L + t) * E;
      if (t < n)
        for (int k = 0; k < E; ++k) r[k] = d[k] * inv;
      else
        std::fill(r, r + E, 0.f);
    }
  }
}

void resize_bilinear(const float* x, float* y, int N, int S, int R) {
  const double scale = double(S) / R;
  std::vector<int> i0(R), i1(R);
  std::vector<float> f(R);
  for (int o = 0; o < R; ++o) {
    double s = (o + 0.5) * scale - 0.5;
    if (s < 0) s = 0;
    int a = int(s);
    if (a > S - 1) a = S - 1;
    i0[o] = a;
    i1[o] = a + 1 < S ? a + 1 : S - 1;
    f[o] = float(s - a);
  }
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < int64_t(N) * 3; ++p) {
    const float* src = x + p * S * S;
    float* dst = y + p * R * R;
    for (int oy = 0; oy < R; ++oy) {
      const float* r0 = src + int64_t(i0[oy]) * S;
      const float* r1 = src + int64_t(i1[oy]) * S;
      const float fy = f[oy];
      for (int ox = 0; ox < R; ++ox) {
        const float a = r0[i0[ox]] + (r0[i1[ox]] - r0[i0[ox]]) * f[ox];
        const float b = r1[i0[ox]] + (r1[i1[ox]] - r1[i0[ox]]) * f[ox];
        dst[int64_t(oy) * R + ox] = a + (b - a) * fy;
      }
    }
  }
}

void relu_mask(const float* y, const float* g, float* d, int64_t n) {
#pragma omp parallel for simd if (n > 65536)
  for (int64_t i = 0; i < n; ++i) d[i] = y[i] > 0.f ? g[i] : 0.f;
}

void add_scalar(float* y, float value, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += value;
}

}  // namespace dwc::cpu

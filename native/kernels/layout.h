// Layout kernels of the model code (moved from native/model/ so that they run on any backend):
// channel-major copies and the 3-tap gathers of the Inception blocks (spec §4), the batched
// transpose of the local stream, the pooling-grid windows and the step mean of the pooled encoder
// (spec §12), the CLIP encoder's bilinear resize, and the ReLU mask of the trunks' backward.
#pragma once
#include <cstdint>

namespace dwc::cpu {

// xc[c, n, :] = x[n, c, :] for x [N, C, P]; with lengths (may be null), 0 at positions >= lengths[n].
void to_channel_major(const float* x, float* xc, int N, int C, int P, const int32_t* lengths = nullptr);
// x[n, c, :] = xc[c, n, :]
void from_channel_major(const float* xc, float* x, int N, int C, int P);
// Same-padded stride-1 kh×3 taps (kh ∈ {1, 3}) on channel-major planes r [C, N, H, W]:
// cols[(ci, dh, dw), n, h, w] = r[ci, n, h + dh − kh/2, w + dw − 1] (0 outside); with flip, the
// offsets negated: r[ci, n, h − dh + kh/2, w − dw + 1] (the taps of the transposed convolution, so
// a conv's backward-data is a GEMM on them: Inception::conv3_backward).
void im2col_cm(const float* r, float* cols, int C, int N, int H, int W, int kh, bool flip);
// y[b, j, i] = x[b, i, j] (accumulate: +=), x [B, R, K] -> y [B, K, R].
void transpose_batched(const float* x, float* y, int B, int R, int K, bool accumulate);
// Pooling-grid windows of a map [B·C, H, W]: window r = (i, j) of the g×g grid is the k×kw block
// at (window_start(i, g, H, k), window_start(j, g, W, kw)) (encoder.h). gather: win [B·C, g², k·kw]
// from the map; scatter_add: map += the windows (overlaps summed in window order).
void windows_gather(const float* map, float* win, int B, int C, int H, int W, int g, int k, int kw);
void windows_scatter_add(float* map, const float* win, int B, int C, int H, int W, int g, int k, int kw);
// m[b, :] = mean of h[b, t, :] over t < lengths[b] (lengths may be null: all L), h [B, L, E].
void seq_mean_forward(const float* h, const int32_t* lengths, float* m, int B, int L, int E);
// dh[b, t, :] = dm[b, :] / lengths[b] for t < lengths[b], 0 beyond (dh overwritten).
void seq_mean_backward(const float* dm, const int32_t* lengths, float* dh, int B, int L, int E);
// Bilinear resize (F.interpolate, 'bilinear', align_corners = False) of planar [N, 3, S, S] to [N, 3, R, R].
void resize_bilinear(const float* x, float* y, int N, int S, int R);
// d = y > 0 ? g : 0 (a ReLU's backward written, not accumulated; d may be g).
void relu_mask(const float* y, const float* g, float* d, int64_t n);
// y[i] += value (the BN counters num_batches_tracked, kept in backend memory).
void add_scalar(float* y, float value, int64_t n);

}  // namespace dwc::cpu

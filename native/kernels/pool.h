// Pooling (spec §4): average pool 3 (stride 1, pad 1, padding not counted), GeM, max pool (issue 5).
#pragma once
#include <cstdint>

namespace dwc::cpu {

// x[N,C,H,W] -> y same shape; 1-D avgpool3 over [N,C,L] is the H = 1 case (the 3×3 window with
// uncounted padding reduces to 1×3).
void avgpool3_forward(const float* x, float* y, int N, int C, int H, int W);
void avgpool3_backward(const float* dy, float* dx, int N, int C, int H, int W);
// 1-D avgpool3 of padded sequences (Inc1d b3 with masking, DWC-SPEC §10) on channel-major
// x [C, N, L]: row c·N + n belongs to sample n, whose real positions are p < lengths[n]. Each real
// position averages the real positions of its window (as avgpool3 on the unpadded sequence, same
// rounding); padded positions are 0.
void avgpool3_len_forward(const float* x, float* y, int C, int N, int L, const int32_t* lengths);
// Accumulates dx at real positions (padded ones are left as they were).
void avgpool3_len_backward(const float* dy, float* dx, int C, int N, int L, const int32_t* lengths);
// GeM over positions: y[n,c] = (mean_{i<len_n} max(x[n,c,i], eps)^p)^(1/p); x [N,C,P].
// lengths may be null (all P positions); otherwise only the first lengths[n] positions count.
void gem_forward(const float* x, float p, float* y, int N, int C, int P, const int32_t* lengths, float eps);
// Accumulates dx (may be null) and *dp (may be null).
void gem_backward(const float* x, float p, const float* y, const float* dy, float* dx, float* dp, int N, int C, int P,
                  const int32_t* lengths, float eps);

// Max pool (issue 5: ResNet stem, 3×3 / stride 2 / pad 1), as torch max_pool2d (padding = −inf,
// floor mode, first maximum wins, NaN propagates). x[N,C,H,W] -> y[N,C,Ho,Wo] and idx (int32,
// ih·W + iw inside the input plane), Ho = (H + 2pad − k)/stride + 1.
void maxpool2d_forward(const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int stride, int pad);
// Accumulates dx[n,c,idx] += dy.
void maxpool2d_backward(const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo);
// The same on the blocked layout nChw8c (C a multiple of 8; norm.h), idx stored blocked like y.
void maxpool2d_forward_blk(const float* x, float* y, int32_t* idx, int N, int C, int H, int W, int k, int stride, int pad);
void maxpool2d_backward_blk(const float* dy, const int32_t* idx, float* dx, int N, int C, int H, int W, int Ho, int Wo);

// Average pool with kernel = stride = k, no padding, floor mode (torch AvgPool2d(k), CLIP's
// ModifiedResNet anti-aliasing): x[N,C,H,W] -> y[N,C,H/k,W/k]. k = 1 copies.
void avgpool_k_forward(const float* x, float* y, int N, int C, int H, int W, int k);
// Accumulates dx += dy / k² over each window.
void avgpool_k_backward(const float* dy, float* dx, int N, int C, int H, int W, int k);

}  // namespace dwc::cpu

// Convolutions of the Inception blocks (spec §4): stride 1, padding kh/2 × kw/2, no bias.
// conv2d: x[N,Ci,H,W], w[Co,Ci,kh,kw] -> y[N,Co,H,W]. conv1d is conv2d with H = 1, kh = 1
// (w[Co,Ci,k] has the same memory layout as [Co,Ci,1,k]). k ∈ {1, 3}.
// GEMM-shaped (im2col for k = 3, batched over N so one large GEMM serves the whole batch).
#pragma once
#include <cstddef>
#include <cstdint>

namespace dwc::cpu {

// Scratch the conv needs (floats). Callers pass an arena block of this size, or null to let
// the kernel allocate (tests).
size_t conv2d_workspace_floats(int N, int Ci, int Co, int H, int W, int kh, int kw);
void conv2d_forward(const float* x, const float* w, float* y, int N, int Ci, int Co, int H, int W, int kh, int kw, float* workspace);
// Accumulates dx (may be null) and dw (may be null).
void conv2d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int N, int Ci, int Co, int H, int W, int kh,
                     int kw, float* workspace);

}  // namespace dwc::cpu

// 2-D convolutions, no bias (spec §4 Inception blocks; issue 5 trunks: 7×7/2 pad 3, 3×3/1 and /2
// pad 1, 1×1/1 and /2). x[N,Ci,H,W], w[Co,Ci,kh,kw] -> y[N,Co,Ho,Wo], Ho = (H + 2ph − kh)/sh + 1.
// conv1d is conv2d with H = 1, kh = 1 (w[Co,Ci,k] has the layout of [Co,Ci,1,k]).
// GEMM-shaped: im2col (one implementation for every kernel/stride/pad), then either one GEMM over
// the whole batch (small output planes) or one GEMM per sample written straight into y (large
// planes, where the batched GEMM gains nothing and the scatter would cost a full pass).
#pragma once
#include <cstddef>
#include <cstdint>

namespace dwc::cpu {

struct Conv2dGeom {
  int N = 0, Ci = 0, Co = 0, H = 0, W = 0, kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  int Ho() const { return (H + 2 * ph - kh) / sh + 1; }
  int Wo() const { return (W + 2 * pw - kw) / sw + 1; }
};

// Which implementation runs a conv (docs/PERFORMANCE.md "How kernels are chosen"). Auto: oneDNN's
// convolution primitives when the GEMM backend is oneDNN and the shape is one where they measured
// faster (conv_uses_dnnl), else im2col + dwc::sgemm. Dnnl / Im2col force one (benches, tests).
enum class ConvImpl { Auto, Dnnl, Im2col };
void set_conv_impl(ConvImpl impl);  // Dnnl without oneDNN compiled in: an error
ConvImpl conv_impl();
const char* conv_impl_name(ConvImpl impl);  // "auto" | "onednn" | "im2col"
bool conv_uses_dnnl(const Conv2dGeom& g);    // what conv2d_general_* will run for g now

// Scratch the conv needs (floats). Callers pass an arena block of this size, or null to let the
// kernel allocate (tests).
size_t conv2d_general_workspace_floats(const Conv2dGeom& g);
void conv2d_general_forward(const float* x, const float* w, float* y, const Conv2dGeom& g, float* workspace);
// Accumulates dx (may be null) and dw (may be null); accumulate_dx = false writes dx instead
// (no zeroing pass before it; on oneDNN a plain reorder instead of one with a sum post-op).
void conv2d_general_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g,
                             float* workspace, bool accumulate_dx = true);

// Stride-1 "same" convs of the Inception blocks (padding kh/2 × kw/2, Ho = H, Wo = W): wrappers.
size_t conv2d_workspace_floats(int N, int Ci, int Co, int H, int W, int kh, int kw);
void conv2d_forward(const float* x, const float* w, float* y, int N, int Ci, int Co, int H, int W, int kh, int kw, float* workspace);
// Accumulates dx (may be null) and dw (may be null).
void conv2d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int N, int Ci, int Co, int H, int W, int kh,
                     int kw, float* workspace);

}  // namespace dwc::cpu

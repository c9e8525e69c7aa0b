// oneDNN convolution primitives behind conv.h's API (conv_dnnl.cpp). Same semantics as the
// im2col path: forward overwrites y; backward accumulates into dx and dw (either may be null).
#pragma once
#include <cstddef>
#include <cstdint>

#include "conv.h"

namespace dwc::cpu {
bool dnnl_conv_supported(const Conv2dGeom& g);
void dnnl_conv_forward(const float* x, const float* w, float* y, const Conv2dGeom& g);
// accumulate_dx: dx += convᵀ(dy, w) (true) or dx = convᵀ(dy, w) (false); dw always accumulates.
void dnnl_conv_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g, bool accumulate_dx = true);
// The same with the activations in oneDNN's blocked layout nChw8c where asked (the trunk's
// blocked path, docs/PERFORMANCE.md "Layouts"): x_blocked for x and dx, y_blocked for y and dy
// (channels a multiple of 8). A layout the primitive also uses needs no reorder at all.
void dnnl_conv_forward_fmt(const float* x, const float* w, float* y, const Conv2dGeom& g, bool x_blocked, bool y_blocked);
void dnnl_conv_backward_fmt(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g, bool accumulate_dx,
                            bool x_blocked, bool y_blocked);
// oneDNN primitives (convolutions and reorders) created so far, and cached conv geometries: a
// test checks that repeated same-shape calls create nothing.
int64_t dnnl_primitives_created();
size_t dnnl_conv_cache_size();
}  // namespace dwc::cpu

namespace dwc::cpu {
// The measured rule (docs/PERFORMANCE.md): true where oneDNN's primitive beat im2col + GEMM.
bool dnnl_conv_rule(const Conv2dGeom& g);
}  // namespace dwc::cpu

// oneDNN convolution primitives behind conv.h's API (conv_dnnl.cpp). Same semantics as the
// im2col path: forward overwrites y; backward accumulates into dx and dw (either may be null).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "conv.h"

namespace dwc::cpu {
// One conv's weights in the layouts its forward and backward-data primitives read (issue 12;
// docs/PERFORMANCE.md "Layouts"), kept between calls: a copy is reused only for the same
// weights pointer, primitive and version, where `version` is the owner's count of changes to the
// values (ParamBuffer::version, never reused), so the two image slots of a training iteration
// share one reorder per direction and any change (Adam, setTensor, a test) makes a new one.
struct BlockedWeights {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  struct Copy {
    const void* layout = nullptr;  // the primitive's weights slot it was made for
    const float* w = nullptr;
    uint64_t version = 0;
    size_t bytes = 0;
    std::unique_ptr<void, Free> buf;
  };
  Copy fwd, bwd_data;
};

bool dnnl_conv_supported(const Conv2dGeom& g);
// The block width oneDNN's fp32 convolutions use on this CPU (16 from AVX-512 up, else 8; 8
// without oneDNN): the trunk's blocked path runs at this width where its channels allow.
int dnnl_preferred_blocked_width();
void dnnl_conv_forward(const float* x, const float* w, float* y, const Conv2dGeom& g);
// accumulate_dx: dx += convᵀ(dy, w) (true) or dx = convᵀ(dy, w) (false); dw always accumulates.
void dnnl_conv_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g, bool accumulate_dx = true);
// The same with the activations in oneDNN's blocked layout nChw{cb}c where asked, cb the calling
// thread's blocked_width() (norm.h; the trunk's blocked path, docs/PERFORMANCE.md "Layouts"):
// x_blocked for x and dx, y_blocked for y and dy (channels a multiple of cb). A layout the
// primitive also uses needs no reorder at all.
// wc (may be null) with w_version != 0: the weights' blocked copies are taken from / kept in wc
// (BlockedWeights above; off with setKernels({weightCache: 'off'}) / DWC_WEIGHT_CACHE=off).
void dnnl_conv_forward_fmt(const float* x, const float* w, float* y, const Conv2dGeom& g, bool x_blocked, bool y_blocked,
                           BlockedWeights* wc = nullptr, uint64_t w_version = 0);
void dnnl_conv_backward_fmt(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g, bool accumulate_dx,
                            bool x_blocked, bool y_blocked, BlockedWeights* wc = nullptr, uint64_t w_version = 0);
void set_weight_cache(bool on);
bool weight_cache();
// Weight reorders (plain OIHW -> a primitive's layout) executed so far: a test checks that the
// second image slot and repeated calls on unchanged weights make none.
int64_t dnnl_weight_reorders();
// oneDNN primitives (convolutions and reorders) created so far, and cached conv geometries: a
// test checks that repeated same-shape calls create nothing.
int64_t dnnl_primitives_created();
size_t dnnl_conv_cache_size();
}  // namespace dwc::cpu

namespace dwc::cpu {
// The measured rule (docs/PERFORMANCE.md): true where oneDNN's primitive beat im2col + GEMM.
bool dnnl_conv_rule(const Conv2dGeom& g);
// On the blocked path, backward-weights as one GEMM instead of the primitive (small wide maps,
// conv_dnnl.cpp; off by default, on with DWC_BWDW_GEMM=on or setKernels({bwdWeights: 'gemm'}); always in bf16
// on more than one thread, bf16_gemm_backward_weights).
bool gemm_backward_weights(const Conv2dGeom& g);
// Whether bf16 backward-weights goes around oneDNN's primitive now (conv_dnnl.cpp
// bf16_bwdw_around_amx: more than one thread and no AMX, or DWC_BF16_BWDW=gemm); kernelStats().bf16BwdWeights.
bool bf16_backward_weights_by_gemm();
void set_gemm_backward_weights(bool on);
bool gemm_backward_weights_on();
}  // namespace dwc::cpu

// Layout ops: concat / split along an axis, embedding lookup.
#pragma once
#include <cstdint>

namespace dwc::cpu {

// Each input i is viewed as [outer, sizes[i], inner]; y is [outer, Σ sizes, inner].
void concat_forward(int n, const float* const* xs, const int64_t* sizes, int64_t outer, int64_t inner, float* y);
// Split of dy back into the inputs' gradients (accumulates; a null dxs[i] is skipped).
void concat_backward(int n, float* const* dxs, const int64_t* sizes, int64_t outer, int64_t inner, const float* dy);
// y[n, E] = table[ids[n], :]. Ids must be in [0, V): the caller validates (throws BadArgument).
void embedding_forward(const int32_t* ids, const float* table, float* y, int64_t n, int64_t V, int64_t E);
void embedding_backward(const int32_t* ids, const float* dy, float* dtable, int64_t n, int64_t V, int64_t E);

}  // namespace dwc::cpu

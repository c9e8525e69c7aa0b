// Single-layer LSTM (spec §4 text encoder), PyTorch gate order (i, f, g, o), zero initial state.
// x[B,L,E] -> h[B,L,D]. lengths (may be null = all L): steps t >= lengths[b] output h = 0 and
// leave the state unchanged (packed-sequence semantics). Weights as torch.nn.LSTM:
// w_ih [4D,E], w_hh [4D,D], b_ih [4D], b_hh [4D].
#pragma once
#include <cstddef>
#include <cstdint>

namespace dwc::cpu {

// Activations kept for backward (gates after their nonlinearity, cell states): floats needed.
size_t lstm_cache_floats(int B, int L, int D);
void lstm_forward(const float* x, const int32_t* lengths, const float* w_ih, const float* w_hh, const float* b_ih, const float* b_hh,
                  float* h, float* cache, int B, int L, int E, int D);
// Accumulates dx and the weight gradients (each may be null).
void lstm_backward(const float* x, const int32_t* lengths, const float* w_ih, const float* w_hh, const float* h, const float* cache,
                   const float* dh, float* dx, float* dw_ih, float* dw_hh, float* db_ih, float* db_hh, int B, int L, int E, int D);

}  // namespace dwc::cpu

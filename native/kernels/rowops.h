// Row-wise ops over a [rows, cols] matrix: softmax, log-softmax (with a scale applied to the
// input first, e.g. 1/τ), and L2 normalisation norm(x) = x / max(‖x‖₂, 1e-12) (spec §2).
#pragma once
#include <cstdint>

namespace dwc::cpu {

void softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t cols, float scale);
// dx += scale * y ⊙ (dy − Σ_j dy_j y_j)
void softmax_rows_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, float scale);
void log_softmax_rows_forward(const float* x, float* y, int64_t rows, int64_t cols, float scale);
// y is the log-softmax output: dx += scale * (dy − softmax ⊙ Σ_j dy_j)
void log_softmax_rows_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, float scale);
// norms[r] = max(‖x_r‖, 1e-12), y = x / norms.
void l2norm_rows_forward(const float* x, float* y, float* norms, int64_t rows, int64_t cols);
void l2norm_rows_backward(const float* y, const float* norms, const float* dy, float* dx, int64_t rows, int64_t cols);

}  // namespace dwc::cpu

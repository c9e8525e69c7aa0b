// Elementwise activations and dropout (spec §2 notation: MLP_σ uses ReLU, Dropout(0.5), Sigmoid).
#pragma once
#include <cstdint>

#include "../core/rng.h"

namespace dwc::cpu {

void relu_forward(const float* x, float* y, int64_t n);
void relu_backward(const float* y, const float* dy, float* dx, int64_t n);  // uses the output y
void sigmoid_forward(const float* x, float* y, int64_t n);
void sigmoid_backward(const float* y, const float* dy, float* dx, int64_t n);
// mask[i] = 0 or 1/(1-p), from the counter-based rng (index i); y = x * mask. p == 0: mask = 1.
void dropout_forward(const float* x, float* y, float* mask, int64_t n, float p, const Rng& rng);
void dropout_backward(const float* mask, const float* dy, float* dx, int64_t n);
// y = a * b (elementwise) and its gradients; used for gates (editor a ⊙ f).
void mul_forward(const float* a, const float* b, float* y, int64_t n);
void mul_backward(const float* a, const float* b, const float* dy, float* da, float* db, int64_t n);
// y += x
void add_inplace(float* y, const float* x, int64_t n);
// Residual add (issue 5 trunks): y = a + b; backward da += dy, db += dy (each may be null).
// add_relu_forward fuses the block output y = relu(a + b); its backward is relu_backward(y, ...)
// followed by add_backward.
void add_forward(const float* a, const float* b, float* y, int64_t n);
void add_relu_forward(const float* a, const float* b, float* y, int64_t n);
void add_backward(const float* dy, float* da, float* db, int64_t n);

}  // namespace dwc::cpu

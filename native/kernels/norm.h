// Batch norm over x viewed as [N, C, P] (P = H·W for BatchNorm2d, L for BatchNorm1d), spec §4.
// Train: batch statistics (biased variance to normalise), running stats updated in place with
// momentum (unbiased variance), as torch.nn.BatchNorm. Eval: running statistics.
#pragma once
#include <cstdint>

namespace dwc::cpu {

void batchnorm_forward_train(const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var, float* y,
                             float* save_mean, float* save_invstd, int N, int C, int P, float momentum, float eps);
void batchnorm_forward_eval(const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var,
                            float* y, int N, int C, int P, float eps);
// Train-mode backward (batch statistics). Accumulates dx, dgamma, dbeta (each may be null).
void batchnorm_backward(const float* x, const float* gamma, const float* save_mean, const float* save_invstd, const float* dy, float* dx,
                        float* dgamma, float* dbeta, int N, int C, int P);

}  // namespace dwc::cpu

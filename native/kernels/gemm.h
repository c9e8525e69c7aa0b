// GEMM family on CBLAS: plain, strided-batched, and Linear (PyTorch layout W[out,in]).
#pragma once
#include <cstdint>

namespace dwc::cpu {

// Row-major C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C);
// The same for `batch` independent products at the given element strides.
void gemm_batched(int batch, bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int64_t strideA, const float* B,
                  int64_t strideB, float beta, float* C, int64_t strideC);
// y[N,out] = x[N,in] · W[out,in]ᵀ + b  (b may be null).
void linear_forward(const float* x, const float* W, const float* b, float* y, int N, int in, int out);
// Accumulates dx[N,in], dW[out,in], db[out] (each may be null).
void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int N, int in, int out);

}  // namespace dwc::cpu

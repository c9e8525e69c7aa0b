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
// Elementwise activation applied in linear_forward_fused's epilogue.
enum class Act { None, QuickGelu, Gelu };
// y[N,out] = act(x[N,in] · W[out,in]ᵀ + b) + res  (b, res [N,out] may be null; y must not alias x;
// res == y adds into y in place, the cheapest form). oneDNN backend: one matmul primitive, cached
// per (out, in, bias, activation, residual, threads) with the row count N a runtime dimension (no
// primitive per N), the bias and the activation (eltwise swish α = 1.702 / gelu_erf) in its
// epilogue and the residual as a sum post-op (res is first copied into y unless res == y).
// CBLAS backend: linear_forward, then the activation and the add as separate passes.
void linear_forward_fused(const float* x, const float* W, const float* b, const float* res, float* y, int N, int in, int out, Act act);
// Whether linear_forward_fused takes the oneDNN matmul path (default true; only with the oneDNN GEMM backend):
// false runs the CBLAS-path sequence on dnnl_sgemm, so a bench or test can put the two side by side.
void set_fused_epilogues(bool on);
bool fused_epilogues();
// oneDNN matmul primitives created so far (tests check that nothing is created after warm-up,
// whatever the row counts); 0 without oneDNN.
int64_t matmul_primitives_created();
// Accumulates dx[N,in], dW[out,in], db[out] (each may be null).
void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int N, int in, int out);

}  // namespace dwc::cpu

// CUDA twin of native/kernels/gemm.h: row-major GEMMs on cuBLAS (column-major underneath:
// C = op(A)·op(B) row-major is Cᵀ = op(B)ᵀ·op(A)ᵀ column-major, so A and B swap places), on the
// backend's stream. TF32 is opt-in, set on the handle by the backend (cublasSetMathMode).
#include <cuda_bf16.h>

#include "common.cuh"

namespace dwc::cuda {

namespace {

__global__ void fill_k(float* p, float v, int64_t n) { DWC_GRID_STRIDE(i, n) p[i] = v; }
__global__ void scale_k(float* p, float s, int64_t n) { DWC_GRID_STRIDE(i, n) p[i] *= s; }
// C[M, N] (ld) *= beta (beta == 0 writes zeros, as BLAS: NaN in C does not survive).
__global__ void scale_2d_k(float* C, int ldc, int M, int N, float beta) {
  const int64_t n = static_cast<int64_t>(M) * N;
  DWC_GRID_STRIDE(i, n) {
    float* p = C + (i / N) * ldc + (i % N);
    *p = beta == 0.f ? 0.f : *p * beta;
  }
}
__global__ void bias_rows_k(const float* b, float* y, int64_t rows, int out) {
  const int64_t n = rows * out;
  DWC_GRID_STRIDE(i, n) y[i] = b[i % out];
}
// col[j] (+ col2[j]) += Σ_r m[r, j]: one thread per column (rows walked in order: deterministic).
__global__ void colsum_k(const float* m, float* col, float* col2, int64_t rows, int64_t cols) {
  DWC_GRID_STRIDE(j, cols) {
    float s = 0.f;
    for (int64_t r = 0; r < rows; ++r) s += m[r * cols + j];
    if (col) col[j] += s;
    if (col2) col2[j] += s;
  }
}

__global__ void to_bf16_k(const float* x, __nv_bfloat16* y, int64_t n) { DWC_GRID_STRIDE(i, n) y[i] = __float2bfloat16_rn(x[i]); }

inline cublas::Operation op(bool t) { return t ? cublas::OP_T : cublas::OP_N; }

// Mixed precision (docs/CUDA.md "Precision on the GPU"): bf16 / fp16 GEMMs are the same float32
// calls with the compute type CUBLAS_COMPUTE_32F_FAST_16BF / _FAST_16F on float32 A, B and C:
// cuBLAS rounds the operand tiles to 16 bits as it loads them for the tensor cores and accumulates
// in float32, so every call site (leading dimensions, strides, the attention products over qkv's
// head column blocks) stays as it is, with no conversion pass and no 16-bit copies in memory.
// 0: plain float32 (Sgemm, TF32 when the handle's math mode says so).
cublas::ComputeType mixed_compute(const Ctx& c) {
  const int p = c.gemm_precision ? c.gemm_precision() : 0;
  return p == 1 ? cublas::COMPUTE_32F_FAST_16BF : p == 2 ? cublas::COMPUTE_32F_FAST_16F : cublas::ComputeType(0);
}

}  // namespace

void fill(const Ctx& c, float* p, float v, int64_t n) {
  if (n <= 0) return;
  fill_k<<<blocks_for(n), kThreads, 0, c.stream>>>(p, v, n);
  DWC_CUDA_LAUNCH_CHECK("fill_k");
}
void scale(const Ctx& c, float* p, float s, int64_t n) {
  if (n <= 0) return;
  scale_k<<<blocks_for(n), kThreads, 0, c.stream>>>(p, s, n);
  DWC_CUDA_LAUNCH_CHECK("scale_k");
}

void gemm_ld(const Ctx& c, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
             float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // C = beta·C (cuBLAS would too; kept explicit, as the CPU kernel)
    if (beta != 1.f) {
      scale_2d_k<<<blocks_for(int64_t(M) * N), kThreads, 0, c.stream>>>(C, ldc, M, N, beta);
      DWC_CUDA_LAUNCH_CHECK("scale_2d_k");
    }
    return;
  }
  if (const cublas::ComputeType ct = mixed_compute(c)) {
    DWC_CUBLAS_CHECK(cublas::api().GemmEx(c.blas, op(tB), op(tA), N, M, K, &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C,
                                          CUDA_R_32F, ldc, ct, cublas::GEMM_DEFAULT));
    return;
  }
  DWC_CUBLAS_CHECK(cublas::api().Sgemm(c.blas, op(tB), op(tA), N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
}

void gemm(const Ctx& c, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) {
  gemm_ld(c, tA, tB, M, N, K, alpha, A, tA ? M : K, B, tB ? K : N, beta, C, N);
}

void gemm_batched(const Ctx& c, int batch, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int64_t sA, const float* B,
                  int64_t sB, float beta, float* C, int64_t sC) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int p = 0; p < batch; ++p) gemm(c, tA, tB, M, N, K, alpha, A, B, beta, C + p * sC);
    return;
  }
  gemm_strided_ld(c, batch, tA, tB, M, N, K, alpha, A, tA ? M : K, sA, B, tB ? K : N, sB, beta, C, N, sC);
}

void gemm_strided_ld(const Ctx& c, int batch, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int lda, int64_t sA,
                     const float* B, int ldb, int64_t sB, float beta, float* C, int ldc, int64_t sC) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (K <= 0 || batch == 1) {
    for (int p = 0; p < batch; ++p) gemm_ld(c, tA, tB, M, N, K, alpha, A + p * sA, lda, B + p * sB, ldb, beta, C + p * sC, ldc);
    return;
  }
  if (const cublas::ComputeType ct = mixed_compute(c)) {
    DWC_CUBLAS_CHECK(cublas::api().GemmStridedBatchedEx(c.blas, op(tB), op(tA), N, M, K, &alpha, B, CUDA_R_32F, ldb, sB, A, CUDA_R_32F, lda,
                                                        sA, &beta, C, CUDA_R_32F, ldc, sC, batch, ct, cublas::GEMM_DEFAULT));
    return;
  }
  DWC_CUBLAS_CHECK(cublas::api().SgemmStridedBatched(c.blas, op(tB), op(tA), N, M, K, &alpha, B, ldb, sB, A, lda, sA, &beta, C, ldc, sC,
                                                     batch));
}

void to_bf16(const Ctx& c, const float* x, uint16_t* y, int64_t n) {
  if (n <= 0) return;
  to_bf16_k<<<blocks_for(n), kThreads, 0, c.stream>>>(x, reinterpret_cast<__nv_bfloat16*>(y), n);
  DWC_CUDA_LAUNCH_CHECK("to_bf16_k");
}

void gemm_bf16(const Ctx& c, bool tA, bool tB, int M, int N, int K, float alpha, const uint16_t* A, const uint16_t* B, float beta, float* C) {
  gemm_bf16_batched(c, 1, tA, tB, M, N, K, alpha, A, 0, B, 0, beta, C, 0);
}

void gemm_bf16_batched(const Ctx& c, int batch, bool tA, bool tB, int M, int N, int K, float alpha, const uint16_t* A, int64_t sA,
                       const uint16_t* B, int64_t sB, float beta, float* C, int64_t sC) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int p = 0; p < batch; ++p) gemm(c, tA, tB, M, N, 0, alpha, nullptr, nullptr, beta, C + p * sC);
    return;
  }
  const int lda = tA ? M : K, ldb = tB ? K : N;
  if (batch == 1) {
    DWC_CUBLAS_CHECK(cublas::api().GemmEx(c.blas, op(tB), op(tA), N, M, K, &alpha, B, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C,
                                          CUDA_R_32F, N, cublas::COMPUTE_32F, cublas::GEMM_DEFAULT));
    return;
  }
  DWC_CUBLAS_CHECK(cublas::api().GemmStridedBatchedEx(c.blas, op(tB), op(tA), N, M, K, &alpha, B, CUDA_R_16BF, ldb, sB, A, CUDA_R_16BF, lda,
                                                      sA, &beta, C, CUDA_R_32F, N, sC, batch, cublas::COMPUTE_32F, cublas::GEMM_DEFAULT));
}

void linear_forward(const Ctx& c, const float* x, const float* W, const float* b, float* y, int N, int in, int out) {
  if (N <= 0 || out <= 0) return;
  if (b) {
    bias_rows_k<<<blocks_for(int64_t(N) * out), kThreads, 0, c.stream>>>(b, y, N, out);
    DWC_CUDA_LAUNCH_CHECK("bias_rows_k");
  }
  gemm(c, false, true, N, out, in, 1.f, x, W, b ? 1.f : 0.f, y);
}

void colsum_add(const Ctx& c, const float* m, float* col, float* col2, int64_t rows, int64_t cols) {
  if (cols <= 0 || (!col && !col2)) return;
  colsum_k<<<blocks_for(cols), kThreads, 0, c.stream>>>(m, col, col2, rows, cols);
  DWC_CUDA_LAUNCH_CHECK("colsum_k");
}

void linear_backward(const Ctx& c, const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int N, int in, int out) {
  if (dx) gemm(c, false, false, N, in, out, 1.f, dy, W, 1.f, dx);  // dx += dy · W
  if (dW) gemm(c, true, false, out, in, N, 1.f, dy, x, 1.f, dW);   // dW += dyᵀ · x
  if (db) colsum_add(c, dy, db, nullptr, N, out);
}

}  // namespace dwc::cuda

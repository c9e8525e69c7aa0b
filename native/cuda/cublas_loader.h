// cuBLAS loaded at run time (docs/design GPU.md): the few entry points and enums the engine calls,
// declared here from the public cuBLAS API (no cublas_v2.h needed to build), resolved with dlopen
// from libcublas.so.* on first use. A missing library is a clear run-time error naming every path
// tried, never a build failure.
#pragma once
#include <cuda_runtime_api.h>
#include <library_types.h>  // cudaDataType_t (part of the CUDA toolkit, not of cuBLAS)

#include <string>
#include <vector>

namespace dwc::cublas {

struct Context;  // cublasContext
using Handle = Context*;

// cublasStatus_t
enum Status : int {
  STATUS_SUCCESS = 0,
  STATUS_NOT_INITIALIZED = 1,
  STATUS_ALLOC_FAILED = 3,
  STATUS_INVALID_VALUE = 7,
  STATUS_ARCH_MISMATCH = 8,
  STATUS_MAPPING_ERROR = 11,
  STATUS_EXECUTION_FAILED = 13,
  STATUS_INTERNAL_ERROR = 14,
  STATUS_NOT_SUPPORTED = 15,
  STATUS_LICENSE_ERROR = 16,
};
// cublasOperation_t
enum Operation : int { OP_N = 0, OP_T = 1, OP_C = 2 };
// cublasMath_t
enum Math : int { DEFAULT_MATH = 0, TENSOR_OP_MATH = 1, PEDANTIC_MATH = 2, TF32_TENSOR_OP_MATH = 3 };
// cublasComputeType_t
enum ComputeType : int {
  COMPUTE_16F = 64,
  COMPUTE_32F = 68,
  COMPUTE_32F_PEDANTIC = 69,
  COMPUTE_32F_FAST_16F = 74,
  COMPUTE_32F_FAST_16BF = 75,
  COMPUTE_32F_FAST_TF32 = 77,
};
// cublasGemmAlgo_t
enum GemmAlgo : int { GEMM_DEFAULT = -1, GEMM_DEFAULT_TENSOR_OP = 99 };

const char* status_name(Status s);

// The resolved entry points (C ABI of libcublas).
struct Api {
  Status (*Create)(Handle*);
  Status (*Destroy)(Handle);
  Status (*SetStream)(Handle, cudaStream_t);
  Status (*SetMathMode)(Handle, Math);
  Status (*Sgemm)(Handle, Operation, Operation, int m, int n, int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                  const float* beta, float* C, int ldc);
  Status (*SgemmStridedBatched)(Handle, Operation, Operation, int m, int n, int k, const float* alpha, const float* A, int lda,
                                long long strideA, const float* B, int ldb, long long strideB, const float* beta, float* C, int ldc,
                                long long strideC, int batch);
  Status (*GemmEx)(Handle, Operation, Operation, int m, int n, int k, const void* alpha, const void* A, cudaDataType_t Atype, int lda,
                   const void* B, cudaDataType_t Btype, int ldb, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                   ComputeType compute, GemmAlgo algo);
  Status (*GemmStridedBatchedEx)(Handle, Operation, Operation, int m, int n, int k, const void* alpha, const void* A,
                                 cudaDataType_t Atype, int lda, long long strideA, const void* B, cudaDataType_t Btype, int ldb,
                                 long long strideB, const void* beta, void* C, cudaDataType_t Ctype, int ldc, long long strideC,
                                 int batch, ComputeType compute, GemmAlgo algo);
};

// Loads libcublas once (thread-safe) and returns its entry points; throws dwc::Error (Cuda) naming
// every candidate path tried and why each failed. Search order: $DWC_CUBLAS_PATH (a file, or a
// folder holding libcublas.so*), the toolkit's lib64 ($CUDA_HOME, $CUDA_PATH, /usr/local/cuda),
// the nvidia-cublas Python package's lib/ (site-packages of python3 on PATH and common prefixes),
// then the plain sonames through the dynamic loader's own path.
const Api& api();
// Without throwing: whether cuBLAS loads, and which file (or the error message).
bool available(std::string* where_or_error = nullptr);
// The candidate files in search order (for messages and tests).
std::vector<std::string> candidates();

}  // namespace dwc::cublas

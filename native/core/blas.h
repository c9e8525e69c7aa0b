// The CBLAS in use (OpenBLAS by default; any CBLAS found by CMake's FindBLAS works) and the one
// GEMM entry of the engine.
#pragma once
#include <string>

extern "C" {
#include <cblas.h>
}

namespace dwc {
std::string blas_name();      // e.g. "OpenBLAS 0.3.21 (pthread, Haswell)"
int blas_num_threads();       // threads the BLAS itself uses (1 when sgemm splits the work)
void blas_set_num_threads(int n);

// C[M×N] = alpha·op(A)·op(B) + beta·C, row-major, as cblas_sgemm without the order argument.
// Every GEMM of the engine goes through here. With OpenBLAS the BLAS runs single-threaded and a
// product big enough to share is split over our OpenMP threads (columns of C, or rows when op(A)
// is the larger operand): one thread pool for GEMMs and our own loops, no BLAS workers spinning
// against them between calls, and GEMMs may be issued from inside a parallel region (then they
// run on the calling thread). Other BLAS libraries keep their own threading.
void sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc);
}  // namespace dwc

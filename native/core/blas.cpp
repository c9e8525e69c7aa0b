#include "blas.h"

#include <algorithm>
#include <cstdint>

#include "threads.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef DWC_BLAS_OPENBLAS
extern "C" {
char* openblas_get_config(void);
char* openblas_get_corename(void);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);
}
#endif

namespace dwc {

std::string blas_name() {
#ifdef DWC_BLAS_OPENBLAS
  std::string s = openblas_get_config();
  s += " (core ";
  s += openblas_get_corename();
  s += ")";
  return s;
#elif defined(DWC_BLAS_NAME)
  return DWC_BLAS_NAME;
#else
  return "CBLAS";
#endif
}

int blas_num_threads() {
#ifdef DWC_BLAS_OPENBLAS
  return openblas_get_num_threads();
#else
  return 1;
#endif
}

void blas_set_num_threads(int n) {
#ifdef DWC_BLAS_OPENBLAS
  // sgemm() does the splitting: OpenBLAS itself stays single-threaded whatever n is.
  (void)n;
  openblas_set_num_threads(1);
#else
  (void)n;
#endif
}

namespace {
// Below this many multiply-adds a GEMM runs on the calling thread (a split costs a fork/join
// and a second packing of the shared operand, a few microseconds).
constexpr int64_t kSplitMinMacs = int64_t(1) << 20;
constexpr int kAlign = 16;  // split points on multiples of 16 rows/columns (the kernels' unroll)
}  // namespace

void sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  int T = 1;
#if defined(DWC_BLAS_OPENBLAS) && defined(_OPENMP)
  if (!omp_in_parallel() && int64_t(M) * N * K >= kSplitMinMacs) T = num_threads();
#endif
  // split the dimension whose operand is not shared: columns of C (each part reads all of op(A))
  // when op(A) is the smaller operand, else rows
  const bool by_cols = N >= M;
  const int extent = by_cols ? N : M;
  T = std::min(T, std::max(1, extent / kAlign));
  if (T <= 1) {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int chunk = ((extent + nt - 1) / nt + kAlign - 1) / kAlign * kAlign;
    const int lo = std::min(extent, t * chunk), hi = std::min(extent, lo + chunk);
    if (hi > lo) {
      if (by_cols) {
        const float* Bp = tb == CblasTrans ? B + int64_t(lo) * ldb : B + lo;
        cblas_sgemm(CblasRowMajor, ta, tb, M, hi - lo, K, alpha, A, lda, Bp, ldb, beta, C + lo, ldc);
      } else {
        const float* Ap = ta == CblasTrans ? A + lo : A + int64_t(lo) * lda;
        cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, N, K, alpha, Ap, lda, B, ldb, beta, C + int64_t(lo) * ldc, ldc);
      }
    }
  }
#endif
}

}  // namespace dwc

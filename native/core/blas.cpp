#include "blas.h"

#include <algorithm>
#include <cstdint>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <mutex>

#include "cpu_features.h"
#include "errors.h"
#include "threads.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef DWC_WITH_DNNL
#include <oneapi/dnnl/dnnl.h>
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

std::string openblas_core() {
#ifdef DWC_BLAS_OPENBLAS
  return openblas_get_corename();
#else
  return "";
#endif
}

namespace {
#ifdef DWC_WITH_DNNL
std::atomic<GemmImpl> g_impl{GemmImpl::Dnnl};
#else
std::atomic<GemmImpl> g_impl{GemmImpl::Cblas};
#endif
}  // namespace

bool have_dnnl() {
#ifdef DWC_WITH_DNNL
  return true;
#else
  return false;
#endif
}

GemmImpl gemm_impl() { return g_impl.load(std::memory_order_relaxed); }

void set_gemm_impl(GemmImpl impl) {
  DWC_ARG_CHECK(impl == GemmImpl::Cblas || have_dnnl(),
                "the oneDNN backend is not compiled in (install libdnnl-dev and rebuild: npm run build:native)");
  g_impl = impl;
}

const char* gemm_impl_name(GemmImpl impl) { return impl == GemmImpl::Dnnl ? "onednn" : "cblas"; }

std::string dnnl_version() {
#ifdef DWC_WITH_DNNL
  const dnnl_version_t* v = ::dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
#else
  return "";
#endif
}

#ifdef DWC_WITH_DNNL
static const char* dnnl_isa_name(dnnl_cpu_isa_t isa) {
  switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "all";
  }
}
#endif

std::string kernel_isa() {
#ifdef DWC_WITH_DNNL
  if (gemm_impl() == GemmImpl::Dnnl) return std::string("oneDNN ") + dnnl_isa_name(dnnl_get_effective_cpu_isa());
#endif
#ifdef DWC_BLAS_OPENBLAS
  return "OpenBLAS core " + openblas_core();
#else
  return blas_name();
#endif
}

std::string blas_core_warning() {
#ifdef DWC_BLAS_OPENBLAS
  std::string core = openblas_core();
  std::string lc;
  for (char ch : core) lc += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  const CpuFeatures& f = cpu_features();
  if (!f.avx2) return "";
  // cores with AVX2 (or better) kernels in OpenBLAS 0.3.x
  for (const char* fast : {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"})
    if (lc == fast) return "";
  const bool amd = f.vendor == "AuthenticAMD";
  const char* real = amd ? "Zen" : f.avx512_bf16 ? "Cooperlake" : f.avx512f ? "SkylakeX" : "Haswell";
  return "OpenBLAS runs its generic '" + core + "' kernels on a CPU with " + cpu_feature_list() +
         ": GEMMs are several times slower than they should be. Fix: export OPENBLAS_CORETYPE=" + real +
         " (or use the oneDNN backend: apt-get install -y libdnnl-dev, then npm run build:native)";
#else
  return "";
#endif
}

std::string precision_unsupported_reason(const std::string& precision) {
  if (precision == "fp32") return "";
  if (precision != "bf16") return "unknown precision '" + precision + "' (expected fp32 or bf16)";
  std::string why = bf16_unsupported_reason();
  if (!why.empty()) return why;
  if (!have_dnnl()) return "precision 'bf16' runs through oneDNN, which this build does not include (install libdnnl-dev and rebuild)";
  // The CPU could: the bf16 GEMM/conv path itself is not written yet (issue 12 item 3).
  return "this CPU supports bf16 (" + cpu_feature_list() +
         "), but the bf16 GEMM/conv kernels are not implemented in this version of dwc-native yet: use --precision fp32";
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
#ifdef DWC_WITH_DNNL
  if (gemm_impl() == GemmImpl::Dnnl) {
#ifdef _OPENMP
    // oneDNN threads over omp_get_max_threads() of the calling thread: keep async workers' ICV
    // at the engine's count.
    if (!omp_in_parallel() && omp_get_max_threads() != num_threads()) omp_set_num_threads(num_threads());
#endif
    const dnnl_status_t st = dnnl_sgemm(ta == CblasTrans ? 'T' : 'N', tb == CblasTrans ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta,
                                        C, ldc);
    DWC_CHECK(st == dnnl_success, Internal,
              "dnnl_sgemm failed (status " << int(st) << ") for M=" << M << " N=" << N << " K=" << K << " lda=" << lda << " ldb=" << ldb
                                           << " ldc=" << ldc);
    return;
  }
#endif
  {
    static std::once_flag warned;
    std::call_once(warned, [] {
      const std::string w = blas_core_warning();
      if (!w.empty()) std::fprintf(stderr, "dwc-native: warning: %s\n", w.c_str());
    });
  }
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

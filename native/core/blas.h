// The GEMM backends and the one GEMM entry of the engine (docs/PERFORMANCE.md, "How kernels are
// chosen"). Built with oneDNN (DWC_WITH_DNNL, the default when libdnnl is found): dwc::sgemm runs
// dnnl_sgemm. The CBLAS (OpenBLAS by default; any CBLAS found by CMake's FindBLAS) is always linked:
// it is the fallback build (DWC_BACKEND=cblas) and can be selected at run time (set_gemm_impl) so
// that benches and tests put the two side by side.
#pragma once
#include <cstdint>
#include <string>

extern "C" {
#include <cblas.h>
}

namespace dwc {
std::string blas_name();      // e.g. "OpenBLAS 0.3.21 (pthread, Haswell)"
int blas_num_threads();       // threads the BLAS itself uses (1 when sgemm splits the work)
void blas_set_num_threads(int n);
std::string openblas_core();  // OpenBLAS's kernel core ("Haswell", "Prescott"), "" for another CBLAS

// Which implementation runs dwc::sgemm (and, for Dnnl, the convolutions that measure faster).
enum class GemmImpl { Dnnl, Cblas };
bool have_dnnl();                 // compiled with oneDNN
GemmImpl gemm_impl();             // Dnnl when compiled with oneDNN, else Cblas
void set_gemm_impl(GemmImpl impl);  // Dnnl without oneDNN: an error naming the fix
const char* gemm_impl_name(GemmImpl impl);  // "onednn" | "cblas"
std::string dnnl_version();       // "2.6.3", "" without oneDNN
// The ISA the GEMM/conv kernels of the current backend run: oneDNN's effective ISA ("avx2"), or
// "OpenBLAS core <name>" on the CBLAS path.
std::string kernel_isa();
// The one-time warning when OpenBLAS runs a generic core on a CPU with AVX2 or better (with the
// OPENBLAS_CORETYPE fix), "" when there is nothing to warn about. Printed once to stderr the first
// time the CBLAS path runs a GEMM.
std::string blas_core_warning();
// Empty when `precision` can run here, else the reason (bf16 needs oneDNN and AVX512_BF16 or AMX).
std::string precision_unsupported_reason(const std::string& precision);

// The compute precision of every CPU GEMM and convolution (issue 12 item 3; docs/PERFORMANCE.md
// "bf16"): Fp32 (default), or Bf16 = bf16 operands (round-to-nearest-even) with float32
// accumulation and float32 outputs, as torch.autocast('cpu', dtype=torch.bfloat16) does; all
// other ops, the stored activations, master weights and Adam stay float32. Process-wide.
enum class Precision { Fp32, Bf16 };
Precision precision();
// Bf16 where it cannot run (precision_unsupported_reason) or with the CBLAS GEMM backend selected:
// an error naming the reason.
void set_precision(Precision p);
const char* precision_name(Precision p);  // "fp32" | "bf16"
// GEMMs and convolutions that ran with bf16 operands so far (tests prove the path ran).
int64_t bf16_calls();
void count_bf16_call();
// oneDNN matmul primitives the bf16 GEMM has created (one per shape; tests check none after warm-up).
int64_t bf16_gemm_primitives();
// The kernel of the bf16 GEMMs (docs/PERFORMANCE.md "bf16 on AMX"): Amx, blas.cpp's own tile GEMM
// (the default where the CPU has AMX-BF16), or Onednn, oneDNN's matmul primitive (elsewhere, i.e.
// AVX512_BF16 only). Process-wide; setKernels({bf16Gemm}) / DWC_BF16_GEMM put the two side by side.
enum class Bf16GemmKernel { Amx, Onednn };
Bf16GemmKernel bf16_gemm_kernel();
void set_bf16_gemm_kernel(Bf16GemmKernel k);  // Amx without AMX: an error naming why
const char* bf16_gemm_kernel_name(Bf16GemmKernel k);  // "amx" | "onednn"
// y[i] = x[i] rounded to bf16 (nearest even; AVX512_BF16 vcvtne2ps2bf16 where the CPU has it,
// which also flushes float32 denormals to zero), over the engine's threads when large.
void f32_to_bf16(const float* x, uint16_t* y, int64_t n);

// C[M×N] = alpha·op(A)·op(B) + beta·C, row-major, as cblas_sgemm without the order argument.
// Every GEMM of the engine goes through here. oneDNN: dnnl_sgemm, threaded by oneDNN over the
// engine's OpenMP pool (sequential when called inside a parallel region). OpenBLAS: the BLAS runs
// single-threaded and a product big enough to share is split over our OpenMP threads (columns of
// C, or rows when op(A) is the larger operand): one thread pool for GEMMs and our own loops, no
// BLAS workers spinning against them between calls, and GEMMs may be issued from inside a
// parallel region (then they run on the calling thread). Other BLAS libraries keep their own
// threading. Precision::Bf16: a oneDNN matmul primitive on bf16 copies of op(A) and op(B) (blas.cpp).
void sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc);
}  // namespace dwc

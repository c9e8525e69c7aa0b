#include "blas.h"

#include <algorithm>
#include <cstdint>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <cstdlib>

#include "cpu_features.h"
#include "errors.h"
#include "threads.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef DWC_WITH_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>
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
  DWC_ARG_CHECK(impl == GemmImpl::Dnnl || precision() == Precision::Fp32,
                "the CBLAS GEMM backend runs float32 only: set precision 'fp32' first (setKernels({precision: 'fp32'}))");
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
  return "";
}

// ---- precision (docs/PERFORMANCE.md "bf16") ----
namespace {
std::atomic<Precision> g_precision{Precision::Fp32};
std::atomic<int64_t> g_bf16_calls{0};
std::atomic<int64_t> g_bf16_prims{0};
}  // namespace

Precision precision() { return g_precision.load(std::memory_order_relaxed); }

void set_precision(Precision p) {
  if (p == Precision::Bf16) {
    const std::string why = precision_unsupported_reason("bf16");
    DWC_ARG_CHECK(why.empty(), why);
    DWC_ARG_CHECK(gemm_impl() == GemmImpl::Dnnl,
                  "precision 'bf16' runs its GEMMs through oneDNN, but the CBLAS GEMM backend is selected (setKernels({gemm: 'onednn'}) first)");
  }
  g_precision = p;
}

const char* precision_name(Precision p) { return p == Precision::Bf16 ? "bf16" : "fp32"; }
int64_t bf16_calls() { return g_bf16_calls.load(); }
void count_bf16_call() { g_bf16_calls.fetch_add(1, std::memory_order_relaxed); }
int64_t bf16_gemm_primitives() { return g_bf16_prims.load(); }

namespace {
bool amx_usable();
std::atomic<Bf16GemmKernel> g_bf16_kernel{Bf16GemmKernel::Onednn};
std::once_flag g_bf16_kernel_init;
void init_bf16_kernel() {
  std::call_once(g_bf16_kernel_init, [] { g_bf16_kernel = amx_usable() ? Bf16GemmKernel::Amx : Bf16GemmKernel::Onednn; });
}
}  // namespace

Bf16GemmKernel bf16_gemm_kernel() {
  init_bf16_kernel();
  return g_bf16_kernel.load(std::memory_order_relaxed);
}
void set_bf16_gemm_kernel(Bf16GemmKernel k) {
  init_bf16_kernel();
  DWC_ARG_CHECK(k == Bf16GemmKernel::Onednn || amx_usable(),
                "the AMX bf16 GEMM needs a CPU with AMX-BF16 (and the kernel's permission to use its tiles)"
                    << (cpu_features().masked.empty() ? "" : "; masked here by DWC_CPU_MASK: " + cpu_features().masked));
  g_bf16_kernel = k;
}
const char* bf16_gemm_kernel_name(Bf16GemmKernel k) { return k == Bf16GemmKernel::Amx ? "amx" : "onednn"; }

namespace {
inline uint16_t bf16_rne(float f) {  // the reference rounding (cpu_backend.cpp to_bf16)
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40);  // quiet NaN
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void cvt_avx512bf16(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh r = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(reinterpret_cast<void*>(y + i), reinterpret_cast<__m512i>(r));
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << std::min<int64_t>(16, n - i)) - 1u);
    const __m256bh r = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
    _mm256_mask_storeu_epi16(y + i, m, reinterpret_cast<__m256i>(r));
    i += 16;
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m256bh r = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
    _mm256_mask_storeu_epi16(y + i, m, reinterpret_cast<__m256i>(r));
  }
}
#endif

void cvt_serial(const float* x, uint16_t* y, int64_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_features().avx512_bf16) {
    cvt_avx512bf16(x, y, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_rne(x[i]);
}


// dst[r·cols + c] = bf16(src[r·ld + c]): rows of a strided operand into a dense bf16 copy.
void pack_bf16(const float* src, int64_t ld, int64_t rows, int64_t cols, uint16_t* dst) {
  if (ld == cols) {
    f32_to_bf16(src, dst, rows * cols);
    return;
  }
#pragma omp parallel for schedule(static) if (!in_parallel() && rows * cols > (int64_t(1) << 16))
  for (int64_t r = 0; r < rows; ++r) cvt_serial(src + r * ld, dst + r * cols, cols);
}
}  // namespace

void f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
  constexpr int64_t kBlk = 8192;
  if (n <= 4 * kBlk || in_parallel()) {
    cvt_serial(x, y, n);
    return;
  }
  const int64_t nb = (n + kBlk - 1) / kBlk;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; ++b) cvt_serial(x + b * kBlk, y + b * kBlk, std::min(kBlk, n - b * kBlk));
}

#if !(defined(__x86_64__) && defined(__GNUC__))
namespace {
bool amx_usable() { return false; }
}  // namespace
#else
// GCC 12 flags the intrinsics' own _mm512_undefined_* placeholders (its bug 105593) in the packers
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace {
// ---- the AMX bf16 GEMM (docs/PERFORMANCE.md "bf16 on AMX") ----
// oneDNN 2.6.3's AMX matmul (brg:avx512_core_amx_bf16) ran a 2048³ product at ~500 GFLOP/s per
// CPU-second on this project's 2-core Sapphire Rapids VM (its B-copy kernel ~30 % of that), while
// the TDPBF16PS tile unit itself does ~2.6 TFLOP/s per core on L1-resident data. This is a plain
// tiled GEMM: both operands are rounded to bf16 straight into AMX tile order (one pass over each
// float32 operand, replacing our conversion and oneDNN's B copy), then a 32×32 block of C per
// 2×2 tiles (A: 2 tiles of 16 rows × 32 k; B: 2 tiles of 16 k-pairs × 16 columns, VNNI pairs),
// float32 accumulation, alpha/beta applied as each block leaves the tiles.
namespace amx {
constexpr int kKChunk = 64;   // k blocks of 32 per pass over K (2048): A strip and B strips stay in L2
constexpr int kNStrips = 8;   // 32-column strips of B per chunk (256 columns, 1 MB of bf16 at K = 2048)
constexpr int kBlk = 1024;    // bf16 per packed 32×32 block (two tiles)

struct TileCfg {
  uint8_t palette, start;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Linux gives a process the AMX tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA).
bool permitted() {
  static const bool ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return ok;
}

// 64-byte-aligned growable buffer (tile loads from unaligned rows touch two cache lines each).
template <class T>
struct Buf {
  T* p = nullptr;
  size_t n = 0;
  Buf() = default;
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  Buf(Buf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr, o.n = 0; }  // a growing std::vector<Buf> moves them
  ~Buf() { std::free(p); }
  T* need(size_t k) {
    if (k > n) {
      std::free(p);
      p = static_cast<T*>(std::aligned_alloc(4096, (k * sizeof(T) + 4095) / 4096 * 4096));
      DWC_CHECK(p != nullptr, Internal, "bf16 GEMM: out of memory for " << k * sizeof(T) << " bytes of packed operands");
      n = k;
    }
    return p;
  }
};

#define DWC_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
inline DWC_AVX512BF16 __mmask16 lanes(int n) { return n >= 16 ? 0xffff : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1u); }
// 32 floats (n valid, the rest 0) as 32 bf16
inline DWC_AVX512BF16 __m512i cvt32(const float* x, int n) {
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(lanes(n - 16), x + 16), _mm512_maskz_loadu_ps(lanes(n), x)));
}
// rows x0 (k) and x1 (k+1) of 16 columns as 16 VNNI pairs (x0[c], x1[c])
inline DWC_AVX512BF16 __m512i pairs(__m512 x0, __m512 x1) {
  const __m512i perm = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                                        18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(perm, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(x1, x0)));
}
// in-place transpose of 16×16 32-bit elements
inline DWC_AVX512BF16 void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]), t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  for (int i = 0; i < 4; ++i) {
    r[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]), r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]), r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88), t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88), t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88), r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88), r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

// op(A) [M, K] -> Ap [MS][KB] blocks of 32 rows × 32 k (row-major bf16; rows 0–15 and 16–31 are
// the two A tiles), zero-padded.
DWC_AVX512BF16 void pack_a(bool ta, const float* A, int lda, int M, int K, uint16_t* Ap, int MS, int KB, bool par) {
#pragma omp parallel for schedule(static) if (par)
  for (int64_t it = 0; it < int64_t(MS) * KB; ++it) {
    // along the rows of the stored matrix: kb inner for A, ms inner for Aᵀ
    const int ms = ta ? int(it % MS) : int(it / KB), kb = ta ? int(it / MS) : int(it % KB);
    uint16_t* d = Ap + (int64_t(ms) * KB + kb) * kBlk;
    const int m0 = ms * 32, k0 = kb * 32, mn = std::min(32, M - m0), kn = std::min(32, K - k0);
    if (!ta) {
      for (int i = 0; i < 32; ++i)
        _mm512_storeu_si512(d + i * 32, i < mn ? cvt32(A + int64_t(m0 + i) * lda + k0, kn) : _mm512_setzero_si512());
      continue;
    }
    for (int h = 0; h < 2; ++h) {  // rows m0 + 16h + c: pairs of k per row, then transposed
      const __mmask16 m = lanes(mn - 16 * h);
      __m512i v[16];
      for (int r = 0; r < 16; ++r) {
        const __m512 x0 = 2 * r < kn ? _mm512_maskz_loadu_ps(m, A + int64_t(k0 + 2 * r) * lda + m0 + 16 * h) : _mm512_setzero_ps();
        const __m512 x1 = 2 * r + 1 < kn ? _mm512_maskz_loadu_ps(m, A + int64_t(k0 + 2 * r + 1) * lda + m0 + 16 * h) : _mm512_setzero_ps();
        v[r] = pairs(x0, x1);
      }
      transpose16(v);
      for (int c = 0; c < 16; ++c) _mm512_storeu_si512(d + (16 * h + c) * 32, v[c]);
    }
  }
}

// op(B) [K, N] -> Bp [NS][KB] blocks of 2 tiles (columns 16j..16j+15), each 16 rows of k-pairs:
// element (k = 32kb + 2r + p, n = 32ns + 16j + c) at j·512 + r·32 + 2c + p. Zero-padded.
DWC_AVX512BF16 void pack_b(bool tb, const float* B, int ldb, int K, int N, uint16_t* Bp, int NS, int KB, bool par) {
#pragma omp parallel for schedule(static) if (par)
  for (int64_t it = 0; it < int64_t(NS) * KB; ++it) {
    const int ns = tb ? int(it / KB) : int(it % NS), kb = tb ? int(it % KB) : int(it / NS);
    uint16_t* d = Bp + (int64_t(ns) * KB + kb) * kBlk;
    const int n0 = ns * 32, k0 = kb * 32, nn = std::min(32, N - n0), kn = std::min(32, K - k0);
    for (int j = 0; j < 2; ++j) {
      if (!tb) {
        const __mmask16 m = lanes(nn - 16 * j);
        for (int r = 0; r < 16; ++r) {
          const __m512 x0 = 2 * r < kn ? _mm512_maskz_loadu_ps(m, B + int64_t(k0 + 2 * r) * ldb + n0 + 16 * j) : _mm512_setzero_ps();
          const __m512 x1 = 2 * r + 1 < kn ? _mm512_maskz_loadu_ps(m, B + int64_t(k0 + 2 * r + 1) * ldb + n0 + 16 * j) : _mm512_setzero_ps();
          _mm512_storeu_si512(d + j * 512 + r * 32, pairs(x0, x1));
        }
      } else {  // Bᵀ rows are columns n with k contiguous: 16 pairs per column, transposed
        __m512i v[16];
        for (int c = 0; c < 16; ++c) {
          const int n = 16 * j + c;
          v[c] = n < nn ? cvt32(B + int64_t(n0 + n) * ldb + k0, kn) : _mm512_setzero_si512();
        }
        transpose16(v);
        for (int r = 0; r < 16; ++r) _mm512_storeu_si512(d + j * 512 + r * 32, v[r]);
      }
    }
  }
}

// C strips [ns0, ns1) of 32 columns: per chunk of strips (kNStrips, more when K fits one chunk)
// and of kKChunk k blocks, every 32-row strip of A against each strip of the chunk; partial sums
// of a K longer than one chunk wait in W (float32, M_pad × 256), the last chunk writes
// alpha·acc + beta·C.
__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl"))) void compute(const uint16_t* Ap, const uint16_t* Bp, int MS, int KB, int ns0,
                                                                                     int ns1, float* W, int M, int N, float alpha, float beta,
                                                                                     float* C, int ldc) {
  TileCfg cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int i = 0; i < 8; ++i) cfg.colsb[i] = 64, cfg.rows[i] = 16;
  _tile_loadconfig(&cfg);
  constexpr int ldw = kNStrips * 32;
  // one pass over K (no W): as many strips per chunk as keep its B part within ~1 MB, so that a
  // large M re-reads its A strips fewer times
  const int nstrips = KB > kKChunk ? kNStrips : std::max(kNStrips, (1 << 20) / (KB * kBlk * 2));
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  alignas(64) float lb[32 * 32];
  for (int nsb = ns0; nsb < ns1; nsb += nstrips) {
    const int nse = std::min(ns1, nsb + nstrips);
    for (int kc0 = 0; kc0 < KB; kc0 += kKChunk) {
      const int kce = std::min(KB, kc0 + kKChunk);
      for (int ms = 0; ms < MS; ++ms) {
        // the next A strip of this chunk into L2 while this one runs, spread over the strips
        const char* next = reinterpret_cast<const char*>(Ap + (int64_t(ms + 1) * KB + kc0) * kBlk);
        const int64_t lines = ms + 1 < MS ? int64_t(kce - kc0) * kBlk * 2 / 64 : 0, per = (lines + (nse - nsb) - 1) / (nse - nsb);
        for (int ns = nsb; ns < nse; ++ns) {
          float* w = W + int64_t(ms) * 32 * ldw + (ns - nsb) * 32;
          if (kc0 == 0) {
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
          } else {
            _tile_loadd(0, w, ldw * 4); _tile_loadd(1, w + 16, ldw * 4);
            _tile_loadd(2, w + 16 * ldw, ldw * 4); _tile_loadd(3, w + 16 * ldw + 16, ldw * 4);
          }
          const uint16_t* a = Ap + (int64_t(ms) * KB + kc0) * kBlk;
          const uint16_t* b = Bp + (int64_t(ns) * KB + kc0) * kBlk;
          const int64_t p0 = per * (ns - nsb), p1 = std::min(lines, p0 + per), step = (p1 - p0 + (kce - kc0) - 1) / (kce - kc0);
          int64_t pl = p0;
          for (int kb = kc0; kb < kce; ++kb, a += kBlk, b += kBlk) {
            for (int64_t q = 0; q < step && pl < p1; ++q, ++pl) _mm_prefetch(next + pl * 64, _MM_HINT_T1);
            _tile_loadd(4, a, 64); _tile_loadd(5, a + 512, 64);
            _tile_loadd(6, b, 64); _tile_loadd(7, b + 512, 64);
            _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
          }
          if (kce < KB) {
            _tile_stored(0, w, ldw * 4); _tile_stored(1, w + 16, ldw * 4);
            _tile_stored(2, w + 16 * ldw, ldw * 4); _tile_stored(3, w + 16 * ldw + 16, ldw * 4);
            continue;
          }
          _tile_stored(0, lb, 128); _tile_stored(1, lb + 16, 128); _tile_stored(2, lb + 512, 128); _tile_stored(3, lb + 528, 128);
          const int m0 = ms * 32, n0 = ns * 32, mn = std::min(32, M - m0), nn = std::min(32, N - n0);
          const __mmask16 k0m = lanes(nn), k1m = lanes(nn - 16);
          for (int i = 0; i < mn; ++i) {
            float* cr = C + int64_t(m0 + i) * ldc + n0;
            __m512 v0 = _mm512_mul_ps(va, _mm512_load_ps(lb + i * 32)), v1 = _mm512_mul_ps(va, _mm512_load_ps(lb + i * 32 + 16));
            if (beta != 0.f) {
              v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k0m, cr), v0);
              v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k1m, cr + 16), v1);
            }
            _mm512_mask_storeu_ps(cr, k0m, v0);
            _mm512_mask_storeu_ps(cr + 16, k1m, v1);
          }
        }
      }
    }
  }
  _tile_release();
}
#undef DWC_AVX512BF16

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  const int MS = (M + 31) / 32, NS = (N + 31) / 32, KB = (K + 31) / 32;
  // per calling thread (GEMMs may be issued from inside parallel regions), grown while warming up
  thread_local Buf<uint16_t> ap, bp;
  thread_local std::vector<Buf<float>> ws;
  const bool par = !in_parallel();
  const int T = par ? std::max(1, std::min(num_threads(), NS)) : 1;
  uint16_t* a = ap.need(size_t(MS) * KB * kBlk);
  uint16_t* b = bp.need(size_t(NS) * KB * kBlk);
  pack_a(ta, A, lda, M, K, a, MS, KB, par);
  pack_b(tb, B, ldb, K, N, b, NS, KB, par);
  if (ws.size() < size_t(T)) ws.resize(size_t(T));
  const size_t wn = KB > kKChunk ? size_t(MS) * 32 * kNStrips * 32 : 0;
  for (int t = 0; t < T; ++t) ws[t].need(std::max<size_t>(wn, 16));
  Buf<float>* w = ws.data();  // this thread's buffers (inside the region a thread_local names the worker's own)
  // the columns split over the threads (each packs nothing more: A and B are shared, read-only)
#pragma omp parallel num_threads(T) if (T > 1)
  {
#ifdef _OPENMP
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const int t = 0, nt = 1;
#endif
    const int ns0 = int(int64_t(NS) * t / nt), ns1 = int(int64_t(NS) * (t + 1) / nt);
    if (ns1 > ns0) compute(a, b, MS, KB, ns0, ns1, w[t].p, M, N, alpha, beta, C, ldc);
  }
}
}  // namespace amx
bool amx_usable() { return cpu_features().amx_bf16 && amx::permitted(); }
}  // namespace
#pragma GCC diagnostic pop
#endif

#ifdef DWC_WITH_DNNL
namespace {
// The bf16 GEMM: one oneDNN matmul primitive per (op(A) and op(B) orientation, M, N, K, ldc, alpha,
// beta, threads), created on first use and cached (oneDNN 2.6 runs bf16 matmuls with runtime
// dimensions only on its gemm-based kernel, not on the AMX brgemm one, so the shape is fixed).
// alpha is the output scale, beta the scale of a sum post-op: C = alpha·op(A)·op(B) + beta·C, the
// product accumulated in float32 from bf16 copies of op(A) [M,K] and op(B) [K,N], kept dense in
// the orientation they come in (A^T is [K,M] rows: strides {1, M}).
struct Bf16Gemm {
  dnnl::matmul prim;
  dnnl::memory::desc a, b, c;
};

dnnl::engine& bf16_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// Past kMaxShapes cached shapes (a workload whose shapes keep changing) a new shape takes the
// primitive with runtime M, N, K instead (rt = true; oneDNN's gemm-based avx512_core_bf16 kernel,
// one per orientation, alpha, beta): nothing is created after warm-up whatever the shapes.
constexpr size_t kMaxShapes = 512;
Bf16Gemm& bf16_gemm_entry(bool ta, bool tb, int M, int N, int K, int ldc, float alpha, float beta, bool& rt) {
  using memory = dnnl::memory;
  using dt = memory::data_type;
  static std::mutex mu;
  static std::map<std::vector<int64_t>, std::unique_ptr<Bf16Gemm>> cache;
  uint32_t ab, bb;
  std::memcpy(&ab, &alpha, 4);
  std::memcpy(&bb, &beta, 4);
  const int nt = in_parallel() ? 1 : num_threads();
  std::vector<int64_t> key{ta, tb, M, N, K, ldc, ab, bb, nt};
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  rt = false;
  if (it == cache.end() && cache.size() >= kMaxShapes) {
    rt = true;
    key = {ta, tb, -1, -1, -1, -1, ab, bb, nt};
    it = cache.find(key);
  }
  if (it != cache.end()) return *it->second;
  auto e = std::make_unique<Bf16Gemm>();
  const memory::dim R = DNNL_RUNTIME_DIM_VAL;
  const memory::dim m = rt ? R : M, n = rt ? R : N, k = rt ? R : K, lc = rt ? R : ldc;
  e->a = memory::desc({m, k}, dt::bf16, ta ? memory::dims{1, m} : memory::dims{k, 1});
  e->b = memory::desc({k, n}, dt::bf16, tb ? memory::dims{1, k} : memory::dims{n, 1});
  e->c = memory::desc({m, n}, dt::f32, memory::dims{lc, 1});
  dnnl::primitive_attr attr;
  if (alpha != 1.f) attr.set_output_scales(0, {alpha});
  if (beta != 0.f) {
    dnnl::post_ops po;
    po.append_sum(beta);
    attr.set_post_ops(po);
  }
  try {
    e->prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(e->a, e->b, e->c), attr, bf16_engine()));
  } catch (const dnnl::error& err) {
    DWC_CHECK(false, Internal, "bf16 GEMM: oneDNN cannot create the matmul for M=" << M << " N=" << N << " K=" << K << ": " << err.what());
  }
  ++g_bf16_prims;
  if (rt) {
    e->a = e->b = e->c = memory::desc();
  }
  return *cache.emplace(key, std::move(e)).first->second;
}

// Small GEMMs stay float32 (docs/PERFORMANCE.md "bf16"): with a dimension under 64 or under 2^20
// multiply-adds, converting the operands and writing C cost more than the bf16 product saves
// (speed against fp32 measured on 2 shared Sapphire Rapids cores: 8×1024×1024 0.5×, 32×1024×1024
// 1.0×, 1024×1024×32 0.86×, 64³ 0.93×; 64×1024×1024 1.1×, 256×1024² 2.1×, 512×1568×9216 2.3×).
constexpr int kBf16MinDim = 64;
constexpr int64_t kBf16MinMacs = int64_t(1) << 20;
inline bool bf16_gemm_pays(int M, int N, int K) {
  return std::min({M, N, K}) >= kBf16MinDim && int64_t(M) * N * K >= kBf16MinMacs;
}

void sgemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C,
                int ldc) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (bf16_gemm_kernel() == Bf16GemmKernel::Amx) {
    amx::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    count_bf16_call();
    return;
  }
#endif
  // bf16 copies of the operands, per thread (GEMMs may be issued from inside parallel regions),
  // grown while warming up
  thread_local std::vector<uint16_t> abuf, bbuf;
  const size_t na = size_t(M) * K, nb = size_t(K) * N;
  if (abuf.size() < na) abuf.resize(na);
  if (bbuf.size() < nb) bbuf.resize(nb);
  if (ta) pack_bf16(A, lda, K, M, abuf.data());
  else pack_bf16(A, lda, M, K, abuf.data());
  if (tb) pack_bf16(B, ldb, N, K, bbuf.data());
  else pack_bf16(B, ldb, K, N, bbuf.data());
  bool rt = false;
  Bf16Gemm& g = bf16_gemm_entry(ta, tb, M, N, K, ldc, alpha, beta, rt);
  auto& eng = bf16_engine();
  thread_local dnnl::stream st(eng);
  using memory = dnnl::memory;
  using dt = memory::data_type;
  const memory::dim m = M, n = N, k = K;
  const memory::desc ad = rt ? memory::desc({m, k}, dt::bf16, ta ? memory::dims{1, m} : memory::dims{k, 1}) : g.a;
  const memory::desc bd = rt ? memory::desc({k, n}, dt::bf16, tb ? memory::dims{1, k} : memory::dims{n, 1}) : g.b;
  const memory::desc cd = rt ? memory::desc({m, n}, dt::f32, memory::dims{ldc, 1}) : g.c;
  dnnl::memory am(ad, eng, abuf.data()), bm(bd, eng, bbuf.data()), cm(cd, eng, C);
  g.prim.execute(st, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  st.wait();
  count_bf16_call();
}
}  // namespace
#endif

#ifdef DWC_WITH_DNNL
namespace {
// Skinny x·Wᵀ products (few rows against a large weight stored [N, K]: the Linear layers of the global
// stream at B = 32; docs/PERFORMANCE.md "Skinny GEMMs"): oneDNN 2.6's sgemm runs C[M×N] = A·Bᵀ
// with M ≤ 64 at about half the rate of the transposed product Cᵀ[N×M] = B·Aᵀ, so those are
// computed transposed into per-thread scratch and transposed back (C = alpha·(Cᵀ)ᵀ + beta·C). The
// other orientations measured no better transposed (A·B: slower), so they stay as they are.
// DWC_SKINNY_GEMM=0 turns it off (A/B runs).
constexpr int kSkinnyMaxM = 64, kSkinnyMinN = 512, kSkinnyMinK = 256;
bool skinny_on() {
  static const bool on = [] {
    const char* e = std::getenv("DWC_SKINNY_GEMM");
    return !(e && *e == '0');
  }();
  return on;
}
inline bool skinny_gemm(bool ta, bool tb, int M, int N, int K) {
  return !ta && tb && M <= kSkinnyMaxM && N >= kSkinnyMinN && K >= kSkinnyMinK && skinny_on();
}
// C = alpha·A·Bᵀ + beta·C (A [M, K], B [N, K]) as Cᵀ = B·Aᵀ
void sgemm_skinny_nt(int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  thread_local std::vector<float> ct;
  if (ct.size() < size_t(M) * N) ct.resize(size_t(M) * N);
  const dnnl_status_t st = dnnl_sgemm('N', 'T', N, M, K, alpha, B, ldb, A, lda, 0.f, ct.data(), M);
  DWC_CHECK(st == dnnl_success, Internal, "dnnl_sgemm failed (status " << int(st) << ") for the transposed M=" << N << " N=" << M << " K=" << K);
  for (int i = 0; i < M; ++i) {
    float* c = C + int64_t(i) * ldc;
    const float* t = ct.data() + i;
    if (beta == 0.f)  // C is not read (it may hold NaN)
      for (int j = 0; j < N; ++j) c[j] = t[int64_t(j) * M];
    else
      for (int j = 0; j < N; ++j) c[j] = t[int64_t(j) * M] + beta * c[j];
  }
}
}  // namespace
#endif

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
    if (precision() == Precision::Bf16 && bf16_gemm_pays(M, N, K)) {
      sgemm_bf16(ta == CblasTrans, tb == CblasTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    }
    if (skinny_gemm(ta == CblasTrans, tb == CblasTrans, M, N, K)) {
      sgemm_skinny_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
      return;
    }
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

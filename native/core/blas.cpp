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
#endif

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

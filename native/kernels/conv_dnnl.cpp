// 2-D convolutions through oneDNN's convolution primitives (issue 12 item 1; chosen per shape by
// conv.cpp, docs/PERFORMANCE.md "How kernels are chosen").
// Per geometry (and thread count) one cache entry holds, created once on first use and reused:
//   forward_training conv, backward-data conv, backward-weights conv, all with memory format
//   `any` (oneDNN picks its blocked layout, nChw8c on AVX2, nChw16c on AVX-512) and a user-managed scratchpad;
//   the reorders between our plain NCHW/OIHW buffers and those layouts. Outputs that accumulate
//   (dx += ..., dw += ...) come back through a reorder with a sum post-op, or where the layouts
//   agree (the blocked trunk's dx) through add_into (oneDNN's own same-layout sum reorder is its
//   generic loop), so the math stays the same as the im2col path: y = conv(x, w),
//   dx += convᵀ(dy, w), dw += corr(x, dy). The trunks' weights are reordered once per change of
//   their values, not per call (BlockedWeights, conv_dnnl.h).
// Memory objects and argument maps are built once per entry; a call only sets data handles, so
// after the first call of a shape nothing is created or JIT-compiled. The blocked copies and the
// scratchpad live in one buffer shared by all entries (one native computation runs at a time,
// core/threads.h), grown while warming up and then stable.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "../core/blas.h"
#include "../core/errors.h"
#include "../core/threads.h"
#include "conv_dnnl.h"
#include "norm.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef DWC_WITH_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace dwc::cpu {

#ifndef DWC_WITH_DNNL

bool dnnl_conv_supported(const Conv2dGeom&) { return false; }
int dnnl_preferred_blocked_width() { return 8; }
void dnnl_conv_forward(const float*, const float*, float*, const Conv2dGeom&) {
  DWC_CHECK(false, Internal, "conv: oneDNN is not compiled in");
}
void dnnl_conv_backward(const float*, const float*, const float*, float*, float*, const Conv2dGeom&, bool) {
  DWC_CHECK(false, Internal, "conv: oneDNN is not compiled in");
}
void dnnl_conv_forward_fmt(const float*, const float*, float*, const Conv2dGeom&, bool, bool, BlockedWeights*, uint64_t) {
  DWC_CHECK(false, Internal, "conv: oneDNN is not compiled in");
}
void dnnl_conv_backward_fmt(const float*, const float*, const float*, float*, float*, const Conv2dGeom&, bool, bool, bool, BlockedWeights*,
                            uint64_t) {
  DWC_CHECK(false, Internal, "conv: oneDNN is not compiled in");
}
void set_weight_cache(bool) {}
bool weight_cache() { return false; }
int64_t dnnl_weight_reorders() { return 0; }
int64_t dnnl_primitives_created() { return 0; }
size_t dnnl_conv_cache_size() { return 0; }
// bf16 runs only through oneDNN (blas.cpp precision_unsupported_reason): never here
static bool bf16_bwdw_around_amx() { return false; }
bool bf16_backward_weights_by_gemm() { return false; }

#else

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

std::atomic<int64_t> g_created{0};
std::atomic<int64_t> g_weight_reorders{0};
bool env_weight_cache() {
  const char* v = std::getenv("DWC_WEIGHT_CACHE");
  return !(v && (std::strcmp(v, "off") == 0 || std::strcmp(v, "0") == 0));
}
std::atomic<bool> g_weight_cache{env_weight_cache()};

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
dnnl::stream& cpu_stream() {
  static dnnl::stream s(cpu_engine());
  return s;
}

// The shared buffer for blocked copies + scratchpad (64-byte aligned slices).
struct Pool {
  void* base = nullptr;
  size_t bytes = 0;
  void reserve(size_t n) {
    if (n <= bytes) return;
    std::free(base);
    base = std::aligned_alloc(64, (n + 63) / 64 * 64);
    DWC_CHECK(base != nullptr, Internal, "conv (oneDNN): out of memory allocating a " << n << "-byte workspace");
    bytes = n;
  }
  char* at(size_t off) const { return static_cast<char*>(base) + off; }
};
Pool g_pool;

inline size_t round64(size_t n) { return (n + 63) / 64 * 64; }

// A tensor seen in two layouts: the user's plain one (handle set per call) and the primitive's
// (a slice of the pool, or the user's buffer itself when the layouts agree and no accumulation
// is wanted).
struct Slot {
  memory user, prim;
  dnnl::reorder to_prim, to_user;  // user→prim (inputs) or prim→user (outputs, maybe with sum)
  bool same = false;               // layouts agree: no copy
  bool add = false;                // layouts agree, accumulating: user += prim by add_into (no reorder)
  size_t off = 0;                  // offset of prim's buffer in the pool
};

dnnl::primitive_attr scratch_attr() {
  dnnl::primitive_attr a;
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return a;
}

struct Entry {
  Conv2dGeom g;
  bool xb = false, yb = false;  // the caller's x/dx and y/dy are nChw{cb}c (else nchw)
  int cb = 8;                   // the blocked width (norm.h blocked_width())
  // Precision::Bf16 (docs/PERFORMANCE.md "bf16"): the primitives read bf16 src / weights / diff_dst
  // (the input slots' reorders round our float32 buffers, layouts `any`) and write float32 dst,
  // diff_src and diff_weights; the slots and the weight cache work unchanged.
  bool bf16 = false;
  dt in_t() const { return bf16 ? dt::bf16 : dt::f32; }
  // bf16 where bf16_bwdw_around_amx() (more than one thread, unless DWC_BF16_BWDW=onednn): the backward-weights primitive runs in
  // float32 (oneDNN 2.6's AMX backward-weights kernel stalls on shared cores: bf16_gemm_backward_weights
  // below; the blocked trunk takes the bf16 GEMM instead, this primitive is the plain path's)
  bool w32 = false;
  tag blk() const { return cb == 16 ? tag::nChw16c : tag::nChw8c; }
  tag xt() const { return xb ? blk() : tag::nchw; }
  tag yt() const { return yb ? blk() : tag::nchw; }
  memory::dims xd, wd, yd, strides, pl, pr;
  bool fwd_ready = false, bwd_ready = false;
  size_t need = 0;  // pool bytes this entry uses

  dnnl::convolution_forward::primitive_desc fpd;
  dnnl::convolution_forward fwd;
  Slot fx, fw, fy;
  memory fscratch;
  std::unordered_map<int, memory> fargs;

  dnnl::convolution_backward_data::primitive_desc dpd;
  dnnl::convolution_backward_data bwd_d;
  Slot ddy, dw_for_d, ddx, ddx_set;  // ddx: dx += ... (sum reorder); ddx_set: dx = ... (plain reorder)
  memory dscratch;
  std::unordered_map<int, memory> dargs, dargs_set;

  dnnl::convolution_backward_weights::primitive_desc wpd;
  dnnl::convolution_backward_weights bwd_w;
  Slot wx, wdy, wdw;
  memory wscratch;
  std::unordered_map<int, memory> wargs;
  size_t scratch_off = 0, scratch_bytes = 0;

  size_t alloc(size_t bytes) {
    const size_t off = need;
    need += round64(bytes);
    return off;
  }

  // An input: the primitive reads `want`; reorder from plain when it differs.
  void input_slot(Slot& s, const memory::desc& plain, const memory::desc& want) {
    auto& eng = cpu_engine();
    s.user = memory(plain, eng, DNNL_MEMORY_NONE);
    s.same = plain == want;
    if (s.same) {
      s.prim = s.user;
      return;
    }
    s.off = alloc(want.get_size());
    s.prim = memory(want, eng, DNNL_MEMORY_NONE);
    s.to_prim = dnnl::reorder(dnnl::reorder::primitive_desc(eng, plain, eng, want));
    ++g_created;
  }
  // An output: the primitive writes `have`; reorder (with sum when accumulating) into plain.
  // share_off: a pool slice of another slot of the same size to reuse (never used at once).
  void output_slot(Slot& s, const memory::desc& plain, const memory::desc& have, bool accumulate, const Slot* share = nullptr) {
    auto& eng = cpu_engine();
    s.user = memory(plain, eng, DNNL_MEMORY_NONE);
    s.same = plain == have && !accumulate;
    if (s.same) {
      s.prim = s.user;
      return;
    }
    s.off = share && !share->same ? share->off : alloc(have.get_size());
    s.prim = memory(have, eng, DNNL_MEMORY_NONE);
    if (plain == have) {  // oneDNN 2.6 runs this sum reorder as its generic `simple:any` loop
      s.add = true;
      return;
    }
    dnnl::primitive_attr a;
    if (accumulate) {
      dnnl::post_ops po;
      po.append_sum(1.f);
      a.set_post_ops(po);
    }
    s.to_user = dnnl::reorder(dnnl::reorder::primitive_desc(eng, have, eng, plain, a));
    ++g_created;
  }

  void build_fwd() {
    auto& eng = cpu_engine();
    const memory::desc xa(xd, in_t(), tag::any), wa(wd, in_t(), tag::any), ya(yd, dt::f32, tag::any);
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, xa, wa, ya, strides, pl, pr);
    fpd = dnnl::convolution_forward::primitive_desc(d, scratch_attr(), eng);
    fwd = dnnl::convolution_forward(fpd);
    ++g_created;
    input_slot(fx, memory::desc(xd, dt::f32, xt()), fpd.src_desc());
    input_slot(fw, memory::desc(wd, dt::f32, tag::oihw), fpd.weights_desc());
    output_slot(fy, memory::desc(yd, dt::f32, yt()), fpd.dst_desc(), false);
    fscratch = memory(fpd.scratchpad_desc(), eng, DNNL_MEMORY_NONE);
    scratch_bytes = std::max(scratch_bytes, fpd.scratchpad_desc().get_size());
    fargs = {{DNNL_ARG_SRC, fx.prim}, {DNNL_ARG_WEIGHTS, fw.prim}, {DNNL_ARG_DST, fy.prim}, {DNNL_ARG_SCRATCHPAD, fscratch}};
    fwd_ready = true;
  }

  void build_bwd() {
    if (!fwd_ready) build_fwd();
    auto& eng = cpu_engine();
    // backward-data writes diff_src in float32 from bf16 diff_dst; backward-weights reads bf16 src
    // and diff_dst and writes float32 diff_weights
    const memory::desc xa(xd, in_t(), tag::any), wa(wd, in_t(), tag::any), ya(yd, in_t(), tag::any);
    const memory::desc xo(xd, dt::f32, tag::any), wo(wd, dt::f32, tag::any);
    dnnl::convolution_backward_data::desc dd(dnnl::algorithm::convolution_direct, xo, wa, ya, strides, pl, pr);
    dpd = dnnl::convolution_backward_data::primitive_desc(dd, scratch_attr(), eng, fpd);
    bwd_d = dnnl::convolution_backward_data(dpd);
    ++g_created;
    if (w32) {
      const memory::desc yo(yd, dt::f32, tag::any);
      const dnnl::convolution_forward::desc hint(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, xo, wo, yo, strides,
                                                 pl, pr);
      dnnl::convolution_backward_weights::desc wdsc(dnnl::algorithm::convolution_direct, xo, wo, yo, strides, pl, pr);
      wpd = dnnl::convolution_backward_weights::primitive_desc(wdsc, scratch_attr(), eng,
                                                               dnnl::convolution_forward::primitive_desc(hint, scratch_attr(), eng));
    } else {
      dnnl::convolution_backward_weights::desc wdsc(dnnl::algorithm::convolution_direct, xa, wo, ya, strides, pl, pr);
      wpd = dnnl::convolution_backward_weights::primitive_desc(wdsc, scratch_attr(), eng, fpd);
    }
    bwd_w = dnnl::convolution_backward_weights(wpd);
    ++g_created;
    const memory::desc xp(xd, dt::f32, xt()), wp(wd, dt::f32, tag::oihw), yp(yd, dt::f32, yt());
    input_slot(ddy, yp, dpd.diff_dst_desc());
    input_slot(dw_for_d, wp, dpd.weights_desc());
    output_slot(ddx, xp, dpd.diff_src_desc(), true);
    output_slot(ddx_set, xp, dpd.diff_src_desc(), false, &ddx);
    input_slot(wx, xp, wpd.src_desc());
    input_slot(wdy, yp, wpd.diff_dst_desc());
    output_slot(wdw, wp, wpd.diff_weights_desc(), true);
    dscratch = memory(dpd.scratchpad_desc(), eng, DNNL_MEMORY_NONE);
    wscratch = memory(wpd.scratchpad_desc(), eng, DNNL_MEMORY_NONE);
    scratch_bytes = std::max({scratch_bytes, dpd.scratchpad_desc().get_size(), wpd.scratchpad_desc().get_size()});
    dargs = {{DNNL_ARG_DIFF_DST, ddy.prim}, {DNNL_ARG_WEIGHTS, dw_for_d.prim}, {DNNL_ARG_DIFF_SRC, ddx.prim}, {DNNL_ARG_SCRATCHPAD, dscratch}};
    dargs_set = dargs;
    dargs_set[DNNL_ARG_DIFF_SRC] = ddx_set.prim;
    wargs = {{DNNL_ARG_SRC, wx.prim}, {DNNL_ARG_DIFF_DST, wdy.prim}, {DNNL_ARG_DIFF_WEIGHTS, wdw.prim}, {DNNL_ARG_SCRATCHPAD, wscratch}};
    bwd_ready = true;
  }

  // Points every memory at this call's buffers (pool slices are re-pointed too: the pool may
  // have grown for another entry since).
  void bind(Slot& s, const void* user) {
    s.user.set_data_handle(const_cast<void*>(user));
    if (!s.same) s.prim.set_data_handle(g_pool.at(s.off));
  }
  void bind_scratch(memory& m) {
    if (m.get_desc().get_size() > 0) m.set_data_handle(g_pool.at(scratch_off));
  }
  void ensure_pool() {
    scratch_off = round64(need);
    g_pool.reserve(scratch_off + round64(scratch_bytes) + 64);
  }
};

// y += x (the same floats as the sum reorder it replaces: one addition per element).
void add_into(float* __restrict y, const float* __restrict x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

// An output slot's result into the caller's buffer (after the primitive that wrote s.prim).
void output_out(Slot& s, dnnl::stream& st) {
  if (s.add) {
    st.wait();
    add_into(static_cast<float*>(s.user.get_data_handle()), static_cast<const float*>(s.prim.get_data_handle()),
             static_cast<int64_t>(s.prim.get_desc().get_size() / sizeof(float)));
  } else if (!s.same) {
    s.to_user.execute(st, s.prim, s.user);
  }
}

// The weights' slot s of a primitive: reordered from the plain OIHW tensor w into the pool slice
// bound by Entry::bind, or with a cache (c, version != 0) into c's buffer unless it already holds
// w at this version for this slot (BlockedWeights, conv_dnnl.h).
void weights_in(Slot& s, const float* w, BlockedWeights::Copy* c, uint64_t version, dnnl::stream& st) {
  if (s.same) return;
  const bool cached = c && version != 0 && g_weight_cache.load();
  if (cached) {
    if (c->layout == &s && c->w == w && c->version == version) {
      s.prim.set_data_handle(c->buf.get());
      return;
    }
    const size_t bytes = s.prim.get_desc().get_size();
    if (c->bytes < bytes) {
      c->buf.reset(std::aligned_alloc(64, round64(bytes)));
      DWC_CHECK(c->buf != nullptr, Internal, "conv (oneDNN): out of memory allocating " << bytes << " bytes of blocked weights");
      c->bytes = bytes;
    }
    c->version = 0;  // valid again only once the reorder below has run
    s.prim.set_data_handle(c->buf.get());
  }
  s.to_prim.execute(st, s.user, s.prim);
  ++g_weight_reorders;
  if (cached) c->layout = &s, c->w = w, c->version = version;
}

// Backward-weights as one GEMM on the blocked trunk's small wide maps (gemm_backward_weights):
// dw[Co, Ci·kh·kw] += dyᵀ[Co, N·P] · patches[N·P, Ci·kh·kw], with dy (nChw{cb}c) transposed to
// co-major rows and the patches gathered from x (nChw{cb}c) in OIHW's (ci, kh, kw) order, so dw is
// accumulated in place (no blocked dw and no sum reorder). Row-major NN: the orientation that
// measured fastest for this product (docs/PERFORMANCE.md "Layouts").
std::vector<float> g_bwdw_ws;  // patches + dyᵀ, grown while warming up
void backward_weights_gemm(const float* x, const float* dy, float* dw, const Conv2dGeom& g) {
  const int L = blocked_width();  // lanes of a block
  const int Ho = g.Ho(), Wo = g.Wo(), P = Ho * Wo, CBi = g.Ci / L, CBo = g.Co / L, T = g.kh * g.kw;
  const int64_t R = int64_t(g.N) * P, K = int64_t(g.Ci) * T;
  if (g_bwdw_ws.size() < size_t(R * K + int64_t(g.Co) * R)) g_bwdw_ws.resize(size_t(R * K + int64_t(g.Co) * R));
  float* patches = g_bwdw_ws.data();
  float* dyt = patches + R * K;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r) {  // r = (n, ho, wo)
    const int n = int(r / P), ho = int(r % P) / Wo, wo = int(r % P) % Wo;
    float* row = patches + r * K;
    for (int cb = 0; cb < CBi; ++cb)
      for (int i = 0; i < g.kh; ++i)
        for (int j = 0; j < g.kw; ++j) {
          const int h = ho * g.sh - g.ph + i, w = wo * g.sw - g.pw + j;
          const bool in = h >= 0 && h < g.H && w >= 0 && w < g.W;
          const float* src = x + ((int64_t(n) * CBi + cb) * g.H * g.W + (in ? h * g.W + w : 0)) * L;
          float* dst = row + int64_t(cb) * L * T + i * g.kw + j;
          for (int l = 0; l < L; ++l) dst[l * T] = in ? src[l] : 0.f;
        }
  }
#pragma omp parallel for schedule(static)
  for (int co = 0; co < g.Co; ++co) {
    const float* src = dy + int64_t(co / L) * P * L + co % L;
    float* dst = dyt + int64_t(co) * R;
    for (int n = 0; n < g.N; ++n)
      for (int p = 0; p < P; ++p) dst[int64_t(n) * P + p] = src[(int64_t(n) * CBo * P + p) * L];
  }
  sgemm(CblasNoTrans, CblasNoTrans, g.Co, int(K), int(R), 1.f, dyt, int(R), patches, int(K), 1.f, dw, int(K));
}

struct Cache {
  std::mutex mu;
  std::map<std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int>, std::unique_ptr<Entry>> map;
};
Cache& cache() {
  static Cache c;
  return c;
}

void sync_threads() {
#ifdef _OPENMP
  if (!omp_in_parallel() && omp_get_max_threads() != num_threads()) omp_set_num_threads(num_threads());
#endif
}

// bf16 backward-weights on more than one thread (docs/PERFORMANCE.md "bf16 kernels"): the GEMM route
// on every CPU. With AMX, oneDNN 2.6's AMX primitive is ~10 % faster on a quiet machine (small trunk
// bf16 0.046–0.050 vs 0.050–0.057 s, ResNet-50 0.77–0.82 vs 0.84–0.89 s, 2026-12-02) but spin-waits
// on its frequent thread synchronisation as soon as the cores are shared: the default bf16 training
// run took 22.6 min instead of 4.3. Without AMX (oneDNN's avx512_core_bf16 kernels) its primitive
// made the small trunk 4–5× slower on 2 threads (bf16 1.14–1.46 s vs 0.22 s, AVX512_BF16-only Zen 4).
// DWC_BF16_BWDW=onednn (or amx, the old name) takes the primitive anyway, e.g. on a quiet AMX machine;
// =gemm forces the GEMM route. One thread: always the primitive.
bool bf16_bwdw_around_amx() {
  static const int forced = [] {
    const char* v = std::getenv("DWC_BF16_BWDW");
    if (!v || !*v) return -1;
    return std::strcmp(v, "gemm") == 0 ? 1 : 0;
  }();
  if (num_threads() <= 1) return false;
  return forced >= 0 ? forced == 1 : true;
}
}  // namespace
bool bf16_backward_weights_by_gemm() { return bf16_bwdw_around_amx(); }
namespace {
Entry& entry_for(const Conv2dGeom& g, bool xb, bool yb) {
  const bool bf16 = precision() == Precision::Bf16;
  const int cb = (xb || yb) ? blocked_width() : 8;
  auto key = std::make_tuple(g.N, g.Ci, g.Co, g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, num_threads(),
                             int(xb) | int(yb) << 1 | int(bf16) << 2 | int(cb == 16) << 3);
  auto& m = cache().map;
  auto it = m.find(key);
  if (it != m.end()) return *it->second;
  auto e = std::make_unique<Entry>();
  e->g = g;
  e->xb = xb, e->yb = yb, e->cb = cb;
  e->bf16 = bf16;
  e->w32 = bf16 && bf16_bwdw_around_amx();
  e->xd = {g.N, g.Ci, g.H, g.W};
  e->wd = {g.Co, g.Ci, g.kh, g.kw};
  e->yd = {g.N, g.Co, g.Ho(), g.Wo()};
  e->strides = {g.sh, g.sw};
  e->pl = {g.ph, g.pw};
  // right padding such that oneDNN's output size equals ours (floor division): the taps past the
  // last output are never read, so the symmetric value works for every stride
  e->pr = {g.ph, g.pw};
  return *m.emplace(key, std::move(e)).first->second;
}

}  // namespace

int dnnl_preferred_blocked_width() {
  // oneDNN's fp32 convolutions pick nChw16c for `any` from AVX-512 up (avx512_core and the AMX
  // ISAs), nChw8c on AVX2: the trunk's blocked path uses the same block (no 8c <-> 16c reorders).
  static const int cb = [] {
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return (isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core ? 16 : 8;
  }();
  return cb;
}

bool dnnl_conv_supported(const Conv2dGeom& g) {
  return g.N > 0 && g.Ci > 0 && g.Co > 0 && g.Ho() > 0 && g.Wo() > 0 && g.H + 2 * g.ph >= g.kh && g.W + 2 * g.pw >= g.kw;
}

void dnnl_conv_forward(const float* x, const float* w, float* y, const Conv2dGeom& g) { dnnl_conv_forward_fmt(x, w, y, g, false, false); }

void dnnl_conv_forward_fmt(const float* x, const float* w, float* y, const Conv2dGeom& g, bool x_blocked, bool y_blocked, BlockedWeights* wc,
                           uint64_t w_version) {
  std::lock_guard<std::mutex> lock(cache().mu);
  sync_threads();
  try {
    Entry& e = entry_for(g, x_blocked, y_blocked);
    if (!e.fwd_ready) e.build_fwd();
    e.ensure_pool();
    e.bind(e.fx, x), e.bind(e.fw, w), e.bind(e.fy, y);
    e.bind_scratch(e.fscratch);
    auto& s = cpu_stream();
    if (!e.fx.same) e.fx.to_prim.execute(s, e.fx.user, e.fx.prim);
    weights_in(e.fw, w, wc ? &wc->fwd : nullptr, w_version, s);
    e.fwd.execute(s, e.fargs);
    if (e.bf16) count_bf16_call();
    output_out(e.fy, s);
    s.wait();
  } catch (const dnnl::error& err) {
    DWC_CHECK(false, Internal, "conv (oneDNN) forward failed: " << err.what());
  }
}

void dnnl_conv_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g, bool accumulate_dx) {
  dnnl_conv_backward_fmt(x, w, dy, dx, dw, g, accumulate_dx, false, false);
}

void dnnl_conv_backward_fmt(const float* x, const float* w, const float* dy, float* dx, float* dw, const Conv2dGeom& g, bool accumulate_dx,
                            bool x_blocked, bool y_blocked, BlockedWeights* wc, uint64_t w_version) {
  if (!dx && !dw) return;
  std::lock_guard<std::mutex> lock(cache().mu);
  sync_threads();
  try {
    Entry& e = entry_for(g, x_blocked, y_blocked);
    if (!e.bwd_ready) e.build_bwd();
    e.ensure_pool();
    auto& s = cpu_stream();
    if (dx) {
      Slot& out = accumulate_dx ? e.ddx : e.ddx_set;
      e.bind(e.ddy, dy), e.bind(e.dw_for_d, w), e.bind(out, dx);
      e.bind_scratch(e.dscratch);
      if (!e.ddy.same) e.ddy.to_prim.execute(s, e.ddy.user, e.ddy.prim);
      weights_in(e.dw_for_d, w, wc ? &wc->bwd_data : nullptr, w_version, s);
      e.bwd_d.execute(s, accumulate_dx ? e.dargs : e.dargs_set);
      if (e.bf16) count_bf16_call();
      output_out(out, s);
    }
    if (dw && x_blocked && y_blocked && gemm_backward_weights(g)) {
      s.wait();
      backward_weights_gemm(x, dy, dw, g);
    } else if (dw) {
      e.bind(e.wx, x), e.bind(e.wdy, dy), e.bind(e.wdw, dw);
      e.bind_scratch(e.wscratch);
      if (!e.wx.same) e.wx.to_prim.execute(s, e.wx.user, e.wx.prim);
      // dy in the same blocked layout for both passes: reuse backward-data's copy (still intact:
      // that pass wrote only dx's copy and the scratchpad)
      const bool reuse_dy = dx && !e.ddy.same && !e.wdy.same && e.ddy.prim.get_desc() == e.wdy.prim.get_desc();
      if (reuse_dy)
        e.wdy.prim.set_data_handle(g_pool.at(e.ddy.off));
      else if (!e.wdy.same)
        e.wdy.to_prim.execute(s, e.wdy.user, e.wdy.prim);
      e.bwd_w.execute(s, e.wargs);
      if (e.bf16 && !e.w32) count_bf16_call();
      output_out(e.wdw, s);
    }
    s.wait();
  } catch (const dnnl::error& err) {
    DWC_CHECK(false, Internal, "conv (oneDNN) backward failed: " << err.what());
  }
}

int64_t dnnl_primitives_created() { return g_created.load(); }
void set_weight_cache(bool on) { g_weight_cache = on; }
bool weight_cache() { return g_weight_cache.load(); }
int64_t dnnl_weight_reorders() { return g_weight_reorders.load(); }

size_t dnnl_conv_cache_size() {
  std::lock_guard<std::mutex> lock(cache().mu);
  return cache().map.size();
}

#endif

}  // namespace dwc::cpu

namespace dwc::cpu {
// Measured on 2 Zen 3 cores (the conv rows of `npm run bench -- kernels`, each shape on both
// implementations; docs/PERFORMANCE.md "How kernels are chosen"). oneDNN's direct convolution wins
// on spatial kernels over few channels (the trunks' stem and first stages: no im2col pass whose
// K = Ci·kh·kw rows are short). On wide channels (Ci ≥ 256: the deep stages, the Inception blocks
// at C = 2048) im2col + GEMM was as fast or faster, mostly in the backward passes; a 1×1 stride-1
// conv is already a plain GEMM on x's planes; 1-D convs (H = 1) measured faster through im2col.
// Small maps at a large batch (N ≥ 16, Ho·Wo ≤ 64, Ci ≤ 256: the small trunk's last stage, its
// 256-channel 3×3 and 1×1 projection) go to oneDNN too: there the whole-batch im2col GEMM
// (Y[Co, N·Po] = W·cols, row-major NN) ran at ~40 GFLOP/s per core against ~70 for oneDNN's
// direct kernel (issue 12; docs/PERFORMANCE.md). ResNet-50 at N = 8 and CLIP's ResNets at 224²
// (their maps of ≤ 64 positions have ≥ 512 input channels) keep the rule above.
constexpr int kDnnlMaxCi = 128;
constexpr int kSmallMapMaxCi = 256, kSmallMapMaxPlane = 64, kSmallMapMinBatch = 16;
// Backward-weights of a 3×3 (any spatial kernel) over ≥ 256 input channels on maps of ≤ 64
// positions at ≥ 1024 rows N·Ho·Wo (the small trunk's 256→256 3×3 at N ≥ 16), on the blocked
// path: one GEMM (backward_weights_gemm) instead of oneDNN's primitive, which ran this product at
// ~47 GFLOP/s on one core against ~64 for dnnl_sgemm NN (docs/PERFORMANCE.md "Layouts").
constexpr int kGemmBwdWMinCi = 256, kGemmBwdWMaxPlane = 64, kGemmBwdWMinRows = 1024;
// Off by default: a gain on one thread, not shown on two (docs/PERFORMANCE.md); DWC_BWDW_GEMM=on.
static std::atomic<bool> g_gemm_bwd_w{[] {
  const char* v = std::getenv("DWC_BWDW_GEMM");
  return v && (std::strcmp(v, "on") == 0 || std::strcmp(v, "1") == 0);
}()};
void set_gemm_backward_weights(bool on) { g_gemm_bwd_w = on; }
bool gemm_backward_weights_on() { return g_gemm_bwd_w.load(); }
// bf16 on more than one thread without AMX (or with DWC_BF16_BWDW=gemm): every blocked backward-weights goes through
// the GEMM (a bf16 matmul, or fp32 under the small-GEMM threshold, blas.cpp). oneDNN 2.6's AMX backward-weights
// kernel (jit:avx512_core_amx_bf16) synchronises its threads often: on 2 cores shared with other
// work the small trunk's backward took 2.4 s per iteration with it against 0.22 s with the GEMM
// and 0.24 s in fp32 (1 thread: 0.14 s with it, 0.19 s with the GEMM; docs/PERFORMANCE.md "bf16").
bool bf16_gemm_backward_weights(const Conv2dGeom& g) {
  return precision() == Precision::Bf16 && bf16_bwdw_around_amx() && g.Ci % blocked_width() == 0 && g.Co % blocked_width() == 0;
}
bool gemm_backward_weights(const Conv2dGeom& g) {
  if (bf16_gemm_backward_weights(g)) return true;
  return g_gemm_bwd_w.load() && g.kh * g.kw > 1 && g.Ci >= kGemmBwdWMinCi && g.Ci % blocked_width() == 0 && g.Co % blocked_width() == 0 &&
         g.Ho() * g.Wo() <= kGemmBwdWMaxPlane && int64_t(g.N) * g.Ho() * g.Wo() >= kGemmBwdWMinRows;
}
bool dnnl_conv_rule(const Conv2dGeom& g) {
  if (g.H == 1) return false;
  if (g.N >= kSmallMapMinBatch && g.Ho() * g.Wo() <= kSmallMapMaxPlane && g.Ci <= kSmallMapMaxCi) return true;
  const bool pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
  if (pointwise || g.kh * g.kw == 1) return false;
  return g.Ci <= kDnnlMaxCi;
}
}  // namespace dwc::cpu

// Inception blocks (spec §4), see inception.h.
#include "inception.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "../core/op.h"

namespace dwc {

namespace {
using prof_clock = std::chrono::steady_clock;
prof_clock::time_point g_prof_last;
std::map<std::string, std::pair<double, int>> g_prof;
}  // namespace

bool prof_on() {
  static const bool on = [] {
    const char* e = std::getenv("DWC_PROFILE");
    return e && *e && *e != '0';
  }();
  return on;
}

void prof_mark(const char* name, const char* sub) {
  if (!prof_on()) return;
  const auto now = prof_clock::now();
  if (name) {
    auto& e = g_prof[sub ? std::string(name) + sub : std::string(name)];
    e.first += std::chrono::duration<double, std::milli>(now - g_prof_last).count();
    ++e.second;
  }
  g_prof_last = now;
}

void prof_dump(const char* title) {
  if (!prof_on()) return;
  double tot = 0;
  for (auto& [k, v] : g_prof) tot += v.first;
  std::fprintf(stderr, "[DWC_PROFILE] %s: %.1f ms\n", title, tot);
  for (auto& [k, v] : g_prof) std::fprintf(stderr, "  %-28s %8.1f ms  (x%d)\n", k.c_str(), v.first, v.second);
  g_prof.clear();
}

namespace {
constexpr float kBnMomentum = 0.1f, kBnEps = 1e-5f;
const char* const kUnitNames[7] = {"branch0.", "branch1.0.", "branch1.2.", "branch2.0.", "branch2.2.", "branch2.4.", "branch3.1."};

int64_t off_of(const ParamBuffer& pb, const std::string& name, int* idx = nullptr) {
  const ParamSpec* s = pb.find(name);
  DWC_CHECK(s != nullptr, Internal, "parameter '" << name << "' was not declared");
  if (idx) *idx = static_cast<int>(s - pb.specs.data());
  return s->offset;
}
}  // namespace

Inception::Inception(ParamBuffer& pb, const std::string& prefix, int in, int out, bool two_d)
    : be_(pb.be), in_(in), out_(out), two_d_(two_d) {
  tag_ = prefix.rfind("local.", 0) == 0 ? prefix.substr(6, prefix.find('.', 6) - 6) : "inception";
  DWC_ARG_CHECK(in > 0 && out > 0 && out % 8 == 0,
                "Inception '" << prefix << "': output channels must be a positive multiple of 8, got " << out);
  const int o8 = out / 8;
  // (ci, co, k) per unit, spec §4
  const int dims[7][3] = {{in, 3 * o8, 1}, {in, 4 * o8, 1}, {4 * o8, 2 * o8, 3}, {in, 2 * o8, 1},
                          {2 * o8, o8, 3}, {o8, 2 * o8, 3}, {in, o8, 1}};
  for (int i = 0; i < 7; ++i) {
    ConvBN& u = u_[i];
    u.prefix = prefix + kUnitNames[i];
    u.ci = dims[i][0];
    u.co = dims[i][1];
    u.k = dims[i][2];
    std::vector<int64_t> wshape = two_d ? std::vector<int64_t>{u.co, u.ci, u.k, u.k} : std::vector<int64_t>{u.co, u.ci, u.k};
    pb.add(u.prefix + "conv.weight", wshape);
    pb.add(u.prefix + "bn.weight", {u.co});
    pb.add(u.prefix + "bn.bias", {u.co});
    pb.add(u.prefix + "bn.running_mean", {u.co}, false);
    pb.add(u.prefix + "bn.running_var", {u.co}, false);
    pb.add(u.prefix + "bn.num_batches_tracked", {}, false, true);
  }
}

void Inception::bind(const ParamBuffer& pb) {
  for (ConvBN& u : u_) {
    u.w = off_of(pb, u.prefix + "conv.weight", &u.iw);
    u.g = off_of(pb, u.prefix + "bn.weight", &u.ig);
    u.b = off_of(pb, u.prefix + "bn.bias", &u.ib);
    u.rm = off_of(pb, u.prefix + "bn.running_mean");
    u.rv = off_of(pb, u.prefix + "bn.running_var");
    u.nbt = off_of(pb, u.prefix + "bn.num_batches_tracked");
  }
}

// PyTorch defaults: Conv kaiming_uniform(a=√5) → U(±1/√fan_in); BN weight 1, bias 0,
// running_mean 0, running_var 1, num_batches_tracked 0.
void Inception::init_params(ParamBuffer& pb, const Rng& rng) const {
  for (const ConvBN& u : u_) {
    const int64_t fan_in = static_cast<int64_t>(u.ci) * u.k * (two_d_ ? u.k : 1);
    const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
    pb.init_uniform(u.w, fan_in * u.co, -bound, bound, rng.derive(static_cast<uint64_t>(u.iw)));
    pb.init_fill(u.g, u.co, 1.0f);
    pb.init_fill(u.b, u.co, 0.0f);
    pb.init_fill(u.rm, u.co, 0.0f);
    pb.init_fill(u.rv, u.co, 1.0f);
    pb.init_fill(u.nbt, 1, 0.0f);
  }
}

// ---- channel-major layout (P = positions per sample, M = N·P; kernels/layout.h) ----
namespace {
inline int I(int64_t v) { return static_cast<int>(v); }
}  // namespace

size_t Inception::workspace_floats(int N, int H, int W) const {
  size_t ws = 0;  // the taps of a 3-conv's input (forward, dW) or of its output gradient (dx)
  for (const ConvBN& u : u_)
    if (u.k == 3) ws = std::max(ws, static_cast<size_t>(std::max(u.ci, u.co)) * (two_d_ ? 9 : 3) * N * H * W);
  return ws;
}

void Inception::bn_forward(ParamBuffer& pb, ConvBN& u, const float* c, float* y, int64_t ysc, int64_t ysn, bool relu, Arena& arena) {
  const int P = H_ * W_;
  if (train_) {
    u.mean = arena.alloc(u.co, false);
    u.invstd = arena.alloc(u.co, false);
    u.var = arena.alloc(u.co, false);
    be_->batchnorm_cm_forward_train(c, pb.p(u.g), pb.p(u.b), pb.p(u.rm), pb.p(u.rv), y, ysc, ysn, u.mean, u.invstd, u.var, N_, u.co, P,
                                    kBnMomentum, kBnEps, relu, len_);
    pb.count(u.nbt);
  } else {
    u.mean = u.invstd = u.var = nullptr;
    be_->batchnorm_cm_forward_eval(c, pb.p(u.g), pb.p(u.b), pb.p(u.rm), pb.p(u.rv), y, ysc, ysn, N_, u.co, P, kBnEps, relu, len_);
  }
  prof_mark(tag_.c_str(), ".bn_f");
}

void Inception::conv3_forward(ParamBuffer& pb, ConvBN& u, const float* r, Arena& arena, float* ws) {
  const int64_t M = int64_t(N_) * H_ * W_, K = int64_t(u.ci) * (two_d_ ? 9 : 3);
  u.c = arena.alloc(u.co * M, false);
  be_->im2col_cm(r, ws, u.ci, N_, H_, W_, two_d_ ? 3 : 1, false);
  prof_mark(tag_.c_str(), ".im2col_f");
  be_->gemm(false, false, u.co, I(M), I(K), 1.f, pb.p(u.w), ws, 0.f, u.c);
  prof_mark(tag_.c_str(), ".gemm_f");
}

void Inception::conv3_backward(ParamBuffer& pb, ConvBN& u, const float* r, const float* dc, float* dr, float* ws, Arena& arena) {
  const int kh = two_d_ ? 3 : 1, taps = 3 * kh;
  const int64_t M = int64_t(N_) * H_ * W_, K = int64_t(u.ci) * taps;
  be_->im2col_cm(r, ws, u.ci, N_, H_, W_, kh, false);
  prof_mark(tag_.c_str(), ".im2col_b");
  be_->gemm(false, true, u.co, I(K), I(M), 1.f, dc, ws, 1.f, pb.g(u.w));  // dW += dc · colsᵀ
  prof_mark(tag_.c_str(), ".gemm_b");
  // dr = the same-padded convolution of dc with the flipped kernel (the transposed conv, stride 1):
  // dr[ci, m] = Σ_(o,t) W[o, ci, t] · dc[o, m − offset(t)], one GEMM whose inner dimension is
  // co·taps (Wᵀ·dc followed by col2im has only co inside and writes taps× more; docs/PERFORMANCE.md
  // "Inception backward-data")
  float* wt = arena.alloc(int64_t(u.co) * K, false);
  be_->transpose_batched(pb.p(u.w), wt, u.co, u.ci, taps, false);  // wt[o, t, ci] = W[o, ci, t]
  be_->im2col_cm(dc, ws, u.co, N_, H_, W_, kh, true);
  prof_mark(tag_.c_str(), ".im2col_b");
  be_->gemm(true, false, u.ci, I(M), u.co * taps, 1.f, wt, ws, 0.f, dr);
  prof_mark(tag_.c_str(), ".gemm_b");
}

float* Inception::forward(ParamBuffer& pb, const float* x, int N, int H, int W, bool train, Arena& arena, float* ws,
                          const int32_t* lengths, const int32_t* lengths_host) {
  DWC_CHECK(!lengths || (!two_d_ && H == 1), Internal, "Inception '" << tag_ << "': lengths (padded texts) apply to Inc1d only");
  N_ = N;
  H_ = H;
  W_ = W;
  train_ = train;
  len_ = lengths;
  const int P = H * W;
  const int64_t M = int64_t(N) * P, o8 = out_ / 8;
  real_ = M;
  if (lengths) {
    real_ = 0;
    const int32_t* lh = lengths_host ? lengths_host : lengths;
    for (int n = 0; n < N; ++n) real_ += std::clamp<int>(lh[n], 0, P);
  }
  prof_mark("f.misc");
  // the three 1×1 convs reading x, into consecutive rows z = [b0; b1.0; b2.0] (one GEMM each:
  // a stacked GEMM would round differently from the reference's per-conv products)
  xc_ = arena.alloc(int64_t(in_) * M, false);
  be_->to_channel_major(x, xc_, N, in_, P, len_);  // masked: x is 0 at padded positions from here on
  z_ = arena.alloc(9 * o8 * M, false);
  prof_mark(tag_.c_str(), ".layout_f");
  int64_t row = 0;
  for (int i : {0, 1, 3}) {
    be_->gemm(false, false, u_[i].co, I(M), in_, 1.f, pb.p(u_[i].w), xc_, 0.f, z_ + row * M);
    row += u_[i].co;
  }
  prof_mark(tag_.c_str(), ".gemm_f");
  u_[0].c = z_;
  u_[1].c = z_ + 3 * o8 * M;
  u_[3].c = z_ + 7 * o8 * M;
  // b3: avgpool3 then conv1 (the reference's order: rounding of the ill-conditioned GeM-p
  // gradients downstream follows it closely)
  pooled_ = arena.alloc(int64_t(in_) * M, false);
  if (len_)
    be_->avgpool3_len_forward(xc_, pooled_, in_, N, W, len_);  // real positions only, 0 beyond
  else
    be_->avgpool3_forward(xc_, pooled_, 1, I(int64_t(in_) * N), H, W);
  prof_mark(tag_.c_str(), ".pool_f");
  u_[6].c = arena.alloc(o8 * M, false);
  be_->gemm(false, false, I(o8), I(M), in_, 1.f, pb.p(u_[6].w), pooled_, 0.f, u_[6].c);
  prof_mark(tag_.c_str(), ".gemm_f");
  // terminal BNs write y [N,out,P] at their concat offsets (b0 | b1 | b2 | b3). Masked: every
  // BN output is 0 at padded positions, so the ReLU'd inputs r10, r20, r22 of the 3-convs are too.
  float* y = arena.alloc(int64_t(N) * out_ * P, false);
  const int64_t ysn = int64_t(out_) * P;
  bn_forward(pb, u_[0], u_[0].c, y, P, ysn, false, arena);
  // b1
  r10_ = arena.alloc(u_[1].co * M, false);
  bn_forward(pb, u_[1], u_[1].c, r10_, M, P, true, arena);
  conv3_forward(pb, u_[2], r10_, arena, ws);
  bn_forward(pb, u_[2], u_[2].c, y + 3 * o8 * P, P, ysn, false, arena);
  // b2
  r20_ = arena.alloc(u_[3].co * M, false);
  bn_forward(pb, u_[3], u_[3].c, r20_, M, P, true, arena);
  conv3_forward(pb, u_[4], r20_, arena, ws);
  r22_ = arena.alloc(u_[4].co * M, false);
  bn_forward(pb, u_[4], u_[4].c, r22_, M, P, true, arena);
  conv3_forward(pb, u_[5], r22_, arena, ws);
  bn_forward(pb, u_[5], u_[5].c, y + 5 * o8 * P, P, ysn, false, arena);
  // b3
  bn_forward(pb, u_[6], u_[6].c, y + 7 * o8 * P, P, ysn, false, arena);
  return y;
}

void Inception::backward(ParamBuffer& pb, const float* dy, float* dx, Arena& arena, float* ws) {
  DWC_CHECK(train_ && u_[0].mean != nullptr, Internal,
            "Inception backward after an eval-mode forward is not supported (train-mode BN only)");
  const int N = N_, H = H_, W = W_, P = H * W;
  const int64_t M = int64_t(N) * P, o8 = out_ / 8, dsn = int64_t(out_) * P;
  prof_mark("b.misc");
  auto bn_back = [&](ConvBN& u, const float* d, int64_t dsc, int64_t dsn_, const float* relu_y, float* dc) {
    be_->batchnorm_cm_backward(u.c, pb.p(u.g), u.mean, u.invstd, d, dsc, dsn_, relu_y, dc, pb.g(u.g), pb.g(u.b), N, u.co, P, false,
                               len_);  // masked: dc is 0 at padded positions
    prof_mark(tag_.c_str(), ".bn_b");
  };
  float* dz = arena.alloc(9 * o8 * M, false);  // gradient of z, every row written below
  // b0
  bn_back(u_[0], dy, P, dsn, nullptr, dz);
  // b1: BN(b1.2) ← dy, conv3 → dr10, ReLU+BN(b1.0) → dz rows
  float* dc = arena.alloc(std::max(u_[2].co, u_[5].co) * M, false);
  float* dr = arena.alloc(u_[1].co * M, false);
  bn_back(u_[2], dy + 3 * o8 * P, P, dsn, nullptr, dc);
  conv3_backward(pb, u_[2], r10_, dc, dr, ws, arena);
  bn_back(u_[1], dr, M, P, r10_, dz + 3 * o8 * M);
  // b2
  bn_back(u_[5], dy + 5 * o8 * P, P, dsn, nullptr, dc);
  conv3_backward(pb, u_[5], r22_, dc, dr, ws, arena);  // dr22 [o8, M]
  float* dc22 = arena.alloc(u_[4].co * M, false);
  bn_back(u_[4], dr, M, P, r22_, dc22);
  conv3_backward(pb, u_[4], r20_, dc22, dr, ws, arena);  // dr20 [2·o8, M]
  bn_back(u_[3], dr, M, P, r20_, dz + 7 * o8 * M);
  // b3
  bn_back(u_[6], dy + 7 * o8 * P, P, dsn, nullptr, dc);
  // 1×1 convs: dW_i += dz_i · xcᵀ (b3: · pooledᵀ)
  int64_t row = 0;
  for (int i : {0, 1, 3}) {
    be_->gemm(false, true, u_[i].co, in_, I(M), 1.f, dz + row * M, xc_, 1.f, pb.g(u_[i].w));
    row += u_[i].co;
  }
  be_->gemm(false, true, u_[6].co, in_, I(M), 1.f, dc, pooled_, 1.f, pb.g(u_[6].w));
  prof_mark(tag_.c_str(), ".gemm_b");
  if (dx) {
    // dx += Σ W_iᵀ·dz_i over the 1×1 convs reading x (b0, b1.0, b2.0) as one GEMM on their weights
    // stacked like z's rows (inner dimension 9·out/8 instead of three of 1–4·out/8), then b3's
    // product through the pool's adjoint: on x's channel-major copy, then back.
    float* dxc = xc_;       // x's copy is no longer needed
    float* part = pooled_;  // nor the pooled one
    be_->to_channel_major(dx, dxc, N, in_, P);
    float* wz = arena.alloc(9 * o8 * in_, false);
    row = 0;
    for (int i : {0, 1, 3}) {
      be_->copy(wz + row * in_, pb.p(u_[i].w), sizeof(float) * size_t(u_[i].co) * in_);
      row += u_[i].co;
    }
    be_->gemm(true, false, in_, I(M), I(9 * o8), 1.f, wz, dz, 1.f, dxc);
    be_->gemm(true, false, in_, I(M), u_[6].co, 1.f, pb.p(u_[6].w), dc, 0.f, part);
    prof_mark(tag_.c_str(), ".gemm_b");
    if (len_)
      be_->avgpool3_len_backward(part, dxc, in_, N, W, len_);
    else
      be_->avgpool3_backward(part, dxc, 1, I(int64_t(in_) * N), H, W);
    prof_mark(tag_.c_str(), ".pool_b");
    be_->from_channel_major(dxc, dx, N, in_, P);
    prof_mark(tag_.c_str(), ".layout_b");
  }
}

void Inception::replay_running_stats(ParamBuffer& pb) {
  DWC_CHECK(train_, Internal, "Inception: running-stat replay needs a train-mode forward");
  for (ConvBN& u : u_) {
    be_->batchnorm_update_running(pb.p(u.rm), pb.p(u.rv), u.mean, u.var, u.co, real_, kBnMomentum);
    pb.count(u.nbt);
  }
}

void Inception::mark_touched(ParamBuffer& pb) const {
  if (pb.touched.size() < pb.specs.size()) pb.touched.resize(pb.specs.size(), false);
  for (const ConvBN& u : u_) pb.touched[u.iw] = pb.touched[u.ig] = pb.touched[u.ib] = true;
}

// ---- op (JS tests): one block in train mode, forward + backward ----
// inputs: x [N,in,H,W] (Inc1d: [N,in,L]), dy (optional, same shape as y), lengths int32 [N]
// (optional, Inc1d only: real positions per sample, each in [1, L]), param.<name> overrides
// (names without prefix, e.g. param.branch1.2.conv.weight); attrs: in, out, two_d, seed, train.
// outputs: y, dx, grad.<name>, param.<name> (after the forward: running stats updated).
DWC_REGISTER_OP("inception_block", "x, dy?, lengths?, param.*; in, out, two_d, seed, train -> y, dx, grad.*, param.*", [](OpCtx& c) {
  const bool two_d = c.flag("two_d", true);
  const int in = static_cast<int>(c.int_attr("in")), out = static_cast<int>(c.int_attr("out"));
  DWC_ARG_CHECK(in > 0, c.op_name << ": option 'in' must be positive, got " << in);
  DWC_ARG_CHECK(out > 0 && out % 8 == 0, c.op_name << ": option 'out' must be a positive multiple of 8, got " << out);
  const bool train = c.flag("train", true);
  const Tensor& x = c.in("x", two_d ? 4 : 3);
  c.expect_dim(x, "x", 1, in, "in channels");
  const int N = static_cast<int>(x.dim(0));
  const int H = two_d ? static_cast<int>(x.dim(2)) : 1, W = static_cast<int>(x.dim(-1));
  const int32_t* lengths = nullptr;
  if (const Tensor* len = c.in_i32_opt("lengths", 1)) {
    DWC_ARG_CHECK(!two_d, c.op_name << ": argument 'lengths' applies to Inc1d only (two_d = 0): images are not padded");
    c.expect_shape(*len, "lengths", {N});
    lengths = len->i32();
    for (int n = 0; n < N; ++n)
      DWC_ARG_CHECK(lengths[n] >= 1 && lengths[n] <= W,
                    c.op_name << ": argument 'lengths' [" << n << "] = " << lengths[n] << " must be in [1, " << W << "]");
  }
  ParamBuffer pb;
  Inception blk(pb, "", in, out, two_d);
  pb.finalize();
  blk.bind(pb);
  blk.init_params(pb, Rng{static_cast<uint64_t>(c.int_attr_or("seed", 0)), 0});
  for (const ParamSpec& s : pb.specs) {
    if (const Tensor* t = c.in_opt("param." + s.name)) {
      if (!(s.shape.empty() && t->numel() == 1)) c.expect_shape(*t, "param." + s.name, s.shape);  // 0-d counters may come as [1]
      std::copy(t->f32(), t->f32() + s.numel, pb.p(s.offset));
    }
  }
  std::vector<int64_t> yshape = x.shape;
  yshape[1] = out;
  const Tensor* dy = c.in_opt("dy");
  if (dy) c.expect_shape(*dy, "dy", yshape);
  Arena arena;
  std::vector<float> ws(blk.workspace_floats(N, H, W) + 1);
  const float* y = blk.forward(pb, x.f32(), N, H, W, train, arena, ws.data(), lengths);
  std::copy(y, y + shape_numel(yshape), c.out("y", yshape).f32());
  if (dy) {
    DWC_ARG_CHECK(train, c.op_name << ": option 'train' must be 1 when 'dy' is given (backward uses batch statistics)");
    pb.zero_grad();
    blk.backward(pb, dy->f32(), c.out("dx", x.shape).f32(), arena, ws.data());
    for (const ParamSpec& s : pb.specs)
      if (s.trainable) std::copy(pb.g(s.offset), pb.g(s.offset) + s.numel, c.out("grad." + s.name, s.shape).f32());
  }
  for (const ParamSpec& s : pb.specs) std::copy(pb.p(s.offset), pb.p(s.offset) + s.numel, c.out("param." + s.name, s.shape).f32());
});

}  // namespace dwc

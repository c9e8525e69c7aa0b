// Inception blocks (spec §4), see inception.h.
#include "inception.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "../core/op.h"
#include "../kernels/conv.h"
#include "../kernels/elementwise.h"
#include "../kernels/norm.h"
#include "../kernels/pool.h"
#include "../kernels/tensorops.h"

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

Inception::Inception(ParamBuffer& pb, const std::string& prefix, int in, int out, bool two_d) : in_(in), out_(out), two_d_(two_d) {
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
    fill_uniform(pb.p(u.w), fan_in * u.co, -bound, bound, rng.derive(static_cast<uint64_t>(u.iw)));
    std::fill(pb.p(u.g), pb.p(u.g) + u.co, 1.0f);
    std::fill(pb.p(u.b), pb.p(u.b) + u.co, 0.0f);
    std::fill(pb.p(u.rm), pb.p(u.rm) + u.co, 0.0f);
    std::fill(pb.p(u.rv), pb.p(u.rv) + u.co, 1.0f);
    *pb.p(u.nbt) = 0.0f;
  }
}

size_t Inception::workspace_floats(int N, int H, int W) const {
  size_t ws = 0;
  for (const ConvBN& u : u_) {
    const int kh = two_d_ ? u.k : 1;
    ws = std::max(ws, cpu::conv2d_workspace_floats(N, u.ci, u.co, H, W, kh, u.k));
  }
  return ws;
}

void Inception::unit_forward(ParamBuffer& pb, ConvBN& u, const float* x, bool train, Arena& arena, float* ws) {
  const int P = H_ * W_;
  const int64_t n = static_cast<int64_t>(N_) * u.co * P;
  u.x = x;
  u.c = arena.alloc(n, false);
  u.y = arena.alloc(n, false);
  prof_mark(tag_.c_str(), ".misc_f");
  cpu::conv2d_forward(x, pb.p(u.w), u.c, N_, u.ci, u.co, H_, W_, two_d_ ? u.k : 1, u.k, ws);
  prof_mark(tag_.c_str(), ".conv_f");
  if (train) {
    u.mean = arena.alloc(u.co, false);
    u.invstd = arena.alloc(u.co, false);
    cpu::batchnorm_forward_train(u.c, pb.p(u.g), pb.p(u.b), pb.p(u.rm), pb.p(u.rv), u.y, u.mean, u.invstd, N_, u.co, P, kBnMomentum,
                                 kBnEps);
    *pb.p(u.nbt) += 1.0f;
  } else {
    u.mean = u.invstd = nullptr;
    cpu::batchnorm_forward_eval(u.c, pb.p(u.g), pb.p(u.b), pb.p(u.rm), pb.p(u.rv), u.y, N_, u.co, P, kBnEps);
  }
  prof_mark(tag_.c_str(), ".bn_f");
}

float* Inception::forward(ParamBuffer& pb, const float* x, int N, int H, int W, bool train, Arena& arena, float* ws) {
  N_ = N;
  H_ = H;
  W_ = W;
  x_ = x;
  const int64_t P = static_cast<int64_t>(H) * W;
  // b0
  unit_forward(pb, u_[0], x, train, arena, ws);
  // b1
  unit_forward(pb, u_[1], x, train, arena, ws);
  r10_ = arena.alloc(N * u_[1].co * P, false);
  cpu::relu_forward(u_[1].y, r10_, N * u_[1].co * P);
  unit_forward(pb, u_[2], r10_, train, arena, ws);
  // b2
  unit_forward(pb, u_[3], x, train, arena, ws);
  r20_ = arena.alloc(N * u_[3].co * P, false);
  cpu::relu_forward(u_[3].y, r20_, N * u_[3].co * P);
  unit_forward(pb, u_[4], r20_, train, arena, ws);
  r22_ = arena.alloc(N * u_[4].co * P, false);
  cpu::relu_forward(u_[4].y, r22_, N * u_[4].co * P);
  unit_forward(pb, u_[5], r22_, train, arena, ws);
  // b3
  pooled_ = arena.alloc(N * in_ * P, false);
  cpu::avgpool3_forward(x, pooled_, N, in_, H, W);
  unit_forward(pb, u_[6], pooled_, train, arena, ws);
  // concat on channels
  float* y = arena.alloc(N * out_ * P, false);
  const float* xs[4] = {u_[0].y, u_[2].y, u_[5].y, u_[6].y};
  const int64_t sizes[4] = {u_[0].co, u_[2].co, u_[5].co, u_[6].co};
  cpu::concat_forward(4, xs, sizes, N, P, y);
  prof_mark(tag_.c_str(), ".misc_f");
  return y;
}

void Inception::unit_backward(ParamBuffer& pb, ConvBN& u, const float* dy, float* dx, Arena& arena, float* ws) {
  const int P = H_ * W_;
  DWC_CHECK(u.mean != nullptr, Internal, "Inception backward after an eval-mode forward is not supported (train-mode BN only)");
  prof_mark(tag_.c_str(), ".misc_b");
  float* dc = arena.alloc(static_cast<int64_t>(N_) * u.co * P);
  cpu::batchnorm_backward(u.c, pb.p(u.g), u.mean, u.invstd, dy, dc, pb.g(u.g), pb.g(u.b), N_, u.co, P);
  prof_mark(tag_.c_str(), ".bn_b");
  cpu::conv2d_backward(u.x, pb.p(u.w), dc, dx, pb.g(u.w), N_, u.ci, u.co, H_, W_, two_d_ ? u.k : 1, u.k, ws);
  prof_mark(tag_.c_str(), ".conv_b");
}

void Inception::backward(ParamBuffer& pb, const float* dy, float* dx, Arena& arena, float* ws) {
  const int64_t P = static_cast<int64_t>(H_) * W_, N = N_;
  float* dys[4];
  int64_t sizes[4] = {u_[0].co, u_[2].co, u_[5].co, u_[6].co};
  for (int i = 0; i < 4; ++i) dys[i] = arena.alloc(N * sizes[i] * P);
  cpu::concat_backward(4, dys, sizes, N, P, dy);
  // b0
  unit_backward(pb, u_[0], dys[0], dx, arena, ws);
  // b1
  float* dr = arena.alloc(N * u_[1].co * P);
  unit_backward(pb, u_[2], dys[1], dr, arena, ws);
  float* da = arena.alloc(N * u_[1].co * P);
  cpu::relu_backward(r10_, dr, da, N * u_[1].co * P);
  unit_backward(pb, u_[1], da, dx, arena, ws);
  // b2
  float* dr22 = arena.alloc(N * u_[4].co * P);
  unit_backward(pb, u_[5], dys[2], dr22, arena, ws);
  float* da22 = arena.alloc(N * u_[4].co * P);
  cpu::relu_backward(r22_, dr22, da22, N * u_[4].co * P);
  float* dr20 = arena.alloc(N * u_[3].co * P);
  unit_backward(pb, u_[4], da22, dr20, arena, ws);
  float* da20 = arena.alloc(N * u_[3].co * P);
  cpu::relu_backward(r20_, dr20, da20, N * u_[3].co * P);
  unit_backward(pb, u_[3], da20, dx, arena, ws);
  // b3
  float* dpool = dx ? arena.alloc(N * in_ * P) : nullptr;
  unit_backward(pb, u_[6], dys[3], dpool, arena, ws);
  if (dx) cpu::avgpool3_backward(dpool, dx, N_, in_, H_, W_);
  prof_mark(tag_.c_str(), ".misc_b");
}

void Inception::mark_touched(ParamBuffer& pb) const {
  if (pb.touched.size() < pb.specs.size()) pb.touched.resize(pb.specs.size(), false);
  for (const ConvBN& u : u_) pb.touched[u.iw] = pb.touched[u.ig] = pb.touched[u.ib] = true;
}

// ---- op (JS tests): one block in train mode, forward + backward ----
// inputs: x [N,in,H,W] (Inc1d: [N,in,L]), dy (optional, same shape as y), param.<name> overrides
// (names without prefix, e.g. param.branch1.2.conv.weight); attrs: in, out, two_d, seed, train.
// outputs: y, dx, grad.<name>, param.<name> (after the forward: running stats updated).
DWC_REGISTER_OP("inception_block", "x, dy?, param.*; in, out, two_d, seed, train -> y, dx, grad.*, param.*", [](OpCtx& c) {
  const bool two_d = c.flag("two_d", true);
  const int in = static_cast<int>(c.int_attr("in")), out = static_cast<int>(c.int_attr("out"));
  DWC_ARG_CHECK(in > 0, c.op_name << ": option 'in' must be positive, got " << in);
  DWC_ARG_CHECK(out > 0 && out % 8 == 0, c.op_name << ": option 'out' must be a positive multiple of 8, got " << out);
  const bool train = c.flag("train", true);
  const Tensor& x = c.in("x", two_d ? 4 : 3);
  c.expect_dim(x, "x", 1, in, "in channels");
  const int N = static_cast<int>(x.dim(0));
  const int H = two_d ? static_cast<int>(x.dim(2)) : 1, W = static_cast<int>(x.dim(-1));
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
  const float* y = blk.forward(pb, x.f32(), N, H, W, train, arena, ws.data());
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

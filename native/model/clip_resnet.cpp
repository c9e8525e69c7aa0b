// ModifiedResNet image tower (CLIP-SPEC.md "Architecture", ModifiedResNet):
//   stem: conv1 3×3/2 (3→w/2) bn1 relu, conv2 3×3 (w/2→w/2) bn2 relu, conv3 3×3 (w/2→w) bn3 relu, AvgPool 2
//   layer1..4: Bottleneck blocks (expansion 4, planes w·2^(k−1), stride 1, 2, 2, 2 in the first
//     block of a stage): conv1 1×1 bn1 relu, conv2 3×3 pad 1 bn2 relu, AvgPool(stride), conv3 1×1
//     bn3; downsample AvgPool(stride) → conv 1×1 (`downsample.0`) → BN (`downsample.1`) when
//     stride > 1 or the width changes; out = relu(bn3 + identity)
//   attnpool: AttentionPool2d (kernels/attnpool.h) over the [N, (R/32)², 32w] map → [N, E].
// BatchNorm eps 1e-5, momentum 0.1. Eval mode uses (and keeps) the running statistics; train
// mode normalises with batch statistics and updates the running statistics, as PyTorch's
// model.train(). A forward for backward keeps every activation in the arena; an embedding-only
// forward (save = false, eval) normalises in place and cycles through kRing buffers of the
// largest activation (see kRing).
#include "clip_resnet.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace dwc {

namespace {

constexpr float kBnEps = 1e-5f, kBnMomentum = 0.1f;
constexpr int kRing = 10;  // > the 8 allocations between a block input and its last use (prev pds, ds; p2, u1, u2, u3, pds)

// A conv (no bias) + BatchNorm unit.
struct Unit {
  std::string conv, bn;
  int ci = 0, co = 0, k = 1, stride = 1, pad = 0;
  int64_t w = -1, g = -1, b = -1, rm = -1, rv = -1;
};
struct UnitAct {
  backend::Conv2dGeom geo;
  const float* x = nullptr;
  float *c = nullptr, *y = nullptr, *mean = nullptr, *invstd = nullptr;
  int64_t n_out() const { return int64_t(geo.N) * geo.Co * geo.Ho() * geo.Wo(); }
  int64_t n_in() const { return int64_t(geo.N) * geo.Ci * geo.H * geo.W; }
};
struct Block {
  int u1, u2, u3, ds = -1, stride = 1;
};
struct BlockAct {
  const float* x = nullptr;
  float *p2 = nullptr, *pds = nullptr, *out = nullptr;  // avg-pooled conv2 output, pooled input, relu(sum)
  int H = 0, W = 0;                                      // input size
};

class ResNetTower : public ImageTower {
 public:
  ResNetTower(ParamBuffer& pb, const ClipArch& a) : be_(pb.be), a_(a) {
    const int w = a.rn_width;
    const std::string v = "visual.";
    stem_[0] = add_unit(pb, v + "conv1.weight", v + "bn1.", 3, w / 2, 3, 2, 1);
    stem_[1] = add_unit(pb, v + "conv2.weight", v + "bn2.", w / 2, w / 2, 3, 1, 1);
    stem_[2] = add_unit(pb, v + "conv3.weight", v + "bn3.", w / 2, w, 3, 1, 1);
    int cin = w;
    for (int s = 0; s < 4; ++s) {
      const int planes = w << s, cout = planes * 4;
      for (int bi = 0; bi < a.rn_layers[s]; ++bi) {
        const std::string p = v + "layer" + std::to_string(s + 1) + "." + std::to_string(bi) + ".";
        Block b;
        b.stride = (s > 0 && bi == 0) ? 2 : 1;
        b.u1 = add_unit(pb, p + "conv1.weight", p + "bn1.", cin, planes, 1, 1, 0);
        b.u2 = add_unit(pb, p + "conv2.weight", p + "bn2.", planes, planes, 3, 1, 1);
        b.u3 = add_unit(pb, p + "conv3.weight", p + "bn3.", planes, cout, 1, 1, 0);
        if (b.stride > 1 || cin != cout) b.ds = add_unit(pb, p + "downsample.0.weight", p + "downsample.1.", cin, cout, 1, 1, 0);
        blocks_.push_back(b);
        cin = cout;
      }
    }
    C_ = cin;  // = 32·w
    grid_ = a.resolution / 32;
    const int64_t C = C_, P = int64_t(grid_) * grid_, E = a.embed_dim;
    const std::string ap = v + "attnpool.";
    pos_ = pb.add(ap + "positional_embedding", {P + 1, C});
    for (int i = 0; i < 3; ++i) {
      const std::string n = ap + "qkv"[i] + std::string("_proj.");
      proj_w_[i] = pb.add(n + "weight", {C, C});
      proj_b_[i] = pb.add(n + "bias", {C});
    }
    cw_ = pb.add(ap + "c_proj.weight", {E, C});
    cb_ = pb.add(ap + "c_proj.bias", {E});
  }
  const char* kind() const override { return "resnet"; }

  void declare_buffers(ParamBuffer& pb) override {
    for (Unit& u : units_) {
      u.rm = pb.add(u.bn + "running_mean", {u.co}, false);
      u.rv = pb.add(u.bn + "running_var", {u.co}, false);
    }
  }

  const float* forward(ParamBuffer& pb, Arena& ar, const float* pixels, int N, bool train, bool save) override {
    N_ = N;
    train_ = train;
    keep_ = save || train;
    acts_.assign(units_.size(), UnitAct());
    bacts_.assign(blocks_.size(), BlockAct());
    plan(N);
    ws_ = ar.alloc(ws_floats_, false);
    for (float*& b : ring_) b = keep_ ? nullptr : ar.alloc(max_act_, false);
    ring_i_ = 0;
    const int R = a_.resolution;
    const float* x = unit_forward(pb, ar, stem_[0], pixels, R, R, true);
    x = unit_forward(pb, ar, stem_[1], x, acts_[stem_[0]].geo.Ho(), acts_[stem_[0]].geo.Wo(), true);
    const UnitAct& s1 = acts_[stem_[1]];
    x = unit_forward(pb, ar, stem_[2], x, s1.geo.Ho(), s1.geo.Wo(), true);
    const UnitAct& s2 = acts_[stem_[2]];
    int H = s2.geo.Ho() / 2, W = s2.geo.Wo() / 2;
    float* pooled = act(ar, int64_t(N) * s2.geo.Co * H * W);
    be_->avgpool_k_forward(s2.y, pooled, N, s2.geo.Co, s2.geo.Ho(), s2.geo.Wo(), 2);
    stem_pool_ = pooled;
    x = pooled;
    for (size_t bi = 0; bi < blocks_.size(); ++bi) {
      const Block& b = blocks_[bi];
      BlockAct& ba = bacts_[bi];
      ba.x = x, ba.H = H, ba.W = W;
      const float* h = unit_forward(pb, ar, b.u1, x, H, W, true);
      h = unit_forward(pb, ar, b.u2, h, H, W, true);
      const int Ho = H / b.stride, Wo = W / b.stride;
      const int planes = units_[b.u2].co;
      if (b.stride > 1) {
        ba.p2 = act(ar, int64_t(N) * planes * Ho * Wo);
        be_->avgpool_k_forward(h, ba.p2, N, planes, H, W, b.stride);
        h = ba.p2;
      }
      float* out = unit_forward(pb, ar, b.u3, h, Ho, Wo, false);
      const int64_t n = int64_t(N) * units_[b.u3].co * Ho * Wo;
      const float* id = x;
      if (b.ds >= 0) {
        const float* xi = x;
        if (b.stride > 1) {
          ba.pds = act(ar, int64_t(N) * units_[b.ds].ci * Ho * Wo);
          be_->avgpool_k_forward(x, ba.pds, N, units_[b.ds].ci, H, W, b.stride);
          xi = ba.pds;
        }
        id = unit_forward(pb, ar, b.ds, xi, Ho, Wo, false);
      }
      be_->add_relu_forward(out, id, out, n);  // the bn3 output buffer now holds relu(sum)
      ba.out = out;
      x = out;
      H = Ho, W = Wo;
    }
    DWC_CHECK(H == grid_ && W == grid_, Internal, "CLIP ResNet: final map " << H << "x" << W << ", expected " << grid_ << "x" << grid_);
    // [N,C,P] → tokens [N,P,C]
    const int P = grid_ * grid_, C = C_, E = a_.embed_dim;
    tokens_ = ar.alloc(int64_t(N) * P * C, false);
    be_->transpose_batched(x, tokens_, N, C, P, false);
    saved_ = be_->attnpool_saved_view(ar.alloc(be_->attnpool_saved_floats(N, P, C, a_.rn_heads), false), N, P, C, a_.rn_heads);
    float* y = ar.alloc(int64_t(N) * E, false);
    be_->attnpool_forward(tokens_, pb.p(pos_), pb.p(proj_w_[0]), pb.p(proj_b_[0]), pb.p(proj_w_[1]), pb.p(proj_b_[1]), pb.p(proj_w_[2]),
                          pb.p(proj_b_[2]), pb.p(cw_), pb.p(cb_), y, saved_, N, P, C, a_.rn_heads, E);
    return y;
  }

  void backward(ParamBuffer& pb, Arena& ar, const float* d_embed) override {
    const int N = N_, P = grid_ * grid_, C = C_, E = a_.embed_dim;
    float* dtok = ar.alloc(int64_t(N) * P * C);
    float* scratch = ar.alloc(be_->attnpool_backward_scratch(N, P, C, a_.rn_heads), false);
    be_->attnpool_backward(pb.p(proj_w_[0]), pb.p(proj_w_[1]), pb.p(proj_w_[2]), pb.p(cw_), saved_, d_embed, dtok, pb.g(pos_),
                           pb.g(proj_w_[0]), pb.g(proj_b_[0]), pb.g(proj_w_[1]), pb.g(proj_b_[1]), pb.g(proj_w_[2]), pb.g(proj_b_[2]),
                           pb.g(cw_), pb.g(cb_), scratch, N, P, C, a_.rn_heads, E);
    float* dout = ar.alloc(int64_t(N) * C * P, false);
    be_->transpose_batched(dtok, dout, N, P, C, false);  // tokens [N,P,C] → [N,C,P]
    for (size_t bi = blocks_.size(); bi-- > 0;) {
      const Block& b = blocks_[bi];
      const BlockAct& ba = bacts_[bi];
      const UnitAct& a3 = acts_[b.u3];
      be_->relu_mask(ba.out, dout, dout, a3.n_out());  // dout is now d(sum)
      float* dx = ar.alloc(int64_t(N) * units_[b.u1].ci * ba.H * ba.W);
      // main path
      float* dp2 = ar.alloc(a3.n_in());
      unit_backward(pb, ar, b.u3, dout, dp2);
      const UnitAct& a2 = acts_[b.u2];
      float* dh2 = dp2;
      if (b.stride > 1) {
        dh2 = ar.alloc(a2.n_out());
        be_->avgpool_k_backward(dp2, dh2, N, a2.geo.Co, ba.H, ba.W, b.stride);
      }
      be_->relu_mask(a2.y, dh2, dh2, a2.n_out());
      float* dh1 = ar.alloc(a2.n_in());
      unit_backward(pb, ar, b.u2, dh2, dh1);
      be_->relu_mask(acts_[b.u1].y, dh1, dh1, acts_[b.u1].n_out());
      unit_backward(pb, ar, b.u1, dh1, dx);
      // identity path
      if (b.ds >= 0) {
        const UnitAct& ad = acts_[b.ds];
        float* dxi = ar.alloc(ad.n_in());
        unit_backward(pb, ar, b.ds, dout, dxi);
        if (b.stride > 1) be_->avgpool_k_backward(dxi, dx, N, ad.geo.Ci, ba.H, ba.W, b.stride);
        else be_->add_inplace(dx, dxi, ad.n_in());
      } else {
        be_->add_inplace(dx, dout, a3.n_out());
      }
      dout = dx;
    }
    const UnitAct& s2 = acts_[stem_[2]];
    float* d2 = ar.alloc(s2.n_out());
    be_->avgpool_k_backward(dout, d2, N, s2.geo.Co, s2.geo.Ho(), s2.geo.Wo(), 2);
    be_->relu_mask(s2.y, d2, d2, s2.n_out());
    float* d1 = ar.alloc(s2.n_in());
    unit_backward(pb, ar, stem_[2], d2, d1);
    const UnitAct& s1 = acts_[stem_[1]];
    be_->relu_mask(s1.y, d1, d1, s1.n_out());
    float* d0 = ar.alloc(s1.n_in());
    unit_backward(pb, ar, stem_[1], d1, d0);
    be_->relu_mask(acts_[stem_[0]].y, d0, d0, acts_[stem_[0]].n_out());
    unit_backward(pb, ar, stem_[0], d0, nullptr);  // no pixel gradient
  }

 private:
  int add_unit(ParamBuffer& pb, const std::string& conv, const std::string& bn, int ci, int co, int k, int stride, int pad) {
    Unit u;
    u.conv = conv, u.bn = bn, u.ci = ci, u.co = co, u.k = k, u.stride = stride, u.pad = pad;
    u.w = pb.add(conv, {co, ci, k, k});
    u.g = pb.add(bn + "weight", {co});
    u.b = pb.add(bn + "bias", {co});
    units_.push_back(u);
    return static_cast<int>(units_.size()) - 1;
  }

  // Geometry of every unit for a batch of N and the conv workspace size.
  void plan(int N) {
    auto set = [&](int ui, int H, int W) {
      const Unit& u = units_[ui];
      backend::Conv2dGeom& g = acts_[ui].geo;
      g.N = N, g.Ci = u.ci, g.Co = u.co, g.H = H, g.W = W, g.kh = g.kw = u.k, g.sh = g.sw = u.stride, g.ph = g.pw = u.pad;
    };
    const int R = a_.resolution;
    set(stem_[0], R, R);
    int H = acts_[stem_[0]].geo.Ho(), W = acts_[stem_[0]].geo.Wo();
    set(stem_[1], H, W);
    set(stem_[2], H, W);
    H /= 2, W /= 2;
    for (const Block& b : blocks_) {
      set(b.u1, H, W);
      set(b.u2, H, W);
      const int Ho = H / b.stride, Wo = W / b.stride;
      set(b.u3, Ho, Wo);
      if (b.ds >= 0) set(b.ds, Ho, Wo);
      H = Ho, W = Wo;
    }
    size_t ws = 1;
    max_act_ = 1;
    for (const UnitAct& a : acts_) {
      ws = std::max(ws, be_->conv2d_general_workspace_floats(a.geo));
      max_act_ = std::max({max_act_, a.n_in(), a.n_out()});  // pooled maps are smaller than their inputs
    }
    ws_floats_ = static_cast<int64_t>(ws);
  }

  // An activation buffer of n floats: the arena when kept for backward, else the next ring slot.
  float* act(Arena& ar, int64_t n) {
    if (keep_) return ar.alloc(n, false);
    DWC_CHECK(n <= max_act_, Internal, "CLIP ResNet: activation of " << n << " floats exceeds the ring buffers (" << max_act_ << ")");
    return ring_[ring_i_++ % kRing];
  }

  // conv → BN (→ ReLU in place); the geometry was set by plan().
  float* unit_forward(ParamBuffer& pb, Arena& ar, int ui, const float* x, int H, int W, bool relu) {
    const Unit& u = units_[ui];
    UnitAct& a = acts_[ui];
    DWC_CHECK(a.geo.H == H && a.geo.W == W, Internal, "CLIP ResNet: " << u.conv << " planned for " << a.geo.H << "x" << a.geo.W);
    const int P = a.geo.Ho() * a.geo.Wo();
    const int64_t n = a.n_out();
    a.x = x;
    a.c = act(ar, n);
    a.y = keep_ ? ar.alloc(n, false) : a.c;  // eval BN is elementwise: in place when nothing is kept
    be_->conv2d_general_forward(x, pb.p(u.w), a.c, a.geo, ws_);
    if (train_) {
      a.mean = ar.alloc(u.co, false);
      a.invstd = ar.alloc(u.co, false);
      be_->batchnorm_forward_train(a.c, pb.p(u.g), pb.p(u.b), pb.p(u.rm), pb.p(u.rv), a.y, a.mean, a.invstd, N_, u.co, P, kBnMomentum, kBnEps);
    } else {
      be_->batchnorm_forward_eval(a.c, pb.p(u.g), pb.p(u.b), pb.p(u.rm), pb.p(u.rv), a.y, N_, u.co, P, kBnEps);
    }
    if (relu) be_->relu_forward(a.y, a.y, n);
    return a.y;
  }

  // dy: gradient of the unit's BN output (ReLU mask already applied). Accumulates dx (may be null).
  void unit_backward(ParamBuffer& pb, Arena& ar, int ui, const float* dy, float* dx) {
    const Unit& u = units_[ui];
    const UnitAct& a = acts_[ui];
    const int P = a.geo.Ho() * a.geo.Wo();
    float* dc = ar.alloc(a.n_out());
    if (train_) be_->batchnorm_backward(a.c, pb.p(u.g), a.mean, a.invstd, dy, dc, pb.g(u.g), pb.g(u.b), N_, u.co, P);
    else be_->batchnorm_backward_eval(a.c, pb.p(u.g), pb.p(u.rm), pb.p(u.rv), dy, dc, pb.g(u.g), pb.g(u.b), N_, u.co, P, kBnEps);
    be_->conv2d_general_backward(a.x, pb.p(u.w), dc, dx, pb.g(u.w), a.geo, ws_);
  }

  backend::Backend* be_;
  ClipArch a_;
  std::vector<Unit> units_;
  std::vector<Block> blocks_;
  int stem_[3] = {0, 0, 0};
  int C_ = 0, grid_ = 0;
  int64_t pos_ = -1, proj_w_[3] = {-1, -1, -1}, proj_b_[3] = {-1, -1, -1}, cw_ = -1, cb_ = -1;
  // last forward
  int N_ = 0;
  bool train_ = false, keep_ = true;
  float* ring_[kRing] = {};
  int ring_i_ = 0;
  int64_t max_act_ = 1;
  std::vector<UnitAct> acts_;
  std::vector<BlockAct> bacts_;
  float* stem_pool_ = nullptr;
  float* tokens_ = nullptr;
  float* ws_ = nullptr;
  int64_t ws_floats_ = 1;
  backend::AttnPoolSaved saved_{};
};

}  // namespace

std::unique_ptr<ImageTower> make_resnet_tower(ParamBuffer& pb, const ClipArch& a) { return std::make_unique<ResNetTower>(pb, a); }

}  // namespace dwc

// CNN trunks (issue 5, spec §4, §12), see trunk.h. Both kinds are one torchvision-style ResNet
// engine (names and semantics as torchvision.models.resnet):
//   resnet50: conv1 7×7/2 pad 3 (3→64) – bn1 – relu – maxpool 3×3/2 pad 1, then layer1..4 of
//             Bottleneck blocks [3,4,6,3] (1×1 – 3×3/stride – 1×1 ×4, stride on the 3×3 as
//             torchvision v1.5, downsample = 1×1/stride conv + BN), out 2048 channels, /32.
//             Tests run the same code at a reduced base width and block counts.
//   small:    conv1 3×3/2 pad 1 (3→w) – bn1 – relu (no maxpool), then three BasicBlock stages
//             layer1 w→2w /2, layer2 2w→4w /2, layer3 4w→C /1 (two 3×3 conv–BN, 1×1 projection
//             shortcut), w = 32: 64×64 -> 8×8, C = 256. ≈0.18 GFLOP per image forward, so a
//             batch of 32 trains in well under a second on two cores; stays a ResNet, so the
//             PyTorch fixtures use torchvision's BasicBlock.
// BN runs in train mode (batch statistics, running stats momentum 0.1, eps 1e-5) when train.
// Memory: every slot's activations live in the arena (conv output c and BN/ReLU output y per
// unit, the block outputs, the max-pool indices); the conv workspace and the backward's five (six
// on the blocked path) gradient buffers are reused by every unit and slot. Nothing is allocated
// after warm-up.
// Layouts (docs/PERFORMANCE.md "Layouts"): when every conv of the trunk can run on oneDNN and
// every channel count past the stem is a multiple of 8, all activations and their gradients stay
// in oneDNN's blocked layout nChw8c — nChw16c where oneDNN's own block is 16 (AVX-512) and the
// channels are multiples of 16 (docs/PERFORMANCE.md "AVX-512 machine") — from the stem's output
// to the last block (the convs read and
// write it without a reorder; BN, ReLU, the residual adds and the max pool have blocked kernels),
// and only the trunk's output (forward) and its gradient (backward) are reordered from / to NCHW.
// Otherwise (CBLAS build, DWC_CONV=im2col, odd widths, DWC_TRUNK_LAYOUT=nchw) everything is NCHW
// and each conv goes where conv.cpp's rule sends it.
#include "trunk.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "../core/op.h"

namespace dwc {

namespace {

constexpr float kBnMomentum = 0.1f, kBnEps = 1e-5f;
using B = backend::Backend;

bool env_plain_layout() {
  static const bool plain = [] {
    const char* v = std::getenv("DWC_TRUNK_LAYOUT");
    return v && std::strcmp(v, "nchw") == 0;
  }();
  return plain;
}

// The blocked width the trunk prefers: DWC_TRUNK_BLOCK=8|16 for A/B runs, else the backend's own
// (CPU: oneDNN's block on this CPU, conv_dnnl.h).
int preferred_block(const B& be) {
  static const int env = [] {
    const char* v = std::getenv("DWC_TRUNK_BLOCK");
    return v && (std::strcmp(v, "8") == 0 || std::strcmp(v, "16") == 0) ? std::atoi(v) : 0;
  }();
  return env ? env : be.preferred_blocked_width();
}

// The backend's blocked width for a scope (backend.h set_blocked_width), restored on exit.
class WidthScope {
 public:
  WidthScope(B& be, int cb) : be_(be), prev_(be.set_blocked_width(cb)) {}
  ~WidthScope() { be_.set_blocked_width(prev_); }
  WidthScope(const WidthScope&) = delete;
  WidthScope& operator=(const WidthScope&) = delete;

 private:
  B& be_;
  int prev_;
};

struct TrunkConfig {
  bool bottleneck = true;
  int stem_k = 7, stem_stride = 2, stem_pad = 3, stem_out = 64;
  bool maxpool = true;
  struct Stage {
    int planes, blocks, stride;
  };
  std::vector<Stage> stages;
  int expansion() const { return bottleneck ? 4 : 1; }
};

// A conv (no bias) + BatchNorm unit.
struct Unit {
  std::string conv_name, bn_prefix;
  int ci = 0, co = 0, k = 1, stride = 1, pad = 0;
  int64_t w = -1, g = -1, b = -1, rm = -1, rv = -1, nbt = -1;  // offsets
  int iw = -1, ig = -1, ib = -1;                               // spec indices of the trainable tensors
};

struct Block {
  int u1 = -1, u2 = -1, u3 = -1, ds = -1;  // unit indices (u3: bottleneck only; ds: downsample)
};

// One unit's activations of one forward.
struct UnitAct {
  backend::Conv2dGeom g;
  const float* x = nullptr;
  float* c = nullptr;  // conv output (BN input)
  float* y = nullptr;  // BN output (ReLU applied in place where the unit has one)
  float* mean = nullptr;
  float* invstd = nullptr;
};

struct Slot {
  bool valid = false, train = false;
  bool blocked = false;  // activations in nChw{cb}c (see the top of the file)
  int cb = 8;            // the blocked width (backend.h blocked_width())
  int N = 0, Hi = 0, Wi = 0;
  const float* x = nullptr;
  std::vector<UnitAct> acts;
  std::vector<float*> block_out;  // after the residual add + ReLU
  float* stem_pool = nullptr;     // max-pool output
  int32_t* pool_idx = nullptr;
  int pool_H = 0, pool_W = 0;     // max-pool output size
  const float* out = nullptr;
  int Ho = 0, Wo = 0;
};

class ResNetTrunk final : public Trunk {
 public:
  ResNetTrunk(const std::string& kind, const std::string& prefix, const TrunkConfig& cfg, backend::Backend& be)
      : be_(&be), kind_(kind), cfg_(cfg) {
    params.be = be_;
    arena_.set_backend(be_);
    stem_ = add_unit(prefix + "conv1.weight", prefix + "bn1.", 3, cfg.stem_out, cfg.stem_k, cfg.stem_stride, cfg.stem_pad);
    int cin = cfg.stem_out;
    for (size_t s = 0; s < cfg.stages.size(); ++s) {
      const TrunkConfig::Stage& st = cfg.stages[s];
      const int cout = st.planes * cfg.expansion();
      for (int b = 0; b < st.blocks; ++b) {
        const std::string p = prefix + "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
        const int stride = b == 0 ? st.stride : 1;
        Block blk;
        if (cfg.bottleneck) {
          blk.u1 = add_unit(p + "conv1.weight", p + "bn1.", cin, st.planes, 1, 1, 0);
          blk.u2 = add_unit(p + "conv2.weight", p + "bn2.", st.planes, st.planes, 3, stride, 1);
          blk.u3 = add_unit(p + "conv3.weight", p + "bn3.", st.planes, cout, 1, 1, 0);
        } else {
          blk.u1 = add_unit(p + "conv1.weight", p + "bn1.", cin, st.planes, 3, stride, 1);
          blk.u2 = add_unit(p + "conv2.weight", p + "bn2.", st.planes, st.planes, 3, 1, 1);
        }
        if (stride != 1 || cin != cout) blk.ds = add_unit(p + "downsample.0.weight", p + "downsample.1.", cin, cout, 1, stride, 0);
        blocks_.push_back(blk);
        cin = cout;
      }
    }
    out_c_ = cin;
    params.finalize();
    wcache_.resize(units_.size());
    for (Unit& u : units_) {
      auto off = [&](const std::string& n, int* idx) {
        const int i = params.index_of(n);
        DWC_CHECK(i >= 0, Internal, "trunk: parameter '" << n << "' was not declared");
        if (idx) *idx = i;
        return params.specs[static_cast<size_t>(i)].offset;
      };
      u.w = off(u.conv_name, &u.iw);
      u.g = off(u.bn_prefix + "weight", &u.ig);
      u.b = off(u.bn_prefix + "bias", &u.ib);
      u.rm = off(u.bn_prefix + "running_mean", nullptr);
      u.rv = off(u.bn_prefix + "running_var", nullptr);
      u.nbt = off(u.bn_prefix + "num_batches_tracked", nullptr);
    }
  }

  const char* kind() const override { return kind_.c_str(); }
  int out_channels() const override { return out_c_; }

  void out_size(int Hi, int Wi, int* Ho, int* Wo) const override {
    int H = Hi, W = Wi;
    auto conv = [&](const Unit& u) {
      H = (H + 2 * u.pad - u.k) / u.stride + 1;
      W = (W + 2 * u.pad - u.k) / u.stride + 1;
    };
    conv(units_[static_cast<size_t>(stem_)]);
    if (cfg_.maxpool) {
      H = (H + 2 - 3) / 2 + 1;
      W = (W + 2 - 3) / 2 + 1;
    }
    for (const Block& b : blocks_) {
      conv(units_[static_cast<size_t>(b.u1)]);
      conv(units_[static_cast<size_t>(b.u2)]);
    }
    *Ho = H;
    *Wo = W;
  }

  // PyTorch/torchvision init: conv kaiming_normal_(fan_out, relu) = N(0, 2/(co·k·k)); BN 1, 0,
  // running stats 0 / 1, num_batches_tracked 0.
  void init_params(uint64_t seed) override {
    const Rng rng{seed, 0x7275ull};
    for (const Unit& u : units_) {
      const int64_t n = static_cast<int64_t>(u.co) * u.ci * u.k * u.k;
      params.init_normal(u.w, n, 0.f, std::sqrt(2.f / static_cast<float>(u.co * u.k * u.k)), rng.derive(static_cast<uint64_t>(u.iw)));
      params.init_fill(u.g, u.co, 1.f);
      params.init_fill(u.b, u.co, 0.f);
      params.init_fill(u.rm, u.co, 0.f);
      params.init_fill(u.rv, u.co, 1.f);
      params.init_fill(u.nbt, 1, 0.f);
    }
    params.changed();
  }

  const float* forward(int slot, const float* x, int N, int Hi, int Wi, bool train) override {
    DWC_ARG_CHECK(slot >= 0 && slot < 64, "trunk: slot " << slot << " out of range [0, 64)");
    DWC_ARG_CHECK(N >= 1 && Hi >= 1 && Wi >= 1, "trunk: empty image batch [" << N << ",3," << Hi << "," << Wi << "]");
    if (static_cast<size_t>(slot) >= slots_.size()) slots_.resize(static_cast<size_t>(slot) + 1);
    Slot& s = slots_[static_cast<size_t>(slot)];
    s.valid = false;
    s.train = train;
    s.N = N, s.Hi = Hi, s.Wi = Wi, s.x = x;
    s.acts.resize(units_.size());
    s.block_out.resize(blocks_.size());
    plan(s);
    const WidthScope width(*be_, s.blocked ? s.cb : be_->blocked_width());

    // stem
    const float* cur = unit_forward(s, stem_, x, true, nullptr);
    int H = s.acts[static_cast<size_t>(stem_)].g.Ho(), W = s.acts[static_cast<size_t>(stem_)].g.Wo();
    const int C0 = units_[static_cast<size_t>(stem_)].co;
    if (cfg_.maxpool) {
      s.pool_H = (H + 2 - 3) / 2 + 1;
      s.pool_W = (W + 2 - 3) / 2 + 1;
      const int64_t n = static_cast<int64_t>(N) * C0 * s.pool_H * s.pool_W;
      s.stem_pool = arena_.alloc(n, false);
      s.pool_idx = arena_.alloc_i32(n);
      if (s.blocked)
        be_->maxpool2d_forward_blk(cur, s.stem_pool, s.pool_idx, N, C0, H, W, 3, 2, 1);
      else
        be_->maxpool2d_forward(cur, s.stem_pool, s.pool_idx, N, C0, H, W, 3, 2, 1);
      cur = s.stem_pool;
    }
    // residual blocks
    for (size_t bi = 0; bi < blocks_.size(); ++bi) {
      const Block& b = blocks_[bi];
      const float* a = unit_forward(s, b.u1, cur, true, nullptr);
      const int last = cfg_.bottleneck ? b.u3 : b.u2;
      if (cfg_.bottleneck) a = unit_forward(s, b.u2, a, true, nullptr);
      const UnitAct& la = s.acts[static_cast<size_t>(last)];
      const int64_t n = static_cast<int64_t>(N) * units_[static_cast<size_t>(last)].co * la.g.Ho() * la.g.Wo();
      float* out = arena_.alloc(n, false);
      unit_forward(s, last, a, false, out);  // BN output straight into the block output
      const float* identity = cur;
      if (b.ds >= 0) identity = unit_forward(s, b.ds, cur, false, nullptr);
      be_->add_relu_forward(out, identity, out, n);
      s.block_out[bi] = out;
      cur = out;
    }
    if (s.blocked) {
      const int C = blocks_.empty() ? C0 : out_c_;
      int Ho = 0, Wo = 0;
      out_size(Hi, Wi, &Ho, &Wo);
      float* plain = arena_.alloc(static_cast<int64_t>(N) * C * Ho * Wo, false);
      be_->blocked8_to_nchw(cur, plain, N, C, static_cast<int64_t>(Ho) * Wo);
      cur = plain;
    }
    s.out = cur;
    out_size(Hi, Wi, &s.Ho, &s.Wo);
    s.valid = true;
    return cur;
  }

  void backward(int slot, const float* dy, float* dx) override {
    DWC_CHECK(slot >= 0 && static_cast<size_t>(slot) < slots_.size() && slots_[static_cast<size_t>(slot)].valid, Internal,
              "trunk: backward on slot " << slot << " without a forward since reset()");
    Slot& s = slots_[static_cast<size_t>(slot)];
    DWC_CHECK(s.train, Internal, "trunk: backward after an eval-mode forward is not supported (train-mode BN only)");
    const WidthScope width(*be_, s.blocked ? s.cb : be_->blocked_width());
    // Five gradient buffers, each as large as the largest activation: G[0]/G[1] carry the
    // gradient between blocks, D the bottleneck's middle-unit input gradient, T[0]/T[1] the
    // inner units' gradients.
    const int64_t M = max_act(s);
    ensure(scratch_, (s.blocked ? 6 : 5) * M, &scratch_grows_);  // the sixth: dy reordered to nChw{cb}c
    float* G[2] = {scratch_.data(), scratch_.data() + M};
    float* D = scratch_.data() + 2 * M;
    float* T[2] = {scratch_.data() + 3 * M, scratch_.data() + 4 * M};
    float* ws = ws_.data();
    if (s.blocked) {  // the output gradient in the activations' layout
      float* b = scratch_.data() + 5 * M;
      be_->nchw_to_blocked8(dy, b, s.N, blocks_.empty() ? units_[static_cast<size_t>(stem_)].co : out_c_, static_cast<int64_t>(s.Ho) * s.Wo);
      dy = b;
    }

    // Every unit's input gradient is written by its conv backward (accumulate_dx = false: no
    // zeroing pass), except the block input's, which sums the main path into the shortcut's.
    // The ReLU after a BN is folded into that BN's backward (relu_y).
    int gi = 0;
    for (size_t bi = blocks_.size(); bi-- > 0;) {
      const Block& b = blocks_[bi];
      const int last = cfg_.bottleneck ? b.u3 : b.u2;
      const UnitAct& la = s.acts[static_cast<size_t>(last)];
      const int64_t n_out = static_cast<int64_t>(s.N) * la.g.Co * la.g.Ho() * la.g.Wo();
      // d(sum) = relu'(out) ⊙ d(out), out = the block output (the last block reads dy itself, no
      // copy). Identity shortcut: d(sum) is the block input's gradient, masked straight into gin;
      // downsample: its BN and the last unit's fold the mask in (relu_y = out), no masked copy.
      const float* gout = bi + 1 == blocks_.size() ? dy : G[gi];
      float* gin = G[gi ^ 1];
      const float* dsum = gout;
      const float* mask = s.block_out[bi];
      if (b.ds >= 0) {
        unit_backward(s, b.ds, gout, gin, T[0], ws, mask, false);
      } else {
        be_->relu_mask(mask, gout, gin, n_out);
        dsum = gin;  // read by the last unit before u1 adds into gin
        mask = nullptr;
      }
      // main path, last unit first: T[1] = d(its input)
      float* g = T[1];
      unit_backward(s, last, dsum, g, T[0], ws, mask, false);
      if (cfg_.bottleneck) {
        // u2's input gradient goes to D (free now)
        unit_backward(s, b.u2, g, D, T[0], ws, s.acts[static_cast<size_t>(b.u2)].y, false);
        g = D;
      }
      unit_backward(s, b.u1, g, gin, T[0], ws, s.acts[static_cast<size_t>(b.u1)].y, true);
      gi ^= 1;
    }
    // stem
    const int64_t nstem = act_n(s, stem_);
    const float* gs = blocks_.empty() ? dy : G[gi];
    if (cfg_.maxpool) {
      float* gp = G[gi ^ 1];
      be_->fill(gp, 0.f, nstem);
      const UnitAct& st = s.acts[static_cast<size_t>(stem_)];
      if (s.blocked)
        be_->maxpool2d_backward_blk(gs, s.pool_idx, gp, s.N, st.g.Co, st.g.Ho(), st.g.Wo(), s.pool_H, s.pool_W);
      else
        be_->maxpool2d_backward(gs, s.pool_idx, gp, s.N, st.g.Co, st.g.Ho(), st.g.Wo(), s.pool_H, s.pool_W);
      gs = gp;
    }
    unit_backward(s, stem_, gs, dx, T[0], ws, s.acts[static_cast<size_t>(stem_)].y, true);
    if (params.touched.size() < params.specs.size()) params.touched.resize(params.specs.size(), false);
    for (const Unit& u : units_) params.touched[u.iw] = params.touched[u.ig] = params.touched[u.ib] = true;
  }

  void reset() override {
    arena_.reset();
    for (Slot& s : slots_) s.valid = false;
  }

  int arena_grows() const override { return arena_.grow_count() + ws_grows_ + scratch_grows_; }

 private:
  int add_unit(const std::string& conv, const std::string& bn, int ci, int co, int k, int stride, int pad) {
    Unit u;
    u.conv_name = conv;
    u.bn_prefix = bn;
    u.ci = ci, u.co = co, u.k = k, u.stride = stride, u.pad = pad;
    params.add(conv, {co, ci, k, k});
    params.add(bn + "weight", {co});
    params.add(bn + "bias", {co});
    params.add(bn + "running_mean", {co}, false);
    params.add(bn + "running_var", {co}, false);
    params.add(bn + "num_batches_tracked", {}, false, true);
    units_.push_back(u);
    return static_cast<int>(units_.size()) - 1;
  }

  // Fills every unit's geometry for this slot's input size and sizes the conv workspace.
  void plan(Slot& s) {
    auto set = [&](int ui, int H, int W) {
      const Unit& u = units_[static_cast<size_t>(ui)];
      backend::Conv2dGeom& g = s.acts[static_cast<size_t>(ui)].g;
      g.N = s.N, g.Ci = u.ci, g.Co = u.co, g.H = H, g.W = W, g.kh = g.kw = u.k, g.sh = g.sw = u.stride, g.ph = g.pw = u.pad;
      DWC_ARG_CHECK(g.Ho() >= 1 && g.Wo() >= 1 && H + 2 * u.pad >= u.k && W + 2 * u.pad >= u.k,
                    "trunk: images of " << s.Hi << "x" << s.Wi << " are too small for " << u.conv_name << " (input " << H << "x" << W << ")");
    };
    set(stem_, s.Hi, s.Wi);
    const backend::Conv2dGeom& sg = s.acts[static_cast<size_t>(stem_)].g;
    int H = sg.Ho(), W = sg.Wo();
    if (cfg_.maxpool) {
      H = (H + 2 - 3) / 2 + 1;
      W = (W + 2 - 3) / 2 + 1;
    }
    for (const Block& b : blocks_) {
      set(b.u1, H, W);
      const backend::Conv2dGeom& g1 = s.acts[static_cast<size_t>(b.u1)].g;
      if (cfg_.bottleneck) {
        set(b.u2, g1.Ho(), g1.Wo());
        const backend::Conv2dGeom& g2 = s.acts[static_cast<size_t>(b.u2)].g;
        set(b.u3, g2.Ho(), g2.Wo());
      } else {
        set(b.u2, g1.Ho(), g1.Wo());
      }
      if (b.ds >= 0) set(b.ds, H, W);
      const backend::Conv2dGeom& gl = s.acts[static_cast<size_t>(cfg_.bottleneck ? b.u3 : b.u2)].g;
      H = gl.Ho();
      W = gl.Wo();
    }
    s.cb = blocked_width_for(s);
    s.blocked = s.cb != 0;
    used_blocked = s.blocked;
    used_block = s.cb;
    size_t ws = 1;
    if (!s.blocked)
      for (const UnitAct& a : s.acts) ws = std::max(ws, be_->conv2d_general_workspace_floats(a.g));
    ensure(ws_, static_cast<int64_t>(ws), &ws_grows_);
  }

  // The blocked path: the backend offers it (CPU: oneDNN convolutions wanted, auto on the oneDNN
  // backend or forced; never on CUDA) and every channel count past the stem's input a multiple of
  // the width: the preferred one (16 on AVX-512), else 8. Returns the width, 0 for the plain path.
  int blocked_width_for(const Slot& s) const {
    if (!allow_blocked || env_plain_layout() || !be_->supports_blocked_layout()) return 0;
    for (size_t i = 0; i < units_.size(); ++i)
      if (!be_->blocked_conv_supported(s.acts[i].g)) return 0;
    auto fits = [&](int cb) {
      for (size_t i = 0; i < units_.size(); ++i)
        if (units_[i].co % cb != 0 || (static_cast<int>(i) != stem_ && units_[i].ci % cb != 0)) return false;
      return true;
    };
    for (int cb : {block ? block : preferred_block(*be_), 8})
      if (fits(cb)) return cb;
    return 0;
  }

  void ensure(BackendArray& v, int64_t n, int* grows) {
    if (static_cast<int64_t>(v.size()) < n) {
      v.assign(be_, static_cast<size_t>(n), 0.f);
      ++*grows;
    }
  }

  int64_t act_n(const Slot& s, int ui) const {
    const backend::Conv2dGeom& g = s.acts[static_cast<size_t>(ui)].g;
    return static_cast<int64_t>(g.N) * g.Co * g.Ho() * g.Wo();
  }

  int64_t max_act(const Slot& s) const {
    int64_t m = 0;
    for (const UnitAct& a : s.acts) {
      m = std::max(m, static_cast<int64_t>(a.g.N) * a.g.Co * a.g.Ho() * a.g.Wo());
      m = std::max(m, static_cast<int64_t>(a.g.N) * a.g.Ci * a.g.H * a.g.W);
    }
    return m;
  }

  // conv → BN (→ ReLU in place). y: output buffer, or null to allocate one in the arena.
  float* unit_forward(Slot& s, int ui, const float* x, bool relu, float* y) {
    const Unit& u = units_[static_cast<size_t>(ui)];
    UnitAct& a = s.acts[static_cast<size_t>(ui)];
    const int P = a.g.Ho() * a.g.Wo();
    const int64_t n = static_cast<int64_t>(s.N) * u.co * P;
    a.x = x;
    a.c = arena_.alloc(n, false);
    a.y = y ? y : arena_.alloc(n, false);
    if (s.blocked)
      be_->conv_forward_fmt(x, params.p(u.w), a.c, a.g, ui != stem_, true, &wcache_[static_cast<size_t>(ui)], params.version);
    else
      be_->conv2d_general_forward(x, params.p(u.w), a.c, a.g, ws_.data());
    if (s.train) {
      a.mean = arena_.alloc(u.co, false);
      a.invstd = arena_.alloc(u.co, false);
      (be_->*(s.blocked ? &B::batchnorm_forward_train_blk : &B::batchnorm_forward_train))(a.c, params.p(u.g), params.p(u.b), params.p(u.rm), params.p(u.rv), a.y, a.mean, a.invstd, s.N, u.co, P,
                                   kBnMomentum, kBnEps, relu);
      params.count(u.nbt);
    } else {
      a.mean = a.invstd = nullptr;
      (be_->*(s.blocked ? &B::batchnorm_forward_eval_blk : &B::batchnorm_forward_eval))(a.c, params.p(u.g), params.p(u.b), params.p(u.rm), params.p(u.rv), a.y, s.N, u.co, P, kBnEps, relu);
    }
    return a.y;
  }

  // dy: gradient of the unit's BN output, or with relu_y (the unit's ReLU output) of its ReLU
  // output (masked inside BN's backward). Accumulates the parameter gradients and dx (may be
  // null), or writes dx when !accumulate_dx; tmp: scratch of the unit's output size (BN's dx is
  // written, not accumulated, so it needs no zeroing).
  void unit_backward(Slot& s, int ui, const float* dy, float* dx, float* tmp, float* ws, const float* relu_y, bool accumulate_dx) {
    const Unit& u = units_[static_cast<size_t>(ui)];
    const UnitAct& a = s.acts[static_cast<size_t>(ui)];
    const int P = a.g.Ho() * a.g.Wo();
    (be_->*(s.blocked ? &B::batchnorm_backward_blk : &B::batchnorm_backward))(a.c, params.p(u.g), a.mean, a.invstd, dy, tmp, params.g(u.g),
                                                                               params.g(u.b), s.N, u.co, P, false, relu_y);
    if (s.blocked)
      be_->conv_backward_fmt(a.x, params.p(u.w), tmp, dx, params.g(u.w), a.g, accumulate_dx, ui != stem_, true,
                             &wcache_[static_cast<size_t>(ui)], params.version);
    else
      be_->conv2d_general_backward(a.x, params.p(u.w), tmp, dx, params.g(u.w), a.g, ws, accumulate_dx);
  }

  backend::Backend* be_;
  std::string kind_;
  TrunkConfig cfg_;
  std::vector<Unit> units_;
  std::vector<Block> blocks_;
  int stem_ = 0, out_c_ = 0;
  std::vector<Slot> slots_;
  Arena arena_;
  BackendArray ws_, scratch_;  // conv workspace, backward gradient buffers (backend memory)
  int ws_grows_ = 0, scratch_grows_ = 0;
  std::vector<backend::BlockedWeights> wcache_;  // per unit, the blocked path's weight copies (conv_dnnl.h)
};

TrunkConfig resnet_config(int base, const std::array<int, 4>& layers) {
  TrunkConfig c;
  c.bottleneck = true;
  c.stem_k = 7, c.stem_stride = 2, c.stem_pad = 3, c.stem_out = base, c.maxpool = true;
  for (int i = 0; i < 4; ++i) c.stages.push_back({base << i, layers[static_cast<size_t>(i)], i == 0 ? 1 : 2});
  return c;
}

TrunkConfig small_config(int width, int out_channels) {
  TrunkConfig c;
  c.bottleneck = false;
  c.stem_k = 3, c.stem_stride = 2, c.stem_pad = 1, c.stem_out = width, c.maxpool = false;
  c.stages = {{2 * width, 1, 2}, {4 * width, 1, 2}, {out_channels, 1, 1}};
  return c;
}

}  // namespace

std::unique_ptr<Trunk> make_resnet_trunk(const std::string& prefix, int base_width, const std::array<int, 4>& layers, backend::Backend& be) {
  DWC_ARG_CHECK(base_width >= 1 && base_width <= 1024, "trunk: ResNet base width must be in [1, 1024], got " << base_width);
  for (int l : layers) DWC_ARG_CHECK(l >= 1 && l <= 64, "trunk: ResNet block counts must be in [1, 64], got " << l);
  return std::make_unique<ResNetTrunk>("resnet50", prefix, resnet_config(base_width, layers), be);
}

std::unique_ptr<Trunk> make_small_trunk(const std::string& prefix, int out_channels, int width, backend::Backend& be) {
  DWC_ARG_CHECK(width >= 1 && width <= 1024, "trunk: small trunk width must be in [1, 1024], got " << width);
  DWC_ARG_CHECK(out_channels >= 1 && out_channels <= 65536, "trunk: out_channels must be in [1, 65536], got " << out_channels);
  return std::make_unique<ResNetTrunk>("small", prefix, small_config(width, out_channels), be);
}

std::unique_ptr<Trunk> make_trunk(const std::string& kind, const std::string& prefix, int out_channels, backend::Backend& be) {
  if (kind == "small") return make_small_trunk(prefix, out_channels, 32, be);
  if (kind == "resnet50") return make_resnet_trunk(prefix, 64, {3, 4, 6, 3}, be);
  DWC_ARG_CHECK(false, "trunk: unknown kind '" << kind << "' (expected 'small' or 'resnet50')");
  return nullptr;
}

// ---- ops (JS tests / benchmarks) ----
namespace {

// attrs kind (0 = small, 1 = resnet), width (small: 32, resnet: 64), out_channels (small, 256);
// input layers int32 [4] (resnet block counts, default 3,4,6,3).
std::unique_ptr<Trunk> trunk_from(const OpCtx& c) {
  const int64_t kind = c.int_attr_or("kind", 0);
  DWC_ARG_CHECK(kind == 0 || kind == 1, c.op_name << ": option 'kind' must be 0 (small) or 1 (resnet50), got " << kind);
  const int64_t width = c.int_attr_or("width", kind == 0 ? 32 : 64);
  DWC_ARG_CHECK(width >= 1 && width <= 1024, c.op_name << ": option 'width' must be an integer in [1, 1024], got " << width);
  if (kind == 0) {
    const int64_t oc = c.int_attr_or("out_channels", 256);
    DWC_ARG_CHECK(oc >= 1 && oc <= 65536, c.op_name << ": option 'out_channels' must be an integer in [1, 65536], got " << oc);
    return make_small_trunk("", static_cast<int>(oc), static_cast<int>(width));
  }
  std::array<int, 4> layers = {3, 4, 6, 3};
  if (const Tensor* l = c.in_i32_opt("layers", 1)) {
    c.expect_shape(*l, "layers", {4});
    for (int i = 0; i < 4; ++i) {
      DWC_ARG_CHECK(l->i32()[i] >= 1 && l->i32()[i] <= 64,
                    c.op_name << ": argument 'layers' [" << i << "] = " << l->i32()[i] << " must be in [1, 64]");
      layers[static_cast<size_t>(i)] = l->i32()[i];
    }
  }
  return make_resnet_trunk("", static_cast<int>(width), layers);
}

void emit_specs(OpCtx& c, const ParamBuffer& pb) {
  for (const ParamSpec& p : pb.specs) {
    pb.read(pb.params, p.offset, c.out(p.name, p.shape).f32(), p.numel);
    int32_t* o = c.out("offset:" + p.name, {4}, DType::I32).i32();
    o[0] = static_cast<int32_t>(p.offset);
    o[1] = static_cast<int32_t>(p.numel);
    o[2] = p.trainable;
    o[3] = p.is_counter;
  }
}

}  // namespace

DWC_REGISTER_OP("trunk_param_names", "layers? int32 [4]; kind, width, out_channels, seed -> <name> (init value), offset:<name>", [](OpCtx& c) {
  std::unique_ptr<Trunk> t = trunk_from(c);
  t->init_params(static_cast<uint64_t>(c.int_attr_or("seed", 0)));
  emit_specs(c, t->params);
  int Ho = 0, Wo = 0;
  t->out_size(64, 64, &Ho, &Wo);
  int32_t* info = c.out("info", {3}, DType::I32).i32();  // out_channels, Ho, Wo at 64×64
  info[0] = t->out_channels();
  info[1] = Ho;
  info[2] = Wo;
});

// One trunk forward (+ backward when dy is given) on slot 0; with x2 (and dy2) a second slot
// runs between them: forward 0, forward 1, backward 1, backward 0 (the trainer's pattern).
// inputs: x [N,3,H,W], dy [N,C,Ho,Wo]?, x2?, dy2?, layers int32 [4]?, param.<name> overrides.
// attrs: kind, width, out_channels, seed, train (1), repeat (1), input_grad (1: dx and dx2 are
// computed; 0: they are not, as in training, where the images need no gradient), layout (0: auto,
// the blocked path where it applies; 1: always plain NCHW), block (0: the CPU's width, 16 on
// AVX-512 / 8; 8 or 16: try that width first).
// outputs: y, dx, y2, dx2, grad.<name> (trainable), param.<name> (after the run), blocked int32 [1]
// (1: the blocked path ran), block int32 [1] (its width, 8 or 16; 0: plain), arena_grows
// int32 [repeat], ms [repeat, 2] (forward, backward of the last repeat's slot 0).
DWC_REGISTER_OP("trunk_forward_backward",
                "x, dy?, x2?, dy2?, layers?, param.*; kind, width, out_channels, seed, train, repeat, input_grad, layout, block -> y, dx, y2, dx2, grad.*, param.*, blocked, block",
                [](OpCtx& c) {
                  std::unique_ptr<Trunk> t = trunk_from(c);
                  const int64_t layout = c.int_attr_or("layout", 0);
                  DWC_ARG_CHECK(layout == 0 || layout == 1, c.op_name << ": option 'layout' must be 0 (auto) or 1 (plain NCHW), got " << layout);
                  t->allow_blocked = layout == 0;
                  const int64_t block = c.int_attr_or("block", 0);
                  DWC_ARG_CHECK(block == 0 || block == 8 || block == 16, c.op_name << ": option 'block' must be 0 (this CPU's), 8 or 16, got " << block);
                  t->block = static_cast<int>(block);
                  t->init_params(static_cast<uint64_t>(c.int_attr_or("seed", 0)));
                  ParamBuffer& pb = t->params;
                  for (const ParamSpec& p : pb.specs)
                    if (const Tensor* v = c.in_opt("param." + p.name)) {
                      if (!(p.shape.empty() && v->numel() == 1)) c.expect_shape(*v, "param." + p.name, p.shape);
                      pb.write(pb.params, p.offset, v->f32(), p.numel);
                    }
                  const Tensor& x = c.in("x", 4);
                  c.expect_dim(x, "x", 1, 3, "3 (RGB channels)");
                  const int N = static_cast<int>(x.dim(0)), H = static_cast<int>(x.dim(2)), W = static_cast<int>(x.dim(3));
                  int Ho = 0, Wo = 0;
                  t->out_size(H, W, &Ho, &Wo);
                  DWC_ARG_CHECK(N >= 1 && Ho >= 1 && Wo >= 1,
                                c.op_name << ": argument 'x' has shape " << shape_str(x.shape) << ": too small for the trunk");
                  const std::vector<int64_t> yshape = {N, t->out_channels(), Ho, Wo};
                  const Tensor* dy = c.in_opt("dy");
                  if (dy) c.expect_shape(*dy, "dy", yshape);
                  const Tensor* x2 = c.in_opt("x2", 4);
                  const Tensor* dy2 = c.in_opt("dy2");
                  std::vector<int64_t> y2shape;
                  if (x2) {
                    c.expect_dim(*x2, "x2", 1, 3, "3 (RGB channels)");
                    int H2 = 0, W2 = 0;
                    t->out_size(static_cast<int>(x2->dim(2)), static_cast<int>(x2->dim(3)), &H2, &W2);
                    DWC_ARG_CHECK(H2 >= 1 && W2 >= 1, c.op_name << ": argument 'x2' has shape " << shape_str(x2->shape) << ": too small for the trunk");
                    y2shape = {x2->dim(0), t->out_channels(), H2, W2};
                    if (dy2) c.expect_shape(*dy2, "dy2", y2shape);
                  }
                  DWC_ARG_CHECK(!dy2 || x2, c.op_name << ": argument 'dy2' given without 'x2'");
                  const bool train = c.flag("train", true);
                  DWC_ARG_CHECK(train || (!dy && !dy2), c.op_name << ": option 'train' must be 1 when 'dy' is given (backward uses batch statistics)");
                  const int64_t repeat = c.int_attr_or("repeat", 1);
                  DWC_ARG_CHECK(repeat >= 1 && repeat <= 100, c.op_name << ": option 'repeat' must be in [1, 100], got " << repeat);
                  int32_t* grows = c.out("arena_grows", {repeat}, DType::I32).i32();
                  float* ms = c.out("ms", {repeat, 2}).f32();
                  const bool input_grad = c.flag("input_grad", true);
                  float* dx = dy && input_grad ? c.out("dx", x.shape).f32() : nullptr;
                  float* dx2 = dy2 && input_grad ? c.out("dx2", x2->shape).f32() : nullptr;
                  using clk = std::chrono::steady_clock;
                  const float *y = nullptr, *y2 = nullptr;
                  for (int64_t r = 0; r < repeat; ++r) {
                    pb.zero_grad();
                    pb.changed();  // as Adam between iterations: each repeat reorders the weights once, as training does
                    t->reset();
                    if (dx) std::fill(dx, dx + x.numel(), 0.f);
                    if (dx2) std::fill(dx2, dx2 + x2->numel(), 0.f);
                    const auto t0 = clk::now();
                    y = t->forward(0, x.f32(), N, H, W, train);
                    if (x2) y2 = t->forward(1, x2->f32(), static_cast<int>(x2->dim(0)), static_cast<int>(x2->dim(2)), static_cast<int>(x2->dim(3)), train);
                    const auto t1 = clk::now();
                    if (dy2) t->backward(1, dy2->f32(), dx2);
                    if (dy) t->backward(0, dy->f32(), dx);
                    const auto t2 = clk::now();
                    grows[r] = t->arena_grows();
                    ms[2 * r] = std::chrono::duration<float, std::milli>(t1 - t0).count();
                    ms[2 * r + 1] = std::chrono::duration<float, std::milli>(t2 - t1).count();
                  }
                  std::copy(y, y + shape_numel(yshape), c.out("y", yshape).f32());
                  c.out("blocked", {1}, DType::I32).i32()[0] = t->used_blocked;
                  c.out("block", {1}, DType::I32).i32()[0] = t->used_block;
                  if (y2) std::copy(y2, y2 + shape_numel(y2shape), c.out("y2", y2shape).f32());
                  for (size_t i = 0; i < pb.specs.size(); ++i) {
                    const ParamSpec& p = pb.specs[i];
                    if (p.trainable && pb.touched[i]) std::copy(pb.g(p.offset), pb.g(p.offset) + p.numel, c.out("grad." + p.name, p.shape).f32());
                    std::copy(pb.p(p.offset), pb.p(p.offset) + p.numel, c.out("param." + p.name, p.shape).f32());
                  }
                });

}  // namespace dwc

// Inception blocks of the local stream (spec §4): Inc2d on [N,C,H,W] maps, Inc1d on [N,C,L]
// sequences (the H = 1 case). Four branches concatenated on channels; every conv has no bias
// and is followed by BatchNorm (train: batch stats, running stats momentum 0.1, eps 1e-5).
//   b0: conv1(in→3out/8)
//   b1: conv1(in→out/2) → ReLU → conv3(out/2→out/4)
//   b2: conv1(in→out/4) → ReLU → conv3(out/4→out/8) → ReLU → conv3(out/8→out/4)
//   b3: avgpool3 (padding not counted) → conv1(in→out/8)
// Names (§9): branch0.conv.weight, branch0.bn.{weight,bias,running_mean,running_var,
// num_batches_tracked}, branch1.{0,2}.*, branch2.{0,2,4}.*, branch3.1.*
#pragma once
#include <cstdint>
#include <string>

#include "../core/rng.h"
#include "../core/tensor.h"
#include "model.h"

namespace dwc {

// DWC_PROFILE=1: wall time per phase of the local stream, printed to stderr by prof_dump()
// (off by default: prof_mark is one branch on a cached flag).
bool prof_on();
// Charges the time since the previous mark to phase `name` (+ `sub` when given).
void prof_mark(const char* name, const char* sub = nullptr);
void prof_dump(const char* title);

// One conv (no bias) + BatchNorm unit, with its offsets into the ParamBuffer and the batch
// statistics of the last train-mode forward.
struct ConvBN {
  std::string prefix;  // e.g. "local.imgconv.0.branch1.2."
  int ci = 0, co = 0, k = 1;
  int64_t w = -1, g = -1, b = -1, rm = -1, rv = -1, nbt = -1;  // offsets
  int iw = -1, ig = -1, ib = -1;                               // spec indices (trainable)
  float* c = nullptr;  // conv output (BN input), channel-major [co, N·P]
  float* mean = nullptr;
  float* invstd = nullptr;
  float* var = nullptr;  // biased batch variance (running-stat replay)
};

// Internally every activation is channel-major [channels, N·P], so that every 1×1 conv is one
// GEMM over the whole batch straight from the activations, the 3×3 convs are one im2col GEMM, and BN reads contiguous rows (fused with the ReLUs
// inside b1 / b2 and with the concat: terminal BNs write straight into y [N,out,H,W]).
class Inception {
 public:
  // Declares the block's parameters in pb (before pb.finalize()). two_d: Inc2d, else Inc1d.
  // Its kernels run on pb's backend (pb.be).
  Inception(ParamBuffer& pb, const std::string& prefix, int in, int out, bool two_d);
  // Resolves offsets after pb.finalize().
  void bind(const ParamBuffer& pb);
  void init_params(ParamBuffer& pb, const Rng& rng) const;
  // Conv scratch needed for N samples of H×W (Inc1d: H = 1, W = L), in floats.
  size_t workspace_floats(int N, int H, int W) const;
  // x [N,in,H,W] -> returns y [N,out,H,W] (arena). x may be overwritten after forward.
  // lengths [N] (Inc1d only, may be null; must stay valid until backward): padded texts
  // (DWC-SPEC §10): every conv / pool input is 0 at positions >= lengths[n] (x included), the
  // avg-pool counts real positions only, train-mode BN statistics are taken over real positions,
  // y is 0 at padded positions. Each real position then sees what it sees unpadded. lengths is
  // backend memory; lengths_host its host copy (the real-position count; null: lengths itself).
  float* forward(ParamBuffer& pb, const float* x, int N, int H, int W, bool train, Arena& arena, float* ws,
                 const int32_t* lengths = nullptr, const int32_t* lengths_host = nullptr);
  // Backward of the last (train-mode) forward: dy [N,out,H,W]; accumulates dx (may be null)
  // and the parameter gradients. With lengths: dy at padded positions is ignored (y is 0 there)
  // and dx gets nothing there.
  void backward(ParamBuffer& pb, const float* dy, float* dx, Arena& arena, float* ws);
  // Applies the BN running-stat updates (and num_batches_tracked) of the last train-mode
  // forward once more: what a second forward on the same input with the same weights does.
  void replay_running_stats(ParamBuffer& pb);
  void mark_touched(ParamBuffer& pb) const;
  int in() const { return in_; }
  int out() const { return out_; }

 private:
  void bn_forward(ParamBuffer& pb, ConvBN& u, const float* c, float* y, int64_t ysc, int64_t ysn, bool relu, Arena& arena);
  // 3×3 (Inc1d: 3) conv of channel-major r [ci, N·P] into u.c (arena).
  void conv3_forward(ParamBuffer& pb, ConvBN& u, const float* r, Arena& arena, float* ws);
  // dW += dc · im2col(r)ᵀ; dr = col2im(Wᵀ · dc) (overwritten, [ci, N·P]).
  void conv3_backward(ParamBuffer& pb, ConvBN& u, const float* r, const float* dc, float* dr, float* ws, Arena& arena);
  backend::Backend* be_;  // pb.be at construction: where the block's kernels run
  int in_, out_;
  bool two_d_;
  std::string tag_;  // short name for DWC_PROFILE, e.g. "imgatt"
  ConvBN u_[7];      // b0, b1.0, b1.2, b2.0, b2.2, b2.4, b3.1
  // last forward
  int N_ = 0, H_ = 0, W_ = 0;
  const int32_t* len_ = nullptr;  // lengths of the last forward (null: every position real)
  int64_t real_ = 0;              // real positions of the last forward (BN values per channel)
  bool train_ = false;
  float* xc_ = nullptr;   // x channel-major [in, N·P]
  float* z_ = nullptr;       // their outputs [9·out/8, N·P]
  float* pooled_ = nullptr;  // avgpool3(x) channel-major [in, N·P] (b3's conv input)
  float* r10_ = nullptr;  // ReLU(BN) outputs inside b1 / b2, channel-major
  float* r20_ = nullptr;
  float* r22_ = nullptr;
};

}  // namespace dwc

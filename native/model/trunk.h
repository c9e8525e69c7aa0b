// CNN trunks (issue 5, spec §4, §12): images [N,3,Hi,Wi] -> feature maps [N,C,Ho,Wo], trained
// with their stream. `small`: a few residual conv–BN–ReLU stages, 64×64 -> 8×8, C = 256.
// `resnet50`: torchvision's conv1 … layer4 with its parameter names (prefix + "conv1.weight",
// "layer1.0.conv1.weight", ...), BN in train mode as the reference.
// A trunk owns its own ParamBuffer (names under `prefix`, e.g. "local.img_model."); the
// trainer runs Adam over it together with its stream's parameters.
#pragma once
#include <array>
#include <memory>
#include <string>

#include "model.h"

namespace dwc {

class Trunk {
 public:
  virtual ~Trunk() = default;
  ParamBuffer params;
  virtual const char* kind() const = 0;  // "small" | "resnet50"
  virtual int out_channels() const = 0;
  virtual void out_size(int Hi, int Wi, int* Ho, int* Wo) const = 0;
  // Forward on one of several independent slots (0 = reference images, 1 = target images, ...):
  // each slot keeps its own activations (in the trunk's arena) for its backward. Returns
  // [N,C,Ho,Wo], valid until reset(). train: BN batch statistics + running-stat updates.
  virtual const float* forward(int slot, const float* x, int N, int Hi, int Wi, bool train) = 0;
  // Backward of that slot's last train-mode forward: accumulates into params.grads (marks
  // touched). dx (may be null) receives d(images) for tests.
  virtual void backward(int slot, const float* dy, float* dx = nullptr) = 0;
  // Frees every slot's activations (start of a step / eval batch); no allocation after warm-up.
  virtual void reset() = 0;
  virtual void init_params(uint64_t seed) = 0;
  virtual int arena_grows() const = 0;
  // false: always the plain NCHW path, never the blocked one (tests compare the two; the
  // environment's DWC_TRUNK_LAYOUT=nchw does the same for a whole run). trunk.cpp, "Layouts".
  bool allow_blocked = true;
  bool used_blocked = false;  // the last forward ran the blocked path
  int used_block = 0;         // its width (8: nChw8c, 16: nChw16c), 0 on the plain path
  int block = 0;              // the blocked width to try first: 8 or 16, 0 = this CPU's (trunk.cpp preferred_block)
};

// kind: "small" (out_channels configurable, default 256) or "resnet50" (2048).
// be: the backend its kernels run on and its parameters live in (default: the process CPU backend).
std::unique_ptr<Trunk> make_trunk(const std::string& kind, const std::string& prefix, int out_channels = 256,
                                  backend::Backend& be = backend::cpu_backend());
// The configurable builders behind make_trunk (trunk.cpp documents both designs). ResNet:
// torchvision Bottleneck layout at base width `base_width` (64 = ResNet-50) with `layers`
// blocks per stage (3,4,6,3 = ResNet-50); kind() stays "resnet50". Small: stem width `width`.
std::unique_ptr<Trunk> make_resnet_trunk(const std::string& prefix, int base_width = 64, const std::array<int, 4>& layers = {3, 4, 6, 3},
                                         backend::Backend& be = backend::cpu_backend());
std::unique_ptr<Trunk> make_small_trunk(const std::string& prefix, int out_channels = 256, int width = 32,
                                        backend::Backend& be = backend::cpu_backend());

}  // namespace dwc

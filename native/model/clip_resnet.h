// CLIP's ModifiedResNet image tower (CLIP-SPEC.md "Architecture", ModifiedResNet; RN50, RN101,
// RN50x4, …) behind the ImageTower interface of clip.h. Names as OpenAI / open_clip
// (`visual.conv1` … `visual.layerK.N.*`, `visual.attnpool.*`).
#pragma once
#include <memory>

#include "clip.h"

namespace dwc {

// Declares the trainable visual.* tensors now; the BatchNorm running statistics (non-trainable)
// are declared by declare_buffers(), after every trainable tensor, so that Adam never sees them.
std::unique_ptr<ImageTower> make_resnet_tower(ParamBuffer& pb, const ClipArch& a);

}  // namespace dwc

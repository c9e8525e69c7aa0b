// Adam as torch.optim.Adam (spec §6): L2 weight decay added to the gradient, bias correction,
// one pass over a contiguous parameter buffer. `step` is the step number after increment (1, 2, ...).
// With zero_grad, the pass also writes 0 into `grad` after reading it (optimizer.zero_grad() fused
// in: the trainer then skips the separate pass over the buffer, model.h ParamBuffer::zero_grad).
#pragma once
#include <cstdint>

namespace dwc::cpu {

void adam_update(float* param, float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2, float eps,
                 float weight_decay, int64_t step, bool zero_grad);

}  // namespace dwc::cpu

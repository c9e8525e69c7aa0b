"""PyTorch anchor for bench/trunk.js: torchvision ResNet-50 (conv1 … layer4, train-mode BN)
forward+backward at batch 8, 224×224, and the small trunk's BasicBlock design at batch 32, 64×64
(scripts/fixtures/gen_trunk.py builds both from torchvision modules). Median of timed runs after
warm-up; threads = cores (OMP_NUM_THREADS is set by bench/common.js runTorchAnchor). Input
gradients are not requested (as the engine's trainer). With --autocast-bf16 the forward runs under
torch.autocast('cpu', bfloat16) and the backward outside (bench/torch_timing.py). Prints one JSON
line {name: seconds}."""
import json
import os
import sys
import time

import torch

from torch_timing import autocast, time_it  # noqa: E402  (bench/torch_timing.py: threads = cores, median)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "fixtures"))
from gen_trunk import FullResNet50, small_trunk  # noqa: E402

torch.manual_seed(0)


def case(model, shape):
    model.train()
    x = torch.randn(*shape) * 0.5
    with torch.no_grad(), autocast():
        dy = torch.randn_like(model(x).float())

    def step():
        for p in model.parameters():
            p.grad = None
        with autocast():
            y = model(x)
        y.backward(dy.to(y.dtype))

    return time_it(step, warmup=1, reps=3)


out = {}
only = sys.argv[1:]
if not only or "resnet50" in only:
    out["resnet50_fwd_bwd"] = case(FullResNet50(), (8, 3, 224, 224))
if not only or "small" in only:
    out["small_fwd_bwd"] = case(small_trunk(32, 256), (32, 3, 64, 64))
print(json.dumps(out))

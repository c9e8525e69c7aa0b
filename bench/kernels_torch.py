"""PyTorch anchor for bench/kernels.js: the same conv fwd(+bwd) shapes, median of timed runs after
warm-up, threads = cores (OMP_NUM_THREADS is set by bench/common.js runTorchAnchor).
Prints one JSON line {name: seconds}."""
import json
import os
import time

import torch

from torch_timing import time_it  # noqa: E402  (bench/torch_timing.py: threads = cores, median)
import torch.nn.functional as F

torch.manual_seed(0)


def conv_case(conv, xs, ws, pad):
    x = (torch.rand(*xs) - 0.5) * 0.2
    w = (torch.rand(*ws) - 0.5) * 0.2
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    dy = (torch.rand(xs[0], ws[0], *xs[2:]) - 0.5) * 0.2

    def fwd():
        with torch.no_grad():
            conv(x, w, padding=pad)

    def fwd_bwd():
        xg.grad = None
        wg.grad = None
        conv(xg, wg, padding=pad).backward(dy)

    return fwd, fwd_bwd


out = {}
for k in (1, 3):
    fwd, fb = conv_case(F.conv2d, (32, 2048, 7, 7), (1024, 2048, k, k), k // 2)
    out[f"conv2d_k{k}_fwd"] = time_it(fwd)
    out[f"conv2d_k{k}_fwd_bwd"] = time_it(fb)
for k in (1, 3):
    _, fb = conv_case(F.conv1d, (32, 1024, 16), (1024, 1024, k), k // 2)
    out[f"conv1d_k{k}_fwd_bwd"] = time_it(fb)
print(json.dumps(out))

"""PyTorch anchor for bench/kernels.js: the same conv fwd(+bwd) shapes, median of timed runs after
warm-up, threads = cores (OMP_NUM_THREADS is set by bench/common.js runTorchAnchor).
Prints one JSON line {name: seconds}."""
import json
import os
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
torch.manual_seed(0)


def time_it(fn, warmup=2, reps=5):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    m = len(ts) // 2
    return ts[m] if len(ts) % 2 else (ts[m - 1] + ts[m]) / 2


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

"""Shared timing for the PyTorch anchors of bench/ (PERFORMANCE.md): threads = cores
(OMP_NUM_THREADS is set by bench/common.js runTorchAnchor), median of timed runs after warm-up.
`--autocast-bf16` on an anchor's command line (removed from sys.argv here): its forward passes and
losses run under torch.autocast('cpu', dtype=torch.bfloat16), backward outside, as PyTorch
recommends (docs/PERFORMANCE.md "bf16")."""
import contextlib
import os
import statistics
import sys
import time

import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))


def time_it(fn, warmup=2, reps=5):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


AUTOCAST_BF16 = "--autocast-bf16" in sys.argv
if AUTOCAST_BF16:
    sys.argv = [a for a in sys.argv if a != "--autocast-bf16"]


def autocast():
    """torch.autocast('cpu', bfloat16) with --autocast-bf16, else a no-op context."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if AUTOCAST_BF16 else contextlib.nullcontext()

"""Shared timing for the PyTorch anchors of bench/ (PERFORMANCE.md): threads = cores
(OMP_NUM_THREADS is set by bench/common.js runTorchAnchor), median of timed runs after warm-up."""
import os
import statistics
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

"""Speed anchor (issue 3 item 8): one full DWC training iteration (spec §6) of the PyTorch
reference (scripts/reference/dwc_ref.py) at the paper preset, features given (trunk bypassed),
dropout on, default options (masked). Median of 5 after 2 warm-ups. The LAST stdout line is
JSON {"iteration_s", "torch", "threads", ...} (parsed by bench/common.js runTorchAnchor).

/usr/bin/python3 bench/step_torch.py [--threads N] [--device cpu|cuda] [--amp | --autocast-bf16] [--B 32] ...
--autocast-bf16: forwards and losses under torch.autocast('cpu', dtype=torch.bfloat16), backward
outside (as PyTorch recommends; no loss scaling in bf16) — the anchor of `bench step --precision bf16`.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "reference"))
import dwc_ref as R  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count())
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amp", action="store_true", help="fp16 autocast + loss scaling (CUDA), as the reference")
    ap.add_argument("--autocast-bf16", action="store_true", help="bf16 autocast on the CPU, backward outside (bench step --precision bf16)")
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--Dc", type=int, default=1024)
    ap.add_argument("--D", type=int, default=1024)
    ap.add_argument("--C", type=int, default=2048)
    ap.add_argument("--H", type=int, default=7)
    ap.add_argument("--W", type=int, default=7)
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--E", type=int, default=512)
    ap.add_argument("--V", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--unmasked", action="store_true")
    ap.add_argument("--foreach", action="store_true", help="Adam(foreach=True) (default: PyTorch's default, as the reference)")
    a = ap.parse_args()
    if a.amp and a.device != "cuda":
        ap.error("--amp needs --device cuda (fp16 autocast with loss scaling, as the reference)")
    if a.autocast_bf16 and (a.amp or a.device != "cpu"):
        ap.error("--autocast-bf16 is the CPU's bf16 autocast; it excludes --amp and --device cuda")

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    dims = R.Dims(Dc=a.Dc, D=a.D, C=a.C, E=a.E, V=a.V)
    model = R.DWC(dims, R.Options(dropout=0.5, masked=not a.unmasked)).to(dev)
    opts = R.make_optimizers(model, foreach=True if a.foreach else None)
    scalers = None
    if a.amp:
        scalers = {k: torch.cuda.amp.GradScaler(enabled=(a.device == "cuda")) for k in opts}
    B, L = a.B, a.L
    lengths = torch.randint(max(1, L // 4), L + 1, (B,), dtype=torch.int32)
    lengths[0] = L
    tokens = torch.randint(4, a.V, (B, L), dtype=torch.int32)
    for i in range(B):
        tokens[i, lengths[i]:] = 0
    batch = {
        "global.e_img": torch.randn(B, a.Dc), "global.e_txt": torch.randn(B, a.Dc), "global.e_target": torch.randn(B, a.Dc),
        "local.fmap": torch.rand(B, a.C, a.H, a.W), "local.fmap_target": torch.rand(B, a.C, a.H, a.W),
        "local.tokens": tokens, "local.lengths": lengths, "labels": torch.arange(B, dtype=torch.int32),
    }
    batch = {k: (v.to(dev) if k != "local.lengths" else v) for k, v in batch.items()}
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)

    times = []
    for i in range(a.warmup + a.reps):
        sync()
        t0 = time.perf_counter()
        if a.autocast_bf16:
            lg, ll = R.train_iteration(model, batch, opts, amp=True, amp_dtype=torch.bfloat16)
        else:
            lg, ll = R.train_iteration(model, batch, opts, scalers=scalers, amp=a.amp)
        sync()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
        print(f"iter {i}: {dt:.4f} s  loss global {lg.item():.4f} local {ll.item():.4f}", flush=True)
    print(json.dumps({"iteration_s": statistics.median(times), "times_s": times, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "device": a.device, "amp": a.amp, "autocast_bf16": a.autocast_bf16, "foreach": a.foreach,
                      "preset": {"B": B, "Dc": a.Dc, "D": a.D, "C": a.C, "H": a.H, "W": a.W, "L": L, "E": a.E, "V": a.V}}))


if __name__ == "__main__":
    main()

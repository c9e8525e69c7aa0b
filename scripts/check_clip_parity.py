"""End-to-end `dwc-native clip trace` parity at a real CLIP size (random weights, no download):
writes weights (OpenAI or Hugging Face names), inputs and float64 reference values
(scripts/reference/clip_ref.py) into a temporary folder, runs the CLI, prints each tensor's
relative error against its kink-aware bound, and exits 1 when one is over.

  /usr/bin/python3 scripts/check_clip_parity.py [--preset b32|b16|small] [--naming openai|hf] [--n 4]
                                                [--activation quick_gelu|gelu] [--keep DIR]
Needs the built addon and lib/ (npm run build).
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "fixtures"))
sys.path.insert(0, os.path.join(HERE, "reference"))
from common import load_safetensors, rel, save_safetensors_exact  # noqa: E402
import clip_ref as R  # noqa: E402
from gen_clip_trace import run, tensor_list  # noqa: E402

PRESETS = {
    # ViT-B/32 and ViT-B/16 as OpenAI ships them
    "b32": dict(width=768, patch=32, grid=7, resolution=224, layers=12, heads=12, embed=512, text_width=512, text_layers=12, text_heads=8, ctx=77,
                vocab=49408),
    "b16": dict(width=768, patch=16, grid=14, resolution=224, layers=12, heads=12, embed=512, text_width=512, text_layers=12, text_heads=8, ctx=77,
                vocab=49408),
    "small": dict(width=256, patch=16, grid=4, resolution=64, layers=3, heads=4, embed=128, text_width=192, text_layers=3, text_heads=3, ctx=24,
                  vocab=500),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--naming", default="openai", choices=["openai", "hf"])
    ap.add_argument("--activation", default="quick_gelu", choices=["quick_gelu", "gelu"])
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", default=None, help="write the files here and keep them")
    o = ap.parse_args()
    a = PRESETS[o.preset]
    g = torch.Generator().manual_seed(o.seed)
    ft = {}
    for name, shape, kind, scale, offset in tensor_list(o.naming, a):
        if kind == "arange":
            ft[name] = torch.arange(math.prod(shape), dtype=torch.int64).reshape(shape)
        else:
            ft[name] = ((torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * scale + offset).float()
    N, ctx, V = o.n, a["ctx"], a["vocab"]
    pixels = torch.randn(N, 3, a["resolution"], a["resolution"], generator=g)
    ids = torch.zeros(N, ctx, dtype=torch.int32)
    for i in range(N):
        L = 2 + (i * 7 + 3) % (ctx - 1)
        ids[i, 0] = V - 2
        ids[i, 1:L - 1] = torch.randint(1, V - 3, (L - 2,), generator=g)
        ids[i, L - 1] = V - 1
    d = o.keep or tempfile.mkdtemp(prefix="dwc-clip-parity-")
    os.makedirs(d, exist_ok=True)
    wfile = os.path.join(d, "model.safetensors" if o.naming == "hf" else "open_clip_model.safetensors")
    save_safetensors_exact(wfile, ft, {"activation": o.activation})
    save_safetensors_exact(os.path.join(d, "inputs.safetensors"), {"pixel_values": pixels, "input_ids": ids})
    hf = o.naming == "hf"
    t0 = time.time()
    exp64 = run(ft, hf, pixels, ids, o.activation, torch.float64)
    t1 = time.time()
    f32 = run(ft, hf, pixels, ids, o.activation, torch.float32)
    t2 = time.time()
    noisy = run(ft, hf, pixels * (1 + 1e-7 * torch.randn(pixels.shape, generator=g)), ids, o.activation, torch.float32)
    tol = {k: max(1e-4, 4 * rel(f32[k], exp64[k]), 3 * rel(noisy[k], f32[k])) for k in exp64}
    out = os.path.join(d, "trace.safetensors")
    t3 = time.time()
    r = subprocess.run([shutil.which("node") or "node", os.path.join(ROOT, "lib", "cli", "main.js"), "clip", "trace", "--weights", wfile, "--inputs",
                        os.path.join(d, "inputs.safetensors"), "--out", out, "--json"], capture_output=True, text=True)
    t4 = time.time()
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        sys.exit(1)
    got = load_safetensors(out)
    bad = []
    rows = []
    for k, e in exp64.items():
        if k not in got:
            bad.append(f"{k}: missing")
            continue
        err = rel(got[k].double().reshape(e.shape), e)
        rows.append((err / tol[k], k, err, tol[k]))
        if not err <= tol[k]:
            bad.append(f"{k}: {err:.2e} > {tol[k]:.2e}")
    rows.sort(reverse=True)
    print(json.dumps({"preset": o.preset, "naming": o.naming, "activation": o.activation, "N": N, "tensors": len(rows),
                      "loss": float(exp64["loss"][0]), "torch_f64_s": round(t1 - t0, 2), "torch_f32_s": round(t2 - t1, 2),
                      "engine_cli_s": round(t4 - t3, 2), "median_err": sorted(x[2] for x in rows)[len(rows) // 2]}))
    for q, k, err, t in rows[:8]:
        print(f"  {k}: rel err {err:.2e} (bound {t:.2e})")
    if not o.keep:
        shutil.rmtree(d)
    if bad:
        print("FAILED:\n  " + "\n  ".join(bad))
        sys.exit(1)
    print("OK: every tensor within its bound")


if __name__ == "__main__":
    main()

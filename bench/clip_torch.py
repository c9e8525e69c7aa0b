"""PyTorch anchor for bench/clip.js: the same CLIP shape with our reference
(scripts/reference/clip_ref.py, plain PyTorch ops), random weights. Image embedding and text
embedding under no_grad, and one fine-tuning step (forward + backward + torch.optim.Adam).
argv: preset n_img n_txt n_train [--autocast-bf16: forwards and the loss under torch.autocast('cpu',
bfloat16), backward outside (bench/torch_timing.py)]. Prints one JSON line {name: seconds}."""
import json
import math
import os
import sys

import torch

from torch_timing import autocast, time_it  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.join(ROOT, "scripts", "reference"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "scripts", "fixtures"))
import clip_ref as R  # noqa: E402
from check_clip_parity import PRESETS  # noqa: E402
from gen_clip_trace import tensor_list  # noqa: E402

preset, n_img, n_txt, n_train = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
a = PRESETS[preset]
g = torch.Generator().manual_seed(0)
sd = {name: ((torch.rand(shape, generator=g) * 2 - 1) * scale + offset) for name, shape, kind, scale, offset in tensor_list("openai", a)}
arch = R.arch_from(sd)
res, ctx, V = a["resolution"], a["ctx"], a["vocab"]


def ids(n, full=False):
    x = torch.zeros(n, ctx, dtype=torch.int32)
    for i in range(n):
        L = ctx if full else 2 + (i * 7 + 3) % (ctx - 1)
        x[i, 0] = V - 2
        x[i, 1:L - 1] = torch.randint(1, V - 3, (L - 2,), generator=g)
        x[i, L - 1] = V - 1
    return x


px = torch.rand(max(n_img, n_train), 3, res, res, generator=g) * 2 - 1
tk = ids(max(n_txt, n_train))
tk_full = ids(n_txt, True)  # every text 77 tokens long
out = {}
with torch.no_grad(), autocast():
    out["embed_images"] = time_it(lambda: R.encode_image(sd, arch, px[:n_img], R.quick_gelu), warmup=1, reps=3)
    out["embed_texts"] = time_it(lambda: R.encode_text(sd, arch, tk[:n_txt], R.quick_gelu), warmup=1, reps=3)
    out["embed_texts_full"] = time_it(lambda: R.encode_text(sd, arch, tk_full, R.quick_gelu), warmup=1, reps=3)
params = {k: v.clone().requires_grad_() for k, v in sd.items()}
opt = torch.optim.Adam(params.values(), lr=1e-6, betas=(0.9, 0.98), eps=1e-6)


def step():
    opt.zero_grad(set_to_none=True)
    with autocast():
        _, _, _, loss = R.forward(params, px[:n_train], tk[:n_train])
    loss.float().backward()
    opt.step()


out["train_step"] = time_it(step, warmup=1, reps=3)
print(json.dumps(out))

#!/usr/bin/env python3
"""PyTorch anchors for bench/gpu/run.sh: the same shapes as the CUDA timing table of
dwc_native_tests, plus an approximate paper-preset step (spec §12: batch 32, 224² images,
ResNet-50 trunk for query and target images, LSTM 512 -> 1024 over 30 tokens, the editors'
cross attention, contrastive + mutual losses), timed with CUDA events after warm-up, in eager
float32 and under bf16 autocast; and the same step with the trunk maps given (the speed table's
PyTorch rows, next to the engine's paper_step rows: bench/gpu/speed_table.py). The step is an anchor for speed only (it is not the DWC model:
Inception editors and the global stream's MLPs are left out); every number printed says so.
--dry-run: CPU, tiny sizes, one repetition (checks that the script runs; times nothing useful)."""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument('--dry-run', action='store_true')
ap.add_argument('--json', default='')
args = ap.parse_args()
dry = args.dry_run or not torch.cuda.is_available()
dev = torch.device('cpu' if dry else 'cuda')
torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 (TF32 rows are separate)
torch.backends.cudnn.allow_tf32 = False
WARM, REPS = (0, 1) if dry else (5, 20)
results = []


def timed(name, fn, flops=0.0, dtype='fp32'):
    for _ in range(WARM):
        fn()
    if dry:
        t0 = time.perf_counter()
        fn()
        ms = [1e3 * (time.perf_counter() - t0)]
    else:
        torch.cuda.synchronize()
        ms = []
        for _ in range(REPS):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            ms.append(a.elapsed_time(b))
    med = statistics.median(ms)
    rate = f'{flops / med / 1e9:.1f} TFLOP/s' if flops else ''
    results.append({'name': name, 'dtype': dtype, 'ms': med, 'rate': rate})
    print(f'{name:<52} {dtype:<10} {med:10.4f} ms  {rate}', flush=True)


def autocast(on):
    if on and not dry:
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return torch.autocast('cpu', enabled=False)


S = (lambda big, small: small) if dry else (lambda big, small: big)
print(f'torch {torch.__version__} on {torch.cuda.get_device_name() if not dry else "cpu (dry run)"}', flush=True)

# ---- matrix-product ceiling (the cuBLAS rows of dwc_native_tests) ----
for n in ([1024, 4096, 8192] if not dry else [64]):
    A, B = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    timed(f'matmul {n}^3', lambda: A @ B, 2.0 * n ** 3)
    if not dry:
        Ab, Bb = A.bfloat16(), B.bfloat16()
        timed(f'matmul {n}^3', lambda: Ab @ Bb, 2.0 * n ** 3, 'bf16')
        torch.backends.cuda.matmul.allow_tf32 = True
        timed(f'matmul {n}^3', lambda: A @ B, 2.0 * n ** 3, 'tf32')
        torch.backends.cuda.matmul.allow_tf32 = False

# ---- kernel shapes of the timing table ----
N = S(32, 2)
for ci, co, hw, k, s in [(3, 64, 224, 7, 2), (64, 64, 56, 3, 1), (512, 512, 7, 3, 1)]:
    hw_ = S(hw, 16)
    x = torch.randn(N, ci, hw_, hw_, device=dev)
    w = torch.randn(co, ci, k, k, device=dev)
    ho = (hw_ + 2 * (k // 2) - k) // s + 1
    fl = 2.0 * N * co * ho * ho * ci * k * k
    timed(f'conv2d N{N} {ci}->{co} {hw_}x{hw_} k{k} s{s}', lambda: F.conv2d(x, w, stride=s, padding=k // 2), fl)
    with autocast(True):
        timed(f'conv2d N{N} {ci}->{co} {hw_}x{hw_} k{k} s{s}', lambda: F.conv2d(x, w, stride=s, padding=k // 2), fl, 'bf16-amp')
lstm = nn.LSTM(S(512, 8), S(1024, 16), batch_first=True).to(dev)
xt = torch.randn(N, 30, S(512, 8), device=dev)
timed(f'lstm_forward B{N} L30 E{S(512, 8)} D{S(1024, 16)}', lambda: lstm(xt))
n_adam = S(25_000_000, 1000)
p = nn.Parameter(torch.randn(n_adam, device=dev))
p.grad = torch.randn_like(p)
opt = torch.optim.Adam([p], lr=1e-4, weight_decay=1e-6, foreach=False, fused=not dry)
timed(f'adam (fused) {n_adam} params', opt.step)

# ---- CLIP kernels (issue #15 twins): the shapes of the transformer / attnpool / clip_loss rows ----
Bt, Tt, Wt, Ht = S(32, 2), S(77, 7), S(512, 16), S(8, 2)
xl = torch.randn(Bt * Tt, Wt, device=dev)
ln = nn.LayerNorm(Wt).to(dev)
timed(f'layernorm_forward {Bt * Tt}x{Wt}', lambda: ln(xl))
xg = torch.randn(S(1 << 24, 1000), device=dev)
timed('quick_gelu_forward 16M' if not dry else 'quick_gelu_forward', lambda: xg * torch.sigmoid(1.702 * xg))
timed('gelu_forward 16M' if not dry else 'gelu_forward', lambda: F.gelu(xg))
mha = nn.MultiheadAttention(Wt, Ht, batch_first=True).to(dev)
xm = torch.randn(Bt, Tt, Wt, device=dev, requires_grad=True)
causal = torch.full((Tt, Tt), float('-inf'), device=dev).triu(1)
timed(f'mha_forward B{Bt} T{Tt} w{Wt} H{Ht} causal (nn.MultiheadAttention)', lambda: mha(xm, xm, xm, attn_mask=causal, need_weights=False))
ym = mha(xm, xm, xm, attn_mask=causal, need_weights=False)[0]
gm = torch.randn_like(ym)
timed(f'mha_forward+backward B{Bt} T{Tt} w{Wt} H{Ht} causal', lambda: torch.autograd.grad(
    mha(xm, xm, xm, attn_mask=causal, need_weights=False)[0], [xm] + list(mha.parameters()), gm))
Rv, pv, wv = S(224, 32), S(32, 16), S(768, 16)
conv1 = nn.Conv2d(3, wv, pv, pv, bias=False).to(dev)
xv = torch.randn(N, 3, Rv, Rv, device=dev)
timed(f'patch_embed_forward ViT-B/32 N{N} (conv1 only)', lambda: conv1(xv))
Ca, Ha, Ea = S(2048, 16), S(32, 2), S(1024, 8)
xa = torch.randn(N, 49, Ca, device=dev)
pos_a = torch.randn(50, Ca, device=dev)
qa, ka, va = (nn.Linear(Ca, Ca).to(dev) for _ in range(3))
ca = nn.Linear(Ca, Ea).to(dev)


def attnpool(x):  # CLIP's AttentionPool2d, single query
    t = torch.cat([x.mean(1, keepdim=True), x], 1) + pos_a
    q = qa(t[:, :1]).view(N, 1, Ha, -1).transpose(1, 2)
    k = ka(t).view(N, 50, Ha, -1).transpose(1, 2)
    v = va(t).view(N, 50, Ha, -1).transpose(1, 2)
    a = torch.softmax(q @ k.transpose(-1, -2) / (Ca // Ha) ** 0.5, -1)  # (SDPA is not in the dry run's torch 1.13)
    o = (a @ v).transpose(1, 2).reshape(N, Ca)
    return ca(o)


timed(f'attnpool_forward RN50 N{N}', lambda: attnpool(xa))
Nc, Ec = S(256, 8), S(1024, 16)
ic = torch.randn(Nc, Ec, device=dev, requires_grad=True)
tc = torch.randn(Nc, Ec, device=dev, requires_grad=True)
lab = torch.arange(Nc, device=dev)


def clip_loss_fb():
    lg = 14.3 * F.normalize(ic, dim=1) @ F.normalize(tc, dim=1).t()
    loss = 0.5 * (F.cross_entropy(lg, lab) + F.cross_entropy(lg.t(), lab))
    return torch.autograd.grad(loss, [ic, tc])


timed(f'clip_loss forward+backward N{Nc} E{Ec}', clip_loss_fb)

# ---- approximate paper-preset step (speed anchor only, see the docstring) ----
try:
    import torchvision
    trunk = torchvision.models.resnet50(weights=None)
    trunk.fc = nn.Identity()
    trunk.avgpool = nn.Identity()
except Exception as e:  # torchvision absent: a plain conv stack of similar depth stands in
    print(f'(torchvision unavailable: {e}; the step uses no trunk)', flush=True)
    trunk = None
D, C, E, L, P = S(1024, 32), S(2048, 2048), S(512, 8), 30, 49
emb = nn.Embedding(S(5000, 50), E)
txt_lstm = nn.LSTM(E, D, batch_first=True)
img_fc = nn.Linear(C, D)
params = nn.ModuleList([m for m in [trunk, emb, txt_lstm, img_fc] if m is not None]).to(dev)
opt2 = torch.optim.Adam(params.parameters(), lr=1e-4, weight_decay=1e-6, fused=not dry)
img = torch.randn(N, 3, S(224, 64), S(224, 64), device=dev)
tgt = torch.randn(N, 3, S(224, 64), S(224, 64), device=dev)
tok = torch.randint(0, S(5000, 50), (N, L), device=dev)
other_q, other_t = F.normalize(torch.randn(N, D, device=dev), dim=1), F.normalize(torch.randn(N, D, device=dev), dim=1)
labels = torch.arange(N, device=dev)


def fmap(x):
    if trunk is None:
        return torch.randn(N, C, 7, 7, device=dev, requires_grad=True)
    f = trunk(x)
    return f.view(x.shape[0], C, -1)


# "features given" (the engine's paper_step rows of dwc_native_tests --time): the trunk maps are
# inputs, already on the device, as the engine's batch is
fi_given = torch.rand(N, C, P, device=dev)
ft_given = torch.rand(N, C, P, device=dev)


def step(amp, given=False):
    opt2.zero_grad(set_to_none=True)
    with autocast(amp):
        Fi = fi_given if given else fmap(img)  # [N, C, P]
        Ft = ft_given if given else fmap(tgt)
        T, _ = txt_lstm(emb(tok))  # [N, L, D]
        I = img_fc(Fi.transpose(1, 2)).transpose(1, 2)  # [N, D, P]
        Sm = torch.bmm(T, I)  # [N, L, P]
        S_hat = torch.bmm(T.transpose(1, 2), torch.softmax(Sm / 7, dim=1))  # [N, D, P]
        I_hat = torch.bmm(I, torch.softmax(Sm / 4, dim=2).transpose(1, 2))  # [N, D, L]
        q = F.normalize(S_hat.pow(3).clamp_min(1e-6).mean(2).pow(1 / 3) + I_hat.mean(2), dim=1)
        t = F.normalize(img_fc(Ft.clamp_min(1e-6).pow(3).mean(2).pow(1 / 3)), dim=1)
        Q = 0.2 * torch.softmax(t @ t.t() / 0.07, 1) + 0.8 * torch.eye(N, device=dev)
        con = -(Q * torch.log_softmax(q @ t.t() / 0.07, 1)).sum(1).mean()
        mut = F.kl_div(torch.log_softmax(10 * q @ t.t(), 1), torch.softmax(10 * other_q @ other_t.t(), 1), reduction='batchmean')
        loss = con + mut
    loss.backward()
    opt2.step()


for amp in (False, True):
    timed(f'approx. paper step (trunk x2 + LSTM + attention + losses + Adam) B{N}', lambda: step(amp), 0, 'bf16-amp' if amp else 'fp32')
for amp in (False, True):  # the speed table's PyTorch rows (bench/gpu/speed_table.py)
    timed(f'approx. paper step, features given (LSTM + attention + losses + Adam) B{N}', lambda: step(amp, True), 0,
          'bf16-amp' if amp else 'fp32')

if args.json:
    with open(args.json, 'w') as f:
        json.dump(results, f, indent=1)
print('torch_anchors: done' + (' (DRY RUN on the CPU: these times mean nothing)' if dry else ''), flush=True)

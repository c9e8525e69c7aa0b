"""PyTorch reference of the DWC model (spec /work/shared/design/DWC-SPEC.md §3–§6, §9, §10).

Written from the spec (not copied from the authors' code). Module names give exactly the §9
state_dict names under the prefixes 'global.' and 'local.'. The CNN trunk is bypassed: the
local stream takes feature maps [B,C,H,W] directly (§13), unless a trunk is attached
(`attach_trunk`: a torchvision-named ResNet as local.img_model.*, run on 'local.images' /
'local.images_target' in steps 1 and 4 of §6 as in the reference: 4 BN running-stat updates).

Run with Debian's /usr/bin/python3 (PyTorch 1.13).
"""
import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclasses.dataclass
class Dims:
    Dc: int = 1024   # frozen vision-language feature dim (global stream input)
    D: int = 1024    # embedding dim
    C: int = 2048    # feature-map channels
    E: int = 512     # word-embedding dim
    V: int = 5000    # vocabulary size


@dataclasses.dataclass
class Options:
    masked: bool = True                    # §10: mask padded tokens (False = reference behaviour)
    dropout: float = 0.5                   # every Dropout (0 = off, for parity)
    detach_soft_labels: bool = False       # §5: detach softmax(t tᵀ/τ) in the SSG
    mutual_target_reference: bool = False  # §10: other stream's L_mut targets from the reference image
    # ablations
    no_ssg: bool = False      # α = 0 (hard labels)
    no_editors: bool = False  # editor gates a_I, a_T, g_I, g_T fixed to 1
    fixed_w: bool = False     # combiner w fixed to 0.5
    no_mutual: bool = False   # L_mut dropped (reported as 0)
    # §5 constants
    alpha: float = 0.2
    tau: float = 0.07
    mutual_scale: float = 10.0
    temp_s: float = 7.0   # §4.3 spatial attention temperature
    temp_w: float = 4.0   # §4.4 word attention temperature
    # §6 Adam
    lr: float = 1e-4
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-6


def norm(x):
    """§2: x / max(‖x‖₂, 1e-12) per row."""
    return F.normalize(x, p=2, dim=-1, eps=1e-12)


def mlp_sigmoid(n_in, n_hidden, n_out, p):
    """MLP_σ(in→h→out): Linears at .0 and .3 (§9)."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(n_hidden, n_out), nn.Sigmoid())


class GeM(nn.Module):
    """§4: (mean over positions of max(x,eps)^p)^(1/p); x [N,C,P]; lengths: only the first
    lengths[n] positions count (masked text pooling)."""

    def __init__(self, p=3.0, eps=1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x, lengths=None):
        y = x.clamp(min=self.eps).pow(self.p)
        if lengths is None:
            m = y.mean(dim=2)
        else:
            mask = (torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
            m = (y * mask[:, None, :]).sum(dim=2) / lengths[:, None].to(x.dtype)
        return m.pow(1.0 / self.p)


def masked_batch_norm(bn, x, m):
    """BatchNorm1d over the real positions only (§10, engine's masking): x [B,C,L], m [B,1,L]
    (1 = real token). Train: batch statistics over the real positions, running stats updated as
    torch (momentum, unbiased variance over Σ lengths values); eval: running stats. Output 0 at
    padded positions."""
    if bn.training:
        n = m.sum()
        mean = (x * m).sum(dim=(0, 2)) / n
        var = ((x - mean[None, :, None]) ** 2 * m).sum(dim=(0, 2)) / n
        with torch.no_grad():
            unbiased = var * n / (n - 1) if n > 1 else var
            bn.running_mean.mul_(1 - bn.momentum).add_(bn.momentum * mean)
            bn.running_var.mul_(1 - bn.momentum).add_(bn.momentum * unbiased)
            bn.num_batches_tracked.add_(1)
    else:
        mean, var = bn.running_mean, bn.running_var
    y = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + bn.eps) * bn.weight[None, :, None] + bn.bias[None, :, None]
    return y * m


def masked_avg_pool3(x, m):
    """AvgPool1d(3, stride 1, pad 1) of padded sequences (§10, engine's masking): each real
    position averages the real positions of its window (as unpadded); padded positions are 0."""
    C = x.shape[1]
    ones = torch.ones(C, 1, 3, dtype=x.dtype, device=x.device)
    s = F.conv1d(x * m, ones, padding=1, groups=C)
    cnt = F.conv1d(m, ones[:1], padding=1)
    return s / cnt.clamp(min=1) * m


class ConvBN(nn.Module):
    """conv (no bias) + BatchNorm, no activation (names .conv / .bn)."""

    def __init__(self, n_in, n_out, k, dim):
        super().__init__()
        Conv = nn.Conv2d if dim == 2 else nn.Conv1d
        BN = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
        self.conv = Conv(n_in, n_out, kernel_size=k, padding=k // 2, bias=False)
        self.bn = BN(n_out, eps=1e-5, momentum=0.1)

    def forward(self, x, m=None):
        """m [B,1,L] (Inc1d over padded texts): x is 0 at padded positions on entry, and so is the output."""
        if m is None:
            return self.bn(self.conv(x))
        return masked_batch_norm(self.bn, self.conv(x), m)


class Inception(nn.Module):
    """Inc2d / Inc1d (§4): four branches concatenated on channels, out divisible by 8.
    forward(x, m): m [B,1,L] masks padded positions of an Inc1d (§10, engine default): every
    conv / pool input is 0 there, the pool counts real positions, BN statistics are over real
    positions; each real position sees what it sees unpadded."""

    def __init__(self, n_in, n_out, dim):
        super().__init__()
        assert n_out % 8 == 0, "Inception out must be divisible by 8"
        o8 = n_out // 8
        Pool = nn.AvgPool2d if dim == 2 else nn.AvgPool1d
        self.branch0 = ConvBN(n_in, 3 * o8, 1, dim)
        self.branch1 = nn.Sequential(ConvBN(n_in, 4 * o8, 1, dim), nn.ReLU(), ConvBN(4 * o8, 2 * o8, 3, dim))
        self.branch2 = nn.Sequential(ConvBN(n_in, 2 * o8, 1, dim), nn.ReLU(), ConvBN(2 * o8, o8, 3, dim), nn.ReLU(),
                                     ConvBN(o8, 2 * o8, 3, dim))
        self.branch3 = nn.Sequential(Pool(3, stride=1, padding=1, count_include_pad=False), ConvBN(n_in, o8, 1, dim))

    def forward(self, x, m=None):
        if m is None:
            return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)
        x = x * m
        b1, b2 = self.branch1, self.branch2
        y0 = self.branch0(x, m)
        y1 = b1[2](b1[1](b1[0](x, m)), m)
        y2 = b2[4](b2[3](b2[2](b2[1](b2[0](x, m)), m)), m)
        y3 = self.branch3[1](masked_avg_pool3(x, m), m)
        return torch.cat([y0, y1, y2, y3], dim=1)


class GlobalStream(nn.Module):
    """§3."""

    def __init__(self, dims, opts):
        super().__init__()
        D, Dc, p = dims.D, dims.Dc, opts.dropout
        self.opts = opts
        self.img_fc = nn.Sequential(nn.Linear(Dc, D), nn.ReLU(), nn.Dropout(p))
        self.txt_fc = nn.Sequential(nn.Linear(Dc, D), nn.ReLU(), nn.Dropout(p))
        self.atten_I = mlp_sigmoid(2 * D, D, D, p)
        self.atten_T = mlp_sigmoid(2 * D, D, D, p)
        self.dynamic_scalar = mlp_sigmoid(2 * D, D, 1, p)

    def target(self, e):
        return norm(self.img_fc(e))

    def query(self, e_img, e_txt):
        f_I = norm(self.img_fc(e_img))
        f_T = norm(self.txt_fc(e_txt))
        if self.opts.no_editors:
            fI2, fT2 = f_I, f_T
        else:
            x = torch.cat([f_I, f_T], dim=1)
            fI2 = self.atten_I(x) * f_I
            fT2 = self.atten_T(x) * f_T
        if self.opts.fixed_w:
            w = torch.full((f_I.shape[0], 1), 0.5, dtype=f_I.dtype, device=f_I.device)
        else:
            w = self.dynamic_scalar(torch.cat([fI2, fT2], dim=1))
        return norm(w * fI2 + (1 - w) * fT2), w.squeeze(1)

    def forward(self, e_img, e_txt, e_target):
        q, w = self.query(e_img, e_txt)
        return q, self.target(e_target), w


class TextModel(nn.Module):
    """§4 text encoder: Embedding(V,E) -> LSTM(E->D), zero initial state; all hidden states."""

    def __init__(self, dims):
        super().__init__()
        self.embedding_layer = nn.Embedding(dims.V, dims.E)
        self.lstm = nn.LSTM(dims.E, dims.D, num_layers=1, batch_first=True)

    def forward(self, tokens, lengths=None):
        x = self.embedding_layer(tokens.long())
        if lengths is None:
            T, _ = self.lstm(x)
            return T
        L = tokens.shape[1]
        packed = pack_padded_sequence(x, lengths.cpu().long(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        T, _ = pad_packed_sequence(out, batch_first=True, total_length=L)  # padded steps = 0
        return T


class LocalStream(nn.Module):
    """§4 (trunk bypassed: takes feature maps)."""

    def __init__(self, dims, opts):
        super().__init__()
        D, C = dims.D, dims.C
        self.opts = opts
        self.img_pool = GeM()
        self.img_fc = nn.Linear(C, D)
        self.txt_model = TextModel(dims)
        self.imgconv = nn.Sequential(Inception(C, D, 2), nn.ReLU())
        self.imgatt = nn.Sequential(Inception(2 * D, C, 2), nn.Sigmoid())
        self.txtatt = nn.Sequential(Inception(2 * D, D, 1), nn.Sigmoid())
        self.txt2img = nn.Sequential(Inception(D, C, 2), nn.ReLU())
        self.img2txt = nn.Sequential(Inception(D, D, 1), nn.ReLU())
        self.pool_i = GeM()
        self.pool_t = GeM()
        self.fc_txt = nn.Linear(D, D)
        self.dynamic_scalar = mlp_sigmoid(2 * D, D, 1, opts.dropout)

    def target(self, fmap):
        return norm(self.img_fc(self.img_pool(fmap.flatten(2))))

    def query(self, fmap, tokens, lengths):
        o = self.opts
        B, C, H, W = fmap.shape
        L = tokens.shape[1]
        lens = lengths.long() if o.masked else None
        T = self.txt_model(tokens, lens)                     # [B,L,D]
        Dm = T.shape[2]
        I = self.imgconv(fmap).flatten(2)                    # [B,D,P]
        S = torch.bmm(T, I)                                  # [B,L,P]
        ls = S / o.temp_s
        if lens is not None:
            mask = torch.arange(L, device=fmap.device)[None, :] < lens[:, None]   # [B,L] real tokens
            ls = ls.masked_fill(~mask[:, :, None], float("-inf"))
        A_s = torch.softmax(ls, dim=1)                       # over tokens
        S_hat = torch.bmm(T.transpose(1, 2), A_s)            # [B,D,P]
        A_w = torch.softmax(S / o.temp_w, dim=2)             # over positions
        if lens is not None:
            A_w = A_w * mask[:, :, None].to(A_w.dtype)       # padded tokens: zero rows
        I_hat = torch.bmm(I, A_w.transpose(1, 2))            # [B,D,L]
        Tt = T.transpose(1, 2)                               # [B,D,L]
        # image editor (§4.5)
        s_map = S_hat.reshape(B, Dm, H, W)
        t2i = self.txt2img(s_map)
        if o.no_editors:
            Phi = fmap + t2i
        else:
            g_I = self.imgatt(torch.cat([I.reshape(B, Dm, H, W), s_map], dim=1))
            Phi = g_I * fmap + t2i
        fuse_i = self.img_fc(self.pool_i(Phi.flatten(2)))
        # text editor (§4.6); masked (§10): the Inc1d see each text unpadded
        m = None if lens is None else mask[:, None, :].to(fmap.dtype)   # [B,1,L]
        i2t = self.img2txt[1](self.img2txt[0](I_hat, m))
        if o.no_editors:
            Psi = Tt + i2t
        else:
            g_T = self.txtatt[1](self.txtatt[0](torch.cat([Tt, I_hat], dim=1), m))
            Psi = g_T * Tt + i2t
        fuse_t = self.fc_txt(self.pool_t(Psi, lens))
        # combiner (§4.7)
        if o.fixed_w:
            w = torch.full((B, 1), 0.5, dtype=fmap.dtype, device=fmap.device)
        else:
            w = self.dynamic_scalar(torch.cat([fuse_i, fuse_t], dim=1))
        return norm(w * fuse_i + (1 - w) * fuse_t), w.squeeze(1)

    def forward(self, fmap, tokens, lengths, fmap_target):
        q, w = self.query(fmap, tokens, lengths)
        return q, self.target(fmap_target), w


class DWC(nn.Module):
    """Both streams; state_dict names 'global.*' and 'local.*' (§9)."""

    def __init__(self, dims, opts=None):
        super().__init__()
        self.dims = dims
        self.opts = opts or Options()
        self.add_module("global", GlobalStream(dims, self.opts))
        self.add_module("local", LocalStream(dims, self.opts))

    @property
    def g(self):
        return self._modules["global"]

    @property
    def l(self):
        return self._modules["local"]


def resnet_trunk(base=64, layers=(3, 4, 6, 3)):
    """torchvision's ResNet conv1 … layer4 (Bottleneck, v1.5) at base width `base` (64 = ResNet-50;
    stage i has base·2^i planes, 4× as many outputs: out channels 32·base), with torchvision's
    parameter names. Mirrors native/model/trunk.cpp make_resnet_trunk."""
    from torchvision.models.resnet import Bottleneck
    m = nn.Module()
    m.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
    m.bn1 = nn.BatchNorm2d(base)
    m.relu = nn.ReLU(inplace=True)
    m.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = base
    for i, n in enumerate(layers):
        planes, stride = base << i, (1 if i == 0 else 2)
        blocks = []
        for j in range(n):
            s = stride if j == 0 else 1
            ds = None
            if s != 1 or cin != planes * 4:
                ds = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, s, bias=False), nn.BatchNorm2d(planes * 4))
            blocks.append(Bottleneck(cin, planes, s, ds))
            cin = planes * 4
        setattr(m, f"layer{i + 1}", nn.Sequential(*blocks))

    def forward(x):
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))
    m.forward = forward
    return m


def attach_trunk(model, trunk):
    """Makes `trunk` the local stream's img_model (trained with the local stream)."""
    model.l.img_model = trunk
    return model


def dims_from_state_dict(sd):
    """Reads Dims from §9 names (shapes in PyTorch layouts)."""
    D, Dc = sd["global.img_fc.0.weight"].shape
    C = sd["local.img_fc.weight"].shape[1]
    V, E = sd["local.txt_model.embedding_layer.weight"].shape
    return Dims(Dc=int(Dc), D=int(D), C=int(C), E=int(E), V=int(V))


# ---- losses (§5) ----

def soft_labels(t, labels, alpha, tau, detach):
    P = (labels[:, None] == labels[None, :]).to(t.dtype)
    Y = P / P.sum(dim=1, keepdim=True)
    sim = torch.softmax(t @ t.t() / tau, dim=1)
    if detach:
        sim = sim.detach()
    return alpha * sim + (1 - alpha) * Y


def contrastive_loss(q, t, Q, tau):
    Z = q @ t.t() / tau
    return -(Q * torch.log_softmax(Z, dim=1)).sum(dim=1).mean()


def mutual_loss(q, t, q2, t2, scale):
    """(1/B) Σ_i KL(softmax(X2)_i ‖ softmax(X1)_i); X2 from the other stream (no gradient)."""
    logp1 = torch.log_softmax(scale * (q @ t.t()), dim=1)
    logp2 = torch.log_softmax(scale * (q2 @ t2.t()), dim=1).detach()
    return (logp2.exp() * (logp2 - logp1)).sum(dim=1).mean()


def stream_losses(q, t, labels, other_q, other_t, opts):
    alpha = 0.0 if opts.no_ssg else opts.alpha
    Q = soft_labels(t, labels, alpha, opts.tau, opts.detach_soft_labels)
    l_con = contrastive_loss(q, t, Q, opts.tau)
    if opts.no_mutual:
        l_mut = torch.zeros((), dtype=q.dtype, device=q.device)
    else:
        l_mut = mutual_loss(q, t, other_q.detach(), other_t.detach(), opts.mutual_scale)
    return l_con, l_mut


# ---- training iteration (§6) ----

def make_optimizers(model, foreach=None):
    """One torch.optim.Adam per stream (§6): L2 weight decay added to the gradient."""
    o = model.opts
    mk = lambda m: torch.optim.Adam(m.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay,
                                    foreach=foreach)
    return {"global": mk(model.g), "local": mk(model.l)}


def train_iteration(model, batch, optimizers, trace=False, scalers=None, amp=False, amp_dtype=torch.float16):
    """One iteration (4 steps). batch: dict with the §13 input names. Returns the §13 trace dict
    (query/target/weight, losses, grads before Adam) when trace=True, else the two losses.
    amp: forwards and losses under torch.autocast(amp_dtype), backward outside (CUDA fp16 with
    scalers; CPU bf16 needs none)."""
    o = model.opts
    model.train()
    G, Lo = model.g, model.l
    b = batch
    lab = b["labels"]
    out = {}
    dev = b["global.e_img"].device.type
    ac = (lambda: torch.autocast(dev, dtype=amp_dtype)) if amp else (lambda: _Null())

    def step(name, stream, fwd, other):
        opt = optimizers[name]
        opt.zero_grad(set_to_none=True)
        with ac():
            q, t, w = fwd()
            l_con, l_mut = stream_losses(q.float(), t.float(), lab, other[0].float(), other[1].float(), o)
            loss = l_con + l_mut
        if scalers is not None:
            scalers[name].scale(loss).backward()
        else:
            loss.backward()
        if trace:
            out[f"{name}.query"] = q.detach().clone()
            out[f"{name}.target"] = t.detach().clone()
            out[f"{name}.weight"] = w.detach().clone()
            out[f"loss.{name}.contrastive"] = l_con.detach().reshape(1).clone()
            out[f"loss.{name}.mutual"] = l_mut.detach().reshape(1).clone()
            for pn, p in stream.named_parameters():
                if p.grad is not None:
                    out[f"grad.{name}.{pn}"] = p.grad.detach().clone()
        if scalers is not None:
            scalers[name].step(opt)
            scalers[name].update()
        else:
            opt.step()
        return loss.detach()

    trunk = getattr(Lo, "img_model", None)
    if trunk is not None and "local.images" in b:
        # the trunk runs inside the local stream: query images first, then target images
        def lo(x, tok, lens, xt):
            f = trunk(x)
            return Lo(f, tok, lens, trunk(xt))
        x_ref, x_tgt = b["local.images"], b["local.images_target"]
    else:
        lo = Lo
        x_ref, x_tgt = b["local.fmap"], b["local.fmap_target"]
    # 1. local forward without gradient (train mode: BN running stats update)
    with torch.no_grad(), ac():
        ref_t = x_ref if o.mutual_target_reference else x_tgt
        qL, tL, _ = lo(x_ref, b["local.tokens"], b["local.lengths"], ref_t)
    # 2. global step
    lg = step("global", G, lambda: G(b["global.e_img"], b["global.e_txt"], b["global.e_target"]), (qL, tL))
    # 3. global forward without gradient, after its update
    with torch.no_grad(), ac():
        ref_e = b["global.e_img"] if o.mutual_target_reference else b["global.e_target"]
        qG, tG, _ = G(b["global.e_img"], b["global.e_txt"], ref_e)
    # 4. local step
    ll = step("local", Lo, lambda: lo(x_ref, b["local.tokens"], b["local.lengths"], x_tgt), (qG, tG))
    if trace:
        for k, v in model.state_dict().items():
            out[f"param.{k}"] = v.detach().clone()
        return out
    return lg, ll


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

"""PyTorch reference of CLIP (/work/shared/design/CLIP-SPEC.md "Architecture", "Output"),
written from the spec (not copied from OpenAI's, open_clip's or Hugging Face's code).

Works on a *canonical* state dict (OpenAI / open_clip names, any float dtype); `canonical_from_hf`
builds one from Hugging Face CLIPModel names with differentiable ops (stacking q/k/v, transposing
the projections), so autograd gives gradients in the file's own naming.
Image towers: the ViT and the ModifiedResNet (spec paragraph "ModifiedResNet"; BatchNorm in eval
mode, running statistics, eps 1e-5).
Run with Debian's /usr/bin/python3 (PyTorch 1.13).
"""
import math
import re

import torch
import torch.nn.functional as F

LN_EPS = 1e-5


def count_layers(sd, prefix):
    n = 0
    for k in sd:
        m = re.match(re.escape(prefix) + r"(\d+)\.", k)
        if m:
            n = max(n, int(m.group(1)) + 1)
    return n


def arch_from(sd):
    """Every hyper-parameter from the shapes (spec "Architecture")."""
    if "visual.attnpool.positional_embedding" in sd:
        return resnet_arch_from(sd)
    w, _, p, _ = sd["visual.conv1.weight"].shape
    g = int(round(math.sqrt(sd["visual.positional_embedding"].shape[0] - 1)))
    tw = sd["token_embedding.weight"].shape[1]
    return dict(width=w, patch=p, grid=g, resolution=p * g, layers=count_layers(sd, "visual.transformer.resblocks."), heads=w // 64,
                embed=sd["visual.proj"].shape[1], text_width=tw, text_layers=count_layers(sd, "transformer.resblocks."), text_heads=tw // 64,
                ctx=sd["positional_embedding"].shape[0], vocab=sd["token_embedding.weight"].shape[0])


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + LN_EPS) * w + b


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))


def attention(x, in_w, in_b, out_w, out_b, heads, causal):
    """x [N, T, w]; q, k, v stacked in in_proj in that order; scaled dot product 1/sqrt(d)."""
    N, T, w = x.shape
    d = w // heads
    qkv = x @ in_w.t() + in_b
    q, k, v = qkv[..., :w], qkv[..., w:2 * w], qkv[..., 2 * w:]
    split = lambda t: t.reshape(N, T, heads, d).transpose(1, 2)  # noqa: E731  [N, H, T, d]
    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(-1, -2) / math.sqrt(d)
    if causal:  # a token attends to itself and earlier tokens
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    a = torch.softmax(s, dim=-1)
    ctx = (a @ v).transpose(1, 2).reshape(N, T, w)
    return ctx @ out_w.t() + out_b


def resblocks(sd, prefix, x, layers, heads, causal, act):
    """x = x + attn(ln_1(x)); x = x + c_proj(act(c_fc(ln_2(x))))"""
    for i in range(layers):
        p = f"{prefix}{i}."
        h = layer_norm(x, sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        x = x + attention(h, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"], sd[p + "attn.out_proj.weight"],
                          sd[p + "attn.out_proj.bias"], heads, causal)
        h = layer_norm(x, sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = act(h @ sd[p + "mlp.c_fc.weight"].t() + sd[p + "mlp.c_fc.bias"])
        x = x + h @ sd[p + "mlp.c_proj.weight"].t() + sd[p + "mlp.c_proj.bias"]
    return x


def encode_image(sd, a, pixels, act):
    """conv1 (kernel = stride = patch, no bias) → class token → + pos → ln_pre → resblocks →
    ln_post of the class token → @ proj."""
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=a["patch"])  # [N, w, g, g]
    N = x.shape[0]
    x = x.flatten(2).transpose(1, 2)  # [N, g², w]
    cls = sd["visual.class_embedding"].reshape(1, 1, -1).expand(N, 1, -1)
    x = torch.cat([cls, x], 1) + sd["visual.positional_embedding"]
    x = layer_norm(x, sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    x = resblocks(sd, "visual.transformer.resblocks.", x, a["layers"], a["heads"], False, act)
    x = layer_norm(x[:, 0], sd["visual.ln_post.weight"], sd["visual.ln_post.bias"])
    return x @ sd["visual.proj"]


# ---- ModifiedResNet (spec "ModifiedResNet") -------------------------------------------------
BN_EPS = 1e-5


def resnet_arch_from(sd):
    """w = visual.layer1.0.conv1 width, heads = 32·w/64, resolution = 32·√(rows − 1), blocks
    per stage = count of visual.layerK.N."""
    w = sd["visual.layer1.0.conv1.weight"].shape[0]
    g = int(round(math.sqrt(sd["visual.attnpool.positional_embedding"].shape[0] - 1)))
    tw = sd["token_embedding.weight"].shape[1]
    return dict(image="resnet", rn_width=w, rn_layers=[count_layers(sd, f"visual.layer{k}.") for k in (1, 2, 3, 4)], heads=w * 32 // 64,
                grid=g, resolution=32 * g, embed=sd["visual.attnpool.c_proj.weight"].shape[0], text_width=tw,
                text_layers=count_layers(sd, "transformer.resblocks."), text_heads=tw // 64, ctx=sd["positional_embedding"].shape[0],
                vocab=sd["token_embedding.weight"].shape[0])


BN_MOMENTUM = 0.1
# BatchNorm mode of the ResNet functions below: None = eval (running statistics); a dict = train
# mode (batch statistics, biased variance), receiving the updated running statistics by name.
_bn_train = None


def batch_norm_eval(x, sd, p):
    """BatchNorm2d: eval mode with the running statistics, or train mode (see _bn_train)."""
    sh = (1, -1, 1, 1)
    if _bn_train is None:
        mean, var = sd[p + "running_mean"], sd[p + "running_var"]
    else:
        mean = x.mean((0, 2, 3))
        var = ((x - mean.reshape(sh)) ** 2).mean((0, 2, 3))
        M = x.numel() // x.shape[1]
        _bn_train[p + "running_mean"] = (1 - BN_MOMENTUM) * sd[p + "running_mean"] + BN_MOMENTUM * mean.detach()
        _bn_train[p + "running_var"] = (1 - BN_MOMENTUM) * sd[p + "running_var"] + BN_MOMENTUM * var.detach() * M / (M - 1)
    return (x - mean.reshape(sh)) / torch.sqrt(var.reshape(sh) + BN_EPS) * sd[p + "weight"].reshape(sh) + sd[p + "bias"].reshape(sh)


def set_bn_train(stats):
    """stats: a dict (train-mode BN from now on, updated running statistics land there) or None (eval)."""
    global _bn_train
    _bn_train = stats


def _relu(x, taps):
    if taps is not None:
        taps.append(x.detach())
    return torch.relu(x)


def bottleneck(sd, p, x, stride, taps):
    """conv1 1×1 → BN → ReLU → conv2 3×3 pad 1 → BN → ReLU → AvgPool(stride) → conv3 1×1 → BN;
    identity: AvgPool(stride) → downsample.0 (1×1) → downsample.1 (BN) when present."""
    h = _relu(batch_norm_eval(F.conv2d(x, sd[p + "conv1.weight"]), sd, p + "bn1."), taps)
    h = _relu(batch_norm_eval(F.conv2d(h, sd[p + "conv2.weight"], padding=1), sd, p + "bn2."), taps)
    if stride > 1:
        h = F.avg_pool2d(h, stride)
    h = batch_norm_eval(F.conv2d(h, sd[p + "conv3.weight"]), sd, p + "bn3.")
    idn = x
    if p + "downsample.0.weight" in sd:
        if stride > 1:
            idn = F.avg_pool2d(idn, stride)
        idn = batch_norm_eval(F.conv2d(idn, sd[p + "downsample.0.weight"]), sd, p + "downsample.1.")
    return _relu(h + idn, taps)


def attention_pool(sd, x, heads):
    """x [N, C, H, W] → tokens [HW, N, C] with the mean prepended, + positional embedding; the
    mean token is the only query; separate q/k/v projections, c_proj."""
    N, C = x.shape[:2]
    t = x.flatten(2).permute(2, 0, 1)  # [HW, N, C]
    t = torch.cat([t.mean(0, keepdim=True), t], 0) + sd["visual.attnpool.positional_embedding"][:, None, :]
    p = "visual.attnpool."
    q = t[:1] @ sd[p + "q_proj.weight"].t() + sd[p + "q_proj.bias"]  # [1, N, C]
    k = t @ sd[p + "k_proj.weight"].t() + sd[p + "k_proj.bias"]  # [T, N, C]
    v = t @ sd[p + "v_proj.weight"].t() + sd[p + "v_proj.bias"]
    d = C // heads
    split = lambda z: z.reshape(z.shape[0], N, heads, d).permute(1, 2, 0, 3)  # noqa: E731  [N, H, T, d]
    q, k, v = split(q), split(k), split(v)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # [N, H, 1, T]
    ctx = (a @ v).reshape(N, C)
    return ctx @ sd[p + "c_proj.weight"].t() + sd[p + "c_proj.bias"]


def encode_image_resnet(sd, a, pixels, taps=None):
    """Stem (three 3×3 conv–BN–ReLU, the first stride 2) → AvgPool 2 → layer1..4 (stride 1, 2, 2,
    2 in each stage's first block) → AttentionPool2d. taps: a list receiving every ReLU input."""
    x = pixels
    for i, stride in ((1, 2), (2, 1), (3, 1)):
        x = _relu(batch_norm_eval(F.conv2d(x, sd[f"visual.conv{i}.weight"], stride=stride, padding=1), sd, f"visual.bn{i}."), taps)
    x = F.avg_pool2d(x, 2)
    for s, n in enumerate(a["rn_layers"]):
        for b in range(n):
            x = bottleneck(sd, f"visual.layer{s + 1}.{b}.", x, 2 if (s > 0 and b == 0) else 1, taps)
    return attention_pool(sd, x, a["heads"])


def encode_text(sd, a, ids, act):
    """token_embedding + positional_embedding → causal resblocks → ln_final → state at EOT (the
    first maximum of the ids) → @ text_projection."""
    x = sd["token_embedding.weight"][ids.long()] + sd["positional_embedding"]
    x = resblocks(sd, "transformer.resblocks.", x, a["text_layers"], a["text_heads"], True, act)
    x = layer_norm(x, sd["ln_final.weight"], sd["ln_final.bias"])
    eot = torch.tensor([int(max(range(row.shape[0]), key=lambda t: (int(row[t]), -t))) for row in ids])  # first maximum
    return x[torch.arange(x.shape[0]), eot] @ sd["text_projection"]


def clip_loss(img, txt, logit_scale):
    """logits = exp(logit_scale)·norm(img)·norm(txt)ᵀ; loss = ½(CE rows + CE cols), labels 0..N−1."""
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    logits = logit_scale.reshape(()).exp() * img @ txt.t()
    labels = torch.arange(logits.shape[0])
    return logits, 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def forward(sd, pixels, ids, act="quick_gelu"):
    a = arch_from(sd)
    fn = quick_gelu if act == "quick_gelu" else gelu
    img = encode_image_resnet(sd, a, pixels) if a.get("image") == "resnet" else encode_image(sd, a, pixels, fn)
    txt = encode_text(sd, a, ids, fn)
    logits, loss = clip_loss(img, txt, sd["logit_scale"])
    return img, txt, logits, loss


def canonical_from_hf(hf):
    """Canonical (OpenAI) names from Hugging Face CLIPModel names; differentiable ops only."""
    sd = {}
    sd["visual.class_embedding"] = hf["vision_model.embeddings.class_embedding"]
    sd["visual.positional_embedding"] = hf["vision_model.embeddings.position_embedding.weight"]
    sd["visual.conv1.weight"] = hf["vision_model.embeddings.patch_embedding.weight"]
    sd["visual.proj"] = hf["visual_projection.weight"].t()  # HF keeps [E, w]
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for s in ("weight", "bias"):
            sd[f"visual.{a}.{s}"] = hf[f"vision_model.{b}.{s}"]
    sd["token_embedding.weight"] = hf["text_model.embeddings.token_embedding.weight"]
    sd["positional_embedding"] = hf["text_model.embeddings.position_embedding.weight"]
    for s in ("weight", "bias"):
        sd[f"ln_final.{s}"] = hf[f"text_model.final_layer_norm.{s}"]
    sd["text_projection"] = hf["text_projection.weight"].t()
    sd["logit_scale"] = hf["logit_scale"]
    for src, dst in (("vision_model.encoder.layers.", "visual.transformer.resblocks."), ("text_model.encoder.layers.", "transformer.resblocks.")):
        for i in range(count_layers(hf, src)):
            p, q = f"{src}{i}.", f"{dst}{i}."
            at = p + "self_attn."
            for s in ("weight", "bias"):
                sd[f"{q}attn.in_proj_{s}"] = torch.cat([hf[f"{at}{x}_proj.{s}"] for x in "qkv"], 0)
                sd[f"{q}attn.out_proj.{s}"] = hf[f"{at}out_proj.{s}"]
                sd[f"{q}ln_1.{s}"] = hf[f"{p}layer_norm1.{s}"]
                sd[f"{q}ln_2.{s}"] = hf[f"{p}layer_norm2.{s}"]
                sd[f"{q}mlp.c_fc.{s}"] = hf[f"{p}mlp.fc1.{s}"]
                sd[f"{q}mlp.c_proj.{s}"] = hf[f"{p}mlp.fc2.{s}"]
    return sd


def is_hf(names):
    return "vision_model.embeddings.patch_embedding.weight" in names

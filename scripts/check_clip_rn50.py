"""Real-size ModifiedResNet parity (RN50 layout: stem width 64, blocks [3,4,6,3], 224, 32 heads,
E 1024; a 1-layer text tower): random weights and 2 inputs, the float64 reference
(scripts/reference/clip_ref.py) embeddings, loss and every gradient, for
scripts/check_clip_rn50.mjs. Usage: /usr/bin/python3 scripts/check_clip_rn50.py DIR
(writes DIR/open_clip_model.safetensors, ~150 MB, and DIR/ref.safetensors)."""
import math
import os
import sys

import torch
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'scripts', 'reference')); sys.path.insert(0, os.path.join(ROOT, 'scripts', 'fixtures'))
D = sys.argv[1]
import clip_ref as R
from common import save_safetensors
torch.manual_seed(0)
w, layers, res, E, tw, ctx, vocab = 64, [3, 4, 6, 3], 224, 1024, 64, 8, 60
sd = {}
def unit(conv, bn, ci, co, k):
    sd[conv] = torch.randn(co, ci, k, k) * math.sqrt(2.0 / (ci * k * k))
    sd[bn + 'weight'] = 1 + 0.1 * torch.randn(co); sd[bn + 'bias'] = 0.1 * torch.randn(co)
    sd[bn + 'running_mean'] = 0.1 * torch.randn(co); sd[bn + 'running_var'] = 1 + 0.2 * torch.rand(co)
    sd[bn + 'num_batches_tracked'] = torch.tensor(0, dtype=torch.int64)
unit('visual.conv1.weight', 'visual.bn1.', 3, w // 2, 3); unit('visual.conv2.weight', 'visual.bn2.', w // 2, w // 2, 3); unit('visual.conv3.weight', 'visual.bn3.', w // 2, w, 3)
cin = w
for s, n in enumerate(layers):
    pl = w << s
    for b in range(n):
        p = f'visual.layer{s+1}.{b}.'
        unit(p + 'conv1.weight', p + 'bn1.', cin, pl, 1); unit(p + 'conv2.weight', p + 'bn2.', pl, pl, 3); unit(p + 'conv3.weight', p + 'bn3.', pl, 4 * pl, 1)
        if b == 0: unit(p + 'downsample.0.weight', p + 'downsample.1.', cin, 4 * pl, 1)
        cin = 4 * pl
C = cin; g = res // 32
sd['visual.attnpool.positional_embedding'] = torch.randn(g * g + 1, C) / C ** 0.5
for x in 'qkv':
    sd[f'visual.attnpool.{x}_proj.weight'] = torch.randn(C, C) / C ** 0.5; sd[f'visual.attnpool.{x}_proj.bias'] = 0.1 * torch.randn(C)
sd['visual.attnpool.c_proj.weight'] = torch.randn(E, C) / C ** 0.5; sd['visual.attnpool.c_proj.bias'] = 0.1 * torch.randn(E)
sd['token_embedding.weight'] = 0.5 * torch.randn(vocab, tw); sd['positional_embedding'] = 0.3 * torch.randn(ctx, tw)
q = 'transformer.resblocks.0.'
for n, sh in [('ln_1.weight', [tw]), ('ln_1.bias', [tw]), ('attn.in_proj_weight', [3 * tw, tw]), ('attn.in_proj_bias', [3 * tw]), ('attn.out_proj.weight', [tw, tw]), ('attn.out_proj.bias', [tw]), ('ln_2.weight', [tw]), ('ln_2.bias', [tw]), ('mlp.c_fc.weight', [4 * tw, tw]), ('mlp.c_fc.bias', [4 * tw]), ('mlp.c_proj.weight', [tw, 4 * tw]), ('mlp.c_proj.bias', [tw])]:
    sd[q + n] = (1 if 'ln' in n and 'weight' in n else 0) + 0.1 * torch.randn(*sh)
sd['ln_final.weight'] = torch.ones(tw); sd['ln_final.bias'] = torch.zeros(tw); sd['text_projection'] = torch.randn(tw, E) / tw ** 0.5
sd['logit_scale'] = torch.tensor(math.log(1 / 0.07))
N = 2
pixels = torch.randn(N, 3, res, res); ids = torch.tensor([[58, 5, 7, 59, 0, 0, 0, 0], [58, 9, 59, 0, 0, 0, 0, 0]], dtype=torch.int32)
save_safetensors(os.path.join(D, 'open_clip_model.safetensors'), sd)
leaves = {k: v.double().requires_grad_() for k, v in sd.items() if v.is_floating_point() and 'running' not in k}
full = dict(leaves); full.update({k: v.double() for k, v in sd.items() if 'running' in k})
img, txt, logits, loss = R.forward(full, pixels.double(), ids)
gr = torch.autograd.grad(loss, [leaves[k] for k in leaves])
out = {'pixel_values': pixels, 'input_ids': ids, 'image_embeds': img.detach().float(), 'loss': loss.detach().float().reshape(1)}
for k, gg in zip(leaves, gr): out['grad.' + k] = gg.float()
save_safetensors(os.path.join(D, 'ref.safetensors'), out)
print('params', sum(v.numel() for k, v in sd.items() if k.startswith('visual.') and v.is_floating_point()), 'loss', float(loss))

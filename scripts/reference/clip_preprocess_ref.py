#!/usr/bin/python3
"""CLIP's preprocessing with torchvision + PIL (CLIP-SPEC.md "Preprocessing"): Resize(R, bicubic) on
the PIL image, CenterCrop(R), convert('RGB'), ToTensor, Normalize(CLIP mean, std).

    /usr/bin/python3 scripts/reference/clip_preprocess_ref.py R OUT_PREFIX IMAGE...

Writes OUT_PREFIX.u8 (the R×R×3 uint8 crops before ToTensor, image after image) and
OUT_PREFIX.f32 (the float32 [N,3,R,R] tensor, little-endian), and prints versions as JSON.
"""
import json, sys

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def main():
    res, prefix, paths = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    geometry = T.Compose([T.Resize(res, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(res)])
    tail = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    crops, tensors = [], []
    for p in paths:
        img = geometry(Image.open(p)).convert('RGB')
        crops.append(np.asarray(img, dtype=np.uint8))
        tensors.append(tail(img))
    np.stack(crops).tofile(prefix + '.u8')
    torch.stack(tensors).numpy().astype('<f4').tofile(prefix + '.f32')
    print(json.dumps({'pil': PIL.__version__, 'torchvision': torchvision.__version__, 'n': len(paths)}))


if __name__ == '__main__':
    main()

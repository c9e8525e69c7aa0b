#!/usr/bin/env python3
"""The speed table of bench/gpu/run.sh (issue #15 item 5): the engine's paper-preset training
iteration (dwc_native_tests --time, case paper_step: B 32, features given, batch on the device) at
fp32, bf16 and fp16 GEMMs, next to PyTorch's approximate paper step with the same inputs given
(torch_anchors.py: eager fp32 and bf16 autocast), and the issue's two ratios: engine / PyTorch
fp32 (goal <= 0.5) and engine / PyTorch bf16 autocast (goal <= 1). The PyTorch step is lighter than
the engine's (no Inception editors, no global-stream MLPs), so the ratios are conservative.
usage: speed_table.py TIMINGS_LOG TORCH_JSON"""
import json
import re
import sys

timings, torch_json = sys.argv[1], sys.argv[2]
engine = {}
try:
    for line in open(timings):
        m = re.match(r'^paper step \(features given, B32\) (fp32|bf16|fp16)\s+([0-9.]+)', line)
        if m:
            engine.setdefault(m.group(1), float(m.group(2)))  # the first table (float32 GEMM math mode)
except OSError:
    pass
torch = {}
try:
    for r in json.load(open(torch_json)):
        if r['name'].startswith('approx. paper step, features given'):
            torch[r['dtype']] = r['ms']
except (OSError, ValueError, KeyError):
    pass

print('speed table: one paper-preset training iteration, B 32, features given (median ms, CUDA events)')
if not engine:
    print('  engine: no paper_step rows in the timings (no GPU, or the case failed: see timings.log)')
if not torch:
    print('  PyTorch: no "features given" rows (see torch.log)')
for k in ('fp32', 'bf16', 'fp16'):
    if k in engine:
        print(f'  engine {k:<9} {engine[k]:10.3f} ms')
for k in ('fp32', 'bf16-amp'):
    if k in torch:
        print(f'  PyTorch {k:<8} {torch[k]:10.3f} ms')
if engine and 'fp32' in torch and 'bf16-amp' in torch:
    best = min(engine, key=engine.get)
    for k, v in sorted(engine.items(), key=lambda kv: kv[1]):
        print(f'  engine {k} / PyTorch fp32 = {v / torch["fp32"]:.3f}   engine {k} / PyTorch bf16 autocast = {v / torch["bf16-amp"]:.3f}')
    r1, r2 = engine[best] / torch['fp32'], engine[best] / torch['bf16-amp']
    print(f'RATIOS (best engine precision: {best}): {r1:.3f} x PyTorch eager fp32 (goal <= 0.5: {"met" if r1 <= 0.5 else "NOT met"}), '
          f'{r2:.3f} x PyTorch bf16 autocast (goal <= 1: {"met" if r2 <= 1 else "NOT met"})')
else:
    print('RATIOS: not available (both the engine rows and the two PyTorch rows are needed)')

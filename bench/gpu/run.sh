#!/usr/bin/env bash
# One device call on a bare H100/H200 machine (CUDA toolkit, CMake, ninja, g++, PyTorch as
# python3; no Node, no registry): configure, build the C++ test/bench executable, run every CUDA
# kernel against its CPU twin, the §13 trace on both backends, the timing table (CUDA events) with
# the cuBLAS GEMM ceiling and the engine's paper step at fp32 / bf16 / fp16, the PyTorch anchors
# (eager fp32 and bf16 autocast), and the speed table with both ratios. Everything lands in $OUT
# (<= 8 files).
#   device call:  bash bench/gpu/run.sh        with carry ["bench/gpu/deps"] (from prepare.sh)
#   here (dry run, no GPU): OUT=/tmp/dwc-gpu bash bench/gpu/run.sh
# Without a GPU it says DRY RUN and still configures, builds and runs the CPU half.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dwc-gpu-out}
mkdir -p "$OUT"
T0=$(date +%s)
log() { echo "[run.sh +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
export PATH="/usr/local/cuda/bin:$PATH"
PY=${PYTHON:-python3}
JOBS=$(nproc 2>/dev/null || echo 2)
[[ $JOBS -gt 16 ]] && JOBS=16

GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPU=1; fi
{
  echo "date: $(date -u)"; uname -a
  if [[ $GPU == 1 ]]; then nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; else echo "no GPU (DRY RUN)"; fi
  command -v nvcc >/dev/null && nvcc --version | tail -2
  cmake --version | head -1; g++ --version | head -1; command -v ninja >/dev/null && echo "ninja $(ninja --version)"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} > "$OUT/env.txt" 2>&1
log "GPU=$GPU ($(head -3 "$OUT/env.txt" | tail -1))"

# cuBLAS: the nvidia-cublas Python package (GPU.md), else the toolkit's (the loader also searches).
if [[ -z "${DWC_CUBLAS_PATH:-}" ]]; then
  DWC_CUBLAS_PATH=$("$PY" - <<'PY' 2>/dev/null
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + [p for p in sys.path if p])
hits = []
for r in roots:
    hits += glob.glob(os.path.join(r, 'nvidia', '**', 'libcublas.so.*'), recursive=True)
hits = [h for h in hits if 'Lt' not in os.path.basename(h)]
print(os.path.dirname(sorted(hits)[-1]) if hits else '')
PY
)
  [[ -n "$DWC_CUBLAS_PATH" ]] && export DWC_CUBLAS_PATH
fi
log "DWC_CUBLAS_PATH=${DWC_CUBLAS_PATH:-<unset: toolkit lib64 / loader path>}"

# The CPU dependency: OpenBLAS unpacked by prepare.sh (else whatever CBLAS the system has).
CM=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DDWC_BUILD_ADDON=OFF)
command -v ninja >/dev/null || CM=(-DCMAKE_BUILD_TYPE=Release -DDWC_BUILD_ADDON=OFF)
DEPS="$PWD/bench/gpu/deps/root"
if [[ -d "$DEPS" ]]; then
  LIBD="$DEPS/usr/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$LIBD/openblas-pthread:$LIBD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  CM+=(-DCMAKE_LIBRARY_PATH="$LIBD/openblas-pthread" -DCMAKE_INCLUDE_PATH="$DEPS/usr/include/x86_64-linux-gnu/openblas-pthread"
       -DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$LIBD")
  log "OpenBLAS from bench/gpu/deps"
fi
BUILD=bench/gpu/build
log "configure"
cmake -S . -B "$BUILD" "${CM[@]}" > "$OUT/build.log" 2>&1 || { log "FAIL: configure (see build.log)"; tail -30 "$OUT/build.log"; exit 1; }
grep -E "dwc-native:" "$OUT/build.log" | tee -a "$OUT/summary.txt"
log "build (-j$JOBS)"
cmake --build "$BUILD" -j "$JOBS" --target dwc_native_tests >> "$OUT/build.log" 2>&1 || { log "FAIL: build (see build.log)"; tail -40 "$OUT/build.log"; exit 1; }
log "built"
EXE="$BUILD/dwc_native_tests"
SEED=$(date +%s)
REQ=(); [[ $GPU == 1 ]] && REQ=(--require-cuda)
log "tests: every kernel, CUDA vs CPU twin (seed $SEED)"
timeout 300 "$EXE" --backend all "${REQ[@]}" --seed "$SEED" --json "$OUT/checks.json" > "$OUT/tests.log" 2>&1
RC=$?
grep -E "^(ok|FAIL|ERROR|CPU half|CUDA half|PASSED|FAILED|CUDA:)|^   FAIL" "$OUT/tests.log" | head -90 | tee -a "$OUT/summary.txt"
log "tests exit code $RC"
# The DWC-SPEC §13 trace (case trace13): CPU half = the guarded CPU backend (device path) vs the CPU
# backend bit for bit; CUDA half = the GPU vs the CPU, tensor by tensor (docs/CUDA.md "The §13 trace")
log "trace comparison (§13, case trace13)"
"$PY" - "$OUT/checks.json" <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import json, sys
try:
    rows = [r for r in json.load(open(sys.argv[1])) if r['case'] == 'trace13']
except (OSError, ValueError) as e:
    rows = []
    print(f'  no checks.json ({e})')
if not rows:
    print('  trace13: no checks recorded (the case did not run)')
for b in sorted({r['backend'] for r in rows}):
    rs = [r for r in rows if r['backend'] == b]
    bad = [r for r in rs if not r['pass']]
    worst = sorted(rs, key=lambda r: -abs(r['rel']))[:3]
    what = 'guarded CPU backend vs CPU, bit for bit' if b == 'cpu' else 'GPU vs CPU'
    print(f'  trace13 on {b} ({what}): {len(rs) - len(bad)}/{len(rs)} checks passed; largest: ' +
          '; '.join(f"{r['check']} {r['rel']:.2e}" for r in worst))
    for r in bad[:12]:
        print(f"   FAIL {r['check']}: {r['rel']:.3g}")
PY
if [[ $GPU == 1 ]]; then
  log "timings (float32, then TF32 GEMMs)"
  { timeout 180 "$EXE" --backend cuda --time --seed "$SEED"; echo "---- TF32 ----"; timeout 120 "$EXE" --backend cuda --time --tf32 --filter gemm --seed "$SEED"; } > "$OUT/timings.log" 2>&1
  sed -n '/CUDA timings/,/^$/p' "$OUT/timings.log" | tee -a "$OUT/summary.txt"
  log "PyTorch anchors"
  PYTHONUNBUFFERED=1 timeout 240 "$PY" bench/gpu/torch_anchors.py --json "$OUT/torch.json" > "$OUT/torch.log" 2>&1 || log "torch_anchors.py failed (see torch.log)"
  tail -25 "$OUT/torch.log" | tee -a "$OUT/summary.txt"
else
  log "DRY RUN: no GPU, so no CUDA half, no timings; PyTorch anchors checked on the CPU at a tiny size"
  PYTHONUNBUFFERED=1 timeout 240 "$PY" bench/gpu/torch_anchors.py --dry-run --json "$OUT/torch.json" > "$OUT/torch.log" 2>&1 || log "torch_anchors.py --dry-run failed (see torch.log)"
  tail -12 "$OUT/torch.log" | tee -a "$OUT/summary.txt"
fi
# The speed table (issue #15 item 5): the engine's paper step at fp32 / bf16 / fp16 next to PyTorch
# eager fp32 and bf16 autocast, and both ratios (bench/gpu/speed_table.py)
log "speed table"
"$PY" bench/gpu/speed_table.py "$OUT/timings.log" "$OUT/torch.json" 2>&1 | tee -a "$OUT/summary.txt"
log "done in $(( $(date +%s) - T0 ))s; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $RC

#!/usr/bin/env bash
# Everything a short loan of a GPU machine is for, as one command (issue 13, and training for issues 9 and 10):
#   1. benchmarks/speed.py on CUDA: float32 and bfloat16 at 1024², 4096² and a full 7000×8000×6 scene (2048-px
#      tiles), biharmonic at 1024² beside them, and the full scene again with the GPU capped at 1 % of its memory
#      (the out-of-memory retry on smaller tiles);
#   2. benchmarks/end_to_end.py on CUDA: what a user waits for, process start to file written;
#   3. the test suite (its CUDA tests run where torch sees a GPU), beside
#   4. a time-boxed training run from the shipped weights, when a training cache is at .gpu/cache.npz(.xz).
# Results go to $OUT (default benchmarks/gpu/), in 8 files at most. BUDGET: seconds for all of it (default 540).
# Run from the repository root: bash benchmarks/gpu_session.sh (DEVICE=cpu SIZES=512 CASES=1024 BUDGET=200: a dry run)
set -u
OUT=${OUT:-benchmarks/gpu}
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-1024,4096,full}
CASES=${CASES:-1024,full}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
log() { echo "[$SECONDS s] $*" | tee -a "$OUT/session.log"; }
bench_log=$OUT/benchmarks.log

log "start"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, os; print('torch', torch.__version__, torch.cuda.get_device_name(0), os.cpu_count(), 'cores')"
} >> "$OUT/session.log" 2>&1
if [ -f .gpu/cache.npz.xz ] && [ ! -f .gpu/cache.npz ]; then xz -dk -T0 .gpu/cache.npz.xz & fi
# the full-scene input of end_to_end.py takes a while to write: made beside the in-memory benchmark
python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; from streaming import make_input; \
[make_input(s, Path('/tmp/e2e')) for s in (1024, (7000, 8000)) if '$CASES' != '1024']" >> "$OUT/session.log" 2>&1 &
inputs=$!

log "speed.py"
timeout 200 python3 benchmarks/speed.py --device "$DEVICE" --sizes "$SIZES" --baselines biharmonic \
  --baselines-up-to 1024 $([ "$DEVICE" = cuda ] && echo --memory-fraction 0.01) --json "$OUT/speed_$DEVICE.json" \
  > "$bench_log" 2>&1
log "speed.py done ($?)"
wait $inputs
log "end_to_end.py"
timeout 150 python3 benchmarks/end_to_end.py --device "$DEVICE" --cases "$CASES" --repeats 1 --work /tmp/e2e \
  --json "$OUT/end_to_end_$DEVICE.json" >> "$bench_log" 2>&1
log "end_to_end.py done ($?)"
wait

left=$((BUDGET - SECONDS - 45))
log "pytest and training ($left s left)"
OMP_NUM_THREADS=4 timeout $((left > 60 ? left : 60)) python3 -m pytest -q -rfE -p no:cacheprovider tests \
  --ignore=tests/test_widget.py --ignore=tests/test_napari_workflow.py --ignore=tests/test_napari_scripts.py \
  > "$OUT/pytest.log" 2>&1 &
tests=$!
if [ -f .gpu/cache.npz ] && [ $left -gt 90 ]; then
  minutes=$(python3 -c "print(round(($left - 40) / 60, 2))")
  timeout $left python3 -m napari_convnp.cli train --data .gpu --cache .gpu/cache.npz --device "$DEVICE" --workers 12 \
    --batch 32 --lr 3e-4 --warmup 100 --log-every 250 --precision bfloat16 --minutes "$minutes" \
    --init napari_convnp/weights/convcnp.pt --out "$OUT/trained.pt" --last "$OUT/trained_last.pt" \
    > "$OUT/train.log" 2>&1
  log "training done ($?)"
fi
wait $tests
log "pytest done ($?)"

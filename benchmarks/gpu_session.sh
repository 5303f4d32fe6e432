#!/usr/bin/env bash
# Everything a short loan of a GPU machine is for, as one command (issue 13, and training for issues 9 and 10):
#   1. the CUDA tests (TESTS: pytest targets; the default, the suite without its napari tests, also runs the rest
#      on CUDA where the fill picks the GPU);
#   2. benchmarks/speed.py on CUDA (SIZES, default 1024,4096,full: float32 and bfloat16, 2048-px tiles, biharmonic
#      at 1024² beside them), and with MEMFRAC (default 0.01) the largest size again with the GPU capped at that
#      share of its memory (the out-of-memory retry on smaller tiles);
#   3. benchmarks/end_to_end.py on CUDA (CASES, default 1024,full): what a user waits for, process start to file
#      written; with PROFILE=1 the full-scene command once more under cProfile (profile.txt);
#   4. when a training cache is at .gpu/cache.npz(.xz), a time-boxed training run from the shipped weights
#      (benchmarks/gpu_training.sh), with whatever is left of BUDGET (seconds for all of it, default 540).
# Results go to $OUT (default benchmarks/gpu/), in 8 files at most.
# Run from the repository root: bash benchmarks/gpu_session.sh (DEVICE=cpu SIZES=512 CASES=1024 BUDGET=200: a dry run)
set -u
OUT=${OUT:-benchmarks/gpu}
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-1024,4096,full}
CASES=${CASES:-1024,full}
MEMFRAC=${MEMFRAC-0.01}
TESTS=${TESTS:-tests --ignore=tests/test_widget.py --ignore=tests/test_napari_workflow.py --ignore=tests/test_napari_scripts.py}
PROFILE=${PROFILE:-0}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
log() { echo "[$SECONDS s] $*" | tee -a "$OUT/session.log"; }
bench_log=$OUT/benchmarks.log

log "start"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, os; print('torch', torch.__version__, torch.cuda.get_device_name(0), os.cpu_count(), 'cores')"
} >> "$OUT/session.log" 2>&1
if [ -f .gpu/cache.npz.xz ] && [ ! -f .gpu/cache.npz ]; then xz -dk -T0 .gpu/cache.npz.xz & fi
# end_to_end.py's inputs take a while to write: made beside the tests and the in-memory benchmark
python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; from streaming import make_input; \
[make_input(s, Path('/tmp/e2e')) for s in (1024, (7000, 8000))]" >> "$OUT/session.log" 2>&1 &
inputs=$!

log "pytest $TESTS"
# shellcheck disable=SC2086
OMP_NUM_THREADS=4 timeout 300 python3 -m pytest -q -rfE -p no:cacheprovider $TESTS > "$OUT/pytest.log" 2>&1
log "pytest done ($?)"
log "speed.py"
timeout 200 python3 benchmarks/speed.py --device "$DEVICE" --sizes "$SIZES" --baselines biharmonic \
  --baselines-up-to 1024 ${MEMFRAC:+--memory-fraction "$MEMFRAC"} --json "$OUT/speed_$DEVICE.json" > "$bench_log" 2>&1
log "speed.py done ($?)"
wait $inputs
log "end_to_end.py"
timeout 150 python3 benchmarks/end_to_end.py --device "$DEVICE" --cases "$CASES" --repeats 1 --work /tmp/e2e \
  --json "$OUT/end_to_end_$DEVICE.json" >> "$bench_log" 2>&1
log "end_to_end.py done ($?)"
if [ "$PROFILE" = 1 ]; then
  timeout 120 python3 -c "import cProfile, pstats, sys; from napari_convnp import cli; \
cProfile.run('cli.main(sys.argv[1:])', '/tmp/fill.prof')" fill /tmp/e2e/scene_7000x8000.tif \
    --mask /tmp/e2e/mask_7000x8000.tif --out /tmp/e2e/prof_out.tif --variance /tmp/e2e/prof_var.tif \
    --precision bfloat16 --device "$DEVICE" >> "$bench_log" 2>&1
  python3 -c "import pstats; pstats.Stats('/tmp/fill.prof').sort_stats('cumulative').print_stats(45); \
pstats.Stats('/tmp/fill.prof').sort_stats('tottime').print_stats(30)" > "$OUT/profile.txt" 2>&1
  log "profile done"
fi
wait

left=$((BUDGET - SECONDS - 45))
if [ -f .gpu/cache.npz ] && [ $left -gt 90 ]; then
  log "training ($left s left)"
  OUT=$OUT BUDGET=$((BUDGET - SECONDS)) DEVICE=$DEVICE BATCH=32 \
    RUNS="trained|--init napari_convnp/weights/convcnp.pt --lr 3e-4 --warmup 100" bash benchmarks/gpu_training.sh
  log "training done ($?)"
fi
log "end"

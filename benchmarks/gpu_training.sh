#!/usr/bin/env bash
# A GPU loan spent on training (issues 9 and 10), as one command: first (PROFILE=1) where the in-memory full-scene
# fill's time goes on that device (speed.py --profile, issue 13), then several training runs side by side on the
# same GPU, each with its share of the cores for its task sampler (one small run leaves a big GPU idle).
# RUNS: "name|train options;name|train options;…" — each writes $OUT/<name>.pt (best on validation) and
# <name>_last.pt. On 2026-11-26 from scratch reached the shipped model's scores in 6 minutes, so each run here asks
# one question of the architecture or the task mix (issue 10: "the design, not the steps, is the limit now"):
#   wide:   1.33x the widths (the convolutions cost ~1.8x on a CPU);
#   deep:   one more level (a wider view for little compute);
#   single: the shipped architecture on single-image tasks only (do the two-date tasks take its capacity?).
# Needs the training cache at .gpu/cache.npz(.xz). BUDGET: seconds for all of it (default 540). Results in $OUT.
# Run from the repository root: bash benchmarks/gpu_training.sh
#   (DEVICE=cpu BUDGET=200 PROFILE=0 BATCH=4 LOG_EVERY=5: a dry run)
set -u
OUT=${OUT:-benchmarks/gpu}
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-0}
BATCH=${BATCH:-64}
LOG_EVERY=${LOG_EVERY:-250}
RUNS=${RUNS:-"wide|--channels 16,32,64,96,128;deep|--channels 12,24,48,64,96,128;single|--reference-share 0,0"}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
log() { echo "[$SECONDS s] $*" | tee -a "$OUT/session.log"; }
log "start"
python3 -c "import torch, os; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0), os.cpu_count(), 'cores')" >> "$OUT/session.log" 2>&1
if [ -f .gpu/cache.npz.xz ] && [ ! -f .gpu/cache.npz ]; then xz -dk -T0 .gpu/cache.npz.xz & fi
if [ "$PROFILE" = 1 ]; then
  timeout 120 python3 benchmarks/speed.py --device "$DEVICE" --sizes full --precisions float32 --baselines "" \
    --profile "$OUT/profile_fill_$DEVICE.txt" --json "$OUT/speed_profile_$DEVICE.json" > "$OUT/speed.log" 2>&1
  log "profile done ($?)"
fi
wait
IFS=';' read -ra runs <<< "$RUNS"
workers=$(( ($(nproc) - 2) / ${#runs[@]} )); [ $workers -lt 1 ] && workers=1
left=$((BUDGET - SECONDS - 50))
minutes=$(python3 -c "print(round(max($left - 45, 30) / 60, 2))")
log "training: ${#runs[@]} runs of $minutes min, $workers sampler processes each"
for run in "${runs[@]}"; do
  name=${run%%|*}; options=${run#*|}
  # shellcheck disable=SC2086
  timeout $left python3 -m napari_convnp.cli train --data .gpu --cache .gpu/cache.npz --device "$DEVICE" \
    --workers $workers --batch "$BATCH" --log-every "$LOG_EVERY" --precision bfloat16 --minutes "$minutes" \
    --lr 1e-3 --warmup 300 $options --out "$OUT/$name.pt" --last "$OUT/${name}_last.pt" > "$OUT/train_$name.log" 2>&1 &
done
wait
# the run's files come back 8 at most: the logs in one
for f in "$OUT"/train_*.log; do echo "== $f"; cat "$f"; done > "$OUT/train_logs.txt" && rm -f "$OUT"/train_*.log
log "end"

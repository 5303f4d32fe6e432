#!/usr/bin/env bash
# A GPU loan spent on training (issues 9 and 10), as one command: first where the in-memory full-scene fill's time
# goes on that device (speed.py --profile, issue 13), then two runs side by side on the same GPU, each with half the
# cores for its task sampler (one run leaves a big GPU idle):
#   scratch:   the architecture as shipped, trained from random weights (the shipped model saw ~41k tasks; a GPU
#              run sees ten times that: is it data-starved?);
#   fine-tune: the shipped weights at a lower learning rate (3e-4 over 18k tasks did not move them).
# Needs the training cache at .gpu/cache.npz(.xz). BUDGET: seconds for all of it (default 540). Results in $OUT.
# Run from the repository root: bash benchmarks/gpu_training.sh (DEVICE=cpu BUDGET=200 PROFILE=0 BATCH=4 LOG_EVERY=5: a dry run)
set -u
OUT=${OUT:-benchmarks/gpu}
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-1}
BATCH=${BATCH:-64}
LOG_EVERY=${LOG_EVERY:-250}
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
workers=$(( ($(nproc) - 2) / 2 )); [ $workers -lt 1 ] && workers=1
left=$((BUDGET - SECONDS - 50))
minutes=$(python3 -c "print(round(max($left - 45, 30) / 60, 2))")
log "training: two runs of $minutes min, $workers sampler processes each"
common=(--data .gpu --cache .gpu/cache.npz --device "$DEVICE" --workers $workers --batch "$BATCH" --log-every "$LOG_EVERY"
        --precision bfloat16 --minutes "$minutes")
timeout $left python3 -m napari_convnp.cli train "${common[@]}" --lr 1e-3 --warmup 300 \
  --out "$OUT/scratch.pt" --last "$OUT/scratch_last.pt" > "$OUT/train_scratch.log" 2>&1 &
timeout $left python3 -m napari_convnp.cli train "${common[@]}" --lr 1e-4 --warmup 100 --seed 7 \
  --init napari_convnp/weights/convcnp.pt --out "$OUT/finetune.pt" --last "$OUT/finetune_last.pt" \
  > "$OUT/train_finetune.log" 2>&1 &
wait
log "end"

#!/usr/bin/env bash
# 3D ISFL on larger crops, three runs side by side on one borrowed GPU (the window-size question of
# docs/models/isfl_3d.md: the attention grid is fixed, so crops the size of inference windows should
# remove the window dependence). Used through the device tool:
#   bash scripts/gpu_train3d_crops.sh      (env: MINUTES per run, DEVICE, OUT for results)
# Needs .whl/ (monai, nibabel and PyWavelets wheels: `isfl` imports every subcommand) and .carry/data
# (`python scripts/pack_training_data.py ../shared/data .carry/data configs/volumes_train.csv
# configs/volumes_val.csv --no-harvard`: with the Harvard images the transfer exceeds 64 MiB). Measured on an H200 (2026-11-26): the three runs
# shared the GPU at 100 % and 114 GB, about 3 s per step each (96^3 x 2 and 128^3 x 1 crops, every
# intervention pass in one batch); 6 minutes gave 90-111 steps per run: plan on hours, not minutes.
# (That run validated whole volumes; run.val_window=auto, added since, selects on the default windows.)
MINUTES=${MINUTES:-6}
source "$(dirname "$0")/gpu_env.sh"
R=runs/gpu_crops
mkdir -p $R
COMMON=(--config configs/isfl_3d.yaml --data-root .carry/data --max-minutes "$MINUTES" -q --set run.device=$DEVICE
  --set run.threads=2 --set data.num_workers=3 --set optim.max_steps=100000 --set optim.ema_decay=0.99
  --set run.val_every=100 --set run.checkpoint_every=100 --set run.val_window=auto ${EXTRA:-})
FINETUNE=(--init src/napari_isfl/weights/isfl_3d.pt --set optim.lr=5e-4 --set optim.warmup_steps=50)
SCRATCH=(--set optim.lr=2e-3 --set optim.warmup_steps=100)
launch() {
  local name=$1; shift
  nohup $PY -m napari_isfl.cli train "$@" "${COMMON[@]}" --output $R/$name > $R/$name.log 2>&1 &
}
launch ft96 "${FINETUNE[@]}" --set 'data.crop_size=[96,96,96]' --set data.batch_size=2
launch ft128 "${FINETUNE[@]}" --set 'data.crop_size=[128,128,128]' --set data.batch_size=1
launch sc96 "${SCRATCH[@]}" --set 'data.crop_size=[96,96,96]' --set data.batch_size=2
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 30 > "$OUT/smi.csv" 2>&1 &
wait $(jobs -p | head -n 3)
for run in ft96 ft128 sc96; do echo "== $run"; tail -c 300 $R/$run.log; cat $R/$run/val.csv 2>/dev/null; done
tar czf "$OUT/runs_gpu_crops.tgz" --exclude=state.pt -C $R .

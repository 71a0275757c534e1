#!/usr/bin/env bash
# Train the shipped models and the ablations side by side on one borrowed GPU, then time inference.
# Used through the device tool (see docs/models/*.md for the run it produced):
#   bash scripts/gpu_train.sh            (env: MINUTES per run, DEVICE, OUT for results)
# Needs .whl/ (monai, nibabel wheels) and .carry/data (scripts/pack_training_data.py) beside the repo.
MINUTES=${MINUTES:-6}
source "$(dirname "$0")/gpu_env.sh"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)"; nproc; } > "$OUT/machine.txt" 2>&1
R=runs/gpu
mkdir -p $R
COMMON=(--data-root .carry/data --max-minutes "$MINUTES" -q --set run.device=$DEVICE --set run.threads=1 --set data.num_workers=1 ${EXTRA:-})
launch() {
  local name=$1; shift
  nohup $PY -m napari_isfl.cli train "$@" "${COMMON[@]}" --output $R/$name > $R/$name.log 2>&1 &
}
C2=configs/isfl_2d.yaml
C3=configs/isfl_3d.yaml
NOIV=(--set interventions.complementary=false --set interventions.shared=false --set interventions.dropout=false)
# 2D: default and ablations under the same budget
launch isfl2d                --config $C2
launch isfl2d_necessity_reward --config $C2 --set loss.necessity_mode=reward
launch isfl2d_no_interventions --config $C2 "${NOIV[@]}"
launch isfl2d_no_cfi         --config $C2 --set model.integrator=mean
launch isfl2d_gradient10     --config $C2 --set loss.gradient=10
launch isfl2d_gradient1      --config $C2 --set loss.gradient=1
launch isfl2d_per_modality   --config $C2 --set model.encoder=per_modality
# 3D: default (TCGA-FG-6692 held out), no-intervention twin, and the two other leave-one-case-out folds
launch isfl3d                --config $C3
launch isfl3d_no_interventions --config $C3 "${NOIV[@]}"
launch isfl3d_fold_du7294    --config configs/isfl_3d_fold_du7294.yaml
launch isfl3d_fold_gli00001  --config configs/isfl_3d_fold_gli00001.yaml
sleep 20; nvidia-smi > "$OUT/nvidia_smi_during.txt" 2>&1
wait
tail -n 3 $R/*.log > "$OUT/train_logs.txt" 2>&1
tar czf "$OUT/runs.tar.gz" --exclude=state.pt $R
[ -n "${SKIP_SPEED:-}" ] && { echo done; exit 0; }
$PY benchmarks/speed.py --device $DEVICE --threads 0 --repeat 1 --no-crop --model $R/isfl3d/model.pt \
  --sizes 128x128x128 240x240x155 256x256x256 512x512x512 > "$OUT/speed_3d_gpu.txt" 2>&1
$PY benchmarks/speed.py --device $DEVICE --threads 0 --repeat 3 --model $R/isfl2d/model.pt \
  --sizes 256x256 --modalities 2 3 > "$OUT/speed_2d_gpu.txt" 2>&1
echo done

#!/usr/bin/env bash
# Second GPU session of the shipped models: continue the default models and their no-intervention
# twins from the first session's weights (--init), four processes side by side, MINUTES each.
#   bash scripts/gpu_continue.sh   (needs .whl/, .carry/data and .carry/init/<run>.pt)
MINUTES=${MINUTES:-1.5}
source "$(dirname "$0")/gpu_env.sh"
R=runs/gpu2
mkdir -p $R
COMMON=(--data-root .carry/data --max-minutes "$MINUTES" -q --set run.device=$DEVICE --set run.threads=1
        --set data.num_workers=2 --set run.val_every=100 ${EXTRA:-})
NOIV=(--set interventions.complementary=false --set interventions.shared=false --set interventions.dropout=false)
launch() {
  local name=$1; shift
  nohup $PY -m napari_isfl.cli train "$@" "${COMMON[@]}" --init .carry/init/$name.pt --output $R/$name \
    > $R/$name.log 2>&1 &
}
launch isfl2d --config configs/isfl_2d.yaml
launch isfl2d_no_interventions --config configs/isfl_2d.yaml "${NOIV[@]}"
launch isfl3d --config configs/isfl_3d.yaml
launch isfl3d_no_interventions --config configs/isfl_3d.yaml "${NOIV[@]}"
sleep 30; nvidia-smi > "$OUT/nvidia_smi_during.txt" 2>&1
wait
tail -n 2 $R/*.log > "$OUT/train_logs.txt" 2>&1
tar czf "$OUT/runs2.tar.gz" --exclude=state.pt $R
echo done

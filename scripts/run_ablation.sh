#!/usr/bin/env bash
# 2D ablation under one training budget (configs/ablation_2d.yaml: 400 steps of 8 crops of 96x96,
# same seed and data order), then every variant scored on harvard/dev. Two runs at a time.
#   bash scripts/run_ablation.sh [runs/ablation]
set -u
OUT=${1:-runs/ablation}
ISFL=${ISFL:-isfl}
mkdir -p "$OUT"
STEPS=$(awk '/max_steps:/ {print $2}' configs/ablation_2d.yaml)
declare -A VARIANTS=(
  [necessity_penalize]="--set loss.necessity_mode=penalize"
  [necessity_reward]="--set loss.necessity_mode=reward"
  [necessity_off]="--set loss.necessity_mode=off"
  [no_interventions]="--set interventions.complementary=false --set interventions.shared=false --set interventions.dropout=false"
  [no_cfi]="--set model.integrator=mean"
  [per_modality_encoder]="--set model.encoder=per_modality"
)
run_variant() {
  local name=$1
  # model.pt is the best checkpoint so far, so finished means the log reached the last step
  if [ "$(tail -n1 "$OUT/$name/log.csv" 2>/dev/null | cut -d, -f1)" != "$STEPS" ]; then
    $ISFL train --config configs/ablation_2d.yaml --output "$OUT/$name" --resume auto -q ${VARIANTS[$name]} > "$OUT/$name.log" 2>&1
  fi
  if [ ! -f "$OUT/$name/eval/summary.csv" ]; then
    $ISFL evaluate "${DEV:-../shared/data/harvard/dev}" --method isfl --model "$OUT/$name/model.pt" \
      --output "$OUT/$name/eval" -q > /dev/null 2>&1
  fi
}
names=("${!VARIANTS[@]}")
for ((i = 0; i < ${#names[@]}; i += 2)); do
  run_variant "${names[i]}" &
  [ -n "${names[i+1]:-}" ] && run_variant "${names[i+1]}" &
  wait
done
[ -f "$OUT/baselines/summary.csv" ] || $ISFL evaluate "${DEV:-../shared/data/harvard/dev}" --method lp,dwt,gff,mean,max \
  --output "$OUT/baselines" -q > /dev/null 2>&1
echo "ablation runs in $OUT"

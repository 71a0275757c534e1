#!/bin/bash
# One prepared GPU session: CUDA-path check, speed, 2D training sweep of the functional-correlation weight.
set -u
DEV=${DEV:-cuda}; MIN=${MIN:-4.0}; OUT=${OUT:-/tmp/gpu_out}; mkdir -p $OUT
export PYTHONUNBUFFERED=1
[ -n "${NO_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/src
D=.carry/data
T0=$(date +%s)
stamp() { echo "=== $1 at +$(( $(date +%s) - T0 )) s"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/machine.txt
python3 -c "import torch, monai, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', monai.__version__, 'numpy', numpy.__version__)" | tee -a $OUT/machine.txt
# training sweep starts first, in the background (3 runs share the GPU)
mkdir -p runs
for f in 0.25 0.5 1.0; do
  python3 -m napari_isfl.cli train --config configs/isfl_2d_v4.yaml --init isfl-2d --device $DEV \
    --data-root $D --output runs/gpu_f$f --set loss.functional=$f --set data.batch_size=12 \
    --set optim.max_steps=4000 --set run.val_every=250 --set run.checkpoint_every=250 \
    --max-minutes $MIN -q > runs/gpu_f$f.log 2>&1 &
done
stamp "checks"
timeout 150 python3 benchmarks/gpu_check.py --device $DEV \
  --image2d $D/harvard/dev/SPECT-MRI/MRI/28005.png $D/harvard/dev/SPECT-MRI/SPECT/28005.png --modalities2d mri,spect \
  --image3d $D/volumes/brats/TCGA-DU-7294/TCGA-DU-7294_t1c_bet.nii.gz $D/volumes/brats/TCGA-DU-7294/TCGA-DU-7294_fla_bet.nii.gz \
  2>&1 | tee $OUT/gpu_check.txt
stamp "speed"
timeout 150 python3 benchmarks/speed.py --device $DEV --threads 0 --case brats --data-root $D --sizes ${SIZES:-240x240x155 256x256x256} --repeat 3 2>&1 | tee $OUT/speed_cuda.txt
timeout 60 python3 benchmarks/speed.py --device $DEV --threads 0 --case brats --data-root $D --repeat 3 --no-amp 2>&1 | tee -a $OUT/speed_cuda.txt
stamp "cli"
TIMEFORMAT="isfl fuse wall %R s"; rm -f /tmp/fused1.nii.gz /tmp/fused2.nii.gz
for i in 1 2; do
  { time timeout 60 python3 -m napari_isfl.cli fuse $D/volumes/brats/TCGA-DU-7294/TCGA-DU-7294_t1c_bet.nii.gz $D/volumes/brats/TCGA-DU-7294/TCGA-DU-7294_fla_bet.nii.gz --device $DEV -o /tmp/fused$i.nii.gz -q; } 2>> $OUT/cli_cuda.txt
done
stamp "waiting for training"
wait
stamp "evaluate"
for f in 0.25 0.5 1.0; do
  timeout 150 python3 -m napari_isfl.cli evaluate $D/harvard/dev --method isfl --model runs/gpu_f$f/model.pt --device $DEV --output runs/gpu_f$f/eval -q > runs/gpu_f$f/eval.log 2>&1 &
done
wait
stamp "pack"
for f in 0.25 0.5 1.0; do tail -3 runs/gpu_f$f.log; done
tar czf $OUT/runs.tgz --exclude=state.pt runs
ls -la $OUT

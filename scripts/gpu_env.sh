# Shared set-up of the GPU scripts (sourced, not run): python, device, output folder, and the monai/nibabel
# wheels from .whl/ installed beside the machine's torch when present.
set -u
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/isfl_gpu_out}
mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${SRC:-$PWD/src}
else
  export PYTHONPATH=${SRC:-$PWD/src}
fi
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

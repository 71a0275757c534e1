"""Does the CUDA path fuse what the CPU path fuses? Shipped 2D and 3D models, CPU float32 against CUDA
float32 and CUDA bfloat16 (``amp``), on real images when given, else on synthetic ones.

Prints one JSON row per (model, precision): the largest and mean absolute difference of the fused image
from the CPU's (images on [0, 1]), the PSNR between them, whether the contribution maps stay convex
weights (each voxel's weights sum to 1), and the fusion time (after a warm-up run).

Examples::

    # on a machine with a GPU; the real inputs are optional
    python benchmarks/gpu_check.py --image2d MRI.png SPECT.png --modalities2d mri,spect \\
        --image3d t1c.nii.gz flair.nii.gz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import synthetic  # noqa: E402


def _inputs(paths: list[str] | None, shape: tuple[int, ...]) -> list[np.ndarray]:
    if paths:
        from napari_isfl.io import read_image

        return [read_image(p).array for p in paths]
    return synthetic(shape, 2)


def _timed(engine, images: list[np.ndarray], modalities: list[str], amp: bool) -> tuple:
    import torch

    engine.fuse(images, modalities, amp=amp, contributions=True)  # warm-up (cuDNN plans, allocator)
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = engine.fuse(images, modalities, amp=amp, contributions=True)
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def compare(model: str, images: list[np.ndarray], modalities: list[str], device: str) -> list[dict]:
    """CPU float32 reference against ``device`` in float32 and in bfloat16."""
    from napari_isfl.inference import FusionEngine

    reference, cpu_seconds = _timed(FusionEngine(model, "cpu"), images, modalities, amp=False)
    rows = []
    accelerated = FusionEngine(model, device)
    for amp in (False, True):
        result, seconds = _timed(accelerated, images, modalities, amp=amp)
        difference = np.abs(result.fused.astype(np.float64) - reference.fused.astype(np.float64))
        mse = float(np.mean(difference**2))
        weights_sum = result.contributions.sum(axis=0)
        rows.append(
            {
                "model": model,
                "shape": "x".join(map(str, images[0].shape)),
                "device": str(accelerated.device),
                "precision": "bfloat16" if amp else "float32",
                "finite": bool(np.isfinite(result.fused).all()),
                "max_abs_diff": round(float(difference.max()), 5),
                "mean_abs_diff": round(float(difference.mean()), 6),
                "psnr_db": round(10 * np.log10(1.0 / mse), 1) if mse > 0 else float("inf"),
                "weights_sum_max_error": round(float(np.abs(weights_sum - 1.0).max()), 5),
                "seconds": round(seconds, 3),
                "cpu_float32_seconds": round(cpu_seconds, 3),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image2d", nargs="*", help="two or more 2D images (default: synthetic)")
    parser.add_argument("--modalities2d", default="mri,mri")
    parser.add_argument("--image3d", nargs="*", help="two or more volumes (default: synthetic)")
    parser.add_argument("--modalities3d", default="mri,mri")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: nothing to compare", file=sys.stderr)
        return 2
    rows = []
    for model, paths, modalities, shape in (
        ("isfl-2d", args.image2d, args.modalities2d, (256, 256)),
        ("isfl-3d", args.image3d, args.modalities3d, (96, 112, 80)),
    ):
        for row in compare(model, _inputs(paths, shape), modalities.split(","), args.device):
            print(json.dumps(row), flush=True)
            rows.append(row)
    # float32 on the GPU must agree with the CPU to rounding; bfloat16 within what the eye cannot see
    bad = [
        r
        for r in rows
        if not r["finite"]
        or r["weights_sum_max_error"] > 1e-3
        or r["psnr_db"] < (60 if r["precision"] == "float32" else 35)
    ]
    for row in bad:
        print(f"FAILED: {row}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

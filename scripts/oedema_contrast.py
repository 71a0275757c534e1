"""Oedema contrast of a T1c + FLAIR fusion: is the FLAIR oedema still visible in the fused volume?

The model cards' 3D quality bar asks for a visible tumour rim (T1c) and oedema (FLAIR) in the same fused
volume. Grey-level metrics do not say whether the oedema survives, so this measures it: inside the brain
(voxels where either normalised input exceeds 0.02), the oedema is the brightest ``--top`` percent of the
FLAIR; its contrast in an image is ``mean(oedema) - mean(rest of brain)`` on the [0, 1] scale the fusion
works on. Printed for the FLAIR itself, the T1c, the ISFL fusion and the classical baselines, with the
brain mean of each (a fusion that brightens the whole brain flattens the oedema visually).

    python scripts/oedema_contrast.py                      # held-out TCGA-FG-6692, shipped 3D model
    python scripts/oedema_contrast.py --model runs/v2/isfl3d_ft/model.pt --threads 2

``--oracle`` fuses nothing: it asks what per-voxel blend weights the 3D lesion bar (the fusion's oedema
contrast at least 80 % of FLAIR's, as ``isfl evaluate`` measures it) needs on a pair, by scoring blends
with a fixed FLAIR weight inside the oedema and another one elsewhere:

    python scripts/oedema_contrast.py --oracle \
        --t1c ../shared/data/volumes/brats2013/brats_2013_pat0006_1/t1c.nii.gz \
        --flair ../shared/data/volumes/brats2013/brats_2013_pat0006_1/flair.nii.gz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CASE = "volumes/brats/TCGA-FG-6692/OtherEXampleFromTCIA_{}_bet.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--t1c", help="T1c volume (default: held-out TCGA-FG-6692 under --data-root)")
    parser.add_argument("--flair", help="FLAIR volume, co-registered with --t1c")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--model", default="default", help="ISFL checkpoint or 'default'")
    parser.add_argument("--baselines", default="lp,dwt,gff,mean", help="comma-separated baselines")
    parser.add_argument(
        "--top", type=float, default=5.0, help="oedema = brightest TOP %% of FLAIR in the brain"
    )
    parser.add_argument("--patch-size", default="auto", help="ISFL sliding-window size, as isfl fuse")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--oracle", action="store_true", help="score fixed FLAIR weights in/out of the oedema; no fusion"
    )
    args = parser.parse_args()

    import torch

    from napari_isfl import fuse, read_image
    from napari_isfl.evaluation.baselines import fuse_baseline
    from napari_isfl.inference import parse_patch_size
    from napari_isfl.normalization import normalize_intensity

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data_root)
    t1c_path = Path(args.t1c) if args.t1c else root / CASE.format("t1c")
    flair_path = Path(args.flair) if args.flair else root / CASE.format("fla")
    arrays = [read_image(t1c_path).array, read_image(flair_path).array]
    normalised = np.stack([normalize_intensity(a, "mri")[0] for a in arrays])
    if args.oracle:
        _oracle(normalised[0], normalised[1], args.top)
        return
    brain = (normalised > 0.02).any(axis=0)
    flair_in_brain = normalised[1][brain]
    oedema = brain & (normalised[1] >= np.percentile(flair_in_brain, 100.0 - args.top))
    rest = brain & ~oedema

    images = {"FLAIR (input)": normalised[1], "T1c (input)": normalised[0]}
    window = parse_patch_size(args.patch_size)
    images["isfl"] = fuse(arrays, ["mri", "mri"], model=args.model, device="cpu", roi_size=window).fused
    for name in filter(None, args.baselines.split(",")):
        images[name] = fuse_baseline(name, normalised)

    print(f"case: {t1c_path.name} + {flair_path.name}; model: {args.model}; window: {args.patch_size}")
    print(f"oedema: brightest {args.top:g} % of FLAIR in the brain ({int(oedema.sum())} voxels)\n")
    print("| image | oedema minus rest | brain mean |")
    print("|---|---|---|")
    for name, image in images.items():
        image = np.clip(image, 0.0, 1.0)
        contrast = float(image[oedema].mean() - image[rest].mean())
        print(f"| {name} | {contrast:+.3f} | {float(image[brain].mean()):.3f} |")


def _oracle(t1c: np.ndarray, flair: np.ndarray, top: float) -> None:
    """isfl evaluate's lesion contrast ratio of blends: one FLAIR weight in the oedema, one elsewhere."""
    from napari_isfl.evaluation.evaluate import FOREGROUND_THRESHOLD
    from napari_isfl.evaluation.fidelity import lesion_contrast, oedema_mask

    brain = (np.stack([t1c, flair]) > FOREGROUND_THRESHOLD).any(axis=0)
    oedema = oedema_mask(flair, brain, top)
    normal = brain & ~oedema
    print(f"T1c: oedema {t1c[oedema].mean():.3f}, rest {t1c[normal].mean():.3f}; ", end="")
    print(f"FLAIR: oedema {flair[oedema].mean():.3f}, rest {flair[normal].mean():.3f}\n")
    outside = (0.0, 0.25, 0.5, 0.75)
    print("| FLAIR weight in the oedema | " + " | ".join(f"{b:g} elsewhere" for b in outside) + " |")
    print("|---|" + "---|" * len(outside))
    for inside in (1.0, 0.9, 0.8, 0.5):
        ratios = []
        for b in outside:
            weight = np.where(oedema, inside, b)
            fused = weight * flair + (1.0 - weight) * t1c
            ratios.append(lesion_contrast(fused, [t1c, flair], oedema, brain)["lesion_contrast_ratio"])
        print(f"| {inside:g} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()

"""``isfl demo``: fuse the bundled sample data with the shipped default models.

Writes, into ``--output``:

* ``tcga_t1c_flair_fused.nii.gz``: TCGA-DU-7294 T1 post-contrast + FLAIR fused by the 3D model (tumour
  rim from T1c and oedema from FLAIR in one volume), with ``..._stability.nii.gz`` beside it;
* ``mni_ct_flair_fused.nii.gz``: the MNI CT + FLAIR templates fused (bone from CT, tissue from FLAIR);
* ``*_preview.png``: axial, coronal and sagittal views of the inputs, the fusion and its stability map.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

#: demo name -> (bundled sample, indices of the inputs it fuses)
DEMO_CASES = {"tcga_t1c_flair": ("tcga_du_7294", (0, 2)), "mni_ct_flair": ("mni_ct_flair", (0, 1))}


def _views(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices through ``centre``, oriented for display (anterior/superior up)."""
    x, y, z = centre
    return [np.rot90(volume[:, :, z]), np.rot90(volume[:, y, :]), np.rot90(volume[x, :, :])]


def save_preview(
    path: Path,
    inputs: list[np.ndarray],
    labels: list[str],
    fused: np.ndarray,
    stability: np.ndarray | None,
    title: str,
    spacing: tuple[float, ...],
) -> Path:
    """A grid: one row per view, one column per input, then the fusion and its stability map."""
    from .._optional import pyplot

    plt = pyplot("the demo's PNG previews")

    foreground = np.argwhere(fused > 0.05)
    centre = tuple(
        int(v) for v in (foreground.mean(axis=0) if foreground.size else np.array(fused.shape) // 2)
    )
    columns = [(label, image, "gray") for label, image in zip(labels, inputs, strict=True)]
    columns.append(("ISFL fusion", fused, "gray"))
    if stability is not None:
        columns.append(("stability (std)", stability, "magma"))
    aspects = [spacing[1] / spacing[0], spacing[2] / spacing[0], spacing[2] / spacing[1]]
    fig, axes = plt.subplots(3, len(columns), figsize=(2.6 * len(columns), 7.6), dpi=100)
    for col, (label, image, cmap) in enumerate(columns):
        high = float(np.percentile(image, 99.5)) or 1.0
        for row, view in enumerate(_views(image, centre)):
            ax = axes[row, col]
            ax.imshow(view, cmap=cmap, vmin=0, vmax=high, aspect=aspects[row])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=10)
            if col == 0:
                ax.set_ylabel(("axial", "coronal", "sagittal")[row])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    from .._optional import MissingDependencyError
    from ..inference import FusionEngine, fuse_files
    from ..io import read_image
    from ..normalization import normalize_intensity
    from ..samples import SAMPLES, sample_files

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    engine = FusionEngine(args.model, args.device)
    for name in args.case or list(DEMO_CASES):
        key, chosen = DEMO_CASES[name]
        files, sample = sample_files(key), SAMPLES[key]
        paths = [files[i] for i in chosen]
        modalities = [sample.modalities[i] for i in chosen]
        labels = [sample.names[i].removeprefix("MNI ") for i in chosen]
        fused_path = output / f"{name}_fused.nii.gz"
        stability_path = output / f"{name}_stability.nii.gz"
        print(f"fusing {' + '.join(labels)} ({name}) ...", file=sys.stderr)
        result = fuse_files(
            paths,
            fused_path,
            modalities,
            stability_output=stability_path,
            engine=engine,
        )
        inputs = [
            normalize_intensity(read_image(p).array, m)[0] for p, m in zip(paths, modalities, strict=True)
        ]
        reference = read_image(paths[0])
        try:
            preview = save_preview(
                output / f"{name}_preview.png",
                inputs,
                labels,
                result.fused,
                result.stability,
                f"{name}: {' + '.join(labels)} fused by the {result.provenance['model']} model "
                f"(stability: {result.provenance['parameters']['stability_passes']} test-time interventions)",
                reference.spacing,
            )
        except MissingDependencyError as error:  # the fusion is written; only the picture is missing
            preview = f"no preview ({error})"
        print(f"  wrote {fused_path}, {stability_path} and {preview}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="fuse the bundled sample data with the shipped default model",
        description="Fuse the bundled real sample cases (TCGA-DU-7294 T1c + FLAIR; MNI CT + FLAIR) with the "
        "default 3D model and write the fused NIfTI volumes, their stability maps and PNG previews.",
    )
    parser.add_argument("--output", default="demo_output", help="output folder (default ./demo_output)")
    parser.add_argument(
        "--case", action="append", choices=sorted(DEMO_CASES), help="only this case (repeatable)"
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(handler=run)

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


def _views(volume: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices through the centre of a volume shown radiologically (axes
    ``(S, P, L)``, see :func:`napari_isfl.spatial.display_orientation`): anterior up and the patient's right
    on the left in the axial view, superior up in the others."""
    s, p, l = (n // 2 for n in volume.shape)
    return [volume[s], volume[::-1, p, :], volume[::-1, :, l]]


def save_preview(
    path: Path,
    inputs: list[np.ndarray],
    labels: list[str],
    fused: np.ndarray,
    stability: np.ndarray | None,
    title: str,
    affine: np.ndarray,
) -> Path:
    """A grid: one row per view, one column per input, then the fusion and its stability map, each column
    with a colour bar in its units (the inputs and the fusion on the [0, 1] scale the fusion works on)."""
    from .._optional import pyplot
    from ..spatial import display_orientation

    plt = pyplot("the demo's PNG previews")

    columns = [
        (label, image, "gray", "normalised intensity") for label, image in zip(labels, inputs, strict=True)
    ]
    columns.append(("ISFL fusion", fused, "gray", "fused intensity"))
    if stability is not None:
        columns.append(("stability", stability, "viridis", "std of the fused value"))
    shown = [display_orientation(affine, image) for _, image, _, _ in columns]
    spacing = np.linalg.norm(shown[0][1][:3, :3], axis=0)  # (S, P, L) voxel sizes
    aspects = [spacing[1] / spacing[2], spacing[0] / spacing[2], spacing[0] / spacing[1]]
    fig, axes = plt.subplots(3, len(columns), figsize=(2.6 * len(columns), 8.4), dpi=100)
    for col, ((label, _, cmap, unit), (volume, _, _)) in enumerate(zip(columns, shown, strict=True)):
        high = float(np.percentile(volume, 99.5)) or 1.0
        for row, view in enumerate(_views(volume)):
            ax = axes[row, col]
            picture = ax.imshow(view, cmap=cmap, vmin=0, vmax=high, aspect=aspects[row])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=10)
            if col == 0:
                ax.set_ylabel(("axial", "coronal", "sagittal")[row])
        bar = fig.colorbar(picture, ax=list(axes[:, col]), orientation="horizontal", fraction=0.04, pad=0.02)
        bar.set_label(unit, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(title + "\n(radiological view: the patient's right on the left)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    import time

    from .._optional import MissingDependencyError
    from ..inference import FusionEngine, fuse_files
    from ..io import read_image
    from ..lesions import describe_lesion_guard
    from ..normalization import normalize_intensity
    from ..samples import SAMPLES, sample_files
    from . import progress_line

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    engine = FusionEngine(args.model, args.device)
    names = args.case or list(DEMO_CASES)
    started = time.perf_counter()
    for number, name in enumerate(names, start=1):
        key, chosen = DEMO_CASES[name]
        files, sample = sample_files(key), SAMPLES[key]
        paths = [files[i] for i in chosen]
        modalities = [sample.modalities[i] for i in chosen]
        labels = [sample.names[i].removeprefix("MNI ") for i in chosen]
        fused_path = output / f"{name}_fused.nii.gz"
        stability_path = output / f"{name}_stability.nii.gz"
        case_started = time.perf_counter()

        step = f"[{number}/{len(names)}] fusing {' + '.join(labels)} ({name})"

        def report(done: int, total: int, step: str = step) -> None:
            progress_line.update(f"{step}: window batch {done}/{total}")

        result = fuse_files(
            paths, fused_path, modalities, stability_output=stability_path, engine=engine, progress=report
        )
        progress_line.close()
        inputs = [
            normalize_intensity(read_image(p).array, m)[0] for p, m in zip(paths, modalities, strict=True)
        ]
        try:
            preview = save_preview(
                output / f"{name}_preview.png",
                inputs,
                labels,
                result.fused,
                result.stability,
                f"{name}: {' + '.join(labels)} fused by the {result.provenance['model']} model "
                f"(stability: {result.provenance['parameters']['stability_passes']} test-time interventions)",
                read_image(paths[0]).affine,
            )
        except MissingDependencyError as error:  # the fusion is written; only the picture is missing
            preview = f"no preview ({error})"
        print(
            f"[{number}/{len(names)}] {name} done in {time.perf_counter() - case_started:.0f} s: wrote "
            f"{fused_path}, {stability_path} and {preview}",
            file=sys.stderr,
        )
        guarded = describe_lesion_guard(result.provenance)
        if guarded:
            print(f"[{number}/{len(names)}] {guarded}", file=sys.stderr)
    print(f"demo finished in {time.perf_counter() - started:.0f} s; outputs in {output}", file=sys.stderr)
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

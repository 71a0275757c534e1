"""Figures for the model cards and README, from redistributable data only.

The Harvard images have no open licence, so no committed picture shows them: the figures use the
bundled TCGA-DU-7294 and MNI CT/FLAIR cases, and the TCGA-FG-6692 volumes (CC BY 3.0) in
../shared/data when present.

    python scripts/model_card_figures.py --output docs/images [--model-2d PATH] [--model-3d PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from napari_isfl.evaluation.baselines import fuse_baseline
from napari_isfl.inference import fuse
from napari_isfl.io import read_image
from napari_isfl.normalization import normalize_intensity

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _load(paths: list[Path], modalities: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    arrays = [read_image(p).array for p in paths]
    normalised = np.stack([normalize_intensity(a, m)[0] for a, m in zip(arrays, modalities, strict=True)])
    return arrays, normalised


def _axial(volume: np.ndarray, z: int) -> np.ndarray:
    return np.rot90(volume[:, :, z])


def _centre_z(normalised: np.ndarray) -> int:
    weights = normalised.sum(axis=(0, 1, 2))
    return int(np.average(np.arange(normalised.shape[-1]), weights=weights))


def figure_2d(model: str, output: Path) -> Path:
    """The 2D model on axial slices of the bundled cases, beside the LP and DWT baselines."""
    cases = [
        (
            "TCGA-DU-7294 T1c + FLAIR",
            [
                SAMPLES / "tcga_du_7294/TCGA-DU-7294_t1c.nii.gz",
                SAMPLES / "tcga_du_7294/TCGA-DU-7294_flair.nii.gz",
            ],
            ["mri", "mri"],
        ),
        (
            "MNI CT + FLAIR",
            [SAMPLES / "mni_ct_flair/mni_ct.nii.gz", SAMPLES / "mni_ct_flair/mni_flair.nii.gz"],
            ["ct", "mri"],
        ),
    ]
    fig, axes = plt.subplots(len(cases), 5, figsize=(12, 2.7 * len(cases)), dpi=110)
    for row, (title, paths, modalities) in enumerate(cases):
        arrays, normalised = _load(paths, modalities)
        z = _centre_z(normalised) + (8 if "TCGA" in title else 6)
        slices = [a[:, :, z] for a in arrays]
        flat = np.stack([n[:, :, z] for n in normalised])
        labels = title.split(" ", 1)[1].split(" + ")
        panels = [
            (labels[0], flat[0]),
            (labels[1], flat[1]),
            ("ISFL 2D", fuse(slices, modalities, model=model, device="cpu").fused),
            ("Laplacian pyramid", fuse_baseline("lp", flat)),
            ("DWT", fuse_baseline("dwt", flat)),
        ]
        for col, (label, image) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(np.rot90(image), cmap="gray", vmin=0, vmax=1)
            ax.set_title(label if row == 0 or col < 2 else label, fontsize=9)
            ax.axis("off")
        axes[row, 0].text(
            -0.08,
            0.5,
            title,
            transform=axes[row, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=9,
        )
    fig.tight_layout()
    path = output / "model_2d_montage.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def figure_3d(model: str, output: Path) -> list[Path]:
    """The 3D model on held-out TCGA-FG-6692 (T1c + FLAIR), MSLUB patient 19 (T1 + FLAIR, MS lesions
    outlined) and the bundled MNI CT + FLAIR."""
    paths = []
    cases = [
        (
            "mni_ct_flair",
            "MNI CT + FLAIR (bundled)",
            [SAMPLES / "mni_ct_flair/mni_ct.nii.gz", SAMPLES / "mni_ct_flair/mni_flair.nii.gz"],
            ["ct", "mri"],
            ["CT", "FLAIR"],
            None,
        )
    ]
    ms_patient = SHARED / "volumes/mslub/patient19"  # CC BY (Lesjak et al. 2017): may be shown
    if ms_patient.is_dir():
        cases.insert(
            0,
            (
                "mslub_patient19",
                "MSLUB patient 19 T1 + FLAIR (held out; expert lesion mask outlined)",
                [ms_patient / "t1.nii.gz", ms_patient / "flair.nii.gz"],
                ["mri", "mri"],
                ["T1", "FLAIR"],
                ms_patient / "lesions.nii.gz",
            ),
        )
    held_out = SHARED / "volumes/brats/TCGA-FG-6692"
    if held_out.is_dir():
        cases.insert(
            0,
            (
                "tcga_fg_6692",
                "TCGA-FG-6692 T1c + FLAIR (held out from training)",
                [
                    held_out / "OtherEXampleFromTCIA_t1c_bet.nii.gz",
                    held_out / "OtherEXampleFromTCIA_fla_bet.nii.gz",
                ],
                ["mri", "mri"],
                ["T1c", "FLAIR"],
                None,
            ),
        )
    for key, title, files, modalities, labels, mask_path in cases:
        arrays, normalised = _load(files, modalities)
        # the files' names, as `isfl fuse` passes them: the lesion guard finds the FLAIR by them
        names = [f.name for f in files]
        result = fuse(
            arrays, modalities, model=model, device="cpu", stability=True, contributions=True, names=names
        )
        dwt = fuse_baseline("dwt", normalised)
        mask = None
        if mask_path is not None:  # the axial slice with the most lesion voxels
            mask = read_image(mask_path).array > 0.5
            z = int(np.argmax(mask.sum(axis=tuple(range(mask.ndim - 1)))))
        else:
            z = _centre_z(normalised)
        panels = [
            (labels[0], normalised[0], "gray", 1.0),
            (labels[1], normalised[1], "gray", 1.0),
            ("ISFL 3D", result.fused, "gray", 1.0),
            ("DWT", dwt, "gray", 1.0),
            ("stability (std)", result.stability, "magma", float(np.percentile(result.stability, 99.5)) or 1),
            (f"contribution of {labels[0]}", result.contributions[0], "coolwarm", 1.0),
        ]
        fig, axes = plt.subplots(1, len(panels), figsize=(2.5 * len(panels), 3.0), dpi=110)
        for ax, (label, image, cmap, high) in zip(axes, panels, strict=True):
            shown = ax.imshow(_axial(image, z), cmap=cmap, vmin=0, vmax=high)
            if mask is not None and cmap == "gray":
                ax.contour(_axial(mask.astype(np.float32), z), levels=[0.5], colors="#ff5a36", linewidths=0.6)
            ax.set_title(label, fontsize=9)
            ax.axis("off")
            if cmap != "gray":
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path = output / f"model_3d_{key}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="docs/images")
    parser.add_argument("--model-2d", default="isfl-2d")
    parser.add_argument("--model-3d", default="isfl-3d")
    args = parser.parse_args()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    print(figure_2d(args.model_2d, output))
    for path in figure_3d(args.model_3d, output):
        print(path)


if __name__ == "__main__":
    main()

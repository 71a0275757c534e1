"""Small real cohorts for the cohort tests: crops of the bundled TCGA sample written as a CSV manifest."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"

#: 24 x 24 x 20 crops of the TCGA-DU-7294 sample at these voxel offsets: four different small "cases"
CROP_STARTS = ((56, 70, 60), (60, 74, 64), (64, 66, 58), (52, 78, 62))
CROP_SIZE = (24, 24, 20)


def crop_nifti(source: Path, start: tuple[int, ...], size: tuple[int, ...], target: Path) -> Path:
    """Save a crop of ``source`` (nibabel's slicer: the affine follows the crop)."""
    box = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.load(source).slicer[box], target)
    return target


def write_cohort(folder: Path, bad: bool = True) -> Path:
    """``folder/cohort.csv`` over four real crops (case,t1c,flair) and, with ``bad``, a fifth case whose
    FLAIR is not on its T1c's grid (a crop shifted by two voxels)."""
    rows = ["case,t1c,flair"]
    for index, start in enumerate(CROP_STARTS):
        for contrast in ("t1c", "flair"):
            source = SAMPLE_DIR / "tcga_du_7294" / f"TCGA-DU-7294_{contrast}.nii.gz"
            crop_nifti(source, start, CROP_SIZE, folder / f"p{index}" / f"{contrast}.nii.gz")
        rows.append(f"p{index},p{index}/t1c.nii.gz,p{index}/flair.nii.gz")
    if bad:
        shifted = tuple(s + 2 for s in CROP_STARTS[0])
        source = SAMPLE_DIR / "tcga_du_7294" / "TCGA-DU-7294_flair.nii.gz"
        crop_nifti(source, shifted, CROP_SIZE, folder / "bad" / "flair.nii.gz")
        rows.append("bad,p0/t1c.nii.gz,bad/flair.nii.gz")
    path = folder / "cohort.csv"
    path.write_text("\n".join(rows) + "\n")
    return path

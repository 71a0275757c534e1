"""napari sample data: the real co-registered cases bundled with napari-isfl.

Both open through the NIfTI reader, so they are placed in world (mm) coordinates with their NIfTI
geometry kept for saving. Licences and sources: ``sample_data/README.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["SAMPLE_DIR", "mni_ct_flair", "tcga_du_7294"]

#: the bundled data (a symlink in the package, so the path is the same for editable and wheel installs)
SAMPLE_DIR = Path(__file__).parent / "sample_data"

LayerDataTuple = tuple[Any, dict, str]


def _open(folder: str, files_and_names: list[tuple[str, str]]) -> list[LayerDataTuple]:
    from ._reader import nifti_layer_data

    layers = []
    for file, name in files_and_names:
        path = SAMPLE_DIR / folder / file
        if not path.is_file():
            raise FileNotFoundError(
                f"bundled sample {path} is missing from this installation; reinstall napari-isfl"
            )
        layers.append(nifti_layer_data(path, name=name))
    return layers


def tcga_du_7294() -> list[LayerDataTuple]:
    """TCGA-DU-7294 brain MRI (glioma): T1 post-contrast, T2 and FLAIR, 1 mm, CC BY 3.0 (TCIA)."""
    return _open(
        "tcga_du_7294",
        [
            ("TCGA-DU-7294_t1c.nii.gz", "T1c"),
            ("TCGA-DU-7294_t2.nii.gz", "T2"),
            ("TCGA-DU-7294_flair.nii.gz", "FLAIR"),
        ],
    )


def mni_ct_flair() -> list[LayerDataTuple]:
    """MNI-space average head CT and FLAIR templates, 2 mm, BSD-2 (Rorden et al. 2012)."""
    return _open("mni_ct_flair", [("mni_ct.nii.gz", "MNI CT"), ("mni_flair.nii.gz", "MNI FLAIR")])

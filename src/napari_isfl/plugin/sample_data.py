"""napari sample data: the real co-registered cases bundled with napari-isfl (see :mod:`napari_isfl.samples`).

Both open through the NIfTI reader, so they are placed in world (mm) coordinates with their NIfTI
geometry kept for saving. Licences and sources: ``sample_data/README.md``.
"""

from __future__ import annotations

from typing import Any

from ..samples import SAMPLE_DIR, SAMPLES, sample_files

__all__ = ["SAMPLE_DIR", "mni_ct_flair", "tcga_du_7294"]

LayerDataTuple = tuple[Any, dict, str]


def _open(key: str) -> list[LayerDataTuple]:
    from .reader import nifti_layer_data

    names = SAMPLES[key].names
    return [nifti_layer_data(path, name=name) for path, name in zip(sample_files(key), names, strict=True)]


def tcga_du_7294() -> list[LayerDataTuple]:
    """TCGA-DU-7294 brain MRI (glioma): T1 post-contrast, T2 and FLAIR, 1 mm, CC BY 3.0 (TCIA)."""
    return _open("tcga_du_7294")


def mni_ct_flair() -> list[LayerDataTuple]:
    """MNI-space average head CT and FLAIR templates, 2 mm, BSD-2 (Rorden et al. 2012)."""
    return _open("mni_ct_flair")

"""The real co-registered cases bundled with napari-isfl (licences and sources: ``sample_data/README.md``).

Used by ``isfl demo``, the napari *File > Open Sample* entries and the tests. ``sample_data`` is a symlink
in the package to the repository's ``sample_data/``, so the path is the same for editable and wheel
installs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SAMPLE_DIR", "SAMPLES", "Sample", "sample_files"]

SAMPLE_DIR = Path(__file__).parent / "sample_data"


@dataclass(frozen=True)
class Sample:
    """One bundled case: its folder, files, display names and modality tags (in that order)."""

    folder: str
    files: tuple[str, ...]
    names: tuple[str, ...]
    modalities: tuple[str, ...]
    description: str


SAMPLES: dict[str, Sample] = {
    "tcga_du_7294": Sample(
        "tcga_du_7294",
        ("TCGA-DU-7294_t1c.nii.gz", "TCGA-DU-7294_t2.nii.gz", "TCGA-DU-7294_flair.nii.gz"),
        ("T1c", "T2", "FLAIR"),
        ("mri", "mri", "mri"),
        "TCGA-DU-7294 brain MRI (glioma): T1 post-contrast, T2 and FLAIR, 1 mm, CC BY 3.0 (TCIA)",
    ),
    "mni_ct_flair": Sample(
        "mni_ct_flair",
        ("mni_ct.nii.gz", "mni_flair.nii.gz"),
        ("MNI CT", "MNI FLAIR"),
        ("ct", "mri"),
        "MNI-space average head CT and FLAIR templates, 2 mm, BSD-2 (Rorden et al. 2012)",
    ),
}


def sample_files(key: str) -> list[Path]:
    """The files of bundled sample ``key``, checked to be present.

    Raises:
        KeyError: an unknown sample.
        FileNotFoundError: a file missing from this installation.
    """
    sample = SAMPLES[key]
    paths = [SAMPLE_DIR / sample.folder / file for file in sample.files]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"bundled sample {path} is missing from this installation; reinstall napari-isfl"
            )
    return paths

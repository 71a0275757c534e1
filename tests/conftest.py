"""Shared pytest fixtures.

Tiny checkpoints (random weights: fine for testing mechanics, never for anything shown to users) and
small crops of the bundled sample data, made once per session so every test stays fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
#: a 24 x 28 x 20 crop of the TCGA-DU-7294 volumes through the tumour region (voxel start, size)
TCGA_CROP_START = (56, 70, 60)
TCGA_CROP_SIZE = (24, 28, 20)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """``{2: path, 3: path}``: tiny ISFLNet checkpoints (features (4, 8, 8), grid 2), seeded."""
    import torch

    from napari_isfl.model.checkpoint import save_checkpoint
    from napari_isfl.model.network import ISFLNet

    folder = tmp_path_factory.mktemp("tiny_models")
    paths = {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for dims in (2, 3):
            network = ISFLNet(dims, features=(4, 8, 8), grid_size=2)
            paths[dims] = save_checkpoint(folder / f"tiny{dims}d.pt", network)
    return paths


@pytest.fixture(scope="session")
def tiny_checkpoint_2d(tiny_checkpoints: dict[int, Path]) -> Path:
    return tiny_checkpoints[2]


@pytest.fixture(scope="session")
def tiny_checkpoint_3d(tiny_checkpoints: dict[int, Path]) -> Path:
    return tiny_checkpoints[3]


@pytest.fixture(scope="session")
def tcga_crop_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"t1c", "t2", "flair"}`` -> 24 x 28 x 20 int16 NIfTI crops of the TCGA sample, still in place.

    The crop's affine is the source's with the origin moved to the crop's first voxel, so the crops
    lie exactly where they lay in the full volume; the headers are the source's.
    """
    import nibabel as nib

    folder = tmp_path_factory.mktemp("tcga_crop")
    start = np.array(TCGA_CROP_START)
    box = tuple(slice(s, s + n) for s, n in zip(TCGA_CROP_START, TCGA_CROP_SIZE, strict=True))
    files = {}
    for contrast in ("t1c", "t2", "flair"):
        source = nib.load(SAMPLE_DIR / "tcga_du_7294" / f"TCGA-DU-7294_{contrast}.nii.gz")
        affine = source.affine.copy()
        affine[:3, 3] = source.affine[:3, :3] @ start + source.affine[:3, 3]
        data = np.asarray(source.dataobj)[box]
        image = nib.Nifti1Image(data, affine, source.header.copy())
        files[contrast] = folder / f"TCGA-DU-7294_{contrast}.nii.gz"
        nib.save(image, files[contrast])
    return files

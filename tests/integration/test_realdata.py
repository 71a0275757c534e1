"""Small crops of real data fused end to end with a tiny model: BraTS/TCGA volumes, the same
patient's native (unregistered) scans resampled onto that grid, and Harvard 2D pairs.

Reads ../shared/data only (never copies it into the project): crops go to pytest's temporary folder.
"""

from __future__ import annotations

import glob
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from core_helpers import SHARED_DATA, leftovers, save_tiny_checkpoint
from napari_isfl.cli import main
from napari_isfl.inference import fuse, fuse_files
from napari_isfl.io import read_image
from napari_isfl.spatial import CoregistrationError

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent"),
]

CASE = SHARED_DATA / "volumes" / "brats" / "TCGA-FG-6692"
UNREGISTERED = SHARED_DATA / "volumes" / "unregistered"
HARVARD = SHARED_DATA / "harvard" / "dev"
#: a 40x48x24 block inside the brain that also lies in the native scans' field of view
BRAIN_CROP = (slice(56, 96), slice(96, 144), slice(60, 84))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {d: save_tiny_checkpoint(folder / f"tiny{d}d.pt", d) for d in (2, 3)}


@pytest.fixture(scope="module")
def brain_crops(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """T1c and FLAIR of TCGA-FG-6692 cropped with nibabel's slicer (the affine follows the crop)."""
    folder = tmp_path_factory.mktemp("brats")
    paths = []
    for name in ("t1c", "fla"):
        image = nib.load(CASE / f"OtherEXampleFromTCIA_{name}_bet.nii.gz")
        path = folder / f"crop_{name}.nii.gz"
        nib.save(image.slicer[BRAIN_CROP], path)
        paths.append(path)
    return paths


def test_brats_crop_fused_end_to_end(tmp_path: Path, brain_crops: list[Path], models) -> None:
    """Two co-registered real MRI contrasts: the fused volume and stability map are written on the
    crop's grid (shape, affine) as finite float32 in [0, 1]; the stored int16 data is read as is."""
    reference = nib.load(brain_crops[0])
    assert read_image(brain_crops[0]).array.dtype == np.int16
    out, stability = tmp_path / "fused.nii.gz", tmp_path / "stability.nii.gz"
    result = fuse_files(brain_crops, out, ["mri", "mri"], stability_output=stability, model=models[3],
                        device="cpu", stability_passes=2)  # fmt: skip
    assert result.fused.shape == reference.shape
    for path in (out, stability):
        written = nib.load(path)
        data = np.asarray(written.dataobj)
        assert written.shape == reference.shape and data.dtype == np.float32
        np.testing.assert_allclose(written.affine, reference.affine)
        assert np.isfinite(data).all() and data.min() >= 0
    fused = np.asarray(nib.load(out).dataobj)
    assert fused.max() <= 1 and np.ptp(fused) > 0.05
    assert leftovers(tmp_path) == []


def test_unregistered_scans_need_resample(capsys, tmp_path: Path, brain_crops: list[Path], models) -> None:
    """The patient's native T2 (0.9 x 0.9 x 5.5 mm, oblique) is not on the BraTS grid: refused with a
    one-line reason naming it and --resample; with --resample it is resampled onto the crop's grid and
    the fused volume takes that grid."""
    native = Path(glob.glob(str(UNREGISTERED / "MRHR_T2_AX_*.nii.gz"))[0])
    out = tmp_path / "fused.nii.gz"
    args = ["fuse", str(brain_crops[0]), str(native), "-o", str(out), "--model", str(models[3]),
            "--device", "cpu", "--modality", "mri,mri", "-q"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and native.name in err and "--resample" in err
    assert not out.exists()
    with pytest.raises(CoregistrationError):
        fuse_files([brain_crops[0], native], out, ["mri", "mri"], model=models[3], device="cpu")
    assert main([*args, "--resample"]) == 0, capsys.readouterr().err
    reference = nib.load(brain_crops[0])
    fused = nib.load(out)
    assert fused.shape == reference.shape
    np.testing.assert_allclose(fused.affine, reference.affine)
    assert np.isfinite(np.asarray(fused.dataobj)).all()


def _harvard_pair(task: str, modality: str, folder: Path, size: int = 96) -> list[Path]:
    """The first dev pair of a Harvard task, centre-cropped into pytest's temporary folder."""
    name = sorted(p.name for p in (HARVARD / task / "MRI").glob("*.png"))[0]
    paths = []
    for source in (HARVARD / task / "MRI" / name, HARVARD / task / modality / name):
        with Image.open(source) as image:
            width, height = image.size
            left, top = (width - size) // 2, (height - size) // 2
            crop = image.crop((left, top, left + size, top + size))
            path = folder / f"{source.parent.name.lower()}_{name}"
            crop.save(path)
        paths.append(path)
    return paths


def test_harvard_ct_mri_crop(tmp_path: Path, models) -> None:
    """A real CT-MRI slice pair (8-bit PNG): fused PNG of the crop's size; the CT, not in Hounsfield
    units, is normalised with the percentile rule (not squashed by the HU window)."""
    mri, ct = _harvard_pair("CT-MRI", "CT", tmp_path)
    result = fuse_files([mri, ct], tmp_path / "fused.png", ["mri", "ct"], model=models[2], device="cpu",
                        contributions=True)  # fmt: skip
    with Image.open(tmp_path / "fused.png") as written:
        assert written.mode == "L" and written.size == (96, 96)
    assert result.fused.shape == (96, 96) and np.isfinite(result.fused).all()
    assert result.provenance["normalization"][1]["method"] == "percentile"
    np.testing.assert_allclose(result.contributions.sum(axis=0), 1.0, atol=1e-5)
    arrays = [read_image(p).array for p in (mri, ct)]
    np.testing.assert_array_equal(
        fuse(arrays, ["mri", "ct"], model=models[2], device="cpu").fused, result.fused
    )


def test_harvard_spect_mri_crop_keeps_colour(tmp_path: Path, models) -> None:
    """A real pseudo-colour SPECT with MRI: the fused luminance gets the SPECT colour back (RGB PNG)."""
    mri, spect = _harvard_pair("SPECT-MRI", "SPECT", tmp_path)
    assert read_image(spect).is_color
    result = fuse_files([mri, spect], tmp_path / "fused.png", ["mri", "spect"], model=models[2], device="cpu")
    with Image.open(tmp_path / "fused.png") as written:
        assert written.mode == "RGB" and written.size == (96, 96)
    assert np.isfinite(result.fused).all() and result.fused.min() >= 0 and result.fused.max() <= 1

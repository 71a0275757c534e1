"""Clinical studies on the command line: a DICOM series and a NIfTI of another modality that are not
co-registered, registered and fused with one command (``isfl fuse --register``), and ``isfl register``.

The DICOM CT is the bundled MNI CT template written as a series; the FLAIR is the bundled MNI FLAIR
moved by a known rigid transform (8 degrees, 11 mm), so the tests know where it belongs. (The two
templates are not exactly aligned to each other: mutual information moves the unmoved FLAIR by about
3.7 mm too. What must be recovered is the known move on top of that, measured by registering the
unmoved pair.)"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core_helpers import leftovers, save_tiny_checkpoint
from napari_isfl.cli import main
from napari_isfl.io import read_image
from napari_isfl.samples import sample_files
from napari_isfl.spatial import display_orientation

pytest.importorskip("SimpleITK")
pytest.importorskip("pydicom")

ANGLE = np.deg2rad(8.0)
SHIFT = (6.0, -9.0, 3.0)


def moved(affine: np.ndarray) -> np.ndarray:
    """``affine`` after a known rigid move of the scanner coordinates (rotation about z, then a shift)."""
    move = np.eye(4)
    move[:3, :3] = [[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1]]
    move[:3, 3] = SHIFT
    return move @ affine


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from napari_isfl.dicom import write_dicom_series

    folder = tmp_path_factory.mktemp("study")
    ct_path, flair_path = sample_files("mni_ct_flair")
    ct = read_image(ct_path)
    write_dicom_series(ct, folder / "CT", modality="CT", series_description="head CT")
    flair = nib.load(flair_path)
    moved_flair = folder / "flair_moved.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(flair.dataobj), moved(flair.affine)), moved_flair)
    return {"ct": folder / "CT", "flair": moved_flair, "flair_original": flair_path, "ct_nifti": ct_path}


@pytest.fixture(scope="module")
def unmoved(study):
    """The registration of the unmoved FLAIR onto the CT: where mutual information puts the pair."""
    from napari_isfl.registration import register

    return register(read_image(study["flair_original"]), read_image(study["ct"]), "rigid", threads=2)


@pytest.fixture(scope="module")
def model3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny3d.pt", 3)


def _in_world(image) -> tuple[np.ndarray, np.ndarray]:
    """An image in one orientation (superior, posterior, left), so arrays stored in different voxel
    orders (a DICOM series along its slice normal, a NIfTI as written) compare voxel by voxel."""
    shown, matrix, _ = display_orientation(image.affine, np.asarray(image.array, dtype=np.float64))
    return shown, matrix


def test_a_dicom_series_reads_like_its_nifti(study) -> None:
    series = read_image(study["ct"])
    original = read_image(study["ct_nifti"])
    assert series.kind == "dicom" and series.header.modality_tag == "ct"
    (a, matrix_a), (b, matrix_b) = _in_world(series), _in_world(original)
    np.testing.assert_allclose(matrix_a, matrix_b, atol=1e-3)  # every voxel in the same place
    np.testing.assert_allclose(a, b, atol=0.5)
    plain = study["flair"].parent / "plain"
    plain.mkdir(exist_ok=True)
    (plain / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="folder without DICOM files"):
        read_image(plain)


def test_fuse_registers_a_moved_nifti_onto_a_dicom_series(study, unmoved, model3d, tmp_path, capsys) -> None:
    out, provenance = tmp_path / "fused.nii.gz", tmp_path / "fused.json"
    args = ["fuse", study["ct"], study["flair"], "-o", out, "--register", "rigid", "--provenance", provenance]
    status = main([*map(str, args), "--model", str(model3d), "--device", "cpu", "-q"])
    assert status == 0, capsys.readouterr().err
    fused = nib.load(out)
    np.testing.assert_allclose(fused.affine, read_image(study["ct"]).affine, atol=1e-3)  # the CT's grid
    record = json.loads(provenance.read_text())
    assert record["modalities"] == ["ct", "mri"]  # the series says CT; the file name says FLAIR
    assert record["dicom"]["CT"]["modality"] == "CT" and record["dicom"]["CT"]["units"] == "HU"
    (registration,) = record["registration"]
    found = np.asarray(registration["reference_to_moving_ras"])
    expected = moved(np.eye(4)) @ unmoved.reference_to_moving
    for point in ([40.0, 50.0, 30.0, 1.0], [-50.0, -20.0, 10.0, 1.0], [0.0, 30.0, -20.0, 1.0]):
        assert np.linalg.norm(found @ point - expected @ point) < 1.0  # the known move recovered
    assert leftovers(tmp_path) == []


def test_register_writes_the_moved_image_back_in_place(study, unmoved, tmp_path, capsys) -> None:
    out, transform = tmp_path / "flair_on_ct.nii.gz", tmp_path / "flair_to_ct.tfm"
    status = main(["register", str(study["flair"]), str(study["ct"]), "-o", str(out), "--save-transform",
                   str(transform), "--threads", "2", "-q"])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    a, _ = _in_world(read_image(out))
    b, _ = _in_world(unmoved.image)  # where the unmoved FLAIR lands on the CT's grid
    brain = b > np.percentile(b, 60)
    assert np.corrcoef(a[brain], b[brain])[0, 1] > 0.99  # in its own units, back where it belongs
    from napari_isfl.registration import read_transform

    assert read_transform(transform).shape == (4, 4)
    status = main(["register", str(study["flair"]), str(study["ct"]), "-o", str(tmp_path / "x.png"), "-q"])
    assert status == 1 and "written as NIfTI" in capsys.readouterr().err


def test_register_and_resample_exclude_each_other(study, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fuse", str(study["ct"]), str(study["flair"]), "-o", str(tmp_path / "f.nii.gz"), "--register",
              "rigid", "--resample"])  # fmt: skip
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err

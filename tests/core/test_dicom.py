"""DICOM series (napari_isfl.dicom): geometry exact to 1e-3 mm against the image a series was written
from (oblique, reversed and shuffled slices, gantry tilt, single slices), values (CT in HU, MR as
stored, PET in SUVbw or kept with the reason), the choice among several series, and clear errors.

Series are written by ``write_dicom_series`` into pytest's temporary folder, from synthetic arrays and
from crops of ``../shared/data`` (tests marked ``realdata``, skipped when it is absent).
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from core_helpers import SHARED_DATA
from napari_isfl._optional import MissingDependencyError
from napari_isfl.dicom import (
    DicomError,
    DicomInfo,
    PetDose,
    find_series,
    is_dicom,
    modality_tag,
    read_dicom,
    series_affine,
    write_dicom_series,
)
from napari_isfl.io import ImageData, read_image

#: the geometry promise: every voxel within this distance (mm) of where the original put it
GEOMETRY_ATOL_MM = 1e-3
VOLUMES = SHARED_DATA / "volumes"
realdata = [
    pytest.mark.realdata,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent"),
]


def _affine(angles_deg=(12.0, -7.0, 25.0), spacing=(0.9, 1.1, 2.5), origin=(30.0, -40.0, 12.0)) -> np.ndarray:
    """An oblique, anisotropic voxel-to-world matrix (RAS)."""
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def _volume(shape=(20, 24, 7), seed: int = 0, low: float = -1024.0, high: float = 2000.0) -> np.ndarray:
    return np.round(np.random.default_rng(seed).uniform(low, high, shape)).astype(np.int16)


def _flip_z(affine: np.ndarray, slices: int) -> np.ndarray:
    """The same grid with its slice axis reversed (what a reader sorting along the normal returns when
    the original slice axis points against the normal)."""
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, slices - 1
    return affine @ flip


def _assert_same_voxels(read, array: np.ndarray, affine: np.ndarray) -> None:
    """``read`` places every voxel of ``array`` where ``affine`` does, within 1e-3 mm, with the same value
    (the slice axis may come back reversed: z always increases along the slice normal)."""
    if np.allclose(read.affine, affine, atol=GEOMETRY_ATOL_MM):
        expected = array
    else:
        np.testing.assert_allclose(read.affine, _flip_z(affine, array.shape[2]), atol=GEOMETRY_ATOL_MM)
        expected = array[:, :, ::-1]
    np.testing.assert_array_equal(read.array.reshape(expected.shape), expected)


def _shuffle_file_names(folder: Path, seed: int = 0) -> None:
    """Rename the files in a random order (names and InstanceNumbers then say nothing of positions)."""
    files = sorted(folder.glob("*.dcm"))
    order = np.random.default_rng(seed).permutation(len(files))
    for i, path in enumerate(files):
        path.rename(folder / f"tmp{i}")
    for i, j in enumerate(order):
        (folder / f"tmp{i}").rename(folder / f"{j:03d}_slice")


def _edit(folder: Path, edit) -> None:
    """Apply ``edit(dataset)`` to every file of a series (to make tags missing or odd)."""
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        edit(dataset)
        dataset.save_as(path)


# ------------------------------------------------------------------------------------------- geometry
def test_oblique_reversed_shuffled_series_round_trips(tmp_path: Path) -> None:
    """An oblique, anisotropic series whose slice axis points against the slice normal, with file names
    shuffled: read back with every voxel at its world position (1e-3 mm) and its exact value; z comes
    back along the normal (reversed), x and y as written; the affine keeps a right-handed stack."""
    affine = _affine()
    affine[:3, 2] *= -1  # slice axis against the normal of the (x, y) plane
    array = _volume()
    write_dicom_series(array, tmp_path / "series", affine, modality="MR")
    _shuffle_file_names(tmp_path / "series")
    image = read_dicom(tmp_path / "series")
    assert image.kind == "dicom" and image.array.shape == array.shape and image.array.dtype == np.int16
    assert image.stored_shape == array.shape and image.path == tmp_path / "series"
    np.testing.assert_allclose(image.affine, _flip_z(affine, array.shape[2]), atol=GEOMETRY_ATOL_MM)
    _assert_same_voxels(image, array, affine)
    assert np.linalg.det(image.affine[:3, :3]) > 0  # z along the normal: a right-handed stack
    assert isinstance(image.header, DicomInfo) and image.header.slices == array.shape[2]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    angles=st.tuples(*[st.floats(-180, 180, allow_nan=False)] * 3),
    spacing=st.tuples(st.floats(0.3, 3.0), st.floats(0.3, 3.0), st.floats(0.5, 6.0)),
    origin=st.tuples(*[st.floats(-300, 300)] * 3),
    reverse=st.booleans(),
)
def test_any_orientation_round_trips(tmp_path_factory, angles, spacing, origin, reverse) -> None:
    """Property: any rotation, voxel size, origin and slice direction round-trips to 1e-3 mm."""
    affine = _affine(angles, spacing, origin)
    if reverse:
        affine[:3, 2] *= -1
    array = _volume((5, 6, 4), seed=1)
    folder = tmp_path_factory.mktemp("series")
    write_dicom_series(array, folder, affine)
    _assert_same_voxels(read_dicom(folder), array, affine)


def test_gantry_tilt_keeps_the_sheared_slice_axis(tmp_path: Path) -> None:
    """A tilted gantry stacks slices off the normal: the slice axis comes from the positions, so the
    sheared affine is exact (a reader using normal x spacing would misplace far slices by mm)."""
    affine = _affine((0.0, 0.0, 0.0), (0.5, 0.5, 2.0))
    affine[1, 2] = 0.6  # each slice 0.6 mm further along y: a 16.7 degree tilt
    array = _volume((16, 12, 9), seed=2)
    write_dicom_series(array, tmp_path / "ct", affine, modality="CT")
    image = read_dicom(tmp_path / "ct")
    np.testing.assert_allclose(image.affine, affine, atol=GEOMETRY_ATOL_MM)
    np.testing.assert_array_equal(image.array, array)


def test_single_slice_is_a_2d_image_with_its_3d_affine(tmp_path: Path) -> None:
    """One slice reads like a NIfTI (x, y, 1) slice: a 2D array, stored shape (x, y, 1), the 4x4 affine
    with the slice thickness as z spacing."""
    affine = _affine(spacing=(0.7, 0.7, 3.0))
    array = _volume((11, 9, 1), seed=3)
    write_dicom_series(array[:, :, 0], tmp_path / "one", affine)
    image = read_dicom(tmp_path / "one")
    assert image.array.shape == (11, 9) and image.stored_shape == (11, 9, 1)
    np.testing.assert_allclose(image.affine, affine, atol=GEOMETRY_ATOL_MM)
    np.testing.assert_array_equal(image.array, array[:, :, 0])


def test_series_affine_refuses_gaps_and_stacked_volumes() -> None:
    """A missing slice or two volumes at the same positions are named, never silently resampled."""
    orientation, spacing = [1, 0, 0, 0, 1, 0], [1.0, 1.0]
    with pytest.raises(DicomError, match="not evenly spaced"):
        series_affine(orientation, [[0, 0, 0], [0, 0, 2], [0, 0, 6]], spacing)
    with pytest.raises(DicomError, match="several volumes"):
        series_affine(orientation, [[0, 0, 0], [0, 0, 2], [0, 0, 0], [0, 0, 2]], spacing)


def test_missing_file_and_mixed_orientations_are_refused(tmp_path: Path) -> None:
    affine = _affine()
    write_dicom_series(_volume((6, 5, 6)), tmp_path / "gap", affine)
    (tmp_path / "gap" / "IM0003.dcm").unlink()
    with pytest.raises(DicomError, match="missing slices"):
        read_dicom(tmp_path / "gap")
    write_dicom_series(_volume((6, 5, 3)), tmp_path / "mixed", affine)
    rotated = _affine((40.0, 0.0, 0.0))
    write_dicom_series(_volume((6, 5, 1)), tmp_path / "localizer", rotated)
    uid = pydicom.dcmread(tmp_path / "mixed" / "IM0001.dcm").SeriesInstanceUID
    _edit(tmp_path / "localizer", lambda ds: setattr(ds, "SeriesInstanceUID", uid))
    (tmp_path / "localizer" / "IM0001.dcm").rename(tmp_path / "mixed" / "localizer.dcm")
    with pytest.raises(DicomError, match="different orientations"):
        read_dicom(tmp_path / "mixed")


# -------------------------------------------------------------------------------------------- values
def test_ct_is_read_in_hounsfield_units(tmp_path: Path) -> None:
    """CT stored as unsigned integers with intercept -1024 (as scanners do) reads in HU, as int16."""
    hounsfield = _volume((8, 7, 5), seed=4, low=-1024, high=3000)
    write_dicom_series(hounsfield, tmp_path / "ct", _affine(), modality="CT", rescale=(1.0, -1024.0))
    stored = pydicom.dcmread(tmp_path / "ct" / "IM0001.dcm")
    assert stored.PixelRepresentation == 0 and float(stored.RescaleIntercept) == -1024.0
    image = read_dicom(tmp_path / "ct")
    assert image.header.units == "HU" and image.header.modality_tag == "ct"
    assert image.array.dtype == np.int16
    _assert_same_voxels(image, hounsfield, _affine())


def test_mr_is_read_as_stored_with_its_rescale(tmp_path: Path) -> None:
    """MR values come back as written; a fractional rescale slope gives float32 values."""
    values = np.random.default_rng(5).uniform(0.0, 1234.5, (9, 8, 4)).astype(np.float32)
    write_dicom_series(values, tmp_path / "mr", _affine(), modality="MR")
    image = read_dicom(tmp_path / "mr")
    assert image.header.units == "" and image.header.modality == "MR" and image.array.dtype == np.float32
    slope = float(pydicom.dcmread(tmp_path / "mr" / "IM0001.dcm").RescaleSlope)
    expected = values[:, :, ::-1] if image.affine[2, 2] * _affine()[2, 2] < 0 else values
    np.testing.assert_allclose(image.array, expected, atol=slope / 2 + 1e-3)


def _expected_suv_factor(dose: PetDose) -> float:
    """SUVbw per Bq/ml written out independently: weight (g) / decayed dose (Bq)."""
    decayed = dose.injected_dose_bq * np.exp(-np.log(2) * dose.delay_s / dose.half_life_s)
    return dose.weight_kg * 1000 / decayed


def test_pet_in_bq_per_ml_becomes_suv_body_weight(tmp_path: Path) -> None:
    """PET with Units BQML, DecayCorrection START and the dose tags: values x weight / decayed dose;
    per-slice rescale slopes (a first slice of zeros with slope 1 included) are all honoured."""
    activity = np.random.default_rng(6).uniform(0.0, 30000.0, (10, 9, 6)).astype(np.float32)
    activity[:, :, 0] = 0.0
    dose = PetDose(weight_kg=82.0, injected_dose_bq=350e6, delay_s=3900.0)
    write_dicom_series(activity, tmp_path / "pet", np.diag([2.0, 2.0, 3.0, 1.0]), modality="PT", pet=dose)
    slopes = {float(pydicom.dcmread(p).RescaleSlope) for p in (tmp_path / "pet").iterdir()}
    assert len(slopes) > 2  # one slope per slice
    image = read_dicom(tmp_path / "pet")
    info = image.header
    assert info.units == "SUVbw" and info.modality_tag == "pet" and image.array.dtype == np.float32
    assert info.suv_factor == pytest.approx(_expected_suv_factor(dose), rel=1e-9)
    assert "82 kg" in info.suv_note and "3900 s" in info.suv_note
    np.testing.assert_allclose(image.array / info.suv_factor, activity, atol=30000 / 65535)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda ds: setattr(ds, "Units", "CNTS"), "Units is CNTS"),
        (lambda ds: setattr(ds, "DecayCorrection", "ADMIN"), "DecayCorrection is ADMIN"),
        (lambda ds: delattr(ds, "PatientWeight"), "PatientWeight"),
        (lambda ds: delattr(ds.RadiopharmaceuticalInformationSequence[0], "RadionuclideTotalDose"), "dose"),
        (
            lambda ds: delattr(ds.RadiopharmaceuticalInformationSequence[0], "RadionuclideHalfLife"),
            "HalfLife",
        ),
        (
            lambda ds: setattr(
                ds.RadiopharmaceuticalInformationSequence[0], "RadiopharmaceuticalStartTime", "113000"
            ),
            "after the series start",
        ),  # fmt: skip
    ],
)
def test_pet_without_what_suv_needs_keeps_its_values_and_says_why(tmp_path: Path, edit, reason) -> None:
    activity = np.random.default_rng(7).uniform(0.0, 5000.0, (6, 5, 3)).astype(np.float32)
    write_dicom_series(activity, tmp_path / "pet", modality="PT", pet=PetDose())
    _edit(tmp_path / "pet", edit)
    info = read_dicom(tmp_path / "pet").header
    assert info.suv_factor is None and info.units != "SUVbw"
    assert reason in info.suv_note and info.suv_note.startswith("values kept")


def test_pet_injection_date_time_and_earliest_acquisition(tmp_path: Path) -> None:
    """RadiopharmaceuticalStartDateTime is preferred to the time alone; an acquisition that started
    before the (post-processed) SeriesTime is the decay reference instead."""
    dose = PetDose(delay_s=3600.0)
    write_dicom_series(np.ones((4, 4, 2), np.float32) * 100, tmp_path / "pet", modality="PT", pet=dose)
    injection = dose.scan_start - datetime.timedelta(seconds=3000)

    def edit(ds) -> None:
        ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = injection.strftime(
            "%Y%m%d%H%M%S"
        )
        ds.SeriesTime = (dose.scan_start + datetime.timedelta(seconds=900)).strftime("%H%M%S")

    _edit(tmp_path / "pet", edit)
    info = read_dicom(tmp_path / "pet").header
    assert info.suv_factor == pytest.approx(_expected_suv_factor(PetDose(delay_s=3000.0)), rel=1e-9)
    assert "earliest acquisition" in info.suv_note


# -------------------------------------------------------------------------------------------- series
def test_several_series_in_one_folder_are_listed_and_chosen(tmp_path: Path) -> None:
    """A folder with two series: the error lists both (UID, description, modality) and says how to
    choose; a series UID or any file of the series selects it."""
    study = tmp_path / "study"
    t1 = write_dicom_series(
        _volume((6, 5, 4)), study / "a", _affine(), series_description="T1 AX", series_number=3
    )
    ct = write_dicom_series(
        _volume((7, 6, 3), seed=9), study / "b", modality="CT", series_description="Head CT", series_number=2
    )
    uids = [str(pydicom.dcmread(paths[0]).SeriesInstanceUID) for paths in (t1, ct)]
    with pytest.raises(DicomError) as error:
        read_dicom(tmp_path / "study")
    message = str(error.value)
    assert len(message.splitlines()) == 1 and "2 DICOM series" in message
    for expected in (*uids, "'T1 AX'", "'Head CT'", "MR", "CT", "a file of that series", "series_uid"):
        assert expected in message
    assert read_dicom(tmp_path / "study", series_uid=uids[1]).header.series_description == "Head CT"
    assert read_dicom(t1[2]).header.series_uid == uids[0]  # any file of the series
    assert [s.description for s in find_series(tmp_path / "study")] == ["Head CT", "T1 AX"]  # by number
    with pytest.raises(DicomError, match="no series with SeriesInstanceUID 1.2.3"):
        read_dicom(tmp_path / "study", series_uid="1.2.3")


def test_folders_without_dicom_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    write_dicom_series(_volume((4, 4, 2)), tmp_path / "series")
    assert is_dicom(tmp_path) and not is_dicom(tmp_path / "notes.txt")  # a DICOM subfolder counts
    assert is_dicom(tmp_path / "series") and is_dicom(tmp_path / "series" / "IM0001.dcm")
    assert not is_dicom(tmp_path / "series", max_files=0) and not is_dicom(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert not is_dicom(tmp_path / "empty")
    with pytest.raises(DicomError, match="no DICOM image"):
        read_dicom(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        read_dicom(tmp_path / "absent")


def test_info_is_plain_json_and_modality_tags(tmp_path: Path) -> None:
    write_dicom_series(np.ones((4, 4, 2), np.float32), tmp_path / "pet", modality="PT", pet=PetDose())
    info = read_dicom(tmp_path / "pet").header
    assert json.loads(json.dumps(info.as_dict()))["units"] == "SUVbw"
    assert [modality_tag(m) for m in ("MR", "CT", "PT", "NM", "US")] == ["mri", "ct", "pet", "spect", None]


def test_writer_refuses_a_sheared_plane_and_values_that_do_not_fit(tmp_path: Path) -> None:
    sheared = np.eye(4)
    sheared[0, 1] = 0.3
    with pytest.raises(ValueError, match="not perpendicular"):
        write_dicom_series(np.zeros((3, 3, 2)), tmp_path / "a", sheared)
    with pytest.raises(ValueError, match="do not fit 16 bits"):
        write_dicom_series(np.full((3, 3, 2), 1e6), tmp_path / "b", rescale=(1.0, 0.0))


def test_missing_clinical_extra_names_it(tmp_path: Path, monkeypatch) -> None:
    write_dicom_series(np.ones((3, 3, 2)), tmp_path / "series")
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(MissingDependencyError, match=r"napari-isfl\[clinical\]"):
        read_dicom(tmp_path / "series")


# ------------------------------------------------------------------------------------------ real data
REAL_CROPS = {
    # a skull-stripped BraTS crop (LPS-stored NIfTI, 1 mm)
    "brats": (
        "brats/TCGA-FG-6692/OtherEXampleFromTCIA_t1c_bet.nii.gz",
        (slice(60, 100), slice(90, 140), slice(50, 80)),
    ),
    # the native oblique scan (0.9 x 0.9 x 5.5 mm, tilted), negative values included
    "native-oblique": (
        "unregistered/MRHR_FLAIR_AX_OtherEXampleTCIA_TCGA-FG-6692_Si_TCGA-FG-6692_MRHR_FLAIR_AX_SE_IR_5_tir2d1_21_fla.nii.gz",
        (slice(60, 140), slice(70, 170), slice(4, 22)),
    ),
    # SPECT template stored with x flipped (RAS, positive x step), big-endian int16
    "spect-template": ("templates/SPECT.nii", (slice(20, 70), slice(20, 90), slice(30, 50))),
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=realdata) for name in REAL_CROPS])
def test_series_from_real_nifti_matches_it(tmp_path: Path, name: str) -> None:
    """A series written from a crop of a real NIfTI reads back on the NIfTI's own grid (1e-3 mm) with its
    values (integers exactly)."""
    path, crop = REAL_CROPS[name]
    source = nib.load(VOLUMES / path).slicer[crop]
    original = ImageData(np.asarray(source.dataobj), None, "nifti", source.affine)
    write_dicom_series(original, tmp_path / "series", modality="MR")
    image = read_dicom(tmp_path / "series")
    _assert_same_voxels(image, original.array, source.affine)


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")
def test_full_volume_series_reads_like_its_nifti(tmp_path: Path) -> None:
    """A whole 240 x 240 x 155 BraTS volume: same affine as read_image and same int16 array."""
    nifti = read_image(VOLUMES / "brats/TCGA-FG-6692/OtherEXampleFromTCIA_fla_bet.nii.gz")
    write_dicom_series(nifti, tmp_path / "flair", series_description="FLAIR")
    image = read_dicom(tmp_path / "flair")
    np.testing.assert_allclose(image.affine, nifti.affine, atol=GEOMETRY_ATOL_MM)
    assert image.array.dtype == nifti.array.dtype
    np.testing.assert_array_equal(image.array, nifti.array)

"""Registration (napari_isfl.registration): known rigid and affine transforms recovered to under a
millimetre, world matrices and ITK transform files that agree, the result on the reference grid,
determinism, progress and cancel for a worker, and clear errors.

Default tests use small synthetic "heads" (tissue classes with a different contrast in each image) and
a 2 mm copy of a BraTS pair; the full-size accuracy runs on ``../shared/data`` (random rigid transforms
on three co-registered pairs, the MSLUB native scans against the dataset's own transforms, the native
TCGA scans) are marked ``slow`` and ``realdata``.
"""

from __future__ import annotations

import glob
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from core_helpers import SHARED_DATA
from napari_isfl.io import ImageData, read_image
from napari_isfl.registration import (
    RegistrationCancelled,
    RegistrationProgress,
    apply_transform,
    displacement_mm,
    itk_transform,
    mutual_information,
    random_rigid,
    read_transform,
    register,
    rigid_matrix,
    transform_matrix,
    write_transform,
)
from napari_isfl.spatial import resample_to_reference

#: the accuracy promise: median displacement of the brain's voxels (mm)
MEDIAN_MM = 1.0
VOLUMES = SHARED_DATA / "volumes"
realdata = [
    pytest.mark.realdata,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent"),
]


def moved(image: ImageData, reference_to_moving: np.ndarray) -> ImageData:
    """``image`` moved by a known world transform, without resampling: its voxels are placed by
    ``reference_to_moving @ affine``, so registering it back onto the original grid must find exactly
    ``reference_to_moving``."""
    return replace(image, affine=reference_to_moving @ image.affine)


def world_points(image: ImageData, mask: np.ndarray, stride: int = 3) -> np.ndarray:
    """World coordinates of every ``stride``-th voxel of ``mask`` (the voxels accuracy is measured on)."""
    voxels = np.argwhere(mask)[::stride]
    return (image.affine @ np.c_[voxels, np.ones(len(voxels))].T)[:3].T


def head_phantom(contrast: str, shape=(64, 72, 56), spacing=(2.0, 2.0, 2.5), seed: int = 0) -> ImageData:
    """A synthetic head: scalp, skull, brain with a folded white matter, two ventricles and a lesion,
    and a fine tissue texture; ``contrast`` ("t1" or "t2") maps the same anatomy to other intensities
    (non-monotonically, as between modalities). Smoothed, with noise (``seed``)."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")

    def inside(cx, cy, cz, rx, ry, rz):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1

    anatomy = np.random.default_rng(42)  # one anatomy for every contrast
    labels = np.zeros(shape, np.int8)
    labels[inside(0, 0, 0, 34, 42, 38) | inside(0, 36, -14, 8, 10, 12) | inside(0, -6, -40, 16, 18, 16)] = (
        1  # scalp, nose, neck
    )
    labels[inside(0, 0, 0, 31, 39, 35)] = 2  # skull
    labels[inside(0, 2, 2, 28, 35, 31)] = 3  # grey matter
    folds = gaussian_filter(anatomy.normal(size=shape), 2.0)
    labels[(labels == 3) & (folds > 0)] = 6  # white matter
    labels[inside(-7, 6, 6, 4, 12, 8) | inside(8, 8, 6, 4, 11, 8)] = 4  # ventricles, not symmetric
    labels[inside(14, -16, 14, 7, 6, 6)] = 5  # lesion
    texture = gaussian_filter(anatomy.normal(size=shape), 1.0)
    texture = np.where(labels > 0, texture / texture.std(), 0.0)
    # background, scalp, skull, grey matter, ventricles, lesion, white matter
    tissue = {"t1": (0, 60, 15, 80, 25, 70, 110), "t2": (0, 40, 10, 75, 120, 100, 50)}[contrast]
    values = np.asarray(tissue, dtype=np.float32)[labels]
    values += 12 * texture if contrast == "t1" else 10 * texture**2 - 8 * texture
    noise = np.random.default_rng(seed).normal(0, 2.0, shape)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-90.0, -110.0, -60.0]
    array = (gaussian_filter(values, 0.7) + noise).astype(np.float32)
    return ImageData(array, None, "nifti", affine, stored_shape=shape)


@pytest.fixture(scope="module")
def heads() -> tuple[ImageData, ImageData, np.ndarray]:
    """A reference (T1-like) and a moving image of another contrast on the same grid, and brain points."""
    reference = head_phantom("t1")
    moving = head_phantom("t2", seed=1)
    brain = reference.array > 70
    return reference, moving, world_points(reference, brain)


# --------------------------------------------------------------------------------------- world matrices
def test_world_matrix_to_itk_and_back(tmp_path: Path) -> None:
    """A RAS world matrix and its ITK transform (LPS) describe the same mapping; written to .tfm, .txt
    and .h5 and read back, it is unchanged; ITK's MatrixOffsetTransformBase text (the MSLUB files) reads."""
    rng = np.random.default_rng(0)
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) * 0.3).as_matrix() @ np.diag([1.05, 0.97, 1.01])
    matrix[:3, 3] = rng.normal(size=3) * 20
    itk = itk_transform(matrix)
    point = np.array([12.0, -30.0, 45.0])  # RAS
    lps = np.array(itk.TransformPoint(tuple(point * [-1, -1, 1])))
    np.testing.assert_allclose(lps * [-1, -1, 1], (matrix @ np.r_[point, 1])[:3], atol=1e-9)
    np.testing.assert_allclose(transform_matrix(itk), matrix, atol=1e-12)
    for suffix in (".tfm", ".txt", ".h5"):
        np.testing.assert_allclose(
            read_transform(write_transform(tmp_path / f"t{suffix}", matrix)), matrix, atol=1e-9
        )
    text = tmp_path / "mslub_style.txt"
    text.write_text(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n"
        "Parameters: 1 0 0 0 1 0 0 0 1 1.5 -2 3\nFixedParameters: 0 0 0\n"
    )
    expected = np.eye(4)
    expected[:3, 3] = [-1.5, 2.0, 3.0]  # an LPS shift, seen in RAS
    np.testing.assert_allclose(read_transform(text), expected)


def test_read_transform_refuses_non_linear_and_unreadable(tmp_path: Path) -> None:
    bspline = sitk.BSplineTransform(3)
    bspline.SetTransformDomainMeshSize([2, 2, 2])
    bspline.SetParameters(np.random.default_rng(0).normal(size=len(bspline.GetParameters())).tolist())
    sitk.WriteTransform(bspline, str(tmp_path / "bspline.tfm"))
    with pytest.raises(ValueError, match="non-linear"):
        read_transform(tmp_path / "bspline.tfm")
    (tmp_path / "junk.tfm").write_text("not a transform")
    with pytest.raises(ValueError, match="not an ITK transform file"):
        read_transform(tmp_path / "junk.tfm")
    with pytest.raises(FileNotFoundError):
        read_transform(tmp_path / "absent.tfm")


# ----------------------------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_a_known_rigid_transform_across_contrasts(heads, seed: int) -> None:
    """A random rigid transform (up to 10 degrees, 15 mm) of a T2-like head is recovered onto the
    T1-like one to under 1 mm median (0.5 mm here) in the brain; the world and ITK transforms agree."""
    reference, moving, brain = heads
    truth = random_rigid(seed, brain.mean(axis=0))
    result = register(moved(moving, truth), reference, threads=2)
    error = displacement_mm(result.reference_to_moving, truth, brain)
    assert np.median(error) < 0.5 * MEDIAN_MM, (np.median(error), result.stages)
    assert result.initialization == "world" and result.search == {}
    np.testing.assert_allclose(transform_matrix(result.transform), result.reference_to_moving)


def test_affine_recovers_scaling_that_rigid_cannot(heads) -> None:
    """A 6 % anisotropic scaling with a rotation: affine recovers it under 1 mm, rigid cannot."""
    reference, moving, brain = heads
    truth = rigid_matrix(6.0, (1, 0.3, 0), (4.0, -3.0, 2.0), brain.mean(axis=0))
    centre = brain.mean(axis=0)
    scale = np.eye(4)
    scale[:3, :3] = np.diag([1.06, 0.96, 1.03])
    scale[:3, 3] = centre - scale[:3, :3] @ centre
    truth = truth @ scale
    moving_image = moved(moving, truth)
    affine = register(moving_image, reference, "affine", threads=2)
    rigid = register(moving_image, reference, "rigid", threads=2)
    assert np.median(displacement_mm(affine.reference_to_moving, truth, brain)) < MEDIAN_MM
    assert np.median(displacement_mm(rigid.reference_to_moving, truth, brain)) > MEDIAN_MM
    assert [s["stage"] for s in affine.stages] == ["rigid", "affine"]


def test_far_apart_images_start_from_moments_and_a_rotation_search(heads) -> None:
    """Images 60 mm and 25 degrees apart (another session, another scanner frame): the start aligns the
    centres of mass, the rotation search finds the basin, and the transform is recovered (better than
    gradient descent from the unrotated start)."""
    reference, moving, brain = heads
    truth = rigid_matrix(25.0, (1, 0.2, 0.1), (10.0, -60.0, 15.0), brain.mean(axis=0))
    result = register(moved(moving, truth), reference, threads=2)
    assert result.initialization == "moments" and result.search["rotations_tried"] == 125
    assert np.median(displacement_mm(result.reference_to_moving, truth, brain)) < 0.5 * MEDIAN_MM
    without = register(moved(moving, truth), reference, threads=2, rotation_search_deg=0)
    error = np.median(displacement_mm(result.reference_to_moving, truth, brain))
    assert np.median(displacement_mm(without.reference_to_moving, truth, brain)) > 2 * error


def test_plain_2d_images_register() -> None:
    """2D images without an affine (pixel grids): a shifted, rotated slice of another contrast."""
    reference = head_phantom("t1", shape=(96, 112, 1), spacing=(1.0, 1.0, 1.0))
    moving = head_phantom("t2", shape=(96, 112, 1), spacing=(1.0, 1.0, 1.0), seed=3)
    truth = np.eye(3)
    angle = np.radians(7.0)
    truth[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    centre = np.array([47.5, 55.5])
    truth[:2, 2] = centre + [4.0, -6.0] - truth[:2, :2] @ centre
    # the moving pixels, sampled at truth @ p for every reference pixel p
    plain = ImageData(reference.array[:, :, 0])
    moving_plain = ImageData(moving.array[:, :, 0])
    moving_plain = replace(
        moving_plain, array=apply_transform(moving_plain, moving_plain, np.linalg.inv(truth)).array
    )
    result = register(moving_plain, plain, threads=2)
    pixels = np.argwhere(reference.array[:, :, 0] > 70)[::5].astype(float)
    assert result.reference_to_moving.shape == (3, 3)
    assert np.median(displacement_mm(result.reference_to_moving, truth, pixels)) < MEDIAN_MM
    assert result.image.affine is None and result.image.array.shape == plain.array.shape


def test_sheared_moving_image_registers(heads) -> None:
    """A gantry-tilted (sheared) moving grid is first resampled onto a perpendicular grid for ITK; the
    transform found is still the world transform of the original."""
    reference, moving, brain = heads
    shear = np.eye(4)
    shear[1, 2] = 0.25
    sheared = replace(moving, affine=moving.affine @ shear)
    # the same anatomy on the sheared grid: sample the moving image there
    sheared = replace(sheared, array=resample_to_reference(moving, sheared).array)
    truth = random_rigid(5, brain.mean(axis=0), 6.0, 8.0)
    result = register(moved(sheared, truth), reference, threads=2)
    assert np.median(displacement_mm(result.reference_to_moving, truth, brain)) < MEDIAN_MM


# ------------------------------------------------------------------------------------- result and worker
def test_result_lies_on_the_reference_grid_and_saves(tmp_path: Path, heads) -> None:
    """The registered image takes the reference's shape, affine, header and kind; the aligned affine
    places the unresampled moving array on the reference; the transform saves and reads back; the
    provenance is plain JSON."""
    reference, moving, brain = heads
    reference = replace(reference, header="reference header")
    truth = random_rigid(2, brain.mean(axis=0))
    moving_image = replace(moved(moving, truth), kind="dicom", header="moving header")
    result = register(moving_image, reference, threads=2)
    image = result.image
    assert image.array.shape == reference.array.shape and image.array.dtype == np.float32
    assert image.kind == "nifti" and image.header == "reference header"
    np.testing.assert_array_equal(image.affine, reference.affine)
    np.testing.assert_allclose(result.aligned_affine, result.moving_to_reference @ moving_image.affine)
    # the unresampled moving voxels, placed by the aligned affine, land where the never-moved ones are
    voxels = np.argwhere(reference.array > 70)[::5]
    assert np.median(displacement_mm(result.aligned_affine, moving.affine, voxels)) < 0.5 * MEDIAN_MM
    saved = result.save_transform(tmp_path / "moving_to_ref.tfm")
    np.testing.assert_allclose(read_transform(saved), result.reference_to_moving, atol=1e-9)
    provenance = json.loads(json.dumps(result.provenance()))
    assert provenance["transform_type"] == "rigid" and provenance["iterations"] == result.iterations > 0
    before = mutual_information(resample_to_reference(moving_image, reference).array, reference.array)
    assert mutual_information(image.array, reference.array) > before


def test_same_seed_same_result_and_progress(heads) -> None:
    """A seed gives the same transform every run: bit for bit on one thread, to 0.05 mm on two (ITK's
    threads add their partial sums in a varying order); progress reports every iteration with ``done``
    rising to at most ``total``."""
    reference, moving, brain = heads
    moving_image = moved(moving, random_rigid(3, brain.mean(axis=0)))
    reports: list[RegistrationProgress] = []
    first = register(moving_image, reference, seed=7, threads=1, progress=reports.append)
    second = register(moving_image, reference, seed=7, threads=1)
    np.testing.assert_array_equal(first.reference_to_moving, second.reference_to_moving)
    two = [register(moving_image, reference, seed=7, threads=2).reference_to_moving for _ in range(2)]
    assert displacement_mm(two[0], two[1], brain).max() < 0.05
    assert displacement_mm(two[0], first.reference_to_moving, brain).max() < 0.05
    assert len(reports) == first.iterations
    done = [r.done for r in reports]
    assert done == sorted(done) and 0 < done[-1] <= reports[-1].total
    assert {r.stage for r in reports} == {"rigid"} and {r.level for r in reports} == {0, 1, 2}
    assert "rigid level 1/3" in str(reports[0])


@pytest.mark.parametrize(("shift_mm", "after"), [(60.0, 1), (60.0, 40), (5.0, 1), (5.0, 30)])
def test_cancel_stops_with_no_result(heads, shift_mm: float, after: int) -> None:
    """``cancel`` returning True stops the run (during the rotation search of far-apart images, or the
    pyramid) at once and raises."""
    reference, moving, brain = heads
    moving_image = moved(moving, rigid_matrix(5.0, (1, 0, 0), (0.0, -shift_mm, 0.0), brain.mean(axis=0)))
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) >= after

    with pytest.raises(RegistrationCancelled, match="cancelled"):
        register(moving_image, reference, threads=2, cancel=cancel)
    assert len(calls) <= after + 2  # stops at once, not after the whole run


def test_bad_input_is_refused_with_the_fix(heads) -> None:
    reference, moving, _ = heads
    with pytest.raises(ValueError, match="unknown transform 'elastic'; use one of rigid, affine"):
        register(moving, reference, "elastic")
    with pytest.raises(ValueError, match="same dimensionality"):
        register(ImageData(np.zeros((5, 5))), reference)
    with pytest.raises(ValueError, match="colour"):
        register(ImageData(np.zeros((8, 8)), chroma=np.zeros((2, 8, 8))), ImageData(np.zeros((8, 8))))
    with pytest.raises(ValueError, match="slice of a volume"):
        register(ImageData(np.zeros((8, 8)), affine=np.eye(4)), ImageData(np.zeros((8, 8))))
    with pytest.raises(ValueError, match="does not match"):
        register(moving, reference, reference_mask=np.ones((3, 3, 3), bool))
    with pytest.raises(ValueError, match="unknown initialization"):
        register(moving, reference, initialization="centre")


# -------------------------------------------------------------------------------------------- real data
def _downsampled(image: ImageData, factor: int = 2) -> ImageData:
    """``image`` at ``factor`` times coarser voxels (block means), its affine following."""
    shape = tuple(s // factor * factor for s in image.array.shape)
    blocks = np.asarray(image.array, dtype=np.float32)[tuple(slice(0, s) for s in shape)]
    blocks = blocks.reshape(
        shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor
    )
    affine = image.affine @ np.diag([factor, factor, factor, 1.0])
    affine[:3, 3] = (image.affine @ np.r_[[(factor - 1) / 2] * 3, 1.0])[:3]
    return replace(image, array=blocks.mean(axis=(1, 3, 5)), affine=affine, stored_shape=blocks.shape[::2])


BRATS = VOLUMES / "brats" / "TCGA-FG-6692"


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")
def test_brats_pair_at_2mm_recovers_a_known_transform() -> None:
    """Real T1c onto FLAIR (one patient, co-registered), at 2 mm for speed: a random rigid transform
    is recovered to under 1 mm median in the brain."""
    reference = _downsampled(read_image(BRATS / "OtherEXampleFromTCIA_fla_bet.nii.gz"))
    moving = _downsampled(read_image(BRATS / "OtherEXampleFromTCIA_t1c_bet.nii.gz"))
    brain = world_points(reference, reference.array > 0, stride=5)
    truth = random_rigid(11, brain.mean(axis=0))
    result = register(moved(moving, truth), reference, threads=2)
    assert np.median(displacement_mm(result.reference_to_moving, truth, brain)) < MEDIAN_MM


TEMPLATES = VOLUMES / "templates"
#: (moving, reference) co-registered pairs of the issue: T1c to FLAIR, T1 to CT, T2 to PET
PAIRS = {
    "t1c-flair": (
        BRATS / "OtherEXampleFromTCIA_t1c_bet.nii.gz",
        BRATS / "OtherEXampleFromTCIA_fla_bet.nii.gz",
    ),
    "t1-ct": (TEMPLATES / "avg152T1.nii", TEMPLATES / "scct.nii"),
    "t2-pet": (TEMPLATES / "avg152T2.nii", TEMPLATES / "PET.nii"),
}


def _brain(name: str, reference: ImageData) -> np.ndarray:
    if name == "t1c-flair":
        return reference.array > 0  # skull-stripped
    grey, white = (read_image(TEMPLATES / f"sc{t}.nii").array for t in ("grey", "white"))
    return grey + white > 0.5  # the templates' tissue probability maps


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=realdata) for n in PAIRS])
def test_random_rigid_transforms_recovered_on_real_pairs(name: str) -> None:
    """Two random rigid transforms (up to 10 degrees, 15 mm) per pair, full size, recovered to under
    1 mm median in the brain: against the transform itself for the BraTS pair (one grid), and against
    the transform composed with the alignment found for the untouched pair for the templates (the MNI
    templates are themselves offset from one another by 1-3 mm, which no registration can undo)."""
    moving_path, reference_path = PAIRS[name]
    moving, reference = read_image(moving_path), read_image(reference_path)
    brain = world_points(reference, _brain(name, reference), stride=7)
    untouched = np.eye(4)
    if name != "t1c-flair":
        untouched = register(moving, reference, threads=2).reference_to_moving
    for seed in (21, 22):
        truth = random_rigid(seed, brain.mean(axis=0))
        result = register(moved(moving, truth), reference, threads=2)
        error = displacement_mm(result.reference_to_moving, truth @ untouched, brain)
        assert np.median(error) < MEDIAN_MM, (name, seed, np.median(error))


MSLUB = VOLUMES / "mslub_native"
MSLUB_CASES = [("patient01", "study1"), ("patient01", "study2"), ("patient04", "study1")]


@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(c, marks=realdata, id="-".join(c)) for c in MSLUB_CASES])
def test_mslub_native_scans_agree_with_the_dataset_transforms(case) -> None:
    """T1W and T2W onto FLAIR (affine, scanner space): within 1.5 mm median of the dataset's own ITK
    transforms over the FLAIR head; also after a known extra rigid move of the moving scan (the scans
    start almost aligned, so this checks the registration itself, not the scanner)."""
    patient, study = case
    reference = read_image(MSLUB / patient / f"{study}_FLAIR.nii.gz")
    from skimage.filters import threshold_otsu

    head = world_points(reference, reference.array > threshold_otsu(reference.array), stride=11)
    for sequence in ("T1W", "T2W"):
        moving = read_image(MSLUB / patient / f"{study}_{sequence}.nii.gz")
        dataset = read_transform(MSLUB / patient / f"{study}_{sequence}_intrastudy_to_FLAIR.txt")
        result = register(moving, reference, "affine", threads=2)
        assert np.median(displacement_mm(result.reference_to_moving, dataset, head)) < 1.5, sequence
        if sequence == "T1W":  # the moved variant once per study keeps the run short
            extra = random_rigid(31, head.mean(axis=0))
            result = register(moved(moving, extra), reference, "affine", threads=2)
            error = displacement_mm(result.reference_to_moving, extra @ dataset, head)
            assert np.median(error) < 1.5, sequence


#: native scan -> BraTS reference of the same patient (all onto the FLAIR: three across contrasts)
TCGA_PAIRS = {"fla": "fla", "t1": "fla", "t2": "fla", "t1c": "fla"}


@pytest.mark.slow
@pytest.mark.parametrize("sequence", [pytest.param(s, marks=realdata) for s in TCGA_PAIRS])
def test_tcga_native_scans_end_up_aligned(sequence: str) -> None:
    """The patient's native scans (oblique, 5.5 mm slices, not skull-stripped, scanner space) onto the
    BraTS scans (atlas space, skull-stripped): mutual information in the brain far above plain world
    resampling (which aligns nothing: the two world spaces differ by about 10 cm and 15-20 degrees)."""
    reference = read_image(BRATS / f"OtherEXampleFromTCIA_{TCGA_PAIRS[sequence]}_bet.nii.gz")
    moving = read_image(glob.glob(str(VOLUMES / "unregistered" / f"*_{sequence}.nii.gz"))[0])
    brain = reference.array > 0
    plain = mutual_information(resample_to_reference(moving, reference).array, reference.array, brain)
    result = register(moving, reference, threads=2)
    registered = mutual_information(result.image.array, reference.array, brain)
    assert registered > 5 * plain and registered > 0.2, (plain, registered)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")
def test_benchmark_script_writes_its_tables(tmp_path: Path) -> None:
    """benchmarks/registration.py end to end on its cheapest part (DICOM reading and geometry)."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "registration.py"
    spec = importlib.util.spec_from_file_location("registration_benchmark", script)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    arguments = ["--parts", "dicom", "--repeat", "1", "--data-root", str(SHARED_DATA)]
    assert benchmark.main([*arguments, "--output", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "## dicom" in text and "gantry tilt" in text
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert len(run["load_before"]) == 3 and run["threads"] == 2

"""Voxel grids (napari_isfl.spatial): foreground box, the co-registration check, and the resampler that
files and napari layers share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core_helpers import OBLIQUE_AFFINE, phantom, write_nifti
from napari_isfl.io import ImageData, read_image
from napari_isfl.spatial import (
    CoregistrationError,
    check_coregistration,
    foreground_box,
    resample_to_reference,
)


def _int16_volume(shape: tuple[int, ...] = (13, 11, 7)) -> np.ndarray:
    return (np.arange(np.prod(shape)) % 900 - 100).reshape(shape).astype(np.int16)


@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 5)])
@pytest.mark.parametrize("margin", [0, 2])
def test_foreground_box_bounds_the_signal_of_any_channel(shape, margin) -> None:
    """The box covers every voxel above the threshold in any channel, grown by the margin within the
    image; nothing above the threshold gives the whole image."""
    stack = np.zeros((2, *shape))
    stack[0][(1, 2) + (1,) * (len(shape) - 2)] = 1.0
    stack[1][(6, 5) + (3,) * (len(shape) - 2)] = 0.5
    box = foreground_box(stack, threshold=0.1, margin=margin)
    low = [max(0, 1 - margin), max(0, 2 - margin)] + [max(0, 1 - margin)] * (len(shape) - 2)
    high = [min(s, h + 1 + margin) for s, h in zip(shape, [6, 5] + [3] * (len(shape) - 2), strict=True)]
    assert box == tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    assert foreground_box(stack, threshold=0.6) == tuple(slice(i, i + 1) for i in (1, 2, 1)[: len(shape)])
    assert foreground_box(stack, threshold=1.0) == tuple(slice(0, s) for s in shape)


def _nifti(path: Path, shape=(12, 10, 8), affine=OBLIQUE_AFFINE) -> ImageData:
    return read_image(write_nifti(path, _int16_volume(shape), affine))


def test_coregistration_check(tmp_path: Path) -> None:
    """Same grid passes; a different shape, spacing, origin or dimensionality names the file, what
    differs and the fix (co-register or --resample)."""
    reference = _nifti(tmp_path / "t1.nii.gz")
    check_coregistration([reference, _nifti(tmp_path / "t2.nii.gz")])
    shifted = OBLIQUE_AFFINE.copy()
    shifted[:3, 3] += 2.0
    scaled = OBLIQUE_AFFINE.copy()
    scaled[:3, :3] *= 1.5
    cases = {
        "shape": (
            _nifti(tmp_path / "a.nii.gz", shape=(12, 10, 9)),
            r"a\.nii\.gz .*t1\.nii\.gz .*shape \(12, 10, 9\)",
        ),
        "spacing": (_nifti(tmp_path / "b.nii.gz", affine=scaled), r"b\.nii\.gz .*t1\.nii\.gz .*voxel size"),
        "origin": (_nifti(tmp_path / "c.nii.gz", affine=shifted), r"c\.nii\.gz .*t1\.nii\.gz .*origin"),
    }
    for other, message in cases.values():
        with pytest.raises(CoregistrationError, match=message + ".*--resample"):
            check_coregistration([reference, other])
    with pytest.raises(CoregistrationError, match="is 2D but t1.nii.gz is 3D"):
        check_coregistration([reference, ImageData(np.zeros((12, 10)), Path("x.png"))])


def test_resample_nifti_through_world_coordinates(tmp_path: Path) -> None:
    """A volume on a shifted grid is resampled onto the reference grid through the affines: the result
    takes the reference's shape, affine and header, and shows the content at the right place."""
    reference = _nifti(tmp_path / "ref.nii.gz", affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    moving_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    moving_affine[:3, 3] = [2.0, 0.0, 0.0]  # voxel i of the moving image is voxel i + 2 of the reference
    moving_data = np.zeros((12, 10, 8), np.float32)
    moving_data[3, 4, 5] = 100.0
    moving = read_image(write_nifti(tmp_path / "mov.nii.gz", moving_data, moving_affine))
    with pytest.raises(CoregistrationError):
        check_coregistration([reference, moving])
    resampled = resample_to_reference(moving, reference)
    check_coregistration([reference, resampled])
    assert resampled.array.shape == reference.array.shape and resampled.array.dtype == np.float32
    np.testing.assert_allclose(resampled.affine, reference.affine)
    assert np.unravel_index(np.argmax(resampled.array), resampled.array.shape) == (5, 4, 5)
    assert resampled.array.max() == pytest.approx(100.0)
    assert resample_to_reference(reference, reference) is reference


def test_resample_plain_images_by_shape() -> None:
    """Images without an affine are resized to the reference shape (same field of view assumed),
    chroma included."""
    small = ImageData(phantom((20, 25), 8), Path("a.png"), "raster", chroma=np.full((2, 20, 25), 128.0))
    reference = ImageData(np.zeros((40, 50)), Path("b.png"), "raster", stored_shape=(40, 50))
    resized = resample_to_reference(small, reference)
    assert resized.array.shape == (40, 50) and resized.chroma.shape == (2, 40, 50)
    assert resized.array.mean() == pytest.approx(small.array.mean(), rel=0.02)


def test_resample_2d_nifti_stored_as_2d(tmp_path: Path) -> None:
    """A 2D NIfTI stored as (x, y) is resampled like the (x, y, 1) slice it describes (nibabel's
    resampler refuses 2D images)."""
    reference = read_image(write_nifti(tmp_path / "ref.nii", phantom((20, 22), 1), np.eye(4)))
    shifted = np.eye(4)
    shifted[0, 3] = 2.0  # voxel i of the moving slice is voxel i + 2 of the reference
    moving = read_image(write_nifti(tmp_path / "mov.nii", phantom((20, 22), 2), shifted))
    resampled = resample_to_reference(moving, reference)
    assert resampled.array.shape == (20, 22)
    np.testing.assert_allclose(resampled.array[2:], moving.array[:-2], atol=1e-6)
    assert (resampled.array[:2] == moving.array.min()).all()  # outside the field of view: background

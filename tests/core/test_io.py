"""Image I/O: NIfTI with affine and header, PNG grey and colour (YCbCr), TIFF, 2D NIfTI slices, errors,
atomic writes, the co-registration check and resampling."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from core_helpers import OBLIQUE_AFFINE, leftovers, phantom, write_nifti
from napari_isfl.io import (
    ImageData,
    atomic_write,
    image_suffix,
    read_image,
    rgb_to_ycbcr,
    write_image,
    ycbcr_to_rgb,
)


def _int16_volume(shape: tuple[int, ...] = (13, 11, 7)) -> np.ndarray:
    return np.rint(phantom(shape, 1) * 2000 - 300).astype(np.int16)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip(tmp_path: Path, suffix: str) -> None:
    """read -> write -> read keeps shape, affine, qform/sform codes and voxel sizes; int16 stays int16
    on read (no float64), the written result is float32 in [0, 1]."""
    volume = _int16_volume()
    source = nib.Nifti1Image(volume, OBLIQUE_AFFINE)
    source.header.set_qform(OBLIQUE_AFFINE, code=1)
    source.header.set_sform(OBLIQUE_AFFINE, code=4)
    source.header.set_xyzt_units("mm", "sec")
    nib.save(source, tmp_path / f"in{suffix}")

    image = read_image(tmp_path / f"in{suffix}")
    assert image.kind == "nifti" and image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, volume)
    np.testing.assert_allclose(image.affine, OBLIQUE_AFFINE, atol=1e-5)
    assert image.stored_shape == volume.shape
    np.testing.assert_allclose(image.spacing, np.linalg.norm(OBLIQUE_AFFINE[:3, :3], axis=0), rtol=1e-5)

    result = (image.array - image.array.min()) / np.ptp(image.array)
    write_image(tmp_path / f"out{suffix}", result, image)
    written = nib.load(tmp_path / f"out{suffix}")
    assert written.shape == volume.shape and written.get_data_dtype() == np.float32
    np.testing.assert_allclose(written.affine, OBLIQUE_AFFINE, atol=1e-5)
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 4
    assert written.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(written.header.get_zooms(), source.header.get_zooms())
    back = read_image(tmp_path / f"out{suffix}")
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.array, result, atol=1e-7)
    assert back.array.min() >= 0 and back.array.max() <= 1


def test_scaled_nifti_reads_as_float32(tmp_path: Path) -> None:
    """A NIfTI with a scale slope is returned scaled, as float32 (not float64)."""
    image = nib.Nifti1Image(_int16_volume(), np.eye(4))
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    data = read_image(tmp_path / "scaled.nii.gz").array
    assert data.dtype == np.float32
    np.testing.assert_allclose(data, _int16_volume() * 0.5 + 10.0)


def test_nii_gz_suffix(tmp_path: Path) -> None:
    """``.nii.gz`` is one suffix (any case), and a ``.nii.gz`` output is gzip-compressed while ``.nii``
    is not."""
    assert image_suffix("a/b.nii.gz") == ".nii.gz"
    assert image_suffix("SCAN.NII.GZ") == ".nii.gz"
    assert image_suffix("x.nii") == ".nii" and image_suffix("y.tar.gz") == ".gz"
    reference = read_image(write_nifti(tmp_path / "r.nii", _int16_volume()))
    write_image(tmp_path / "o.nii.gz", np.zeros(reference.array.shape), reference)
    write_image(tmp_path / "o.nii", np.zeros(reference.array.shape), reference)
    assert (tmp_path / "o.nii.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "o.nii").read_bytes()[:2] != b"\x1f\x8b"


def test_nifti_slice_is_2d_and_written_back_3d(tmp_path: Path) -> None:
    """An (x, y, 1) NIfTI is fused as a 2D image and written back with its on-disk (x, y, 1) shape."""
    data = np.rint(phantom((23, 19), 2) * 1000).astype(np.int16)[:, :, None]
    image = read_image(write_nifti(tmp_path / "slice.nii.gz", data, OBLIQUE_AFFINE))
    assert image.array.shape == (23, 19) and image.stored_shape == (23, 19, 1)
    write_image(tmp_path / "out.nii.gz", image.array / 1000.0, image)
    written = nib.load(tmp_path / "out.nii.gz")
    assert written.shape == (23, 19, 1)
    np.testing.assert_allclose(written.affine, OBLIQUE_AFFINE, atol=1e-5)


def test_4d_nifti(tmp_path: Path) -> None:
    """A 4D series is refused with the fix; a 4D file holding one volume is read as 3D."""
    series = write_nifti(tmp_path / "series.nii.gz", np.zeros((5, 6, 7, 3), np.int16))
    with pytest.raises(ValueError, match=r"series\.nii\.gz: 4D volume of shape \(5, 6, 7, 3\).*extract one"):
        read_image(series)
    single = read_image(write_nifti(tmp_path / "one.nii.gz", np.ones((5, 6, 7, 1), np.int16)))
    assert single.array.shape == (5, 6, 7)


def test_png_grey_round_trip(tmp_path: Path) -> None:
    """A grey PNG reads as its 2D uint8 pixels; a result in [0, 1] is written as 8-bit grey."""
    pixels = np.rint(phantom((37, 50), 3) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    image = read_image(tmp_path / "grey.png")
    assert image.kind == "raster" and not image.is_color and image.affine is None
    np.testing.assert_array_equal(image.array, pixels)
    result = pixels / 255.0
    write_image(tmp_path / "out.png", result, image)
    with Image.open(tmp_path / "out.png") as written:
        assert written.mode == "L"
        np.testing.assert_array_equal(np.asarray(written), pixels)


def _pseudo_colour(shape: tuple[int, int]) -> np.ndarray:
    """An RGB pseudo-colour image (matplotlib's 'hot' map over a phantom), like Harvard PET/SPECT."""
    from matplotlib import colormaps

    return (colormaps["hot"](phantom(shape, 4))[..., :3] * 255).round().astype(np.uint8)


def test_png_rgb_luminance_and_colour_restored(tmp_path: Path) -> None:
    """An RGB PNG reads as its YCbCr luminance (BT.601) with the chroma kept; writing the luminance
    back with colour gives the original RGB (within rounding), and ``color=False`` gives grey."""
    rgb = _pseudo_colour((33, 40))
    Image.fromarray(rgb).save(tmp_path / "pet.png")
    image = read_image(tmp_path / "pet.png")
    assert image.is_color and image.array.shape == (33, 40) and image.chroma.shape == (2, 33, 40)
    expected_y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(image.array, expected_y, atol=1e-3)
    write_image(tmp_path / "colour.png", image.array / 255.0, image)
    with Image.open(tmp_path / "colour.png") as written:
        assert written.mode == "RGB"
        assert np.abs(np.asarray(written).astype(int) - rgb).max() <= 2
    write_image(tmp_path / "grey.png", image.array / 255.0, image, color=False)
    with Image.open(tmp_path / "grey.png") as written:
        assert written.mode == "L"


def test_rgb_file_holding_grey_is_grey(tmp_path: Path) -> None:
    """An RGB or RGBA file whose channels are equal is a grey image (no chroma)."""
    grey = np.rint(phantom((20, 21), 5) * 255).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)])).save(tmp_path / "rgba.png")
    for name in ("rgb.png", "rgba.png"):
        image = read_image(tmp_path / name)
        assert not image.is_color
        np.testing.assert_array_equal(image.array, grey)


def test_ycbcr_inverse() -> None:
    """ycbcr_to_rgb inverts rgb_to_ycbcr on every 8-bit colour of a grid (within one level)."""
    levels = np.arange(0, 256, 15, dtype=np.uint8)
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    assert np.abs(ycbcr_to_rgb(rgb_to_ycbcr(rgb)).astype(int) - rgb).max() <= 1


def test_tiff_image_and_stack(tmp_path: Path) -> None:
    """TIFF: a 2D image and a 3D stack read as arrays; a result is written as float32 TIFF."""
    image2d = phantom((25, 30), 6)
    stack = phantom((6, 25, 30), 7)
    tifffile.imwrite(tmp_path / "a.tif", image2d)
    tifffile.imwrite(tmp_path / "b.tiff", stack)
    read2d, read3d = read_image(tmp_path / "a.tif"), read_image(tmp_path / "b.tiff")
    assert read2d.kind == "tiff" and read3d.array.shape == stack.shape
    np.testing.assert_array_equal(read2d.array, image2d)
    write_image(tmp_path / "out.tif", read3d.array, read3d)
    written = tifffile.imread(tmp_path / "out.tif")
    assert written.dtype == np.float32
    np.testing.assert_array_equal(written, stack)


def test_read_errors(tmp_path: Path) -> None:
    """Missing, unreadable and unsupported files each give a message naming the file."""
    with pytest.raises(FileNotFoundError, match=r"missing\.nii\.gz: no such file"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match=r"broken\.nii\.gz: could not be read as \.nii\.gz"):
        read_image(tmp_path / "broken.nii.gz")
    full = write_nifti(tmp_path / "full.nii", _int16_volume()).read_bytes()
    (tmp_path / "truncated.nii").write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match=r"truncated\.nii: could not be read as \.nii"):
        read_image(tmp_path / "truncated.nii")
    (tmp_path / "broken.png").write_bytes(b"PNG? no")
    with pytest.raises(ValueError, match=r"broken\.png: could not be read as \.png"):
        read_image(tmp_path / "broken.png")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"data\.csv: unsupported file type '\.csv'.*NIfTI"):
        read_image(tmp_path / "data.csv")


def test_write_errors(tmp_path: Path) -> None:
    """A 3D result as PNG, a result of the wrong shape, and an unknown suffix are refused."""
    with pytest.raises(ValueError, match="a 3D result cannot be written as .png"):
        write_image(tmp_path / "v.png", np.zeros((4, 5, 6)))
    reference = ImageData(np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"result shape \(5, 4\) differs from its reference \(4, 5\)"):
        write_image(tmp_path / "r.png", np.zeros((5, 4)), reference)
    with pytest.raises(ValueError, match="unsupported output type '.mhd'"):
        write_image(tmp_path / "r.mhd", np.zeros((4, 5)))
    assert leftovers(tmp_path) == []


def test_atomic_write_keeps_existing_file(tmp_path: Path) -> None:
    """A failing writer leaves the existing file byte for byte and no temporary file."""
    target = tmp_path / "result.nii.gz"
    target.write_bytes(b"previous result")

    def failing(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(target, failing)
    assert target.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == []
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new" and leftovers(tmp_path) == []

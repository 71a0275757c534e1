"""Reading and writing images: NIfTI (with affine and header), PNG/JPEG/BMP and TIFF.

Conventions (applied here and nowhere else):

* NIfTI arrays keep nibabel's (x, y, z) voxel order and their stored dtype (int16 stays int16; no
  ``get_fdata`` float64 blow-up). The affine and header travel with the array in :class:`ImageData`
  so that :func:`write_image` restores them exactly.
* 2D images are (rows, columns). A colour (RGB) image is kept as its luminance Y (ITU-R BT.601, as
  in YCbCr), with the chroma (Cb, Cr) alongside so a fused Y can be coloured back (the usual way of
  fusing pseudo-colour PET/SPECT with MRI).
* Every write goes to a temporary file in the target folder first and is renamed into place, so a
  failed run never leaves a half-written file nor replaces an existing output.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageData",
    "atomic_write",
    "atomic_write_all",
    "check_affine",
    "file_sha256",
    "signals_held",
    "split_colour",
    "value_writer",
    "image_suffix",
    "image_writer",
    "nifti_like",
    "read_image",
    "rgb_to_ycbcr",
    "write_image",
    "ycbcr_to_rgb",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + RASTER_SUFFIXES + TIFF_SUFFIXES
#: DICOM files carry these suffixes or none (read through :mod:`napari_isfl.dicom`, not written here)
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


@dataclass
class ImageData:
    """An image with what is needed to write a result back in the same space.

    Attributes:
        array: the voxels ((x, y, z) for NIfTI, (rows, cols) for 2D); luminance for colour images.
        path: where it was read from (``None`` for in-memory data).
        kind: ``"nifti"``, ``"raster"`` (PNG/JPEG/BMP), ``"tiff"`` or ``"array"``.
        affine: 4x4 voxel-to-world matrix (NIfTI), else ``None``.
        header: the NIfTI header, kept for writing.
        chroma: ``(2, rows, cols)`` Cb/Cr of a colour image, else ``None``.
        stored_shape: shape on disk (a NIfTI ``(x, y, 1)`` slice is fused as 2D and written back 3D).
    """

    array: np.ndarray
    path: Path | None = None
    kind: str = "array"
    affine: np.ndarray | None = None
    header: object | None = None
    chroma: np.ndarray | None = None
    stored_shape: tuple[int, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else "array"

    @property
    def spacing(self) -> tuple[float, ...]:
        if self.affine is None:
            return (1.0,) * self.array.ndim
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, : self.array.ndim], axis=0))

    @property
    def is_color(self) -> bool:
        return self.chroma is not None


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks: bounded memory for any size."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_suffix(path: str | os.PathLike) -> str:
    """The file type suffix, treating ``.nii.gz`` as one suffix (``os.path.splitext`` does not)."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB in 0..255 to ``(3, ...)`` Y, Cb, Cr (ITU-R BT.601 full range, float32)."""
    rgb = rgb.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.stack([y, cb, cr])


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`: ``(3, ...)`` to ``(..., 3)`` uint8."""
    y, cb, cr = (c.astype(np.float32) for c in ycbcr)
    r = y + 1.402 * (cr - 128.0)
    g = y - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0)
    b = y + 1.772 * (cb - 128.0)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


def split_colour(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Luminance and chroma of ``(..., 3|4)`` colour pixels, on the 0..255 scale: 8-bit values as they
    are, floats in [0, 1] scaled by 255 (an alpha channel is ignored).

    Returns:
        ``(Y (...), CbCr (2, ...))``, float32.

    Examples:
        >>> y, chroma = split_colour(np.array([[[255, 0, 0]]], dtype=np.uint8))
        >>> round(float(y[0, 0]), 2), chroma.shape
        (76.24, (2, 1, 1))
    """
    rgb = np.asarray(pixels)[..., :3]
    if np.issubdtype(rgb.dtype, np.floating) and rgb.size and float(rgb.max()) <= 1.0:
        rgb = rgb * 255.0
    ycbcr = rgb_to_ycbcr(rgb)
    return ycbcr[0], ycbcr[1:]


def _from_rgb(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey array, or luminance plus chroma for a colour image (an RGB file holding grey is grey)."""
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        rgb = pixels[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0], None
        ycbcr = rgb_to_ycbcr(rgb)
        return ycbcr[0], ycbcr[1:]
    return pixels, None


def read_image(path: str | os.PathLike) -> ImageData:
    """Read a NIfTI volume/slice, a DICOM series (a folder, or any file of it: needs the ``clinical``
    extra), a PNG/JPEG/BMP image or a TIFF image/stack.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an unsupported type, an unreadable file, or a 4D volume (with the fix).
    """
    path = Path(path)
    if path.exists() and (path.is_dir() or image_suffix(path) in DICOM_SUFFIXES or not image_suffix(path)):
        from .dicom import is_dicom, read_dicom

        if is_dicom(path):  # a DICOM series: a folder, or any file of it
            return read_dicom(path)
        if path.is_dir():
            raise ValueError(
                f"{path} is a folder without DICOM files; give a DICOM series folder or an image file "
                "(NIfTI .nii/.nii.gz, PNG/JPEG/BMP, TIFF)"
            )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = image_suffix(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            return _read_nifti(path)
        if suffix in RASTER_SUFFIXES:
            from PIL import Image

            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB") if img.mode in ("P", "RGBA", "LA", "CMYK") else img)
            array, chroma = _from_rgb(pixels)
            return ImageData(array, path, "raster", chroma=chroma, stored_shape=array.shape)
        if suffix in TIFF_SUFFIXES:
            import tifffile

            pixels = tifffile.imread(path)
            array, chroma = _from_rgb(pixels)
            if array.ndim not in (2, 3):
                raise ValueError(f"{path}: TIFF of shape {pixels.shape} is neither an image nor a 3D stack")
            return ImageData(array, path, "tiff", chroma=chroma, stored_shape=array.shape)
    except Exception as error:  # readers raise many types (nibabel's ImageFileError, zlib.error, ...)
        if isinstance(error, ValueError) and str(path) in str(error):
            raise
        raise ValueError(f"{path}: could not be read as {suffix} ({error})") from error
    raise ValueError(
        f"{path}: unsupported file type {suffix!r}; use NIfTI (.nii, .nii.gz), PNG/JPEG/BMP or TIFF"
    )


def check_affine(affine: np.ndarray, path: str | os.PathLike) -> None:
    """Refuse a voxel-to-world matrix that places no voxel anywhere: NaN/Inf entries, or a singular
    linear part (a zero or non-finite voxel size, collinear axes).

    Raises:
        ValueError: naming the file, what is wrong, and the fix.
    """
    matrix = np.asarray(affine, dtype=float)
    fix = "fix the header's sform/qform (e.g. nibabel's set_sform, fslorient) or re-export the image"
    if not np.isfinite(matrix).all():
        raise ValueError(f"{path}: the voxel-to-world matrix (sform/qform) holds NaN or Inf; {fix}")
    linear = matrix[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if (spacing <= 0).any() or abs(np.linalg.det(linear)) < 1e-12 * max(float(np.prod(spacing)), 1e-300):
        raise ValueError(
            f"{path}: the voxel-to-world matrix (sform/qform) is singular (voxel sizes "
            f"{tuple(float(v) for v in np.round(spacing, 6))} mm); {fix}"
        )


def _read_nifti(path: Path) -> ImageData:
    import nibabel as nib

    img = nib.load(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
        raise ValueError(
            f"{path}: 4D volume of shape {shape} ({int(np.prod(shape[3:]))} volumes); fusion takes one 3D "
            "volume per input: extract one first (e.g. nibabel.funcs.four_to_three or fslroi)"
        )
    check_affine(img.affine, path)
    if img.get_data_dtype().names is not None:
        raise ValueError(
            f"{path}: an RGB NIfTI ({img.get_data_dtype()}) holds colour, not one intensity per voxel; "
            "convert it to grey (e.g. its luminance) or fuse one channel"
        )
    # unscaled data keeps its stored dtype (int16 stays int16); scaled data becomes float32, not float64
    proxy = img.dataobj
    scaled = getattr(proxy, "slope", 1.0) != 1.0 or getattr(proxy, "inter", 0.0) != 0.0
    array = img.get_fdata(dtype=np.float32) if scaled else np.asanyarray(proxy)
    array = array.reshape(shape[:3] if len(shape) >= 3 else shape)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return ImageData(array, path, "nifti", img.affine.copy(), img.header.copy(), stored_shape=shape)


def _mode_for(path: Path) -> int:
    """The permissions ``path`` should get: its current ones, or those a plain ``open()`` would give."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temp_path_beside(path: str | os.PathLike) -> Path:
    """A new empty hidden file ``.NAME.*.partSUFFIX`` in ``path``'s folder (created if needed), keeping
    the image suffix so writers pick the right format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".part{image_suffix(path) or '.tmp'}", dir=path.parent
    )
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block ends (they are delivered then), on the main thread of
    POSIX systems; elsewhere a no-op. Used around the renames that put staged outputs in place."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def atomic_write_all(writes: Mapping[str | os.PathLike, Callable[[Path], object]]) -> list[Path]:
    """Call each ``write(tmp_path)`` on a temporary file beside its path, then rename all of them onto
    their paths, only once every write has succeeded.

    The temporary names keep the suffix (writers pick their format from it). On any error or interruption
    (Ctrl-C, and SIGTERM under :func:`~napari_isfl.outputs.terminate_as_interrupt`) every temporary file is
    removed and every existing path is left untouched; the renames themselves run with SIGINT and SIGTERM
    held back, so an interruption cannot fall between them.
    """
    staged: dict[Path, Path] = {}
    try:
        for path, write in writes.items():
            path = Path(path)
            staged[path] = tmp = _temp_path_beside(path)
            write(tmp)
            os.chmod(tmp, _mode_for(path))  # mkstemp gives 0600; a writer may also replace the file
        with signals_held():
            for path, tmp in staged.items():
                os.replace(tmp, path)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return list(staged)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """:func:`atomic_write_all` for one file: ``write(tmp_path)``, then rename onto ``path``."""
    return atomic_write_all({path: write})[0]


def write_image(
    path: str | os.PathLike,
    array: np.ndarray,
    reference: ImageData | None = None,
    color: bool = True,
) -> Path:
    """Write a fused/derived image in [0, 1] in the space of ``reference``, atomically (see
    :func:`image_writer` for the formats)."""
    return atomic_write(path, image_writer(path, array, reference, color))


def nifti_like(array: np.ndarray, reference: ImageData | None = None):
    """A NIfTI image of ``array`` (float32) in the space of ``reference``: a NIfTI reference's affine and
    header, another reference with an affine (a DICOM series) its affine (sform and, when orthogonal,
    qform codes "scanner"), else the identity. A 2D array takes the reference's on-disk shape
    (``(x, y, 1)``)."""
    import nibabel as nib

    data = np.asarray(array, dtype=np.float32)
    if reference is None or reference.affine is None:
        return nib.Nifti1Image(data, np.eye(4))
    shape = reference.stored_shape[:3] if len(reference.stored_shape) >= 3 else data.shape
    if reference.kind == "nifti":
        header = reference.header.copy()
        header.set_data_dtype(np.float32)
        header.set_slope_inter(1.0, 0.0)
        return nib.Nifti1Image(data.reshape(shape), reference.affine, header)
    from .spatial import is_orthogonal

    image = nib.Nifti1Image(data.reshape(shape), reference.affine)
    image.set_sform(reference.affine, code=1)
    if is_orthogonal(reference.affine):
        image.set_qform(reference.affine, code=1)
    image.header.set_xyzt_units("mm")
    return image


def value_writer(
    path: str | os.PathLike, array: np.ndarray, reference: ImageData
) -> Callable[[Path], object]:
    """A writer of an image in its own units (HU, SUV, MR values: not the [0, 1] of a fusion) on
    ``reference``'s grid, as NIfTI (``isfl register``'s output).

    Raises:
        ValueError: a suffix other than NIfTI's.
    """
    import nibabel as nib

    if image_suffix(path) not in NIFTI_SUFFIXES:
        raise ValueError(f"{path}: images in their own units are written as NIfTI; use .nii.gz or .nii")
    image = nifti_like(array, reference)
    return lambda tmp: nib.save(image, tmp)


def image_writer(
    path: str | os.PathLike,
    array: np.ndarray,
    reference: ImageData | None = None,
    color: bool = True,
    intensity_range: tuple[float, float] | None = (0.0, 1.0),
) -> Callable[[Path], object]:
    """Check a fused/derived image in [0, 1] against ``path`` and ``reference`` now, and return the
    function that writes it (to the temporary file of :func:`atomic_write` / :func:`atomic_write_all`).

    * NIfTI: float32 with the reference's affine and header (a 2D result is written back with the
      reference's on-disk shape, e.g. ``(x, y, 1)``; a DICOM reference gives its affine), with
      ``intensity_range`` as the display window (cal_min, cal_max).
    * PNG/JPEG/BMP: 8-bit; with a colour ``reference`` and ``color=True``, the array is used as the
      luminance and the reference's chroma is re-attached (RGB output).
    * TIFF: float32 (grey) or 8-bit RGB when coloured.

    Raises:
        ValueError: unsupported suffix, or an array that does not fit the reference.
    """
    path = Path(path)
    suffix = image_suffix(path)
    data = np.asarray(array, dtype=np.float32)
    if reference is not None and reference.array.shape != data.shape:
        raise ValueError(
            f"{path}: result shape {data.shape} differs from its reference {reference.array.shape}"
        )
    chroma = reference.chroma if (reference is not None and color and reference.is_color) else None

    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        img = nifti_like(data, reference)
        if intensity_range is not None:  # the display window travels with the file
            img.header["cal_min"], img.header["cal_max"] = intensity_range
        return lambda tmp: nib.save(img, tmp)
    if suffix in RASTER_SUFFIXES + TIFF_SUFFIXES:
        if data.ndim == 3 and suffix in RASTER_SUFFIXES:
            raise ValueError(f"{path}: a 3D result cannot be written as {suffix}; use .nii.gz or .tif")
        grey = np.clip(np.rint(data * 255.0), 0, 255).astype(np.uint8)
        pixels = ycbcr_to_rgb(np.concatenate([data[None] * 255.0, chroma])) if chroma is not None else grey
        if suffix in TIFF_SUFFIXES:
            import tifffile

            out = pixels if chroma is not None else data
            return lambda tmp: tifffile.imwrite(tmp, out)
        from PIL import Image

        return lambda tmp: Image.fromarray(pixels).save(tmp)
    raise ValueError(
        f"{path}: unsupported output type {suffix!r}; use .nii.gz, .nii, .png, .jpg, .bmp or .tif"
    )

"""napari reader for NIfTI (``.nii``, ``.nii.gz``) images, placed in world (scanner, mm) coordinates.

Convention: the array keeps nibabel's voxel order ``(x, y, z)`` and its stored dtype (via
:func:`napari_isfl.io.read_image`: int16 stays int16, scaled data becomes float32, never float64). The
NIfTI voxel-to-world matrix ``A`` is split into

* ``scale``: the voxel spacing (the column norms of ``A``'s linear part), and
* ``affine``: the rest, i.e. axis directions and origin, ``A @ diag(1 / spacing)``,

so that ``layer.affine @ diag(layer.scale) == A`` and napari's world coordinates are the NIfTI world
coordinates. ``A``, the header (as bytes) and the on-disk shape are kept in
``metadata["napari_isfl"]["nifti"]`` so the writer restores them exactly. A 2D NIfTI slice
``(x, y, 1)`` opens as a 2D layer (its 3D affine is kept in the metadata). 4D volumes are refused with
a message saying how to extract one volume: fusion works on one 3D volume per modality.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["get_reader", "nifti_layer_data", "read_nifti"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: NIfTI spatial unit codes to the unit names napari (pint) understands; "unknown" is taken as mm,
#: as virtually every tool does
_UNITS = {"mm": "mm", "meter": "m", "micron": "um", "unknown": "mm"}

PathLike = str | os.PathLike
LayerDataTuple = tuple[Any, dict, str]


def _is_nifti(path: PathLike) -> bool:
    from ..io import image_suffix

    return image_suffix(path) in NIFTI_SUFFIXES


def get_reader(path: PathLike | Sequence[PathLike]) -> Callable[[Any], list[LayerDataTuple]] | None:
    """npe2 reader hook: :func:`read_nifti` for NIfTI files (one or several), else ``None``."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_is_nifti(p) for p in paths):
        return None
    return read_nifti


def read_nifti(path: PathLike | Sequence[PathLike]) -> list[LayerDataTuple]:
    """Read one or several NIfTI files into image LayerDataTuples (one layer each).

    Raises:
        ValueError: a 4D volume, or a file nibabel cannot read (the message names the file).
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [nifti_layer_data(p) for p in paths]


def split_nifti_affine(affine: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a NIfTI 4x4 voxel-to-world matrix into napari ``scale`` and ``affine`` for ``ndim`` axes.

    Returns:
        ``(spacing (ndim,), directions_and_origin (ndim + 1, ndim + 1))`` with
        ``directions_and_origin @ diag(spacing, 1)`` equal to ``affine`` restricted to ``ndim`` axes.
    """
    axes = [*range(ndim), 3]
    matrix = np.asarray(affine, dtype=float)[np.ix_(axes, axes)]
    spacing = np.linalg.norm(matrix[:ndim, :ndim], axis=0)
    spacing[spacing == 0] = 1.0  # a degenerate header: keep the axis rather than divide by zero
    directions = matrix.copy()
    directions[:ndim, :ndim] /= spacing
    return spacing, directions


def _robust_contrast(array: np.ndarray) -> tuple[float, float]:
    """0.5th..99.5th percentile of the voxels above the background: a readable first display."""
    from ..normalization import robust_range

    low, high = robust_range(array, 0.5, 99.5)
    if not high > low:
        low, high = float(np.min(array)), float(np.max(array))
    return (low, high) if high > low else (low, low + 1.0)


def nifti_layer_data(path: PathLike, name: str | None = None) -> LayerDataTuple:
    """One NIfTI file as an image LayerDataTuple placed in world coordinates (see the module doc)."""
    from ..io import image_suffix, read_image
    from ..normalization import guess_modality
    from ..spatial import is_orthogonal
    from .layers import METADATA_KEY

    image = read_image(path)
    array = image.array
    ndim = array.ndim
    spacing, directions = split_nifti_affine(image.affine, ndim)
    if not is_orthogonal(image.affine):
        warnings.warn(
            f"{image.path.name} has a sheared (non-orthogonal) voxel-to-world matrix; napari shows 2D "
            "slices of it only approximately (resampling and saving use the exact matrix)",
            UserWarning,
            stacklevel=2,
        )
    header = image.header
    spatial_unit = header.get_xyzt_units()[0] if hasattr(header, "get_xyzt_units") else "unknown"
    layer_name = name or image.path.name[: -len(image_suffix(image.path))]
    metadata = {
        METADATA_KEY: {
            "source": str(image.path),
            "modality": guess_modality(layer_name),
            "nifti": {
                "affine": np.asarray(image.affine, dtype=float).tolist(),
                "header": bytes(header.binaryblock),
                "header_class": type(header).__name__,
                "stored_shape": list(image.stored_shape),
                "dtype": str(array.dtype),
            },
        }
    }
    kwargs = {
        "name": layer_name,
        "scale": tuple(float(s) for s in spacing),
        "affine": directions,
        "units": (_UNITS.get(spatial_unit, "mm"),) * ndim,
        "axis_labels": ("x", "y", "z")[:ndim],
        "colormap": "gray",
        "contrast_limits": _robust_contrast(array),
        "metadata": metadata,
    }
    return array, kwargs, "image"

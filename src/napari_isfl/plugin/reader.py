"""napari reader for NIfTI (``.nii``, ``.nii.gz``) images, placed in world (scanner, mm) coordinates and
shown the way a radiologist reads them.

Convention. A 3D volume opens **axial**, anterior up and the patient's right on the screen's left (the
radiological convention): the array is reoriented (a transpose and flips, a view: no copy) so that its
axes run inferior->superior, anterior->posterior and right->left, and napari's world axes are the
scanner's coordinates in that order, ``(S, P, L)`` in mm: world ``(z, -y, -x)`` of the NIfTI RAS+
coordinates. napari slides along its first axis and draws the other two as rows (down) and columns
(right), hence axial slices with anterior up and right on the left. The data-to-world matrix is split into

* ``scale``: the voxel spacing (the column norms of the matrix's linear part), and
* ``affine``: the rest, i.e. axis directions (near identity after the reorientation) and origin,

so world coordinates are exact: a point's world coordinates are its RAS+ coordinates ``(x, y, z)`` as
``(z, -y, -x)``. The NIfTI matrix, the header (as bytes), the on-disk shape and the reorientation are kept in
``metadata["napari_isfl"]["nifti"]``, so the writer restores the file exactly. A 2D NIfTI slice
``(x, y, 1)`` opens as a 2D layer in its stored order (its 3D affine is kept in the metadata). 4D volumes
are refused with a message saying how to extract one volume: fusion works on one 3D volume per modality.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..spatial import DISPLAY_AXCODES, display_orientation

__all__ = [
    "get_dicom_reader",
    "get_reader",
    "image_layer_data",
    "nifti_layer_data",
    "read_dicom_layers",
    "read_nifti",
    "stored_and_displayed",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: NIfTI spatial unit codes to the unit names napari (pint) understands; "unknown" is taken as mm,
#: as virtually every tool does
_UNITS = {"mm": "mm", "meter": "m", "micron": "um", "unknown": "mm"}

PathLike = str | os.PathLike
LayerDataTuple = tuple[Any, dict, str]


def _is_nifti(path: PathLike) -> bool:
    from ..io import image_suffix

    return image_suffix(path) in NIFTI_SUFFIXES


def get_dicom_reader(path: PathLike | Sequence[PathLike]) -> Callable[[Any], list[LayerDataTuple]] | None:
    """npe2 reader hook for DICOM: :func:`read_dicom_layers` for a folder holding a series (or a DICOM
    file of one), else ``None``. Cheap: it reads the first 132 bytes of at most 64 files."""
    from ..dicom import is_dicom

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return read_dicom_layers if paths and is_dicom(paths[0]) else None


def read_dicom_layers(path: PathLike | Sequence[PathLike]) -> list[LayerDataTuple]:
    """Every series of a folder (or the series of a file), one image layer each: axial, in world (mm)
    coordinates from the DICOM geometry, CT in HU, PET in SUVbw where the tags allow it (the layer
    metadata says why not otherwise), named after the series description.

    Raises:
        DicomError: slices that do not form one volume (the message says why).
        MissingDependencyError: the ``clinical`` extra is not installed.
    """
    from ..dicom import find_series, read_dicom

    first = Path(path if isinstance(path, (str, os.PathLike)) else list(path)[0])
    uids = [s.uid for s in find_series(first)] if first.is_dir() else [None]
    layers = []
    for uid in uids:
        image = read_dicom(first, series_uid=uid)
        info = image.header
        name = info.series_description or f"{info.modality} {first.name}"
        if len(uids) > 1 and any(
            layer[1]["name"] == name for layer in layers
        ):  # two series with one description: tell them apart
            name = f"{name} ({uid[-8:]})"
        layers.append(image_layer_data(image, name, info.modality_tag, {"dicom": info.as_dict()}))
    return layers


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


def stored_and_displayed(nifti: dict | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The orientation transforms (file -> display, display -> file) of a layer the reader showed axial,
    from its ``metadata["napari_isfl"]["nifti"]``; ``None`` for a layer shown as stored."""
    if not nifti or not nifti.get("display_axcodes"):
        return None
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    stored = io_orientation(np.asarray(nifti["affine"], dtype=float))
    shown = axcodes2ornt(tuple(nifti["display_axcodes"]))
    return ornt_transform(stored, shown), ornt_transform(shown, stored)


def nifti_layer_data(path: PathLike, name: str | None = None) -> LayerDataTuple:
    """One NIfTI file as an image LayerDataTuple placed in world coordinates (see the module doc)."""
    from ..io import image_suffix, read_image

    image = read_image(path)
    layer_name = name or image.path.name[: -len(image_suffix(image.path))]
    return image_layer_data(image, layer_name)


def image_layer_data(
    image, layer_name: str, modality: str | None = None, extra_metadata: dict | None = None
) -> LayerDataTuple:
    """An :class:`~napari_isfl.io.ImageData` with a RAS+ affine (NIfTI, DICOM) as an image LayerDataTuple:
    3D volumes axial (see the module doc), 2D slices as stored."""
    from ..normalization import guess_modality
    from ..spatial import is_orthogonal
    from .layers import METADATA_KEY

    array = image.array
    ndim = array.ndim
    if not is_orthogonal(image.affine):
        warnings.warn(
            f"{image.name} has a sheared (non-orthogonal) voxel-to-world matrix; napari shows 2D "
            "slices of it only approximately (resampling and saving use the exact matrix)",
            UserWarning,
            stacklevel=2,
        )
    nifti = {
        "affine": np.asarray(image.affine, dtype=float).tolist(),
        "stored_shape": list(image.stored_shape),
        "dtype": str(array.dtype),
    }
    if image.header is not None and hasattr(image.header, "binaryblock"):
        nifti |= {"header": bytes(image.header.binaryblock), "header_class": type(image.header).__name__}
    if ndim == 3:
        array, matrix, transform = display_orientation(image.affine, array)
        nifti["display_axcodes"] = list(DISPLAY_AXCODES)
        spacing, directions = split_nifti_affine(matrix, ndim)
        axis_labels = DISPLAY_AXCODES
    else:
        spacing, directions = split_nifti_affine(image.affine, ndim)
        axis_labels = ("x", "y")
    header = image.header
    spatial_unit = header.get_xyzt_units()[0] if hasattr(header, "get_xyzt_units") else "unknown"
    metadata = {
        METADATA_KEY: {
            "source": str(image.path),
            "modality": modality or guess_modality(layer_name),
            "nifti": nifti,
            **(extra_metadata or {}),
        }
    }
    kwargs = {
        "name": layer_name,
        "scale": tuple(float(s) for s in spacing),
        "affine": directions,
        "units": (_UNITS.get(spatial_unit, "mm"),) * ndim,
        "axis_labels": tuple(axis_labels),
        "colormap": "gray",
        "contrast_limits": _robust_contrast(array),
        "metadata": metadata,
    }
    return array, kwargs, "image"

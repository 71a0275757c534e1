"""napari writer: an image layer to NIfTI (``.nii.gz``, ``.nii``), in the layer's world coordinates.

The voxel-to-world matrix is the layer's data-to-world transform (``affine @ (translate + rotate @
shear @ scale)``); for a volume the reader showed axial (world ``(S, P, L)``, see
:mod:`napari_isfl.plugin.reader`) it is turned back into RAS+ and the array into the file's own axis
order. For a layer that came from the NIfTI reader, or a fused output on such a layer's
grid, ``metadata["napari_isfl"]["nifti"]`` holds the source's affine, header and on-disk shape: when
the layer's transform still equals that affine, the stored affine and header are written back
exactly (a 2D slice goes back to its ``(x, y, 1)`` shape); when the layer was moved or rescaled
since, the transform wins and the header supplies the rest. Layers that never saw NIfTI (TIFF,
numpy) get their affine from ``scale``/``translate``/``rotate``/``shear``/``affine`` alone. The
array keeps its dtype (bool becomes uint8, float16 becomes float32) and is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["layer_nifti_affine", "write_nifti"]

#: pint unit names (as napari reports them) to NIfTI spatial unit codes
_NIFTI_UNITS = {"millimeter": "mm", "meter": "meter", "micrometer": "micron", "mm": "mm", "m": "meter"}


def _embed_3d(matrix: np.ndarray) -> np.ndarray:
    """A 2D ``(3, 3)`` data-to-world matrix as the NIfTI 4x4 of an ``(x, y, 1)`` slice."""
    if matrix.shape == (4, 4):
        return matrix
    full = np.eye(4)
    full[np.ix_([0, 1, 3], [0, 1, 3])] = matrix
    return full


def layer_nifti_affine(meta: dict, ndim: int) -> np.ndarray:
    """The 4x4 NIfTI voxel-to-world matrix of a layer from its state dict (as writers receive it)."""
    from .layers import world_affine

    matrix = world_affine(
        meta.get("scale", (1.0,) * ndim),
        meta.get("translate"),
        meta.get("rotate"),
        meta.get("shear"),
        meta.get("affine"),
    )
    return _embed_3d(matrix)


def _stored_header(nifti: dict):
    import nibabel as nib

    header_class = nib.Nifti2Header if nifti.get("header_class") == "Nifti2Header" else nib.Nifti1Header
    return header_class(binaryblock=bytes(nifti["header"]))


def write_nifti(path: str | os.PathLike, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer: save an image layer as NIfTI.

    Args:
        path: target ending in ``.nii.gz`` or ``.nii``.
        data: the layer data (the full-resolution level of a multiscale layer is written).
        meta: the layer's state (``scale``, ``translate``, ``rotate``, ``shear``, ``affine``,
            ``metadata``, ``contrast_limits``, ``units``, ...).

    Returns:
        the written path.

    Raises:
        ValueError: another suffix, an RGB layer, or data that is not 2D/3D.
    """
    import nibabel as nib

    from .. import __version__
    from ..io import image_suffix
    from ..outputs import OutputPlan
    from .layers import METADATA_KEY

    path = Path(path)
    if image_suffix(path) not in (".nii", ".nii.gz"):
        raise ValueError(f"{path}: the napari-isfl writer writes NIfTI; use a .nii.gz or .nii name")
    plan = OutputPlan({"image": path})  # a folder, or an unwritable one, is refused before any work
    if meta.get("rgb"):
        raise ValueError(f"{path}: RGB layers cannot be written as NIfTI here; save them as PNG or TIFF")
    array = np.asarray(data[0] if meta.get("multiscale") else data)
    if array.ndim not in (2, 3):
        raise ValueError(f"{path}: NIfTI export takes 2D or 3D layers, this one has shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)

    affine = layer_nifti_affine(meta, array.ndim)
    namespace = (meta.get("metadata") or {}).get(METADATA_KEY) or {}
    nifti = namespace.get("nifti")
    if nifti and nifti.get("display_axcodes") and array.ndim == 3:
        # the reader showed the volume axial (world (S, P, L)): back to RAS+ and the stored axis order
        array, affine = _stored_orientation(array, affine, nifti)
    shape = array.shape
    header = None
    if nifti:
        header = _stored_header(nifti) if "header" in nifti else nib.Nifti1Header()
        stored_affine = np.asarray(nifti["affine"], dtype=float)
        stored_shape = tuple(int(s) for s in nifti["stored_shape"])
        same_grid = array.shape == stored_shape[: array.ndim] and np.allclose(
            affine, _embed_3d(stored_affine) if array.ndim == 3 else _slice_affine(stored_affine), atol=1e-4
        )
        if same_grid:  # unchanged placement: restore the source's exact matrix and on-disk shape
            affine = stored_affine
            shape = stored_shape[:3] if len(stored_shape) >= 3 else stored_shape
    else:
        header = nib.Nifti1Header()
        units = [str(u) for u in meta.get("units") or ()]
        if units and all(u == units[0] for u in units) and units[0] in _NIFTI_UNITS:
            header.set_xyzt_units(xyz=_NIFTI_UNITS[units[0]])
    header.set_data_dtype(array.dtype)
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(array.reshape(shape), affine, header)
    image.header.set_slope_inter(1.0, 0.0)
    limits = meta.get("contrast_limits")
    if limits is not None:  # the display window travels with the file
        image.header["cal_min"], image.header["cal_max"] = float(limits[0]), float(limits[1])
    role = namespace.get("role")
    if role:
        image.header["descrip"] = f"napari-isfl {__version__} {role}".encode()[:79]
    plan.write({"image": lambda tmp: nib.save(image, tmp)})
    return [str(path)]


def _stored_orientation(
    array: np.ndarray, world_matrix: np.ndarray, nifti: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Undo the reader's display orientation: the array in the file's axis order and its RAS+ matrix."""
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    from ..spatial import WORLD_FROM_RAS

    ras = np.linalg.inv(WORLD_FROM_RAS) @ world_matrix
    back = ornt_transform(
        axcodes2ornt(tuple(nifti["display_axcodes"])), io_orientation(np.asarray(nifti["affine"]))
    )
    image = nib.Nifti1Image(array, ras).as_reoriented(back)
    return np.asanyarray(image.dataobj), image.affine


def _slice_affine(stored_affine: np.ndarray) -> np.ndarray:
    """The 4x4 of an ``(x, y, 1)`` slice as a 2D layer sees it (its z column and row as identity)."""
    return _embed_3d(np.asarray(stored_affine, dtype=float)[np.ix_([0, 1, 3], [0, 1, 3])])

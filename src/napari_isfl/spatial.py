"""Voxel grids: foreground boxes, the co-registration check and the one resampler.

Everything that asks "where is the signal", "are these images on one grid" or "put this image on that
grid" goes through this module, for files (CLI, API) and napari layers alike, so the two paths agree to
the voxel. A grid is a shape plus a ``(D+1, D+1)`` data-to-world matrix (the NIfTI affine for files,
napari's composed transform for layers).

Examples:
    >>> import numpy as np
    >>> stack = np.zeros((2, 6, 5))
    >>> stack[0, 2:4, 1:3] = 1.0
    >>> foreground_box(stack)
    (slice(2, 4, None), slice(1, 3, None))
    >>> foreground_box(stack, margin=1)
    (slice(1, 5, None), slice(0, 4, None))
    >>> grid_difference((6, 5), np.eye(3), (6, 5), np.diag([2.0, 1.0, 1.0]))
    'voxel size (1.0, 1.0) vs (2.0, 1.0)'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .io import ImageData

__all__ = [
    "DISPLAY_AXCODES",
    "GRID_ATOL",
    "WORLD_FROM_RAS",
    "CoregistrationError",
    "check_coregistration",
    "display_orientation",
    "foreground_box",
    "grid_difference",
    "is_orthogonal",
    "resample_to_grid",
    "resample_to_reference",
]

#: the radiological display of a volume: axes run to superior, posterior and the patient's left, so axial
#: slices (rows down, columns right) show anterior up and the patient's right on the left
DISPLAY_AXCODES = ("S", "P", "L")
#: display world coordinates (S, P, L) from NIfTI RAS+ coordinates (x, y, z)
WORLD_FROM_RAS = np.array(
    [[0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
#: data-to-world matrices that differ by less than this (world units, usually mm) describe one grid
GRID_ATOL = 1e-3
#: relative tolerance on voxel sizes
SPACING_RTOL = 1e-3
#: the fix named by every co-registration error about files
FILE_FIX = "co-register them first, or pass --resample to resample every input onto the first one's grid"


class CoregistrationError(ValueError):
    """Inputs that are not on one voxel grid."""


def foreground_box(stack: np.ndarray, threshold: float = 0.0, margin: int = 0) -> tuple[slice, ...]:
    """Bounding box of the voxels above ``threshold`` in any channel of ``stack`` ``(N, *S)``, grown by
    ``margin`` voxels (within the image). An image with no such voxel gives the whole image."""
    signal = (np.asarray(stack) > threshold).any(axis=0)
    if not signal.any():
        return tuple(slice(0, s) for s in signal.shape)
    box = []
    for axis in range(signal.ndim):
        other = tuple(a for a in range(signal.ndim) if a != axis)
        hit = np.flatnonzero(signal.any(axis=other))
        box.append(slice(max(0, int(hit[0]) - margin), min(signal.shape[axis], int(hit[-1]) + 1 + margin)))
    return tuple(box)


def _rounded(values: np.ndarray, digits: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.round(values, digits))


def grid_difference(
    shape: Sequence[int], matrix: np.ndarray, ref_shape: Sequence[int], ref_matrix: np.ndarray
) -> str | None:
    """What makes a grid differ from the reference grid (shape, voxel size, origin or orientation), or
    ``None`` when they are the same grid within :data:`GRID_ATOL`."""
    if tuple(shape) != tuple(ref_shape):
        return f"shape {tuple(int(s) for s in shape)} vs {tuple(int(s) for s in ref_shape)}"
    matrix, ref_matrix = np.asarray(matrix, dtype=float), np.asarray(ref_matrix, dtype=float)
    if matrix.shape == ref_matrix.shape and np.allclose(matrix, ref_matrix, atol=GRID_ATOL):
        return None
    spacing = np.linalg.norm(matrix[:-1, :-1], axis=0)
    ref_spacing = np.linalg.norm(ref_matrix[:-1, :-1], axis=0)
    if spacing.shape != ref_spacing.shape or not np.allclose(
        spacing, ref_spacing, rtol=SPACING_RTOL, atol=GRID_ATOL
    ):
        return f"voxel size {_rounded(spacing, 4)} vs {_rounded(ref_spacing, 4)}"
    if not np.allclose(matrix[:-1, -1], ref_matrix[:-1, -1], atol=GRID_ATOL):
        return f"origin {_rounded(matrix[:-1, -1], 3)} vs {_rounded(ref_matrix[:-1, -1], 3)}"
    return "orientation (rotation, flip or shear of the data-to-world transform)"


def check_coregistration(images: Sequence[ImageData]) -> None:
    """Check that all images lie on the first one's voxel grid (shape, and the affines when both have
    one: voxel size, origin, axis directions).

    Raises:
        CoregistrationError: naming the first mismatching input, what differs, and the fix.
    """
    reference = images[0]
    for other in images[1:]:
        if other.array.ndim != reference.array.ndim:
            raise CoregistrationError(
                f"{other.name} is {other.array.ndim}D but {reference.name} is {reference.array.ndim}D; "
                "fuse images of the same dimensionality"
            )
        if reference.affine is None or other.affine is None:  # a plain image: only shapes compare
            ref_matrix = matrix = np.eye(other.array.ndim + 1)
        else:
            ref_matrix, matrix = reference.affine, other.affine
        difference = grid_difference(other.array.shape, matrix, reference.array.shape, ref_matrix)
        if difference is not None:
            raise CoregistrationError(
                f"{other.name} is not on the voxel grid of {reference.name} ({difference}); {FILE_FIX}"
            )


def is_orthogonal(matrix: np.ndarray, atol: float = 1e-4) -> bool:
    """Whether the axes of an affine's linear part are perpendicular (no shear).

    Rotations, flips and anisotropic spacing are orthogonal; a sheared grid (gantry-tilted CT, some
    oblique resamplings) is not, and napari shows its 2D slices only approximately.

    Examples:
        >>> is_orthogonal(np.diag([1.0, 2.0, 1.0]))
        True
        >>> is_orthogonal(np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
        False
    """
    linear = np.asarray(matrix, dtype=float)[:-1, :-1]
    norms = np.linalg.norm(linear, axis=0)
    norms[norms == 0] = 1.0
    unit = linear / norms
    return bool(np.allclose(unit.T @ unit, np.eye(len(unit)), atol=atol))


def resample_to_grid(
    data: np.ndarray,
    source_matrix: np.ndarray,
    target_shape: Sequence[int],
    target_matrix: np.ndarray,
    order: int = 1,
) -> np.ndarray:
    """Resample ``data`` onto another voxel grid through world coordinates (float32 out).

    Each target voxel ``v`` samples the source at ``inv(source_matrix) @ target_matrix @ v`` (both
    matrices data-to-world, ``(D+1, D+1)``). Outside the source's field of view the value is the
    source's minimum (its background: 0 for MRI/PET, air for CT in HU), reached over one voxel beyond
    the edge, so no artificial edge appears.

    Examples:
        >>> shifted = np.eye(3)
        >>> shifted[0, 2] = 1.0  # the source's voxel i lies at the target's voxel i + 1
        >>> resample_to_grid(np.arange(12.0).reshape(4, 3), shifted, (4, 3), np.eye(3))[:, 0]
        array([0., 0., 3., 6.], dtype=float32)
    """
    from scipy.ndimage import affine_transform

    mapping = np.linalg.inv(np.asarray(source_matrix, dtype=float)) @ np.asarray(target_matrix, dtype=float)
    ndim = len(target_shape)
    source = np.asarray(data, dtype=np.float32)
    return affine_transform(
        source,
        mapping[:ndim, :ndim],
        offset=mapping[:ndim, ndim],
        output_shape=tuple(int(s) for s in target_shape),
        order=order,
        # grid-constant interpolates towards the background over the last voxel: a target voxel that
        # lands on the source's edge up to rounding (the same grid, or flush edges) keeps its value,
        # where "constant" would drop it to the background
        mode="grid-constant",
        cval=float(source.min()),
    ).astype(np.float32, copy=False)


def resample_to_reference(image: ImageData, reference: ImageData, order: int = 1) -> ImageData:
    """Resample ``image`` onto ``reference``'s grid.

    With affines on both sides (NIfTI): through world coordinates with :func:`resample_to_grid` (a 2D
    NIfTI is resampled as the ``(x, y, 1)`` slice it describes); the result takes the reference's
    affine and header. Images without an affine are resized to the reference's shape, assuming both
    cover the same field of view.
    """
    if image.array.shape == reference.array.shape and (
        image.affine is None
        or reference.affine is None
        or np.allclose(image.affine, reference.affine, atol=GRID_ATOL)
    ):
        return image
    if image.affine is not None and reference.affine is not None:

        def as_3d(shape: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(shape[:3]) + (1,) * (3 - len(shape[:3]))

        source = np.asarray(image.array).reshape(as_3d(image.stored_shape))
        array = resample_to_grid(
            source, image.affine, as_3d(reference.stored_shape), reference.affine, order
        ).reshape(reference.array.shape)
        return replace(
            image,
            array=array,
            affine=reference.affine.copy(),
            header=reference.header,
            stored_shape=reference.stored_shape,
            chroma=None,
        )
    from scipy.ndimage import zoom

    if image.array.ndim != reference.array.ndim:
        raise CoregistrationError(
            f"cannot resample {image.array.ndim}D {image.name} onto {reference.array.ndim}D"
        )
    factors = [t / s for t, s in zip(reference.array.shape, image.array.shape, strict=True)]
    array = zoom(
        np.asarray(image.array, dtype=np.float32), factors, order=order, grid_mode=True, mode="nearest"
    )
    chroma = None
    if image.chroma is not None:
        chroma = np.stack(
            [zoom(c, factors, order=order, grid_mode=True, mode="nearest") for c in image.chroma]
        )
    return replace(image, array=array, chroma=chroma, stored_shape=reference.stored_shape)


def display_orientation(affine: np.ndarray, array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A volume reoriented for display (:data:`DISPLAY_AXCODES`) and its data-to-world matrix.

    Returns:
        ``(display array (a view), napari data-to-world matrix (4x4, world (S, P, L)), the nibabel
        orientation transform from the stored to the displayed axes)``.

    Examples:
        >>> volume = np.zeros((4, 5, 6))                                 # stored (x, y, z), RAS+
        >>> shown, matrix, _ = display_orientation(np.diag([2.0, 1.0, 3.0, 1.0]), volume)
        >>> shown.shape, np.diag(matrix).tolist()
        ((6, 5, 4), [3.0, 1.0, 2.0, 1.0])
    """
    from nibabel.orientations import (
        apply_orientation,
        axcodes2ornt,
        inv_ornt_aff,
        io_orientation,
        ornt_transform,
    )

    transform = ornt_transform(io_orientation(affine), axcodes2ornt(DISPLAY_AXCODES))
    shown = apply_orientation(array, transform)
    ras = np.asarray(affine, dtype=float) @ inv_ornt_aff(transform, array.shape)
    return shown, WORLD_FROM_RAS @ ras, transform

"""World matrices and images between napari-isfl's conventions and SimpleITK's.

World matrices are 4x4 in the NIfTI RAS+ convention (like :attr:`~napari_isfl.io.ImageData.affine`);
SimpleITK's physical points are LPS, so x and y change sign. Everything here converts, measures or
applies a transform; :mod:`.method` finds one.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import require
from ..spatial import is_orthogonal, resample_to_grid

if TYPE_CHECKING:  # pragma: no cover
    from ..io import ImageData


_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
_PURPOSE = "registration"


def _sitk():
    return require("SimpleITK", "clinical", _PURPOSE)


# ------------------------------------------------------------------------------------- world matrices
def rigid_matrix(angle_deg: float, axis, shift_mm, centre) -> np.ndarray:
    """A 4x4 world transform: a rotation by ``angle_deg`` about ``axis`` through ``centre``, then a shift
    (mm). Known transforms for testing and benchmarking registration, and for moving a scan on purpose.

    Examples:
        >>> m = rigid_matrix(90.0, (0, 0, 1), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        >>> np.round(m @ [1.0, 0.0, 0.0, 1.0], 6).tolist()
        [1.0, 1.0, 0.0, 1.0]
    """
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    rotation = Rotation.from_rotvec(np.radians(angle_deg) * axis).as_matrix()
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = np.asarray(centre) + np.asarray(shift_mm) - rotation @ np.asarray(centre)
    return matrix


def random_rigid(seed: int, centre, max_deg: float = 10.0, max_mm: float = 15.0) -> np.ndarray:
    """A seeded random :func:`rigid_matrix`: up to ``max_deg`` about a random axis through ``centre``, and a
    shift of up to ``max_mm`` in a random direction."""
    rng = np.random.default_rng(seed)
    angle, axis, direction = rng.uniform(0, max_deg), rng.normal(size=3), rng.normal(size=3)
    return rigid_matrix(angle, axis, direction / np.linalg.norm(direction) * rng.uniform(0, max_mm), centre)


def displacement_mm(first: np.ndarray, second: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How far apart two world transforms put each point: ``|first @ p - second @ p|`` (mm).

    The measure of registration accuracy used by the tests and the benchmark (on brain voxels).

    Args:
        first, second: ``(D+1, D+1)`` world matrices.
        points: ``(N, D)`` world points.
    """
    points = np.asarray(points, dtype=float)
    homogeneous = np.c_[points, np.ones(len(points))]
    difference = (np.asarray(first, dtype=float) - np.asarray(second, dtype=float)) @ homogeneous.T
    return np.linalg.norm(difference[:-1], axis=0)


def mutual_information(
    first: np.ndarray, second: np.ndarray, mask: np.ndarray | None = None, bins: int = 64
) -> float:
    """Mutual information (nats) of two images on one grid, from a joint histogram of ``bins`` x
    ``bins`` equal bins between each image's 0.5th and 99.5th percentile (values outside clipped).

    An independent check of an alignment (it is not the optimiser's sampled Mattes estimate): higher
    means the intensities predict each other better. ``mask`` restricts it to a region (e.g. the
    reference's brain).

    Examples:
        >>> ramp = np.linspace(0.0, 1.0, 1000)
        >>> round(mutual_information(ramp, 1.0 - ramp, bins=4), 3)  # one determines the other: log(4)
        1.386
        >>> round(mutual_information(ramp, np.zeros(1000), bins=4), 3)
        0.0
    """
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape:
        raise ValueError(f"images of shapes {first.shape} and {second.shape} are not on one grid")
    if mask is not None:
        first, second = first[np.asarray(mask, dtype=bool)], second[np.asarray(mask, dtype=bool)]
    indices = []
    for values in (first.ravel(), second.ravel()):
        low, high = np.percentile(values, [0.5, 99.5])
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
        indices.append(np.clip((scaled * bins).astype(np.int64), 0, bins - 1))
    joint = np.bincount(indices[0] * bins + indices[1], minlength=bins * bins).reshape(bins, bins)
    joint = joint / joint.sum()
    outer = joint.sum(axis=1, keepdims=True) @ joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))


def _flip(dimension: int) -> np.ndarray:
    return _FLIP if dimension == 3 else np.eye(dimension + 1)  # plain 2D pixel grids have no RAS/LPS


def transform_matrix(transform: Any, dimension: int = 3) -> np.ndarray:
    """The world matrix (RAS for 3D) of a linear SimpleITK transform (any kind, composites included).

    ITK transforms map LPS points; the matrix is measured by transforming the origin and the unit
    vectors, so any chain of linear transforms flattens exactly.
    """
    origin = np.array(transform.TransformPoint((0.0,) * dimension))
    matrix = np.eye(dimension + 1)
    matrix[:dimension, dimension] = origin
    for axis in range(dimension):
        unit = [0.0] * dimension
        unit[axis] = 1.0
        matrix[:dimension, axis] = np.array(transform.TransformPoint(tuple(unit))) - origin
    flip = _flip(dimension)
    return flip @ matrix @ flip


def itk_transform(matrix: np.ndarray) -> Any:
    """A SimpleITK ``AffineTransform`` (ITK convention, LPS for 3D) for a world matrix."""
    sitk = _sitk()
    matrix = np.asarray(matrix, dtype=float)
    dimension = matrix.shape[0] - 1
    flip = _flip(dimension)
    itk = flip @ matrix @ flip
    transform = sitk.AffineTransform(dimension)
    transform.SetMatrix(itk[:dimension, :dimension].ravel().tolist())
    transform.SetTranslation(itk[:dimension, dimension].tolist())
    return transform


def read_transform(path: str | os.PathLike, dimension: int = 3) -> np.ndarray:
    """Read an ITK transform file (``.tfm``, ``.txt``, ``.h5``, ``.mat``) as a RAS world matrix
    (reference -> moving, like :attr:`RegistrationResult.reference_to_moving`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file ITK cannot read, or a non-linear transform.
    """
    sitk = _sitk()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such transform file")
    try:
        transform = sitk.ReadTransform(str(path))
    except RuntimeError as error:
        raise ValueError(
            f"{path}: not an ITK transform file ({str(error).strip().splitlines()[-1]})"
        ) from error
    matrix = transform_matrix(transform, dimension)
    # a non-linear transform would give a matrix that does not predict other points
    probe = np.array([[10.0, -20.0, 30.0][:dimension], [-50.0, 40.0, 70.0][:dimension]])
    expected = np.array(
        [transform.TransformPoint(tuple(_flip(dimension)[:dimension, :dimension] @ p)) for p in probe]
    )
    predicted = (_flip(dimension) @ matrix @ np.c_[probe, np.ones(2)].T)[:dimension].T
    if not np.allclose(expected, predicted, atol=1e-6):
        raise ValueError(
            f"{path}: a non-linear transform ({transform.GetName()}); a rigid or affine one is needed"
        )
    return matrix


def write_transform(path: str | os.PathLike, reference_to_moving: np.ndarray) -> Path:
    """Write a RAS world matrix (reference -> moving) as an ITK transform file; returns the path."""
    sitk = _sitk()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteTransform(itk_transform(reference_to_moving), str(path))
    return path


# -------------------------------------------------------------------------------------------- images
def _world_affine(image: ImageData) -> np.ndarray:
    """The image's voxel-to-world matrix for its array's dimensions (a plain 2D image: pixels)."""
    ndim = image.array.ndim
    if image.affine is None:
        return np.eye(ndim + 1)
    affine = np.asarray(image.affine, dtype=float)
    if affine.shape != (ndim + 1, ndim + 1):
        raise ValueError(
            f"{image.name}: a {ndim}D array with a {affine.shape[0] - 1}D affine (a slice of a volume) "
            "cannot be registered; register the volumes, or 2D images without an affine"
        )
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:ndim, :ndim])) < 1e-12:
        raise ValueError(
            f"{image.name}: its voxel-to-world matrix is not finite and invertible; fix its header"
        )
    return affine


def _orthogonal(affine: np.ndarray) -> np.ndarray:
    """The closest grid ITK can hold: same origin, first axes kept, later axes made perpendicular
    (Gram-Schmidt), each keeping its spacing along its own perpendicular direction."""
    matrix = affine.copy()
    dimension = affine.shape[0] - 1
    for axis in range(1, dimension):
        column = matrix[:dimension, axis].copy()
        for previous in range(axis):
            unit = matrix[:dimension, previous] / np.linalg.norm(matrix[:dimension, previous])
            column -= (column @ unit) * unit
        matrix[:dimension, axis] = column
    return matrix


def _to_sitk(array: np.ndarray, affine: np.ndarray) -> Any:
    """A float32 SimpleITK image in ITK's physical space (LPS for 3D) from an array and its affine."""
    sitk = _sitk()
    dimension = array.ndim
    itk = _flip(dimension) @ affine
    linear = itk[:dimension, :dimension]
    spacing = np.linalg.norm(linear, axis=0)
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32).transpose())  # (x, y, z) index order
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(itk[:dimension, dimension].tolist())
    image.SetDirection((linear / spacing).ravel().tolist())
    return image


def _prepared(image: ImageData, role: str) -> tuple[np.ndarray, np.ndarray]:
    """Array and affine ready for ITK: float32, resampled onto an orthogonal grid when sheared, and
    winsorized (the metric's copy only: the result resamples the original values)."""
    array = np.asarray(image.array)
    if array.ndim not in (2, 3):
        raise ValueError(f"{role} {image.name} is {array.ndim}D; registration takes 2D or 3D images")
    if image.chroma is not None:
        raise ValueError(f"{role} {image.name} is a colour image; register its grey (luminance) version")
    affine = _world_affine(image)
    if not np.isfinite(array).all():
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    if not is_orthogonal(affine):  # e.g. gantry-tilted CT: ITK needs perpendicular axes
        square = _orthogonal(affine)
        array = resample_to_grid(array, affine, array.shape, square)
        affine = square
    return _winsorized(np.asarray(array, dtype=np.float32)), affine


def _winsorized(array: np.ndarray) -> np.ndarray:
    """The intensities clipped to their 0.5th..99.5th percentiles (as ANTs does by default).

    Mattes mutual information bins the whole intensity range: a few very bright voxels (vessels, fat,
    a hot spot) squeeze the tissues into a handful of bins, and the optimum drifts (an affine scaled
    by 6 % on an MSLUB T1W before this clip).
    """
    step = max(1, round((array.size / 1e6) ** (1 / array.ndim)))
    low, high = np.percentile(array[(slice(None, None, step),) * array.ndim], [0.5, 99.5])
    return np.clip(array, low, high) if high > low else array


def _foreground_centre(array: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """World centre of mass of the intensities above the image's minimum (CT air and PET zero weigh
    nothing), inside ``mask`` when given, from a strided sample."""
    step = max(1, round((array.size / 2e5) ** (1 / array.ndim)))
    strided = (slice(None, None, step),) * array.ndim
    sample = array[strided].astype(np.float64)
    weights = sample - sample.min()
    if mask is not None:
        weights = weights * np.asarray(mask)[strided]
    if not weights.sum() > 0:
        weights = np.ones_like(sample)
    grids = np.meshgrid(*[np.arange(n) * step for n in sample.shape], indexing="ij")
    index = np.array([(g * weights).sum() / weights.sum() for g in grids])
    return (affine @ np.r_[index, 1.0])[:-1]


def _mask_image(mask: np.ndarray | None, like: Any, shape: tuple[int, ...], role: str) -> Any:
    if mask is None:
        return None
    sitk = _sitk()
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"{role} mask of shape {mask.shape} does not match its image {shape}")
    if not mask.any():
        raise ValueError(f"{role} mask is empty; pass a mask with the region to align, or none")
    image = sitk.GetImageFromArray(mask.astype(np.uint8).transpose())
    image.CopyInformation(like)
    return image


def foreground_mask(array: np.ndarray) -> np.ndarray:
    """The voxels that hold signal: above the 0.5th percentile by 1% of the range up to the 99.5th.

    The background of a skull-stripped brain (0), CT air and the outside of the field of view fall
    out; an image without a clean background keeps nearly every voxel (harmless for registration).

    Examples:
        >>> image = np.zeros((4, 4))
        >>> image[1:3, 1:3] = [[5.0, 100.0], [80.0, 90.0]]
        >>> int(foreground_mask(image).sum())
        4
    """
    array = np.asarray(array)
    step = max(1, round((array.size / 1e6) ** (1 / max(array.ndim, 1))))
    sample = array[(slice(None, None, step),) * array.ndim]
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))  # robust to stray outliers
    return array > low + 0.01 * (high - low)


def apply_transform(
    moving: ImageData, reference: ImageData, reference_to_moving: np.ndarray, order: int = 1
) -> ImageData:
    """Resample ``moving`` onto ``reference``'s grid through a world transform (e.g. a saved one).

    Uses :func:`napari_isfl.spatial.resample_to_grid` (float32; outside the moving field of view its
    minimum). The result takes the reference's affine, header, kind and stored shape, and keeps the
    moving image's path (its name).
    """
    moving_affine = _world_affine(moving)
    reference_affine = _world_affine(reference)
    aligned = np.linalg.inv(np.asarray(reference_to_moving, dtype=float)) @ moving_affine
    array = resample_to_grid(moving.array, aligned, reference.array.shape, reference_affine, order=order)
    return replace(
        moving,
        array=array,
        kind=reference.kind,
        affine=None if reference.affine is None else np.asarray(reference.affine).copy(),
        header=reference.header,
        chroma=None,
        stored_shape=reference.stored_shape or tuple(reference.array.shape),
    )

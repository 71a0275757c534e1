"""Rigid and affine registration of one image onto another by mutual information (SimpleITK).

What :func:`register` does, in ITK's terms: the reference is the *fixed* image, the moving image is
sampled through a transform that maps reference world points to moving world points; Mattes mutual
information (seeded random samples in the reference's foreground, winsorized intensities) is
maximised by regular-step gradient descent with scales from physical shifts, over a multi-resolution
pyramid (shrink 4, 2, 1 with 2, 1, 0 mm smoothing by default). The rigid stage (Euler) starts from the
two images' world coordinates, or, when those are far apart, from their centres of mass and a coarse
search over rotations; the affine stage starts from the rigid result. The moving image is then
resampled onto the reference grid by :func:`napari_isfl.spatial.resample_to_grid`, the same resampler
as the "resample onto the reference" path, so both paths agree to the voxel. docs/CLINICAL.md has the
accuracy and time figures.

Conventions:

* World matrices here are 4x4 in the NIfTI RAS+ convention, like :attr:`ImageData.affine`.
  ``reference_to_moving`` maps a reference world point to the moving world point of the same
  anatomy (ITK's direction: the one that resampling needs); ``moving_to_reference`` is its inverse.
* ``RegistrationResult.transform`` is the same transform as a SimpleITK transform in ITK's own
  convention (LPS physical points, fixed to moving): ``sitk.WriteTransform`` / :func:`write_transform`
  save it as ``.tfm``/``.txt``/``.h5``, which ITK, 3D Slicer and ANTs read.
* Images are 3D with an affine (NIfTI, DICOM) or plain 2D arrays (pixel grids without an affine).

Examples:
    A world matrix converts to ITK's convention and back unchanged:

    >>> import numpy as np
    >>> shift = np.eye(4)
    >>> shift[:3, 3] = [1.0, 2.0, 3.0]  # 1 mm to the right (RAS x)
    >>> itk = itk_transform(shift)  # ITK maps LPS points: x and y change sign
    >>> itk.TransformPoint((0.0, 0.0, 0.0))
    (-1.0, -2.0, 3.0)
    >>> np.allclose(transform_matrix(itk), shift)
    True
    >>> displacement_mm(shift, np.eye(4), np.zeros((1, 3))).tolist()
    [3.7416573867739413]
"""

from __future__ import annotations

from .geometry import (
    apply_transform,
    displacement_mm,
    foreground_mask,
    itk_transform,
    mutual_information,
    random_rigid,
    read_transform,
    rigid_matrix,
    transform_matrix,
    write_transform,
)
from .method import (
    INITIALIZATIONS,
    TRANSFORMS,
    RegistrationCancelled,
    RegistrationProgress,
    RegistrationResult,
    register,
)

__all__ = [
    "INITIALIZATIONS",
    "TRANSFORMS",
    "RegistrationCancelled",
    "RegistrationProgress",
    "RegistrationResult",
    "apply_transform",
    "displacement_mm",
    "foreground_mask",
    "itk_transform",
    "mutual_information",
    "random_rigid",
    "read_transform",
    "register",
    "rigid_matrix",
    "transform_matrix",
    "write_transform",
]

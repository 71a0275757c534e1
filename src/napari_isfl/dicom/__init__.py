"""DICOM series in and out: one series of a folder read into an :class:`~napari_isfl.io.ImageData`
placed in world (RAS, mm) coordinates, and any image written out as a DICOM series.

Conventions (applied here and nowhere else):

* The array is ``(x, y, z)`` = (column, row, slice), like nibabel's voxel order, and ``affine`` is the
  4x4 voxel-to-world matrix in the NIfTI RAS+ convention. DICOM patient coordinates are LPS, so the
  affine is ``diag(-1, -1, 1, 1)`` times the LPS matrix built from the tags.
* Geometry comes from the tags of every slice: the in-plane axes from ImageOrientationPatient and
  PixelSpacing, the slice axis from the first to the last ImagePositionPatient after sorting the
  slices along the slice normal (the cross product of the row and column directions; so ``z`` always
  increases along the normal, whatever the file names or InstanceNumbers). Taking the slice axis from
  the positions keeps a gantry tilt exact (a sheared affine, as nibabel and dcm2niix do); positions
  that do not lie on one evenly spaced line (missing slices, several echoes or time points in one
  series) are refused with the reason, never silently resampled.
* Values: the modality LUT (RescaleSlope / RescaleIntercept, per slice) is applied, so CT is in
  Hounsfield units, PET in its stored units (usually Bq/ml) and MR as stored. PET in Bq/ml is then
  converted to SUV body-weight when the tags allow it (:func:`suv_factor`: Units ``BQML``,
  DecayCorrection ``START``, patient weight, injected dose, half-life and injection time); otherwise
  the values are kept and :attr:`DicomInfo.suv_note` says why.
* Pixels are decoded by SimpleITK (GDCM: every common transfer syntax, compressed ones included);
  tags are read by pydicom. Both come with the ``clinical`` extra and are imported only when a
  function here needs them.

Examples:
    The geometry of three axial slices stored from head to feet (LPS positions, 2 mm apart), read back
    in RAS with ``z`` along the slice normal (feet to head):

    >>> affine, order = series_affine(
    ...     orientation=[1, 0, 0, 0, 1, 0],
    ...     positions=[[-10, -20, 4], [-10, -20, 2], [-10, -20, 0]],
    ...     pixel_spacing=[0.5, 0.8],
    ... )
    >>> order.tolist()
    [2, 1, 0]
    >>> affine.round(3).tolist()
    [[-0.8, 0.0, 0.0, 10.0], [0.0, -0.5, 0.0, 20.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
"""

from __future__ import annotations

from .read import (
    LPS_TO_RAS,
    DicomError,
    DicomInfo,
    DicomSeries,
    find_series,
    is_dicom,
    modality_tag,
    read_dicom,
    series_affine,
    suv_factor,
)
from .write import PetDose, write_dicom_series

__all__ = [
    "LPS_TO_RAS",
    "DicomError",
    "DicomInfo",
    "DicomSeries",
    "PetDose",
    "find_series",
    "is_dicom",
    "modality_tag",
    "read_dicom",
    "series_affine",
    "suv_factor",
    "write_dicom_series",
]

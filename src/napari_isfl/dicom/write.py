"""Writing any image as a DICOM series (MR, CT or PET with dose tags): test data, demos, exports."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..io import ImageData


from .read import _SECONDARY_CAPTURE, _SOP_CLASSES, LPS_TO_RAS, _pydicom


@dataclass(frozen=True)
class PetDose:
    """The tags of a PET acquisition that SUV needs (what :func:`write_dicom_series` writes for PET).

    Attributes:
        weight_kg: patient weight (kg).
        injected_dose_bq: radionuclide total dose at injection (Bq).
        half_life_s: radionuclide half-life (s); 6586.2 s is F-18.
        delay_s: time from injection to the start of the series (s).
        units: PET Units tag (``"BQML"`` for activity concentration).
        decay_correction: DecayCorrection tag (``"START"``: decay-corrected to the series start).
        scan_start: date and time of the series start (SeriesDate/SeriesTime).
    """

    weight_kg: float = 75.0
    injected_dose_bq: float = 370e6
    half_life_s: float = 6586.2
    delay_s: float = 3600.0
    units: str = "BQML"
    decay_correction: str = "START"
    scan_start: datetime.datetime = field(default=datetime.datetime(2024, 1, 15, 10, 30, 0))

    @property
    def suv_factor(self) -> float:
        """SUVbw per Bq/ml: weight (g) over the dose decayed to the series start (Bq)."""
        decayed = self.injected_dose_bq * 2.0 ** (-self.delay_s / self.half_life_s)
        return self.weight_kg * 1000.0 / decayed


def _ds(value: float) -> str:
    """A float as a DICOM decimal string (at most 16 characters: about 1e-10 mm for positions)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _storage(values: np.ndarray, rescale: tuple[float, float] | None) -> tuple[np.ndarray, float, float]:
    """Stored 16-bit integers and the (slope, intercept) that give ``values`` back."""
    if rescale is None:
        low, high = float(values.min()), float(values.max())
        integral = np.issubdtype(values.dtype, np.integer) or bool(np.all(np.mod(values, 1) == 0))
        if integral and low >= -32768 and high <= 32767:
            return values.astype(np.int16), 1.0, 0.0
        if integral and low >= 0 and high <= 65535:
            return values.astype(np.uint16), 1.0, 0.0
        slope = (high - low) / 65535.0 or 1.0
        rescale = (slope, low)
    slope, intercept = rescale
    stored = np.rint((values.astype(np.float64) - intercept) / slope)
    if stored.min() >= 0 and stored.max() <= 65535:
        return stored.astype(np.uint16), slope, intercept
    if stored.min() >= -32768 and stored.max() <= 32767:
        return stored.astype(np.int16), slope, intercept
    raise ValueError(
        f"values {values.min():g}..{values.max():g} do not fit 16 bits with rescale slope {slope:g} and "
        f"intercept {intercept:g}; pass another rescale or none (chosen automatically)"
    )


def _pet_storage(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """One PET slice as PET scanners store it: 16 bits with its own slope and a zero intercept."""
    peak = float(np.abs(values).max())
    if values.min() >= 0:
        slope = peak / 65535.0 or 1.0
        return np.rint(values / slope).astype(np.uint16), slope, 0.0
    slope = peak / 32767.0
    return np.rint(values / slope).astype(np.int16), slope, 0.0


def write_dicom_series(
    image: ImageData | np.ndarray,
    folder: str | os.PathLike,
    affine: np.ndarray | None = None,
    *,
    modality: str = "MR",
    series_description: str = "",
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    rescale: tuple[float, float] | None = None,
    pet: PetDose | None = None,
) -> list[Path]:
    """Write a 2D or 3D image as a DICOM series (one uncompressed file per slice) in ``folder``.

    Used to build test and demo series from NIfTI data. The series is marked DERIVED / SECONDARY and
    carries no patient data (PatientName ``Anonymous``). The positions and orientation reproduce the
    affine exactly (16-character decimal strings: about 1e-10 mm), a sheared slice axis included.

    Args:
        image: an :class:`~napari_isfl.io.ImageData` (its array and affine) or an array ``(x, y[, z])``.
        folder: where the files go (created if needed); ``IM0001.dcm``... in slice order.
        affine: 4x4 RAS voxel-to-world matrix (default: the image's, else the identity).
        modality: DICOM Modality; ``"CT"`` values are HU, ``"PT"`` values are Bq/ml.
        series_description, series_uid, study_uid, frame_of_reference_uid, series_number: the
            series' identity (new UIDs by default; pass one frame of reference to several series to
            say they share world coordinates).
        rescale: ``(slope, intercept)`` with stored = (value - intercept) / slope, for every slice;
            by default integers that fit 16 bits are stored as they are, other values are scaled to
            16 bits (per slice for PT, as PET scanners do; per series otherwise).
        pet: PET tags for SUV (Units, DecayCorrection, weight, dose, half-life, times); PT only.

    Returns:
        The files written, in slice order.

    Raises:
        ValueError: an array that is not 2D or 3D, in-plane axes that are not perpendicular (DICOM
            cannot store them), or values that do not fit 16 bits with the given ``rescale``.
    """
    pydicom = _pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    array = np.asarray(getattr(image, "array", image))
    if affine is None:
        affine = getattr(image, "affine", None)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or affine.shape != (4, 4):
        raise ValueError(f"write_dicom_series needs a 2D or 3D array and a 4x4 affine, got {array.shape}")
    lps = LPS_TO_RAS @ affine
    column_spacing, row_spacing = (float(np.linalg.norm(lps[:3, i])) for i in (0, 1))
    row_direction, column_direction = lps[:3, 0] / column_spacing, lps[:3, 1] / row_spacing
    if abs(float(row_direction @ column_direction)) > 1e-4:
        raise ValueError(
            "the affine's x and y axes are not perpendicular; DICOM slices cannot store a sheared "
            "plane: resample the image onto an orthogonal grid first"
        )
    modality = modality.upper()
    normal = np.cross(row_direction, column_direction)
    per_slice = modality == "PT" and rescale is None
    if not per_slice:  # one stored type and rescale for the whole series
        stored_volume, slope, intercept = _storage(array, rescale)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    sop_class = _SOP_CLASSES.get(modality, _SECONDARY_CAPTURE)
    start = pet.scan_start if pet is not None else datetime.datetime(2024, 1, 15, 10, 30, 0)
    date, time = start.strftime("%Y%m%d"), start.strftime("%H%M%S.%f")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(array.shape[2]):
        if per_slice:  # (rows, columns) = (y, x)
            stored, slope, intercept = _pet_storage(array[:, :, k].T)
        else:
            stored = stored_volume[:, :, k].T
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.PatientName, ds.PatientID = "Anonymous", "napari-isfl"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = time
        ds.SeriesNumber, ds.InstanceNumber = series_number, k + 1
        ds.SeriesDescription = series_description
        ds.Manufacturer = "napari-isfl"
        position = lps[:3, :] @ np.array([0.0, 0.0, float(k), 1.0])
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_direction, *column_direction)]
        ds.PixelSpacing = [_ds(row_spacing), _ds(column_spacing)]
        ds.SliceThickness = _ds(abs(float(lps[:3, 2] @ normal)))
        ds.SliceLocation = _ds(float(position @ normal))
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = int(stored.dtype == np.int16)
        if modality in ("CT", "PT") or (slope, intercept) != (1.0, 0.0):
            ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        if modality == "CT":
            ds.RescaleType = "HU"
        if modality == "PT" and pet is not None:
            ds.Units, ds.DecayCorrection = pet.units, pet.decay_correction
            ds.CorrectedImage = ["DECY", "ATTN"]
            ds.PatientWeight = _ds(pet.weight_kg)
            drug = Dataset()
            drug.RadionuclideTotalDose = _ds(pet.injected_dose_bq)
            drug.RadionuclideHalfLife = _ds(pet.half_life_s)
            drug.RadiopharmaceuticalStartTime = (start - datetime.timedelta(seconds=pet.delay_s)).strftime(
                "%H%M%S.%f"
            )
            ds.RadiopharmaceuticalInformationSequence = DicomSequence([drug])
        ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()
        path = folder / f"IM{k + 1:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths

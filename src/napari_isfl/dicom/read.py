"""Reading a DICOM series: the series of a folder or file, its geometry, values, SUV (see
:mod:`napari_isfl.dicom` for the conventions)."""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import require

if TYPE_CHECKING:  # pragma: no cover
    from ..io import ImageData


#: DICOM patient coordinates (LPS) to NIfTI world coordinates (RAS) and back (its own inverse)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: largest distance (mm) of a slice from the evenly spaced line through the first and last slice,
#: as a fraction of the slice spacing (scanners write positions to about 1e-5 mm)
SLICE_POSITION_RTOL = 0.01
#: largest difference between the orientation cosines of two slices of one volume
ORIENTATION_ATOL = 1e-4
#: DICOM Modality -> napari-isfl modality tag (normalisation, model conditioning)
_MODALITY_TAGS = {"MR": "mri", "CT": "ct", "PT": "pet", "NM": "spect"}
#: Storage SOP classes the writer uses (anything else is written as Secondary Capture)
_SOP_CLASSES = {
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_PURPOSE = "reading and writing DICOM"


class DicomError(ValueError):
    """A DICOM input that cannot be read as one volume; the message names the input and the fix."""


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder (what :func:`find_series` lists and errors name).

    Attributes:
        uid: SeriesInstanceUID.
        modality: DICOM Modality (``"MR"``, ``"CT"``, ``"PT"``, ``"NM"``, ...).
        description: SeriesDescription (may be empty).
        number: SeriesNumber (``None`` when absent).
        files: the image files of the series, in the order found (not sorted by position).
    """

    uid: str
    modality: str
    description: str
    number: int | None
    files: tuple[Path, ...] = field(repr=False)

    def __str__(self) -> str:
        number = f"#{self.number} " if self.number is not None else ""
        return f"{number}{self.modality} {self.description!r} ({len(self.files)} files, uid {self.uid})"


@dataclass(frozen=True)
class DicomInfo:
    """What a DICOM series says about its values, kept as ``ImageData.header`` of a DICOM image.

    Small and JSON-friendly (:meth:`as_dict`) so napari layer metadata and fusion provenance can carry
    it. Holds no patient-identifying tag.

    Attributes:
        modality: DICOM Modality (``"CT"``, ``"MR"``, ``"PT"``, ...).
        series_uid: SeriesInstanceUID of the series read.
        series_description: SeriesDescription (may be empty).
        units: what the array's values are: ``"HU"`` (CT), ``"SUVbw"`` (PET converted), the stored
            PET Units (e.g. ``"BQML"``) when not converted, ``""`` (MR and others: as stored).
        suv_factor: the factor that turned Bq/ml into SUVbw (g/ml), ``None`` when not converted.
        suv_note: how the SUV factor was computed, or why the values were not converted (PET only).
        slices: number of slices (files) in the volume.
        frame_of_reference_uid: FrameOfReferenceUID: two series sharing it share world coordinates
            (same session on one scanner), so resampling alone aligns them.
    """

    modality: str
    series_uid: str
    series_description: str = ""
    units: str = ""
    suv_factor: float | None = None
    suv_note: str = ""
    slices: int = 0
    frame_of_reference_uid: str = ""

    @property
    def modality_tag(self) -> str | None:
        """The napari-isfl modality tag (``"ct"``, ``"mri"``, ``"pet"``, ``"spect"``) or ``None``."""
        return modality_tag(self.modality)

    def as_dict(self) -> dict[str, Any]:
        """Plain values only (str, int, float, None): safe for JSON provenance and layer metadata."""
        return {
            "modality": self.modality,
            "modality_tag": self.modality_tag,
            "series_uid": self.series_uid,
            "series_description": self.series_description,
            "units": self.units,
            "suv_factor": self.suv_factor,
            "suv_note": self.suv_note,
            "slices": self.slices,
            "frame_of_reference_uid": self.frame_of_reference_uid,
        }


def modality_tag(modality: str) -> str | None:
    """napari-isfl's modality tag for a DICOM Modality, or ``None`` when it has none.

    Examples:
        >>> modality_tag("PT"), modality_tag("MR"), modality_tag("SEG")
        ('pet', 'mri', None)
    """
    return _MODALITY_TAGS.get(str(modality).upper())


# --------------------------------------------------------------------------------------------- geometry
def series_affine(
    orientation: Sequence[float],
    positions: Sequence[Sequence[float]],
    pixel_spacing: Sequence[float],
    slice_spacing: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The RAS voxel-to-world matrix of a stack of slices, and the order that sorts them.

    Args:
        orientation: ImageOrientationPatient: row direction (along a row, increasing column) then
            column direction (down a column, increasing row), LPS cosines.
        positions: ImagePositionPatient of each slice (LPS, mm), in any order.
        pixel_spacing: PixelSpacing: (between rows, between columns) in mm.
        slice_spacing: the slice step (mm) used for a single slice (SpacingBetweenSlices or
            SliceThickness); 1 mm when ``None``. Ignored for several slices.

    Returns:
        ``(affine, order)``: the 4x4 RAS matrix of the array ``(column, row, slice)`` whose slice ``k``
        is input slice ``order[k]``; slices are sorted along the slice normal.

    Raises:
        DicomError: several slices at one position, or positions that are not evenly spaced on one
            line (missing slices), with the distances found.
    """
    cosines = np.asarray(orientation, dtype=float).reshape(2, 3)
    row_direction, column_direction = cosines
    normal = np.cross(row_direction, column_direction)
    points = np.asarray(positions, dtype=float).reshape(-1, 3)
    row_spacing, column_spacing = (float(v) for v in pixel_spacing)
    order = np.argsort(points @ normal, kind="stable")
    points = points[order]
    if len(points) > 1:
        steps = np.diff(points @ normal)
        if np.min(steps) < 1e-6:
            raise DicomError(
                f"{len(points)} slices lie at only {len(np.unique(np.round(points @ normal, 4)))} "
                "positions: the series holds several volumes (echoes, time points or acquisitions); "
                "split it first (e.g. dcm2niix) and read one volume"
            )
        step = (points[-1] - points[0]) / (len(points) - 1)
        expected = points[0] + np.arange(len(points))[:, None] * step
        deviation = np.linalg.norm(points - expected, axis=1)
        if deviation.max() > SLICE_POSITION_RTOL * np.linalg.norm(step):
            raise DicomError(
                f"slice positions are not evenly spaced (steps from {steps.min():.4g} to "
                f"{steps.max():.4g} mm along the normal): missing slices or a non-uniform series; "
                "read a complete series, or resample it with a DICOM converter first"
            )
    else:
        step = normal * (float(slice_spacing) if slice_spacing else 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row_direction * column_spacing  # x: along a row, one column per step
    lps[:3, 1] = column_direction * row_spacing  # y: down a column, one row per step
    lps[:3, 2] = step
    lps[:3, 3] = points[0]
    return LPS_TO_RAS @ lps, order


# ------------------------------------------------------------------------------------------------ scan
def _pydicom():
    return require("pydicom", "clinical", _PURPOSE)


def _sitk():
    return require("SimpleITK", "clinical", _PURPOSE)


def is_dicom(path: str | os.PathLike, max_files: int = 64) -> bool:
    """Whether ``path`` is a DICOM file (``DICM`` after the 128-byte preamble) or a folder holding one
    (in it or its subfolders, as DICOM exports nest them). Cheap: reads 132 bytes of at most
    ``max_files`` files, so a reader hook can call it on any path a user drops."""
    path = Path(path)
    if not path.is_dir():
        return path.is_file() and _has_dicom_preamble(path)
    looked = 0
    for folder, subfolders, names in os.walk(path):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            if looked >= max_files:
                return False
            looked += 1
            if _has_dicom_preamble(Path(folder) / name):
                return True
    return False


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _scan(root: Path, recursive: bool = True) -> dict[str, list[tuple[Path, Any]]]:
    """Image headers of every DICOM file in ``root`` (and its subfolders when ``recursive``), grouped by
    SeriesInstanceUID.

    Files that are not DICOM, or DICOM without an image (DICOMDIR, reports, ...), are skipped.
    """
    pydicom = _pydicom()
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if recursive else []
        for name in sorted(names):
            path = Path(folder) / name
            if name.startswith(".") or not _has_dicom_preamble(path):
                continue
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # a damaged file: skipped like any other non-image file
                continue
            if "Rows" not in header or "SeriesInstanceUID" not in header:
                continue
            groups.setdefault(str(header.SeriesInstanceUID), []).append((path, header))
    return groups


def _describe(uid: str, members: list[tuple[Path, Any]]) -> DicomSeries:
    header = members[0][1]
    number = header.get("SeriesNumber")
    return DicomSeries(
        uid=uid,
        modality=str(header.get("Modality", "")),
        description=str(header.get("SeriesDescription", "")),
        number=int(number) if number not in (None, "") else None,
        files=tuple(path for path, _ in members),
    )


def find_series(path: str | os.PathLike) -> list[DicomSeries]:
    """The DICOM image series under a folder (searched recursively), sorted by SeriesNumber.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    root = path if path.is_dir() else path.parent
    series = [_describe(uid, members) for uid, members in _scan(root).items()]
    return sorted(series, key=lambda s: (s.number is None, s.number or 0, s.uid))


def _choose_series(
    path: Path, groups: dict[str, list[tuple[Path, Any]]], series_uid: str | None
) -> tuple[str, list[tuple[Path, Any]]]:
    if not groups:
        raise DicomError(f"{path}: no DICOM image found (files need the DICM preamble)")
    if series_uid is None and path.is_file():
        for uid, members in groups.items():
            if any(p.samefile(path) for p, _ in members):
                return uid, members
        raise DicomError(f"{path}: not a DICOM image file (no image, or unreadable)")
    listing = "; ".join(str(_describe(uid, members)) for uid, members in groups.items())
    if series_uid is not None:
        if series_uid not in groups:
            raise DicomError(f"{path}: no series with SeriesInstanceUID {series_uid}; found: {listing}")
        return series_uid, groups[series_uid]
    if len(groups) > 1:
        raise DicomError(
            f"{path} holds {len(groups)} DICOM series; choose one by passing a file of that series "
            f"instead of the folder, or its SeriesInstanceUID (series_uid=...): {listing}"
        )
    return next(iter(groups.items()))


# ---------------------------------------------------------------------------------------------- values
def _parse_datetime(date: Any, time: Any) -> datetime.datetime | None:
    """A naive datetime from DICOM DA and TM strings (``None`` when either is missing or malformed)."""
    from pydicom.valuerep import DA, TM

    if not date or not time:
        return None
    try:
        return datetime.datetime.combine(DA(str(date)), TM(str(time).strip()))
    except (ValueError, TypeError):
        return None


def _parse_dt(value: Any) -> datetime.datetime | None:
    from pydicom.valuerep import DT

    if not value:
        return None
    try:
        return DT(str(value)).replace(tzinfo=None)  # assume the scanner's local time, like SeriesTime
    except (ValueError, TypeError):
        return None


def suv_factor(header: Any, acquisition_starts: Sequence[datetime.datetime] = ()) -> tuple[float | None, str]:
    """The SUV body-weight factor of a PET series (SUVbw = value x factor), or why there is none.

    SUVbw = activity concentration (Bq/ml) x weight (g) / (injected dose (Bq) x 2^(-t / half-life)),
    with ``t`` the time from injection to the series start, the reference time of DecayCorrection
    ``START`` (QIBA's vendor-neutral definition). The series start is SeriesDate/SeriesTime, unless an
    acquisition started earlier (SeriesTime rewritten by post-processing), then that acquisition.

    Args:
        header: a pydicom dataset of the series (one slice's header).
        acquisition_starts: AcquisitionDate/Time of every slice, when known.

    Returns:
        ``(factor, note)``: ``factor`` is ``None`` when the values cannot be converted, and ``note``
        says how the factor was obtained or what is missing.
    """
    units = str(header.get("Units", "")).upper()
    if units == "GML":
        return 1.0, "stored as SUV body weight already (Units GML)"
    if units != "BQML":
        return None, f"values kept: Units is {units or 'missing'}, SUV needs BQML (Bq/ml)"
    correction = str(header.get("DecayCorrection", "")).upper()
    if correction != "START":
        return None, f"values kept in Bq/ml: DecayCorrection is {correction or 'missing'}, SUV needs START"
    weight = float(header.get("PatientWeight") or 0)
    if not weight > 0:
        return None, "values kept in Bq/ml: PatientWeight is missing or zero"
    sequence = header.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        return None, "values kept in Bq/ml: RadiopharmaceuticalInformationSequence is missing"
    drug = sequence[0]
    dose = float(drug.get("RadionuclideTotalDose") or 0)
    half_life = float(drug.get("RadionuclideHalfLife") or 0)
    if not dose > 0:
        return None, "values kept in Bq/ml: RadionuclideTotalDose (injected dose) is missing or zero"
    if not half_life > 0:
        return None, "values kept in Bq/ml: RadionuclideHalfLife is missing or zero"
    scan_start = _parse_datetime(header.get("SeriesDate"), header.get("SeriesTime"))
    source = "series start"
    earliest = min(acquisition_starts, default=None)
    if earliest is not None and (scan_start is None or earliest < scan_start):
        scan_start, source = earliest, "earliest acquisition"
    if scan_start is None:
        return None, "values kept in Bq/ml: SeriesDate/SeriesTime (scan start) is missing"
    injection = _parse_dt(drug.get("RadiopharmaceuticalStartDateTime")) or _parse_datetime(
        scan_start.date().strftime("%Y%m%d"), drug.get("RadiopharmaceuticalStartTime")
    )
    if injection is None:
        return None, "values kept in Bq/ml: RadiopharmaceuticalStartTime (injection time) is missing"
    delay = (scan_start - injection).total_seconds()
    if delay < 0:
        return None, f"values kept in Bq/ml: injection time is {-delay:.0f} s after the {source}"
    factor = weight * 1000.0 / (dose * 2.0 ** (-delay / half_life))
    note = (
        f"SUVbw: weight {weight:g} kg, dose {dose / 1e6:.4g} MBq decayed over {delay:.0f} s "
        f"(injection to {source}, half-life {half_life:g} s)"
    )
    return factor, note


# ------------------------------------------------------------------------------------------------ read
def read_dicom(path: str | os.PathLike, series_uid: str | None = None) -> ImageData:
    """Read one DICOM series into an image in world coordinates (see the module doc).

    Args:
        path: a folder holding the series (searched recursively), or any file of the series (the
            series of that file is read from the files beside it, whatever else the folder holds).
        series_uid: SeriesInstanceUID of the series to read when the folder holds several.

    Returns:
        An :class:`~napari_isfl.io.ImageData` of kind ``"dicom"``: ``array`` ``(x, y, z)`` (a single
        slice is ``(x, y)`` with ``stored_shape`` ``(x, y, 1)``, like a NIfTI slice), ``affine`` the
        RAS voxel-to-world matrix, ``header`` a :class:`DicomInfo`, ``path`` the series' folder.
        Values: CT in HU, PET in SUVbw when possible (else as stored), MR as stored; float32 when a
        rescale or SUV makes them fractional, else the stored integer type.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DicomError: no DICOM image, several series and no choice (the message lists them with their
            UIDs, descriptions and modalities), an unknown ``series_uid``, or slices that do not form
            one volume (mixed sizes or orientations, missing slices, several volumes in one series).
        MissingDependencyError: pydicom or SimpleITK is not installed (the ``clinical`` extra).
    """
    from ..io import ImageData

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    _sitk()  # fail early, before scanning, when the extra is missing
    # a file: its series lies beside it (no need to read a whole archive's headers)
    groups = _scan(path, recursive=True) if path.is_dir() else _scan(path.parent, recursive=False)
    uid, members = _choose_series(path, groups, series_uid)
    headers = [header for _, header in members]
    first = headers[0]
    name = f"{path} (series {uid})"
    if any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in headers):
        raise DicomError(
            f"{name}: multi-frame DICOM (enhanced MR/CT/PET or NM) is not read yet; convert it to "
            "NIfTI first (e.g. dcm2niix) or export classic single-frame images"
        )
    for key in ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"):
        missing = [p.name for p, h in members if key not in h]
        if missing:
            raise DicomError(f"{name}: {key} is missing in {len(missing)} file(s), e.g. {missing[0]}")
    if len({(int(h.Rows), int(h.Columns)) for h in headers}) > 1:
        raise DicomError(f"{name}: slices of different sizes; the series is not one volume")
    orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_ATOL:
        raise DicomError(
            f"{name}: slices with different orientations (localizers or several stacks in one series); "
            "the series is not one volume"
        )
    slice_spacing = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
    affine, order = series_affine(
        orientations[0],
        [[float(v) for v in h.ImagePositionPatient] for h in headers],
        [float(v) for v in first.PixelSpacing],
        float(slice_spacing) if slice_spacing else None,
    )
    files = [members[i][0] for i in order]
    sorted_headers = [headers[i] for i in order]
    stored = _read_pixels(files, sorted_headers, name)  # (slices, rows, columns), rescaled
    array = np.ascontiguousarray(stored.transpose(2, 1, 0))  # (columns, rows, slices) = (x, y, z)

    modality = str(first.get("Modality", "")).upper()
    units, factor, note = "", None, ""
    if modality == "CT":
        units = "HU"
    elif modality == "PT":
        starts = [
            t
            for t in (_parse_datetime(h.get("AcquisitionDate"), h.get("AcquisitionTime")) for h in headers)
            if t is not None
        ]
        factor, note = suv_factor(first, starts)
        if factor is None:
            units = str(first.get("Units", "")).upper()
        else:
            units = "SUVbw"
            array = (array.astype(np.float64) * factor).astype(np.float32)
    info = DicomInfo(
        modality=modality,
        series_uid=uid,
        series_description=str(first.get("SeriesDescription", "")),
        units=units,
        suv_factor=factor,
        suv_note=note,
        slices=len(files),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
    )
    stored_shape = tuple(int(s) for s in array.shape)
    if array.shape[2] == 1:  # a single slice is a 2D image, like a NIfTI (x, y, 1) slice
        array = array[:, :, 0]
    folder = Path(os.path.commonpath([str(f.parent) for f in files]))
    return ImageData(array, folder, "dicom", affine, info, stored_shape=stored_shape)


def _read_pixels(files: list[Path], headers: list[Any], name: str) -> np.ndarray:
    """Decode the slices (in this order) with SimpleITK, the modality LUT applied per slice by GDCM.

    Integer slopes and intercepts equal across slices keep GDCM's integer type; otherwise every slice
    is read as float32 (the type is set once for the series, so a later slice's fractional slope is
    never truncated to the first slice's integer type).
    """
    sitk = _sitk()
    rescales = {
        (float(h.get("RescaleSlope", 1) or 1), float(h.get("RescaleIntercept", 0) or 0)) for h in headers
    }
    integral = len(rescales) == 1 and all(float(v).is_integer() for pair in rescales for v in pair)
    pixel_type = sitk.sitkUnknown if integral else sitk.sitkFloat32
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warns about the geometry we compute ourselves
    try:
        image = sitk.ReadImage([str(f) for f in files], pixel_type)
    except RuntimeError as error:
        raise DicomError(
            f"{name}: pixel data could not be decoded ({str(error).strip().splitlines()[-1]})"
        ) from error
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    pixels = sitk.GetArrayFromImage(image)
    pixels = pixels.reshape(len(files), int(headers[0].Rows), int(headers[0].Columns))
    if pixels.dtype == np.float64:
        pixels = pixels.astype(np.float32)
    elif pixels.dtype.itemsize > 2 and np.issubdtype(pixels.dtype, np.integer):
        # GDCM widens e.g. uint16 + intercept -1024 to int32; HU fit int16, like a CT NIfTI
        for narrow in (np.int16, np.uint16):
            limits = np.iinfo(narrow)
            if limits.min <= pixels.min() and pixels.max() <= limits.max:
                return pixels.astype(narrow)
    return pixels


# ----------------------------------------------------------------------------------------------- write

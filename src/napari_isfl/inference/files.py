"""Fusing files: read, check the grid (or resample), fuse, and write every output atomically together."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..io import RASTER_SUFFIXES, ImageData, image_suffix, image_writer, read_image
from ..normalization import guess_modality
from ..outputs import OutputPlan
from ..spatial import check_coregistration, resample_to_reference
from .engine import FusionEngine, FusionResult

__all__ = ["fuse_files"]


def fuse_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    modalities: Sequence[str] | None = None,
    *,
    stability_output: str | os.PathLike | None = None,
    provenance_output: str | os.PathLike | None = None,
    resample: bool = False,
    register: str | None = None,
    color: bool = True,
    overwrite: bool = True,
    engine: FusionEngine | None = None,
    **fuse_options,
) -> FusionResult:
    """Read co-registered files, fuse them, and write the result, its stability map and its provenance
    (JSON) all together or not at all.

    The first input is the reference: the output takes its grid, affine and header. PNG/TIFF in gives
    an 8-bit PNG (or TIFF) out; a colour (pseudo-colour PET/SPECT) input has its luminance fused and,
    with ``color``, its colour re-attached to the fused luminance.

    Every output is planned before anything is read or computed (:class:`~napari_isfl.outputs.OutputPlan`):
    an output that is an input or another output, a folder, an unwritable folder, an unsupported type
    or (after reading) a disk too full is refused with a one-line reason; a failed or interrupted run
    replaces nothing and leaves no temporary file.

    Inputs may be DICOM series (a folder, or any file of one; their modality comes from the series).
    ``register`` (``"rigid"`` or ``"affine"``) registers every input onto the first one by mutual
    information before fusing (:func:`napari_isfl.registration.register`; for scans that moved between
    acquisitions), ``resample`` only resamples through world coordinates (for scans that share them);
    the transforms go into the provenance.

    ``engine`` fuses (keep one for many calls); without it ``fuse_options`` may name ``model`` and
    ``device`` as for :func:`~napari_isfl.inference.fuse`. Every other option goes to
    :meth:`FusionEngine.fuse`.

    Raises:
        OutputError: an output that must not or cannot be written (see above).
        FileExistsError: an output exists and ``overwrite`` is False.
        CoregistrationError: inputs not on one grid and ``resample`` is False.
    """
    plan = OutputPlan(
        {"fused": output, "stability": stability_output, "provenance": provenance_output},
        inputs,
        overwrite=overwrite,
    )
    fuse_options.setdefault("stability", stability_output is not None)
    if len(inputs) < 2:
        raise ValueError(f"fusion needs at least two inputs, got {len(inputs)}")
    data = [read_image(path) for path in inputs]
    for role in ("fused", "stability"):
        target = plan.path(role)
        if target is not None and data[0].array.ndim == 3 and image_suffix(target) in RASTER_SUFFIXES:
            raise ValueError(
                f"{target}: a 3D result cannot be written as {image_suffix(target)}; use .nii.gz or .tif"
            )
    if modalities is None:  # from the files as read (a registered image takes the reference's grid)
        modalities = [_modality_of(d) for d in data]
    dicom = {d.name: d.header.as_dict() for d in data if d.kind == "dicom"}
    if register is not None and resample:
        raise ValueError(
            "register and resample exclude each other: registration resamples onto the first input"
        )
    registrations = []
    if register is not None:
        from ..registration import TRANSFORMS
        from ..registration import register as register_image

        if register not in TRANSFORMS:
            raise ValueError(f"register must be one of {', '.join(TRANSFORMS)}, got {register!r}")
        registrations = [register_image(d, data[0], register) for d in data[1:]]
        data = [data[0]] + [r.image for r in registrations]
    elif resample:
        data = [data[0]] + [resample_to_reference(d, data[0]) for d in data[1:]]
    check_coregistration(data)
    plan.check_space(
        {role: _expected_bytes(data[0], plan.path(role)) for role in ("fused", "stability", "provenance")}
    )
    names = [d.name for d in data]
    if engine is None:
        engine = FusionEngine(fuse_options.pop("model", "default"), fuse_options.pop("device", "auto"))
    result = engine.fuse([d.array for d in data], modalities, names=names, **fuse_options)
    result.provenance["resampled"] = bool(resample)
    if registrations:
        result.provenance["registration"] = [r.provenance() for r in registrations]
    if dicom:
        result.provenance["dicom"] = dicom
    # colour: the chroma of the first colour input goes onto the fused luminance
    colour_source = next((d for d in data if d.is_color), None) if color else None
    reference = data[0]
    if colour_source is not None:
        reference = replace(data[0], chroma=colour_source.chroma)
    writers = {"fused": image_writer(output, result.fused, reference, color=colour_source is not None)}
    if stability_output is not None and result.stability is not None:
        stability = result.stability
        if image_suffix(stability_output) in RASTER_SUFFIXES:
            peak = float(stability.max()) or 1.0
            stability = stability / peak  # 8-bit files cannot hold the small raw values
            result.provenance["stability_png_scale"] = peak
        writers["stability"] = image_writer(stability_output, stability, data[0], color=False)
    if provenance_output is not None:
        result.provenance["outputs"] = {
            role: str(path)
            for role, path in zip(("fused", "stability"), (output, stability_output), strict=True)
            if path is not None
        }
        text = json.dumps(result.provenance, indent=2)
        writers["provenance"] = lambda tmp: Path(tmp).write_text(text)
    plan.write(writers)
    return result


def _modality_of(image: ImageData) -> str:
    """A DICOM series says its modality; a file's name may hint it; MRI otherwise."""
    if image.kind == "dicom" and image.header.modality_tag:
        return image.header.modality_tag
    return guess_modality(image.name) or "mri"


def _expected_bytes(reference: ImageData, path: Path | None) -> int:
    """An upper estimate of an output's size on disk (uncompressed), for the free-space check."""
    if path is None:
        return 0
    voxels = int(np.prod(reference.array.shape))
    suffix = image_suffix(path)
    if suffix in RASTER_SUFFIXES:
        return 3 * voxels + 4096
    if suffix in (".json",):
        return 1 << 16
    return 4 * voxels + 4096

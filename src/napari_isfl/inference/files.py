"""Fusing files: read, check the grid (or resample), fuse, and write every output atomically together."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..io import IMAGE_SUFFIXES, RASTER_SUFFIXES, atomic_write_all, image_suffix, image_writer, read_image
from ..normalization import guess_modality
from ..spatial import check_coregistration, resample_to_reference
from .engine import FusionEngine, FusionResult

__all__ = ["fuse_files"]


def fuse_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    modalities: Sequence[str] | None = None,
    *,
    stability_output: str | os.PathLike | None = None,
    resample: bool = False,
    color: bool = True,
    overwrite: bool = True,
    engine: FusionEngine | None = None,
    **fuse_options,
) -> FusionResult:
    """Read co-registered files, fuse them, and write the result (and stability map) atomically together.

    The first input is the reference: the output takes its grid, affine and header. PNG/TIFF in gives
    an 8-bit PNG (or TIFF) out; a colour (pseudo-colour PET/SPECT) input has its luminance fused and,
    with ``color``, its colour re-attached to the fused luminance.

    ``engine`` fuses (keep one for many calls); without it ``fuse_options`` may name ``model`` and
    ``device`` as for :func:`~napari_isfl.inference.fuse`. Every other option goes to
    :meth:`FusionEngine.fuse`.

    Raises:
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        CoregistrationError: inputs not on one grid and ``resample`` is False.
    """

    fuse_options.setdefault("stability", stability_output is not None)
    targets = [Path(output)] + ([Path(stability_output)] if stability_output else [])
    # refuse what image_writer would refuse before any work: a failure after the fused output is
    # written (e.g. at the stability file) would leave a replaced output behind a failed run
    for target in targets:
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; choose another name or allow overwriting")
        if image_suffix(target) not in IMAGE_SUFFIXES:
            raise ValueError(
                f"{target}: unsupported output type {image_suffix(target)!r}; "
                "use .nii.gz, .nii, .png, .jpg, .bmp or .tif"
            )
    data = [read_image(path) for path in inputs]
    for target in targets:
        if data[0].array.ndim == 3 and image_suffix(target) in RASTER_SUFFIXES:
            raise ValueError(
                f"{target}: a 3D result cannot be written as {image_suffix(target)}; use .nii.gz or .tif"
            )
    if len(data) < 2:
        raise ValueError(f"fusion needs at least two inputs, got {len(data)}")
    if resample:
        data = [data[0]] + [resample_to_reference(d, data[0]) for d in data[1:]]
    check_coregistration(data)
    names = [d.name for d in data]
    if modalities is None:
        modalities = [guess_modality(n) or "mri" for n in names]
    if engine is None:
        engine = FusionEngine(fuse_options.pop("model", "default"), fuse_options.pop("device", "auto"))
    result = engine.fuse([d.array for d in data], modalities, names=names, **fuse_options)
    # colour: the chroma of the first colour input goes onto the fused luminance
    colour_source = next((d for d in data if d.is_color), None) if color else None
    reference = data[0]
    if colour_source is not None:
        reference = replace(data[0], chroma=colour_source.chroma)
    # both files are renamed into place together, so a failure at the second replaces neither
    writes = {output: image_writer(output, result.fused, reference, color=colour_source is not None)}
    if stability_output is not None and result.stability is not None:
        stability = result.stability
        if Path(stability_output).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
            peak = float(stability.max()) or 1.0
            stability = stability / peak  # 8-bit files cannot hold the small raw values
            result.provenance["stability_png_scale"] = peak
        writes[stability_output] = image_writer(stability_output, stability, data[0], color=False)
    atomic_write_all(writes)
    result.provenance["resampled"] = bool(resample)
    return result

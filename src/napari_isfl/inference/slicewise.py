"""2.5D fusion: a 2D model applied to every slice of a volume along each of its three axes, averaged.

The comparison point for the native 3D model (``docs/ABLATION.md``): the 2D model has seen far more
training images, but each slice is fused without its neighbours. The volume is normalised once (as the 3D
path does), cropped to its foreground box, and every slice of every axis goes through the network in
batches; the three fused volumes are averaged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..normalization import IntensitySpec, guess_modality
from ..spatial import foreground_box
from .engine import FusionCancelled, FusionEngine, FusionResult, _validate, normalise_inputs

__all__ = ["AXES", "fuse_slicewise"]

#: the three slicing axes of an (x, y, z) volume
AXES = (0, 1, 2)
#: slices per network call
SLICE_BATCH = 8


def fuse_slicewise(
    engine: FusionEngine,
    volumes: Sequence[np.ndarray],
    modalities: Sequence[str] | None = None,
    *,
    axes: Sequence[int] = AXES,
    normalization: Sequence[IntensitySpec | None] | None = None,
    contributions: bool = False,
    crop_foreground: bool = True,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> FusionResult:
    """Fuse co-registered volumes with the engine's **2D** model, slice by slice along ``axes``, averaged.

    Args:
        engine: an engine whose model has a 2D variant (``"default"`` picks the shipped 2D model).
        volumes: N co-registered 3D arrays of one shape.
        modalities: N tags; ``None`` guesses from ``names``.
        axes: the slicing axes (default all three).
        normalization, contributions, crop_foreground, names, progress, cancel: as in
            :meth:`FusionEngine.fuse` (progress counts slice batches over all axes).

    Returns:
        a :class:`FusionResult` (no stability map: test-time interventions are a per-window idea).

    Raises:
        ValueError: inputs that are not 3D, an unknown axis or modality.
        FusionCancelled: ``cancel`` returned ``True``.

    Examples::

        engine = FusionEngine("isfl-2d", device="cpu")
        result = fuse_slicewise(engine, [t1c, flair], ["mri", "mri"])   # a 2.5D fusion of two volumes
    """
    started = time.perf_counter()
    names = list(names) if names is not None else [f"input {i + 1}" for i in range(len(volumes))]
    arrays, _ = _validate(volumes, names, False)
    if arrays[0].ndim != 3:
        raise ValueError(f"slice-by-slice fusion takes 3D volumes, got shape {arrays[0].shape}")
    if not axes or any(a not in AXES for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"axes must be distinct values of {AXES}, got {tuple(axes)}")
    modalities = [str(m).lower() for m in (modalities or [guess_modality(n) or "mri" for n in names])]
    loaded = engine.loaded_model(2)
    unknown = [m for m in modalities if m not in loaded.modalities]
    if unknown:
        raise ValueError(f"modality {unknown[0]!r} is not supported by model {loaded.name}")
    stack, norm_info = normalise_inputs(arrays, modalities, loaded, normalization, names)
    box = foreground_box(stack, margin=4) if crop_foreground else tuple(slice(0, s) for s in stack.shape[1:])
    cropped = torch.from_numpy(np.ascontiguousarray(stack[(slice(None), *box)]))
    net, device = loaded.network, engine.device
    modality_index = torch.tensor([loaded.modalities.index(m) for m in modalities], device=device)
    multiple = int(net.size_multiple)
    total = sum(math.ceil(cropped.shape[1 + axis] / SLICE_BATCH) for axis in axes)
    done = 0
    fused_sum = torch.zeros(cropped.shape[1:])
    contribution_sum = torch.zeros(cropped.shape) if contributions else None
    if progress is not None:
        progress(0, total)
    with torch.inference_mode():
        for axis in axes:
            slices = cropped.movedim(1 + axis, 0)  # (S, N, H, W): one 2D case per slice
            height, width = slices.shape[2:]
            padding = (0, (-width) % multiple, 0, (-height) % multiple)
            fused_axis, contributions_axis = [], []
            for start in range(0, slices.shape[0], SLICE_BATCH):
                if cancel is not None and cancel():
                    raise FusionCancelled("fusion cancelled")
                batch = F.pad(slices[start : start + SLICE_BATCH], padding).to(device)
                out = net(batch, modality_index, return_maps=contributions)
                fused = (out["fused"] if contributions else out)[..., :height, :width].float().cpu()
                fused_axis.append(fused[:, 0])
                if contributions:
                    contributions_axis.append(out["contributions"][..., :height, :width].float().cpu())
                done += 1
                if progress is not None:
                    progress(done, total)
            fused_sum += torch.cat(fused_axis).movedim(0, axis)
            if contribution_sum is not None:
                contribution_sum += torch.cat(contributions_axis).movedim(0, 1 + axis)
    shape = stack.shape[1:]
    fused = np.zeros(shape, np.float32)
    fused[box] = np.clip((fused_sum / len(axes)).numpy(), 0.0, 1.0)
    background = (stack <= 0).all(axis=0) if crop_foreground else None
    if background is not None:
        fused[background] = 0.0
    contribution_maps = None
    if contribution_sum is not None:
        contribution_maps = np.full((len(arrays), *shape), 1.0 / len(arrays), np.float32)
        contribution_maps[(slice(None), *box)] = (contribution_sum / len(axes)).numpy()
    provenance = {
        "package": "napari-isfl",
        "version": __version__,
        "model": loaded.name,
        "model_sha256": loaded.sha256,
        "device": str(device),
        "inputs": names,
        "modalities": modalities,
        "normalization": norm_info,
        "parameters": {
            "mode": "2.5d",
            "axes": list(axes),
            "crop_foreground": crop_foreground,
            "foreground_box": [[int(s.start), int(s.stop)] for s in box],
            "contributions": contributions,
        },
        "windows": 0,
        "window_edges": [[] for _ in shape],
        "seconds": round(time.perf_counter() - started, 3),
    }
    return FusionResult(fused, None, contribution_maps, modalities, provenance)

"""Sliding-window planning for whole images and volumes: window size, overlap and batching.

Windows stay on the network's pooling grid (sizes and steps multiples of ``2 ** (scales - 1)``) so that
a window never starts between two max-pool cells, and are blended with MONAI's Gaussian-weighted
:class:`~monai.inferers.SlidingWindowInferer`. Nothing here imports torch until windows are run, so
:func:`parse_patch_size` is cheap for the CLI and the widget.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "AUTO_TRAINING_WINDOW_RATIO",
    "MAX_WINDOW_BATCH",
    "MAX_WINDOW_VOXELS",
    "count_windows",
    "parse_patch_size",
    "resolve_roi_size",
    "run_windows",
    "scan_interval",
    "window_edges",
    "window_plan",
]

#: largest window (voxels) run in one piece by default; about 2 GB peak for the 3D model on CPU
MAX_WINDOW_VOXELS = {2: 2048 * 2048, 3: 160**3}
MAX_WINDOW_BATCH = 4  # more gained nothing on CPU (16 windows of 32^3 per call: slower than 4)
#: auto windowing uses training-size windows once the image (its foreground box) is more than this many
#: times the model's training crop along some axis: the cross-modal attention pools onto a fixed grid, so
#: larger windows give it cells wider than it was trained on. Measured: better held-out fusion at 3-7x (3D,
#: brains and templates from 32^3 crops); in 2D no change either way at 2x and 4x (128^2 crops).
AUTO_TRAINING_WINDOW_RATIO = 2.0


def _tiling_roi(shape: Sequence[int], overlap: float, multiple: int) -> tuple[int, ...]:
    """The window that tiles ``shape`` with the fewest windows of at most ``MAX_WINDOW_VOXELS`` voxels.

    Splitting axis ``i`` into ``k_i`` windows that overlap by ``overlap`` needs windows of about
    ``S_i / (k_i - (k_i - 1) * overlap)`` voxels; of all splits whose window fits the voxel budget, the
    one that processes the fewest voxels (then has the fewest windows) wins. Fixed-size cubes would
    instead process up to several times the volume (e.g. eight 160^3 windows for a 192^3 volume).
    """
    budget = MAX_WINDOW_VOXELS[len(shape)]
    best: tuple[int, int, tuple[int, ...]] | None = None
    for split in itertools.product(range(1, 9), repeat=len(shape)):
        roi = []
        for size, parts in zip(shape, split, strict=True):
            side = size if parts == 1 else math.ceil(size / (parts - (parts - 1) * overlap))
            side = min(size, -(-side // multiple) * multiple)  # up to the pooling grid
            roi.append(side)
        if math.prod(roi) > budget:
            continue
        # the windows MONAI will actually run, with the steps _grid_windows keeps on the pooling grid
        counts = [
            1
            if r >= n
            else math.ceil((n - r) / max(multiple, int(r * (1 - overlap)) // multiple * multiple)) + 1
            for r, n in zip(roi, shape, strict=True)
        ]
        key = (math.prod(roi) * math.prod(counts), math.prod(counts), tuple(roi))
        if best is None or key[:2] < best[:2]:
            best = key
    if best is None:  # only for absurdly large images: fall back to cubes of the budget
        side = int(budget ** (1 / len(shape))) // multiple * multiple
        return tuple(min(side, int(s)) for s in shape)
    return best[2]


def parse_patch_size(text: str | None) -> int | list[int] | str | None:
    """A sliding-window size as typed (CLI, widget): ``"auto"``/empty -> ``None``; ``"training"`` ->
    ``"training"`` (the model's training crop size, see :func:`fuse`); ``"96"`` -> 96; ``"128,128,96"``
    or ``"128x128x96"`` -> a list.

    Raises:
        ValueError: anything else, with the accepted forms.
    """
    text = (text or "").strip().lower()
    if text in ("", "auto"):
        return None
    if text == "training":
        return text
    try:
        sizes = [int(v) for v in text.replace("x", ",").replace(" ", ",").split(",") if v]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(
            "patch size must be 'auto', 'training', one size or one per axis (e.g. 96 or 128,128,96), "
            f"got {text!r}"
        )
    return sizes[0] if len(sizes) == 1 else sizes


def resolve_roi_size(
    shape: Sequence[int],
    roi_size: Sequence[int] | int | None,
    overlap: float = 0.25,
    multiple: int = 1,
    training_crop: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Window size for sliding-window inference, clipped to the image.

    ``None`` (auto): windows of ``training_crop`` when the image is more than
    :data:`AUTO_TRAINING_WINDOW_RATIO` times it along some axis; otherwise the whole image in one
    window when it has at most ``MAX_WINDOW_VOXELS`` voxels (exactly the single-pass result), else the
    fewest windows within that budget that tile the image with ``overlap`` (see :func:`_tiling_roi`).
    """
    dims = len(shape)
    if roi_size is None or (isinstance(roi_size, int) and roi_size <= 0):
        crop = [int(c) for c in training_crop or ()]
        if len(crop) == dims and any(
            s > AUTO_TRAINING_WINDOW_RATIO * c for s, c in zip(shape, crop, strict=True)
        ):
            return tuple(min(c, int(s)) for c, s in zip(crop, shape, strict=True))
        if math.prod(shape) <= MAX_WINDOW_VOXELS[dims]:
            return tuple(int(s) for s in shape)
        return _tiling_roi(shape, overlap, multiple)
    roi = (
        (int(roi_size),) * dims
        if isinstance(roi_size, (int, np.integer))
        else tuple(int(r) for r in roi_size)
    )
    if len(roi) != dims or min(roi) < 1:
        raise ValueError(f"roi_size {roi_size} does not fit a {dims}D image (one positive size per axis)")
    return tuple(min(r, int(s)) for r, s in zip(roi, shape, strict=True))


def scan_interval(shape: Sequence[int], roi: Sequence[int], overlaps: Sequence[float]) -> tuple[int, ...]:
    """Steps between windows, by the rule of MONAI's sliding-window inferer: ``int(roi * (1 - overlap))``
    (at least 1), or the whole axis when the window spans it."""
    return tuple(
        int(r) if r == n else max(1, int(r * (1 - o))) for n, r, o in zip(shape, roi, overlaps, strict=True)
    )


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float | Sequence[float]) -> int:
    """Number of windows MONAI's sliding-window inferer visits for this shape, window and overlap
    (one overlap, or one per axis). :func:`~napari_isfl.inference.fuse` reports the count it used as
    ``provenance["windows"]``."""
    from monai.data.utils import dense_patch_slices

    overlaps = tuple(overlap) if isinstance(overlap, Sequence) else (overlap,) * len(shape)
    interval = scan_interval(shape, roi, overlaps)
    return len(dense_patch_slices(tuple(shape), tuple(roi), interval))


def window_edges(shape: Sequence[int], roi: Sequence[int], overlaps: Sequence[float]) -> list[list[int]]:
    """Per axis, where the sliding windows start or end inside an image of ``shape`` (MONAI's window
    positions): the planes a seam would show on. An axis covered by one window has none.

    Examples:
        >>> window_edges((100, 40), (32, 40), (0.25, 0.0))
        [[24, 32, 48, 56, 68, 80], []]
    """
    from monai.data.utils import dense_patch_slices

    slices = dense_patch_slices(tuple(shape), tuple(roi), scan_interval(shape, roi, overlaps))
    edges = []
    for axis, size in enumerate(shape):
        positions = {int(s[axis].start) for s in slices} | {int(s[axis].stop) for s in slices}
        edges.append(sorted(p for p in positions if 0 < p < size))
    return edges


def _grid_windows(
    shape: Sequence[int], roi: Sequence[int], overlap: float, multiple: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Window size and per-axis overlap that keep every sliding window on the network's pooling grid.

    ``shape`` is a multiple of ``multiple`` (``2 ** (scales - 1)``). Window sizes are rounded down to
    the grid and the steps between windows to a multiple of it, so a window never starts between two
    max-pool cells (which would change the result of every voxel in it). MONAI truncates
    ``roi * (1 - overlap)`` to get the step, so the overlap passed carries half a voxel of slack.
    """
    roi = tuple(min(n, max(multiple, r - r % multiple)) for r, n in zip(roi, shape, strict=True))
    overlaps = []
    for r, n in zip(roi, shape, strict=True):
        if r >= n:
            overlaps.append(0.0)
            continue
        step = max(multiple, int(r * (1 - overlap)) // multiple * multiple)
        overlaps.append(min(max(0.0, 1.0 - (step + 0.5) / r), 1.0 - 1e-6))
    return roi, tuple(overlaps)


def window_plan(
    shape: Sequence[int],
    roi_size: Sequence[int] | int | None,
    overlap: float,
    multiple: int,
    training_crop: Sequence[int] | None = None,
    sw_batch_size: int | None = None,
) -> tuple[tuple[int, ...], tuple[float, ...], int]:
    """Window size, per-axis overlap and windows per call for an image of ``shape`` (padded to the
    pooling grid ``multiple``): :func:`resolve_roi_size`, kept on the grid by :func:`_grid_windows`;
    ``sw_batch_size=None`` batches small windows, up to :data:`MAX_WINDOW_BATCH` within the one-window
    voxel budget."""
    roi = resolve_roi_size(shape, roi_size, overlap, multiple, training_crop)
    roi, overlaps = _grid_windows(shape, roi, overlap, multiple)
    if sw_batch_size is None:
        sw_batch_size = max(1, min(MAX_WINDOW_BATCH, MAX_WINDOW_VOXELS[len(roi)] // math.prod(roi)))
    return roi, overlaps, sw_batch_size


def run_windows(
    predictor: Callable[[torch.Tensor], torch.Tensor | dict[str, torch.Tensor]],
    batch: torch.Tensor,
    roi: Sequence[int],
    overlaps: Sequence[float],
    sw_batch_size: int,
    device: torch.device,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """``predictor`` over ``batch`` ``(1, N, *S)`` in Gaussian-blended sliding windows, output on the
    CPU (float32). The predictor may return one tensor or a dict of tensors, each at the window's
    resolution or at a fixed fraction of it (the coarser levels of the pyramid head). One window covering
    the image is a direct call: the blending ``(w * y) / w`` would change the result by rounding."""
    import torch
    from monai.inferers import SlidingWindowInferer

    if tuple(roi) == tuple(batch.shape[2:]):
        output = predictor(batch)
    else:
        inferer = SlidingWindowInferer(
            roi_size=roi,
            sw_batch_size=sw_batch_size,
            overlap=overlaps,
            mode="gaussian",
            sw_device=device,
            device=torch.device("cpu"),
        )
        output = inferer(batch, predictor)
    if isinstance(output, dict):
        return {key: value.float().cpu() for key, value in output.items()}
    return output.float().cpu()

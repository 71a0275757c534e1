"""Whole-image fusion: normalisation, sliding-window inference, stability and contribution maps.

:func:`fuse` works on numpy arrays (2D or 3D, N >= 2 modalities) and is what the CLI, the napari
widget and the console API call. :func:`fuse_files` adds reading, the co-registration check and
writing. The predictor given to MONAI's :class:`~monai.inferers.SlidingWindowInferer` is wrapped so
that every window batch reports progress and checks for cancellation.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from . import __version__
from .checkpoint import LoadedModel, load_model
from .normalization import IntensitySpec, guess_modality, looks_like_hounsfield, normalize_intensity

__all__ = [
    "FusionCancelled",
    "FusionResult",
    "count_windows",
    "fuse",
    "fuse_files",
    "parse_patch_size",
    "resolve_roi_size",
    "run_windows",
    "select_device",
    "training_crop_size",
    "window_plan",
]

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]

#: largest window (voxels) run in one piece by default; about 2 GB peak for the 3D model on CPU
MAX_WINDOW_VOXELS = {2: 2048 * 2048, 3: 160**3}
MAX_WINDOW_BATCH = 4  # more gained nothing on CPU (16 windows of 32^3 per call: slower than 4)
#: auto windowing uses training-size windows once the image (its foreground box) is more than this many
#: times the model's training crop along some axis: the cross-modal attention pools onto a fixed grid, so
#: larger windows give it cells wider than it was trained on. Measured: better held-out fusion at 3-7x (3D,
#: brains and templates from 32^3 crops); in 2D no change either way at 2x and 4x (128^2 crops).
AUTO_TRAINING_WINDOW_RATIO = 2.0
_MODEL_CACHE: dict[tuple[str, str, str], LoadedModel] = {}


class FusionCancelled(RuntimeError):
    """Raised when the ``cancel`` callback asked to stop; no partial result is returned."""


@dataclass
class FusionResult:
    """The outputs of :func:`fuse`, all with the inputs' spatial shape.

    Attributes:
        fused: float32 in [0, 1].
        stability: per-voxel standard deviation of the fused value under test-time interventions
            (0 = unaffected by masking any modality's region; larger = less stable), or ``None``.
        contributions: ``(N, *shape)`` per-modality share of the finest-scale CFI mix (sums to 1),
            or ``None``.
        modalities: the modality tag of each input.
        provenance: model, checksum, device, parameters, normalisation, timings, version.
    """

    fused: np.ndarray
    stability: np.ndarray | None = None
    contributions: np.ndarray | None = None
    modalities: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; an explicit device must exist.

    Raises:
        ValueError: an unknown device name, or a requested device that is not available.
    """
    name = str(device) if isinstance(device, torch.device) else str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from error
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but CUDA is not available here; use --device cpu or auto"
            )
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found"
            )
    elif chosen.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but Apple MPS is not available here; use cpu or auto")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return chosen


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


def training_crop_size(loaded: LoadedModel) -> list[int] | None:
    """The crop size a checkpoint was trained on (its recorded training config), or ``None``."""
    crop = loaded.meta.get("training", {}).get("config", {}).get("data", {}).get("crop_size")
    return [int(c) for c in crop] if crop else None


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


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float | Sequence[float]) -> int:
    """Number of windows MONAI's sliding-window inferer visits for this shape, window and overlap
    (one overlap, or one per axis). :func:`fuse` reports the count it used as ``provenance["windows"]``."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    overlaps = tuple(overlap) if isinstance(overlap, Sequence) else (overlap,) * len(shape)
    interval = _get_scan_interval(tuple(shape), tuple(roi), len(shape), overlaps)
    return len(dense_patch_slices(tuple(shape), tuple(roi), interval))


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
    predictor: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    roi: Sequence[int],
    overlaps: Sequence[float],
    sw_batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """``predictor`` over ``batch`` ``(1, N, *S)`` in Gaussian-blended sliding windows, output on the
    CPU. One window covering the image is a direct call: the blending ``(w * y) / w`` would change the
    result by rounding."""
    if tuple(roi) == tuple(batch.shape[2:]):
        return predictor(batch).float().cpu()
    from monai.inferers import SlidingWindowInferer

    inferer = SlidingWindowInferer(
        roi_size=roi,
        sw_batch_size=sw_batch_size,
        overlap=overlaps,
        mode="gaussian",
        sw_device=device,
        device=torch.device("cpu"),
    )
    return inferer(batch, predictor)


def _foreground_box(normalised: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of voxels that are foreground in any modality, with a margin."""
    any_signal = (normalised > 0).any(axis=0)
    if not any_signal.any():
        return tuple(slice(0, s) for s in any_signal.shape)
    box = []
    for axis in range(any_signal.ndim):
        other = tuple(a for a in range(any_signal.ndim) if a != axis)
        hit = np.flatnonzero(any_signal.any(axis=other))
        box.append(slice(max(0, hit[0] - margin), min(any_signal.shape[axis], hit[-1] + 1 + margin)))
    return tuple(box)


def block_masks(
    shape: Sequence[int],
    num_modalities: int,
    block: int,
    hide: float,
    rng: np.random.Generator,
    complementary: bool,
    device: torch.device,
) -> torch.Tensor:
    """Keep-masks ``(N, *shape)`` hiding random blocks of side ``block`` with probability ``hide``.

    ``complementary``: independent per modality, and a block hidden in every modality is restored in
    one of them; otherwise one mask shared by all modalities. Cheap enough for test time on volumes.
    """
    offset = [int(rng.integers(0, block)) for _ in shape]
    grid = [math.ceil((s + o) / block) for s, o in zip(shape, offset, strict=True)]
    count = num_modalities if complementary else 1
    hidden = rng.random((count, *grid)) < hide
    if complementary and count > 1:
        all_hidden = hidden.all(axis=0)
        restore = rng.integers(0, count, size=all_hidden.shape)
        for m in range(count):
            hidden[m] &= ~(all_hidden & (restore == m))
    keep = torch.from_numpy(~hidden).to(device=device, dtype=torch.float32)
    for axis in range(len(shape)):
        keep = keep.repeat_interleave(block, dim=axis + 1)
    keep = keep[(slice(None),) + tuple(slice(o, o + s) for o, s in zip(offset, shape, strict=True))]
    return keep.expand(num_modalities, *shape) if not complementary else keep


def _get_model(
    model: str | os.PathLike | LoadedModel, spatial_dims: int, device: torch.device
) -> LoadedModel:
    if isinstance(model, LoadedModel):
        if model.spatial_dims != spatial_dims:
            raise ValueError(
                f"model {model.name} is {model.spatial_dims}D but the inputs are {spatial_dims}D"
            )
        model.network.to(device).eval()
        return model
    from .checkpoint import file_sha256, model_path

    path = model_path(str(model), spatial_dims)
    key = (str(path.resolve()), file_sha256(path), str(device))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()  # keep one network in memory
        _MODEL_CACHE[key] = load_model(str(model), spatial_dims, device)
    return _MODEL_CACHE[key]


def _validate(images: Sequence[np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim >= 3 and images.shape[0] <= 8 and images.ndim in (3, 4):
        images = list(images)
    arrays = [np.asarray(im) for im in images]
    if len(arrays) < 2:
        raise ValueError(f"fusion needs at least two co-registered inputs, got {len(arrays)}")
    for array, name in zip(arrays, names, strict=True):
        if array.ndim not in (2, 3):
            raise ValueError(
                f"{name}: expected a 2D image or 3D volume, got {array.ndim} dimensions {array.shape}"
                + ("; pass one 3D volume of a 4D series" if array.ndim == 4 else "")
            )
    first = arrays[0]
    for array, name in zip(arrays[1:], names[1:], strict=True):
        if array.shape != first.shape:
            raise ValueError(
                f"{name} has shape {array.shape} but {names[0]} has {first.shape}: inputs must be "
                "co-registered "
                "on one grid (resample first, e.g. 'isfl fuse --resample')"
            )
    return arrays


def fuse(
    images: Sequence[np.ndarray],
    modalities: Sequence[str] | None = None,
    *,
    model: str | os.PathLike | LoadedModel = "default",
    device: str | torch.device = "auto",
    roi_size: Sequence[int] | int | str | None = None,
    overlap: float = 0.25,
    sw_batch_size: int | None = None,
    amp: bool = True,
    normalization: Sequence[IntensitySpec | None] | None = None,
    stability: bool = False,
    stability_passes: int = 8,
    stability_smoothing: float | None = None,
    contributions: bool = False,
    crop_foreground: bool = True,
    seed: int = 0,
    names: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> FusionResult:
    """Fuse co-registered images of two or more modalities.

    Args:
        images: N arrays of one shape, 2D ``(H, W)`` or 3D ``(X, Y, Z)``, any real dtype.
        modalities: N tags (``"mri"``, ``"ct"``, ``"pet"``, ``"spect"``); ``None`` guesses from
            ``names`` and falls back to ``"mri"``.
        model: ``"default"`` (shipped model of the inputs' dimensionality), a shipped model name, a
            checkpoint path, or a :class:`~napari_isfl.checkpoint.LoadedModel`.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        roi_size: sliding-window size; ``None`` = auto (see :func:`resolve_roi_size`: the training crop
            size for images more than twice that size, else the whole image when it fits); ``"training"``:
            the model's training crop size, so the cross-modal attention pools over regions of the size
            it was trained on (its grid is fixed, so its cells grow with the window).
        overlap: window overlap fraction in [0, 1).
        sw_batch_size: windows per network call; ``None``: as many as fit the one-window voxel budget
            (:data:`MAX_WINDOW_VOXELS`), at most :data:`MAX_WINDOW_BATCH` (small windows batched cut the
            per-call overhead: 32^3 windows of a brain on 2 CPU threads run about 1.6x faster by 4).
        amp: bfloat16 autocast on CUDA (ignored on CPU).
        normalization: per-input :class:`IntensitySpec` overriding the modality default (``None``
            entries keep the default).
        stability: also compute the stability map from ``stability_passes`` test-time interventions
            (alternating complementary and shared block masking; ``stability_passes`` extra passes):
            the per-voxel standard deviation of the fused value, smoothed at the hole size.
        stability_smoothing: Gaussian sigma (voxels) of that smoothing; ``None``: half the model's
            training hole size; 0: the raw standard deviation.
        contributions: also return per-modality contribution maps.
        crop_foreground: run the network only on the bounding box of voxels that are foreground in
            some modality (plus a margin); voxels that are background (0 after normalisation) in
            every modality are 0 in the fusion, inside the box and out.
        seed: seed of the test-time interventions.
        names: input names for messages and provenance.
        progress: called as ``progress(done, total)`` after each window batch.
        cancel: polled before each window batch; returning ``True`` raises :class:`FusionCancelled`.

    Returns:
        a :class:`FusionResult` of the inputs' shape.

    Raises:
        ValueError: fewer than two inputs, shapes that differ, 4D/1D inputs, NaN/Inf, a constant
            image, an unknown modality, a device that is not there.
        FusionCancelled: ``cancel`` returned ``True``.

    Examples::

        >>> result = fuse([t1c, flair], ["mri", "mri"])                    # 3D
        >>> result = fuse([mri_slice, pet_y], ["mri", "pet"], stability=True)  # 2D
    """
    started = time.perf_counter()
    count = len(images)
    names = list(names) if names is not None else [f"input {i + 1}" for i in range(count)]
    if len(names) != count:
        raise ValueError(f"got {len(names)} names for {count} inputs")
    arrays = _validate(images, names)
    if modalities is None:
        modalities = [guess_modality(n) or "mri" for n in names]
    modalities = [str(m).lower() for m in modalities]
    if len(modalities) != len(arrays):
        raise ValueError(f"got {len(modalities)} modality tags for {len(arrays)} inputs")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    if (sw_batch_size is not None and sw_batch_size < 1) or stability_passes < 2:
        raise ValueError("sw_batch_size must be >= 1 and stability_passes >= 2")
    spatial_dims = arrays[0].ndim
    torch_device = select_device(device)
    loaded = _get_model(model, spatial_dims, torch_device)
    unknown = [m for m in modalities if m not in loaded.modalities]
    if unknown:
        raise ValueError(
            f"modality {unknown[0]!r} is not supported by model {loaded.name} (supports "
            f"{', '.join(loaded.modalities)}); MRI contrasts are tagged 'mri'"
        )
    specs = list(normalization) if normalization is not None else [None] * count
    normalised, norm_info = [], []
    for array, modality, spec, name in zip(arrays, modalities, specs, names, strict=True):
        if spec is None:  # no override: the model's rule for this modality
            spec = loaded.normalization.get(modality)
            if (
                modality == "ct"
                and spec is not None
                and spec.method == "window"
                and not looks_like_hounsfield(array)
            ):
                # a Hounsfield window on CT that is not in HU (an 8-bit PNG) would squash it into a
                # sliver of [0, 1]; use the same fallback as training (normalize_intensity's default)
                spec = None
        data, info = normalize_intensity(array, modality, spec, name)
        normalised.append(data)
        norm_info.append(info)
    stack = np.stack(normalised)
    del normalised

    net = loaded.network
    multiple = int(getattr(net, "size_multiple", 1))
    crop = training_crop_size(loaded)  # "training" windows, and auto's reference
    if isinstance(roi_size, str):
        if roi_size != "training":
            raise ValueError(f"roi_size {roi_size!r}: use None, 'training' or sizes in voxels")
        if crop is None:
            raise ValueError(
                f"model {loaded.name} does not record its training crop size; give the patch size in voxels"
            )
        roi_size = crop
    box = _foreground_box(stack, margin=4) if crop_foreground else tuple(slice(0, s) for s in stack.shape[1:])
    # start the box on the network's pooling grid, so cropping does not shift the max-pool phase
    box = tuple(slice(s.start - s.start % multiple, s.stop) for s in box)
    cropped = stack[(slice(None),) + box]
    # pad to the pooling grid as the network itself would (zeros at the far end), then keep every
    # window on that grid: window sizes and steps multiples of it
    grid_pad = [(0, 0)] + [(0, (-n) % multiple) for n in cropped.shape[1:]]
    cropped = np.ascontiguousarray(np.pad(cropped, grid_pad) if any(p for _, p in grid_pad) else cropped)
    roi, overlaps, sw_batch_size = window_plan(
        cropped.shape[1:], roi_size, overlap, multiple, crop, sw_batch_size
    )
    windows = count_windows(cropped.shape[1:], roi, overlaps)
    total = math.ceil(windows / sw_batch_size)
    modality_index = torch.tensor([loaded.modalities.index(m) for m in modalities], device=torch_device)
    use_amp = amp and torch_device.type == "cuda"
    hole = int(loaded.meta.get("training", {}).get("interventions", {}).get("hole_size", 16))
    rng = np.random.default_rng(seed)
    done = 0

    def predictor(window: torch.Tensor) -> torch.Tensor:
        # runs once per window batch: the place for progress and cancellation
        nonlocal done
        if cancel is not None and cancel():
            raise FusionCancelled("fusion cancelled")
        with torch.autocast(torch_device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = net(window, modality_index, return_maps=contributions)
            fused = out["fused"] if contributions else out
            channels = [fused.float()]
            if stability:
                passes = []
                for k in range(stability_passes):
                    masks = torch.stack(
                        [
                            block_masks(window.shape[2:], count, hole, 0.3, rng, k % 2 == 0, window.device)
                            for _ in range(window.shape[0])
                        ]
                    )
                    passes.append(net(window * masks.to(window.dtype), modality_index).float())
                channels.append(torch.stack(passes).std(dim=0))
            if contributions:
                channels.append(out["contributions"].float())
        done += 1
        if progress is not None:
            progress(done, total)
        return torch.cat(channels, dim=1)

    if progress is not None:
        progress(0, total)
    with torch.inference_mode():
        batch = torch.from_numpy(cropped)[None].to(torch_device)
        output = run_windows(predictor, batch, roi, overlaps, sw_batch_size, torch_device)[0].numpy()

    shape = stack.shape[1:]
    fused = np.zeros(shape, np.float32)
    output = output[(slice(None),) + tuple(slice(0, s.stop - s.start) for s in box)]
    fused[box] = np.clip(output[0], 0.0, 1.0)
    background = (stack <= 0).all(axis=0) if crop_foreground else None
    if background is not None:
        # background in every modality stays background: without this the network's small response
        # to all-zero input would draw the crop box's outline on black backgrounds
        fused[background] = 0.0
    channel = 1
    stability_map = contribution_maps = None
    if stability:
        stability_map = np.zeros(shape, np.float32)
        # the estimate's resolution is the hole size: smooth at that scale instead of showing the
        # random blocks' edges (with few passes, the raw std is a patchwork of block outlines)
        sigma = hole / 2 if stability_smoothing is None else float(stability_smoothing)
        spread = output[channel]
        stability_map[box] = ndimage.gaussian_filter(spread, sigma, mode="nearest") if sigma > 0 else spread
        if background is not None:
            stability_map[background] = 0.0
        channel += 1
    if contributions:
        contribution_maps = np.full((count, *shape), 1.0 / count, np.float32)
        contribution_maps[(slice(None),) + box] = output[channel : channel + count]
    provenance = {
        "package": "napari-isfl",
        "version": __version__,
        "model": loaded.name,
        "model_sha256": loaded.sha256,
        "device": str(torch_device),
        "inputs": names,
        "modalities": modalities,
        "normalization": norm_info,
        "parameters": {
            "roi_size": list(roi),
            "overlap": overlap,
            "sw_batch_size": sw_batch_size,
            "amp": use_amp,
            "crop_foreground": crop_foreground,
            "foreground_box": [[int(s.start), int(s.stop)] for s in box],
            "stability": stability,
            "stability_passes": stability_passes if stability else 0,
            "contributions": contributions,
            "seed": seed,
        },
        "windows": windows,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return FusionResult(fused, stability_map, contribution_maps, modalities, provenance)


def fuse_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    modalities: Sequence[str] | None = None,
    *,
    stability_output: str | os.PathLike | None = None,
    resample: bool = False,
    color: bool = True,
    overwrite: bool = True,
    **fuse_options,
) -> FusionResult:
    """Read co-registered files, fuse them, and write the result (and stability map) atomically together.

    The first input is the reference: the output takes its grid, affine and header. PNG/TIFF in gives
    an 8-bit PNG (or TIFF) out; a colour (pseudo-colour PET/SPECT) input has its luminance fused and,
    with ``color``, its colour re-attached to the fused luminance.

    Raises:
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        CoregistrationError: inputs not on one grid and ``resample`` is False.
    """
    from .io import (
        IMAGE_SUFFIXES,
        RASTER_SUFFIXES,
        atomic_write_all,
        check_coregistration,
        image_suffix,
        image_writer,
        read_image,
        resample_to_reference,
    )

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
    result = fuse([d.array for d in data], modalities, names=names, **fuse_options)
    # colour: the chroma of the first colour input goes onto the fused luminance
    colour_source = next((d for d in data if d.is_color), None) if color else None
    reference = data[0]
    if colour_source is not None:
        from dataclasses import replace

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

"""``isfl benchmark robustness``: how much of each method's fusion survives controlled data shifts.

For every case, every method fuses the clean inputs once and then the inputs under every perturbation
family of :mod:`napari_isfl.perturbations` at every requested severity level, applied to each modality in
turn (target ``one``) and, where the family allows it, to all modalities at once (target ``all``). Every
method sees exactly the same perturbed inputs (one seed per case, family and target, the same for every
level, so the levels are nested). Each fusion is scored

* with the nine standard fusion metrics against the **clean** sources (how much of the true information
  survives), and their change relative to the same method's clean-input fusion;
* by its fidelity to the same method's clean-input fusion: SSIM and PSNR (8-bit scale, peak 255);
* for ``truncation``: the same fidelity restricted to the region **outside** the removed slab and to the
  slab itself, and whether another modality fills the slab: the Pearson correlation, over the foreground
  voxels inside the slab, of the fused image with the mean of the unperturbed modalities (``fill_corr``;
  ``fill_corr_clean`` is the same for the clean fusion, the reference);
* for ``dropout``: the fidelity of the fusion to the remaining modalities (SSIM averaged over them, PSNR,
  mean Pearson correlation over the foreground), also for the clean fusion as a reference.

Preparation of a case: the images are read, normalised per modality to ``[0, 1]`` with the default
rules of :mod:`napari_isfl.normalization` (as ``isfl evaluate`` does), and cropped to the bounding box of
their foreground (any modality above 0.02), so that a truncated slab removes anatomy rather than
background; volumes are further cropped to at most ``crop_3d`` voxels per axis around the foreground's
centre (the default subset that keeps the benchmark within its time budget on two CPU cores). The
perturbations act on the normalised images, and ISFL is run on them with normalisation ``"none"``, so a
calibration error (``intensity_scale``) is not undone by renormalisation. :func:`napari_isfl.inference.fuse`
refuses constant inputs, so a constant dropout stand-in (``zeros``, ``mean``) reaches ISFL with one
foreground voxel raised by ``1e-6`` (far below the 8-bit resolution of the scores); the classical
baselines get it unchanged.

Core code: no napari/Qt import; matplotlib only when plots or montages are written.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .baselines import BASELINES, fuse_baseline
from .data import Case
from .evaluation import STANDARD_METRICS, load_cases
from .io import read_image, resample_to_reference
from .metrics import fusion_metrics, psnr, structural_similarity, to_uint8_scale
from .normalization import IntensitySpec, normalize_intensity
from .perturbations import PERTURBATIONS, apply_to_all, apply_to_modality, get_family

__all__ = [
    "DEFAULT_CASES",
    "DEFAULT_CROP_3D",
    "DEFAULT_LEVELS",
    "ISFL_METHODS",
    "PreparedCase",
    "RobustnessOptions",
    "add_arguments",
    "crop_stack",
    "input_labels",
    "load_rows",
    "main",
    "options_from_args",
    "pooled_psnr",
    "prepare_case",
    "register",
    "report_from_csv",
    "run_robustness",
    "score_fusion",
    "select_cases",
    "slab_boxes",
    "summarize_robustness",
    "write_outputs",
]

#: the ISFL methods: the shipped model and its twin trained without interventions
ISFL_METHODS = ("isfl", "isfl-noiv")
METHODS = (*ISFL_METHODS, *BASELINES)
DEFAULT_LEVELS = (1, 2, 3)
DEFAULT_CASES = 8
DEFAULT_CROP_3D = 64
QUICK_FAMILIES = ("gaussian_noise", "bias_field", "truncation", "dropout")
QUICK_LEVELS = (1, 3)
QUICK_CASES = 2
QUICK_CROP_3D = 48
#: a voxel is foreground when some clean normalised modality exceeds this (as in ``isfl evaluate``)
FOREGROUND_THRESHOLD = 0.02
#: the value added to one voxel of a constant input before ISFL sees it (see the module docstring)
CONSTANT_NUDGE = 1e-6
#: columns of the family-specific measures
TRUNCATION_KEYS = ("out_ssim", "out_psnr", "in_ssim", "in_psnr", "fill_corr", "fill_corr_clean")
DROPOUT_KEYS = ("rest_ssim", "rest_psnr", "rest_corr", "rest_ssim_clean", "rest_corr_clean")
FIDELITY_KEYS = ("fid_ssim", "fid_psnr")
_NONE_SPEC = IntensitySpec("none")
_COLOURS = {
    "isfl": "#d62728",
    "isfl-noiv": "#ff7f0e",
    "mean": "#7f7f7f",
    "max": "#bcbd22",
    "lp": "#1f77b4",
    "dwt": "#2ca02c",
    "gff": "#9467bd",
}


# --------------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------------
@dataclass
class PreparedCase:
    """A case normalised to ``[0, 1]`` and cropped, ready for perturbation.

    Attributes:
        name: case name (``TASK/FILE`` for a Harvard-style folder).
        task: the group it is reported in (the folder's task, else the modality combination).
        modalities: one tag per modality.
        stack: float32 ``(N, *S)``, the normalised clean inputs after cropping.
        box: where the crop lies in the images as read.
        labels: a short display name per input (the modality, plus the file's last name part when two
            inputs share a modality, e.g. ``MRI t1c``).
    """

    name: str
    task: str
    modalities: list[str]
    stack: np.ndarray
    box: tuple[slice, ...] = field(default_factory=tuple)
    labels: list[str] = field(default_factory=list)


def _display_path(path: Path | str) -> str:
    """A shipped model as ``napari_isfl/weights/NAME`` (not this machine's install path), others as given."""
    path = Path(path)
    weights = Path(__file__).parent / "weights"
    try:
        return f"napari_isfl/weights/{path.resolve().relative_to(weights.resolve())}"
    except ValueError:
        return str(path)


def input_labels(case: Case) -> list[str]:
    """Display names of a case's inputs: ``CT``, ``MRI``; ``MRI t1c``, ``MRI flair`` when tags repeat."""
    tags = [m.upper() for m in case.modalities]
    if len(set(tags)) == len(tags):
        return tags
    labels = []
    for tag, path in zip(tags, case.images, strict=True):
        stem = Path(path).name.split(".")[0]
        labels.append(f"{tag} {stem.replace('-', '_').split('_')[-1]}")
    return labels


def case_task(case: Case) -> str:
    """The task a case is reported in: the folder task (``CT-MRI``) or its modalities (``MRI+CT``)."""
    if "/" in case.name:
        return case.name.split("/")[0]
    return "+".join(m.upper() for m in case.modalities)


def select_cases(cases: Sequence[Case], count: int | None) -> list[Case]:
    """``count`` cases spread over the tasks: round-robin over tasks, evenly spaced within each task.

    Evenly spaced (the centres of equal parts of the task's list, not its first cases), so a Harvard task is
    not represented by neighbouring slices of one patient.
    The selected cases keep their original order. ``None`` (or a count >= the number of cases) keeps all.
    """
    if count is not None and count < 1:
        raise ValueError(f"the number of cases must be >= 1, got {count}")
    if count is None or count >= len(cases):
        return list(cases)
    by_task: dict[str, list[int]] = {}
    for index, case in enumerate(cases):
        by_task.setdefault(case_task(case), []).append(index)
    quotas = dict.fromkeys(by_task, 0)
    remaining = count
    while remaining:
        for task, members in by_task.items():
            if remaining and quotas[task] < len(members):
                quotas[task] += 1
                remaining -= 1
    chosen: list[int] = []
    for task, members in by_task.items():
        if quotas[task]:
            # centres of q equal parts: one case is the middle one, all cases are all of them
            spots = ((np.arange(quotas[task]) + 0.5) * len(members) / quotas[task]).astype(int)
            chosen += [members[i] for i in spots]
    return [cases[i] for i in sorted(chosen)]


def _foreground_box(stack: np.ndarray) -> tuple[slice, ...]:
    signal = (stack > FOREGROUND_THRESHOLD).any(axis=0)
    if not signal.any():
        return tuple(slice(0, n) for n in signal.shape)
    hits = np.argwhere(signal)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(hits.min(0), hits.max(0), strict=True))


def crop_stack(stack: np.ndarray, crop_3d: int | None) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Crop ``(N, *S)`` to its foreground box and, for volumes, to ``crop_3d`` voxels per axis at most.

    The 3D window is centred on the foreground's centre of mass and kept inside the foreground box.

    Returns:
        The contiguous cropped stack and the crop box in the input's coordinates.
    """
    box = list(_foreground_box(stack))
    if stack.ndim == 4 and crop_3d:
        signal = (stack > FOREGROUND_THRESHOLD).any(axis=0)
        centre = np.argwhere(signal).mean(axis=0) if signal.any() else np.array(signal.shape) / 2
        for axis, part in enumerate(box):
            extent = part.stop - part.start
            if extent > crop_3d:
                start = int(round(centre[axis] - crop_3d / 2))
                start = min(max(start, part.start), part.stop - crop_3d)
                box[axis] = slice(start, start + crop_3d)
    region = tuple(box)
    return np.ascontiguousarray(stack[(slice(None), *region)]), region


def prepare_case(case: Case, crop_3d: int | None = DEFAULT_CROP_3D) -> PreparedCase:
    """Read, normalise (default per-modality rules) and crop one case (see :func:`crop_stack`)."""
    data = [read_image(p) for p in case.images]
    if case.resample:
        data = [data[0]] + [resample_to_reference(d, data[0]) for d in data[1:]]
    shapes = {d.array.shape for d in data}
    if len(shapes) != 1:
        raise ValueError(
            f"case {case.name}: images have different shapes {sorted(shapes)}; co-register them "
            "(or set resample=1 in the CSV)"
        )
    stack = np.stack(
        [
            normalize_intensity(d.array, m, name=str(d.path))[0]
            for d, m in zip(data, case.modalities, strict=True)
        ]
    )
    cropped, box = crop_stack(stack, crop_3d)
    return PreparedCase(case.name, case_task(case), list(case.modalities), cropped, box, input_labels(case))


# --------------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------------
def _nudge_constant(stack: np.ndarray) -> np.ndarray:
    """Raise one foreground voxel of each constant modality by :data:`CONSTANT_NUDGE` (fuse refuses those)."""
    constant = [i for i, image in enumerate(stack) if image.min() == image.max()]
    if not constant:
        return stack
    out = stack.copy()
    for i in constant:
        others = np.delete(stack, i, axis=0).sum(axis=0) if len(stack) > 1 else stack[i]
        spot = np.unravel_index(int(np.argmax(others)), others.shape)
        value = float(out[i][spot])
        out[i][spot] = value + CONSTANT_NUDGE if value <= 1.0 - CONSTANT_NUDGE else value - CONSTANT_NUDGE
    return out


class MethodRunner:
    """Fuses a normalised stack with any benchmark method; ISFL models are loaded once per dimensionality.

    Args:
        methods: method names (``isfl``, ``isfl-noiv`` and/or :data:`~napari_isfl.baselines.BASELINES`).
        model: the ISFL model (``"default"``, a shipped name or a checkpoint path).
        baseline_model: the ISFL model trained without interventions (needed for ``isfl-noiv``).
        device: torch device for the ISFL models.
    """

    def __init__(
        self,
        methods: Sequence[str],
        model: str = "default",
        baseline_model: str | None = None,
        device: str = "cpu",
    ) -> None:
        self.methods = list(methods)
        self.models = {"isfl": model, "isfl-noiv": baseline_model}
        self.device = device
        self._loaded: dict[tuple[str, int], Any] = {}

    def loaded(self, method: str, spatial_dims: int) -> Any:
        """The :class:`~napari_isfl.checkpoint.LoadedModel` of an ISFL method for 2D or 3D inputs."""
        key = (method, spatial_dims)
        if key not in self._loaded:
            from .checkpoint import load_model
            from .inference import select_device

            self._loaded[key] = load_model(str(self.models[method]), spatial_dims, select_device(self.device))
        return self._loaded[key]

    def fuse(self, method: str, stack: np.ndarray, modalities: Sequence[str]) -> np.ndarray:
        """Fuse a normalised ``(N, *S)`` stack in ``[0, 1]``; returns a float32 image in ``[0, 1]``."""
        if method in ISFL_METHODS:
            from .inference import fuse

            model = self.loaded(method, stack.ndim - 1)
            result = fuse(
                list(_nudge_constant(stack)),
                list(modalities),
                model=model,
                device=self.device,
                normalization=[_NONE_SPEC] * len(stack),
            )
            return result.fused
        return fuse_baseline(method, stack)

    def provenance(self) -> dict[str, dict]:
        """Name, file and SHA-256 of every ISFL model loaded so far."""
        return {
            f"{method} ({dims}D)": {"name": m.name, "path": _display_path(m.path), "sha256": m.sha256}
            for (method, dims), m in self._loaded.items()
        }


# --------------------------------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------------------------------
def _pearson(first: np.ndarray, second: np.ndarray) -> float:
    a = first.astype(np.float64).ravel()
    b = second.astype(np.float64).ravel()
    if a.size < 2:
        return math.nan
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denominator if denominator > 0 else math.nan


def slab_boxes(mask: np.ndarray) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The removed slab of a truncation mask and the rest of the image, both as boxes.

    Args:
        mask: boolean affected mask of :func:`~napari_isfl.perturbations.perturb_with_mask` for
            ``truncation``: a slab at one end of one axis.

    Returns:
        ``(inside, outside)`` index tuples: the slab, and its complement (also a box, since the slab
        lies at one end of its axis).

    Raises:
        ValueError: the mask is empty, covers everything, or is not a slab at one end of an axis.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any() or mask.all():
        raise ValueError("a truncation mask must remove some but not all voxels")
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=others))
        low, high, size = int(hit[0]), int(hit[-1]) + 1, mask.shape[axis]
        if high - low == size:
            continue
        inside = [slice(None)] * mask.ndim
        outside = [slice(None)] * mask.ndim
        inside[axis] = slice(low, high)
        if low == 0:
            outside[axis] = slice(high, size)
        elif high == size:
            outside[axis] = slice(0, low)
        else:
            break
        inside_box = tuple(inside)
        if mask[inside_box].all() and int(mask.sum()) == mask[inside_box].size:
            return inside_box, tuple(outside)
        break
    raise ValueError("the truncation mask is not a slab at one end of an axis")


def _fidelity(image: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """SSIM and PSNR of two 8-bit-scale images (one source: the SSIM is that pair's)."""
    return (
        float(structural_similarity(image, [reference], reduction="mean")),
        float(psnr(image, [reference])),
    )


def score_fusion(
    fused: np.ndarray,
    clean_fused: np.ndarray,
    clean_stack: np.ndarray,
    clean_scores: dict[str, float],
    *,
    family: str | None = None,
    target: int | str | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """All scores of one fusion of perturbed inputs (see the module docstring).

    Args:
        fused: the fusion of the perturbed inputs, ``[0, 1]``.
        clean_fused: the same method's fusion of the clean inputs, ``[0, 1]``.
        clean_stack: the clean normalised inputs ``(N, *S)``.
        clean_scores: the standard metrics of ``clean_fused`` (for the changes).
        family: perturbation family name (adds the truncation or dropout measures); ``None`` for none.
        target: index of the perturbed modality, or ``"all"``.
        mask: the perturbed modality's affected mask (the removed slab for truncation).

    Returns:
        ``{metric: value, "delta_<metric>": change, "rel_<metric>": change in % of |clean|, fid_*, ...}``.
    """
    f8 = to_uint8_scale(np.clip(fused, 0.0, 1.0))
    c8 = to_uint8_scale(np.clip(clean_fused, 0.0, 1.0))
    sources = [to_uint8_scale(s) for s in clean_stack]
    scores: dict[str, float] = dict(fusion_metrics(f8, sources, names=STANDARD_METRICS))
    for key in STANDARD_METRICS:
        delta = scores[key] - clean_scores[key]
        scores[f"delta_{key}"] = delta
        base = abs(clean_scores[key])
        scores[f"rel_{key}"] = 100.0 * delta / base if base > 0 else math.nan
    scores["fid_ssim"], scores["fid_psnr"] = _fidelity(f8, c8)
    perturbed = isinstance(target, (int, np.integer)) and mask is not None and bool(np.any(mask))
    foreground = (clean_stack > FOREGROUND_THRESHOLD).any(axis=0)
    if family == "truncation" and perturbed:
        inside, outside = slab_boxes(mask)
        scores["out_ssim"], scores["out_psnr"] = _fidelity(f8[outside], c8[outside])
        scores["in_ssim"], scores["in_psnr"] = _fidelity(f8[inside], c8[inside])
        others = np.delete(clean_stack, int(target), axis=0).mean(axis=0)
        region = foreground[inside]
        if region.sum() >= 10:
            scores["fill_corr"] = _pearson(fused[inside][region], others[inside][region])
            scores["fill_corr_clean"] = _pearson(clean_fused[inside][region], others[inside][region])
        else:
            scores["fill_corr"] = scores["fill_corr_clean"] = math.nan
    if family == "dropout" and perturbed:
        rest = [i for i in range(len(clean_stack)) if i != int(target)]
        for suffix, image in (("", fused), ("_clean", clean_fused)):
            image8 = to_uint8_scale(np.clip(image, 0.0, 1.0))
            scores[f"rest_ssim{suffix}"] = float(
                structural_similarity(image8, [sources[i] for i in rest], reduction="mean")
            )
            scores[f"rest_corr{suffix}"] = float(
                np.mean([_pearson(image[foreground], clean_stack[i][foreground]) for i in rest])
            )
        scores["rest_psnr"] = float(psnr(f8, [sources[i] for i in rest]))
    return scores


# --------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------
@dataclass
class RobustnessOptions:
    """What one benchmark run does (see :func:`add_arguments` for the command-line names)."""

    methods: list[str]
    families: list[str]
    levels: list[int]
    model: str = "default"
    baseline_model: str | None = None
    cases: int | None = DEFAULT_CASES
    crop_3d: int | None = DEFAULT_CROP_3D
    seed: int = 0
    device: str = "cpu"
    montages: bool = True
    montage_case: int = 0

    def __post_init__(self) -> None:
        validate_options(self)


def validate_options(options: RobustnessOptions) -> None:
    """Check an options object; raises ValueError with a message naming the bad value and the valid ones."""
    if not options.methods:
        raise ValueError("no method given; use --methods with isfl, isfl-noiv and/or " + ", ".join(BASELINES))
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; valid methods: {', '.join(METHODS)}")
    if len(set(options.methods)) != len(options.methods):
        raise ValueError(f"methods listed twice: {options.methods}")
    if "isfl-noiv" in options.methods and not options.baseline_model:
        raise ValueError(
            "method isfl-noiv needs --baseline-model (the checkpoint of ISFL trained without interventions, "
            "e.g. runs/final/isfl2d_no_interventions/model.pt)"
        )
    if not options.families:
        raise ValueError("no perturbation family given; valid families: " + ", ".join(PERTURBATIONS))
    for family in options.families:
        get_family(family)  # raises with the list of valid names
    if len(set(options.families)) != len(options.families):
        raise ValueError(f"families listed twice: {options.families}")
    if not options.levels:
        raise ValueError("no severity level given; valid levels are 0..3 (0 = identity)")
    for family in options.families:
        for level in options.levels:
            get_family(family).check_level(level)
    if len(set(options.levels)) != len(options.levels):
        raise ValueError(f"levels listed twice: {options.levels}")
    if options.cases is not None and options.cases < 1:
        raise ValueError(f"--cases must be >= 1, got {options.cases}")
    if options.crop_3d is not None and options.crop_3d != 0 and options.crop_3d < 16:
        raise ValueError(f"--crop-3d must be 0 (no crop) or >= 16 voxels, got {options.crop_3d}")
    if options.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {options.seed}")
    if options.montage_case < 0:
        raise ValueError(f"--montage-case must be >= 0, got {options.montage_case}")


def perturbation_seed(base: int, case: str, family: str, target: int | str) -> int:
    """Seed of one (case, family, target): stable across runs and levels, independent of the method."""
    return (base * 1_000_003 + zlib.crc32(f"{case}|{family}|{target}".encode())) % 2**32


def _targets(family: str, count: int) -> list[int | str]:
    return [*range(count), *(["all"] if get_family(family).all_modalities else [])]


def _base_row(case: PreparedCase, method: str) -> dict[str, Any]:
    return {"task": case.task, "case": case.name, "method": method}


def _target_fields(case: PreparedCase, target: int | str | None) -> dict[str, Any]:
    if target is None:
        return {"target": "clean", "target_index": "", "target_modality": ""}
    if target == "all":
        return {"target": "all", "target_index": "", "target_modality": "all"}
    return {"target": "one", "target_index": int(target), "target_modality": case.modalities[int(target)]}


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}


@dataclass
class MontageRecord:
    """What one family's montage shows: clean and perturbed inputs, and each method's two fusions."""

    case: str
    family: str
    level: int
    target: int
    labels: list[str]
    clean: np.ndarray
    perturbed: np.ndarray
    mask: np.ndarray
    clean_fused: dict[str, np.ndarray]
    fused: dict[str, np.ndarray]


def run_robustness(
    cases: Sequence[Case | PreparedCase],
    options: RobustnessOptions,
    *,
    runner: MethodRunner | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict], list[MontageRecord]]:
    """Run the benchmark on already selected cases.

    Args:
        cases: cases to read and prepare (:func:`prepare_case` with ``options.crop_3d``), or prepared ones.
        options: methods, families, levels, models, seed, montage choice.
        runner: a :class:`MethodRunner` to reuse (made from ``options`` when ``None``).
        progress: called with one line of progress text per case and family.

    Returns:
        One row per (case, method, family, target, level) plus one clean row per (case, method), and
        the montage records (one per family, for case ``options.montage_case``, the last modality as
        target, the highest requested level) when ``options.montages``.
    """
    runner = runner or MethodRunner(options.methods, options.model, options.baseline_model, options.device)
    rows: list[dict] = []
    montages: list[MontageRecord] = []
    started = time.perf_counter()
    for case_index, item in enumerate(cases):
        case = item if isinstance(item, PreparedCase) else prepare_case(item, options.crop_3d)
        stack = case.stack
        count = len(stack)
        clean_fused: dict[str, np.ndarray] = {}
        clean_scores: dict[str, dict[str, float]] = {}
        sources = [to_uint8_scale(s) for s in stack]
        for method in options.methods:
            tic = time.perf_counter()
            clean_fused[method] = runner.fuse(method, stack, case.modalities)
            seconds = time.perf_counter() - tic
            scored = to_uint8_scale(np.clip(clean_fused[method], 0.0, 1.0))
            clean_scores[method] = fusion_metrics(scored, sources, names=STANDARD_METRICS)
            row = _base_row(case, method) | {"family": "clean", "level": 0, "parameter": ""}
            row |= _target_fields(case, None) | {"seed": "", "seconds": seconds}
            row |= score_fusion(clean_fused[method], clean_fused[method], stack, clean_scores[method])
            rows.append(_rounded(row))
        want_montage = options.montages and case_index == options.montage_case
        for family in options.families:
            fam = get_family(family)
            for target in _targets(family, count):
                seed = perturbation_seed(options.seed, case.name, family, target)
                for level in options.levels:
                    if target == "all":
                        perturbed, masks = apply_to_all(stack, family, level, seed, return_mask=True)
                        mask = masks.any(axis=0)
                    else:
                        perturbed, mask = apply_to_modality(
                            stack, target, family, level, seed, return_mask=True
                        )
                    fused_by_method = {}
                    for method in options.methods:
                        tic = time.perf_counter()
                        fused = runner.fuse(method, perturbed, case.modalities)
                        seconds = time.perf_counter() - tic
                        fused_by_method[method] = fused
                        row = _base_row(case, method) | {
                            "family": family,
                            "level": level,
                            "parameter": fam.levels[level],
                        }
                        row |= _target_fields(case, target) | {"seed": seed, "seconds": seconds}
                        row |= score_fusion(
                            fused,
                            clean_fused[method],
                            stack,
                            clean_scores[method],
                            family=family,
                            target=target,
                            mask=mask,
                        )
                        rows.append(_rounded(row))
                    if want_montage and target == count - 1 and level == max(options.levels):
                        montages.append(
                            MontageRecord(
                                case.name,
                                family,
                                level,
                                int(target),
                                case.labels or [m.upper() for m in case.modalities],
                                stack,
                                perturbed,
                                mask,
                                clean_fused,
                                fused_by_method,
                            )
                        )
            if progress is not None:
                elapsed = time.perf_counter() - started
                progress(f"case {case_index + 1}/{len(cases)} {case.name}: {family} done ({elapsed:.0f} s)")
    return rows, montages


# --------------------------------------------------------------------------------------------------
# summaries and tables
# --------------------------------------------------------------------------------------------------
def _numeric_keys(rows: Sequence[dict]) -> list[str]:
    skip = {"level", "seed", "target_index", "parameter"}
    keys: list[str] = []
    for row in rows:
        for key, value in row.items():
            if (
                key not in skip
                and key not in keys
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                keys.append(key)
    return keys


def _mean(values: Sequence[float]) -> float:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(float(v))]
    return float(np.mean(finite)) if finite else math.nan


def pooled_psnr(values: Sequence[float], peak: float = 255.0) -> float:
    """PSNR of the mean squared error behind PSNR values: finite unless every image pair was identical.

    A plain mean of PSNRs is infinite as soon as one perturbation left a fusion unchanged (a truncated
    slab of pure background); pooling the MSE keeps the summary meaningful.
    """
    finite = [float(v) for v in values if not math.isnan(float(v))]
    if not finite:
        return math.nan
    mse = float(np.mean([0.0 if math.isinf(v) else peak**2 / 10.0 ** (v / 10.0) for v in finite]))
    return math.inf if mse == 0.0 else 10.0 * math.log10(peak**2 / mse)


def summarize_robustness(rows: Sequence[dict]) -> list[dict]:
    """Mean of every numeric column per (family, level, target kind, method) over cases and targets.

    Clean rows form the family ``clean``. Each entry also counts its rows (``n``). PSNR columns are
    pooled (:func:`pooled_psnr`) instead of averaged.
    """
    keys = _numeric_keys(rows)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["family"], row["level"], row["target"], row["method"]), []).append(row)
    summary = []
    for (family, level, target, method), members in groups.items():
        entry: dict[str, Any] = {
            "family": family,
            "level": level,
            "parameter": members[0]["parameter"],
            "target": target,
            "method": method,
            "n": len(members),
        }
        for key in keys:
            values = [m.get(key, math.nan) for m in members]
            if key.endswith("_psnr"):
                entry[key] = pooled_psnr([v for v in values if isinstance(v, (int, float))])
            else:
                entry[key] = _mean(values)
        summary.append(entry)
    return summary


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def _delta(value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value) and not math.isinf(value):
        return f"{value:+.3f}"
    return _fmt(value)


def _family_columns(family: str) -> list[tuple[str, str]]:
    columns = [(f"delta_{k}", f"Δ{k}") for k in STANDARD_METRICS]
    columns += [("fid_ssim", "fid SSIM"), ("fid_psnr", "fid PSNR")]
    if family == "truncation":
        columns += [
            ("out_ssim", "out SSIM"),
            ("out_psnr", "out PSNR"),
            ("fill_corr", "fill r"),
            ("fill_corr_clean", "fill r clean"),
        ]
    if family == "dropout":
        columns += [("rest_ssim", "rest SSIM"), ("rest_corr", "rest r"), ("rest_corr_clean", "rest r clean")]
    return columns


def _pivot(
    summary: Sequence[dict], key: str, methods: Sequence[str], families: Sequence[str], levels: Sequence[int]
) -> list[str]:
    """Family x method table of ``key`` (one-modality targets, mean over the given levels); bold = best.

    For a plain metric (not a change or fidelity) the first row holds the clean-input values.
    """
    lines = ["| family | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    table = {(r["family"], r["method"], r["level"]): r for r in summary if r["target"] == "one"}
    table |= {("clean", r["method"], 0): r for r in summary if r["family"] == "clean"}
    with_clean = key in STANDARD_METRICS
    for family in (["clean"] if with_clean else []) + list(families):
        levels_here = [0] if family == "clean" else levels
        values = [
            _mean(
                [table[(family, m, lv)].get(key, math.nan) for lv in levels_here if (family, m, lv) in table]
            )
            for m in methods
        ]
        finite = [v for v in values if not math.isnan(v)]
        best = max(finite) if finite else math.nan
        cells = [
            (
                f"**{_delta(v) if key.startswith('delta') else _fmt(v)}**"
                if v == best
                else (_delta(v) if key.startswith("delta") else _fmt(v))
            )
            for v in values
        ]
        label = "*clean inputs*" if family == "clean" else family
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


#: the measures of robustness (stability) and of quality under perturbation compared between two methods
STABILITY_MEASURES = ("fid_ssim", "fid_psnr", *(f"delta_{k}" for k in ("MI", "SCD", "VIF", "Qabf", "SSIM")))
QUALITY_MEASURES = ("MI", "SCD", "VIF", "Qabf", "SSIM")


def _comparison(
    summary: Sequence[dict],
    first: str,
    second: str,
    families: Sequence[str],
    levels: Sequence[int],
    measures: Sequence[str] = STABILITY_MEASURES,
) -> list[str]:
    """Per family: on how many (level, measure) pairs ``first`` beats ``second`` (one-modality targets)."""
    table = {(r["family"], r["method"], r["level"]): r for r in summary if r["target"] == "one"}
    lines = [f"| family | {first} better than {second} | of | where {first} is worse |", "|---|---|---|---|"]
    total_won = total = 0
    for family in families:
        won, count, worse = 0, 0, []
        for level in levels:
            a, b = table.get((family, first, level)), table.get((family, second, level))
            if a is None or b is None or level == 0:
                continue
            for key in measures:
                x, y = a.get(key, math.nan), b.get(key, math.nan)
                if math.isnan(x) or math.isnan(y) or x == y:
                    continue
                count += 1
                if x > y:
                    won += 1
                else:
                    worse.append(f"{key.replace('delta_', 'Δ')}@{level}")
        total_won += won
        total += count
        lines.append(f"| {family} | {won} | {count} | {', '.join(worse) or '–'} |")
    lines.append(f"| **all** | **{total_won}** | **{total}** | |")
    return lines


def markdown_report(rows: Sequence[dict], summary: Sequence[dict], info: dict[str, Any]) -> str:
    """The Markdown report: setup, headline tables, clean scores and one table per family."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    families = [f for f in dict.fromkeys(r["family"] for r in rows) if f != "clean"]
    levels = sorted({int(r["level"]) for r in rows if r["family"] != "clean" and int(r["level"]) > 0})
    cases = list(dict.fromkeys(r["case"] for r in rows))
    parts = [
        "# Robustness benchmark\n",
        f"Data: `{info.get('data', '?')}`; {len(cases)} case(s): " + ", ".join(f"`{c}`" for c in cases) + ".",
        f"Methods: {', '.join(methods)}. Families: {', '.join(families)}. Levels: "
        f"{', '.join(map(str, sorted({int(r['level']) for r in rows if r['family'] != 'clean'})))}. "
        f"Seed {info.get('seed', '?')}; 3D crop: {info.get('crop_3d') or 'none'}.",
    ]
    for label, model in (info.get("models") or {}).items():
        parts.append(f"- {label}: `{model['path']}` (sha256 {model['sha256'][:12]})")
    parts += [
        "",
        "Conventions: the nine standard metrics are computed against the **clean** sources (8-bit scale; "
        "MI in bits, VIF and SSIM summed over sources, VIF/Qabf per axial slice for volumes); `Δ` = "
        "perturbed minus clean-input value of the same method. `fid SSIM`/`fid PSNR` = SSIM/PSNR (dB, "
        "peak 255) of the perturbed-input fusion against the same method's clean-input fusion. Truncation: "
        "`out` = the same restricted to outside the removed slab; `fill r` = correlation, inside the slab's "
        "foreground, of the fusion with the unperturbed modality (mean of the others), `fill r clean` the "
        "same for the clean fusion. Dropout: `rest` = fidelity to the remaining modality (SSIM, Pearson r). "
        "Targets: `one` = each modality perturbed in turn (mean over modalities and cases), `all` = every "
        "modality at once. Note: noise inflates EN, SD, SF and AG, so a positive Δ there is not a gain; "
        "the source-referenced metrics (MI, SCD, VIF, Qabf, SSIM) and the fidelities measure robustness.",
        "",
        f"## Headline (one-modality targets, mean over levels {', '.join(map(str, levels))})\n",
        "Fidelity to the clean-input fusion, SSIM (higher = more stable; bold = best):\n",
        *_pivot(summary, "fid_ssim", methods, families, levels),
        "",
        "Qabf of the perturbed-input fusion against the clean sources (first row: clean inputs; a stable "
        "method with a poor clean fusion loses little because it had little; read with this table):\n",
        *_pivot(summary, "Qabf", methods, families, levels),
        "",
        "Change of Qabf against the clean sources (higher = more edge information kept):\n",
        *_pivot(summary, "delta_Qabf", methods, families, levels),
        "",
        "VIF of the perturbed-input fusion against the clean sources (first row: clean inputs):\n",
        *_pivot(summary, "VIF", methods, families, levels),
        "",
        "Change of VIF against the clean sources:\n",
        *_pivot(summary, "delta_VIF", methods, families, levels),
        "",
    ]
    if "isfl" in methods and "isfl-noiv" in methods:
        parts += [
            "ISFL against its twin trained without interventions. Stability: measures (fid SSIM, fid PSNR, "
            "ΔMI, ΔSCD, ΔVIF, ΔQabf, ΔSSIM) x levels on which ISFL is higher:\n",
            *_comparison(summary, "isfl", "isfl-noiv", families, levels),
            "",
            "Quality under perturbation: metrics (MI, SCD, VIF, Qabf, SSIM against the clean sources) x "
            "levels on which ISFL is higher:\n",
            *_comparison(summary, "isfl", "isfl-noiv", families, levels, QUALITY_MEASURES),
            "",
        ]
    clean = [r for r in summary if r["family"] == "clean"]
    parts += [
        "## Clean inputs\n",
        "| method | n | " + " | ".join(STANDARD_METRICS) + " |",
        "|---|---|" + "---|" * len(STANDARD_METRICS),
    ]
    for r in clean:
        parts.append(
            f"| {r['method']} | {r['n']} | " + " | ".join(_fmt(r.get(k)) for k in STANDARD_METRICS) + " |"
        )
    for family in families:
        fam = get_family(family)
        columns = _family_columns(family)
        parts += [
            "",
            f"## {family}\n",
            f"{fam.description} Levels: {fam.parameter} = {fam.levels}.\n",
            "| level | target | method | n | " + " | ".join(label for _, label in columns) + " |",
            "|---|---|---|---|" + "---|" * len(columns),
        ]
        entries = [r for r in summary if r["family"] == family]
        entries.sort(key=lambda r: (r["level"], r["target"] != "one", methods.index(r["method"])))
        for r in entries:
            cells = [
                (_delta(r.get(k, math.nan)) if k.startswith("delta") else _fmt(r.get(k, math.nan)))
                for k, _ in columns
            ]
            parts.append(
                f"| {r['level']} ({r['parameter']}) | {r['target']} | {r['method']} | {r['n']} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------
# plots and montages
# --------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig: Any, path: Path) -> Path:
    """Save a figure as a palette PNG (256 colours): a fraction of the size of matplotlib's RGBA PNG."""
    import io

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def _curve(summary: Sequence[dict], family: str, method: str, target: str, key: str) -> tuple[list, list]:
    """Severity curve of ``key``: level 0 is the clean fusion (Δ = 0, fidelity SSIM = 1)."""
    entries = sorted(
        (r for r in summary if r["family"] == family and r["method"] == method and r["target"] == target),
        key=lambda r: r["level"],
    )
    clean_value = {"fid_ssim": 1.0, "out_ssim": 1.0}.get(key, 0.0 if key.startswith("delta_") else math.nan)
    xs, ys = ([0], [clean_value]) if not math.isnan(clean_value) else ([], [])
    for r in entries:
        value = r.get(key, math.nan)
        if r["level"] > 0 and not math.isnan(value) and not math.isinf(value):
            xs.append(r["level"])
            ys.append(value)
    return xs, ys


def _panel_keys(family: str) -> list[tuple[str, str]]:
    keys = [("fid_ssim", "fidelity SSIM"), ("fid_psnr", "fidelity PSNR (dB)")]
    keys += [(f"delta_{k}", f"Δ{k}") for k in STANDARD_METRICS]
    if family == "truncation":
        keys += [("out_ssim", "SSIM outside slab"), ("fill_corr", "fill r (slab)")]
    if family == "dropout":
        keys += [("rest_ssim", "SSIM to remaining"), ("rest_corr", "r to remaining")]
    return keys


def plot_family(summary: Sequence[dict], family: str, path: Path) -> Path:
    """Every measure of one family vs severity, one line per method (solid: one modality, dashed: all)."""
    plt = _pyplot()
    methods = list(dict.fromkeys(r["method"] for r in summary if r["family"] == family))
    keys = _panel_keys(family)
    columns = 4
    rows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.3 * rows), dpi=80, squeeze=False)
    for ax, (key, label) in zip(axes.ravel(), keys, strict=False):
        for method in methods:
            for target, style in (("one", "-"), ("all", "--")):
                xs, ys = _curve(summary, family, method, target, key)
                if len(xs) > 1 or (xs and key == "fid_psnr"):
                    ax.plot(
                        xs,
                        ys,
                        style,
                        marker="o",
                        ms=3,
                        color=_COLOURS.get(method),
                        lw=1.4,
                        label=method if target == "one" else None,
                    )
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("severity level", fontsize=8)
        ax.set_xticks(range(4))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8, ncol=len(methods))
    fig.suptitle(f"{family}: solid = one modality perturbed, dashed = all modalities", fontsize=10, x=0.35)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    _save_png(fig, path)
    plt.close(fig)
    return path


GRID_KEYS = (
    ("fid_ssim", "fidelity SSIM"),
    ("delta_Qabf", "ΔQabf"),
    ("delta_VIF", "ΔVIF"),
    ("delta_MI", "ΔMI"),
    ("delta_SSIM", "ΔSSIM"),
)


def plot_grid(summary: Sequence[dict], path: Path) -> Path:
    """Compact figure: one row per family, columns fidelity SSIM and the change of Qabf, VIF, MI, SSIM."""
    plt = _pyplot()
    families = [f for f in dict.fromkeys(r["family"] for r in summary) if f != "clean"]
    methods = list(dict.fromkeys(r["method"] for r in summary))
    fig, axes = plt.subplots(
        len(families),
        len(GRID_KEYS),
        figsize=(2.2 * len(GRID_KEYS), 1.6 * len(families)),
        dpi=80,
        squeeze=False,
        sharex=True,
    )
    for i, family in enumerate(families):
        for j, (key, label) in enumerate(GRID_KEYS):
            ax = axes[i, j]
            for method in methods:
                xs, ys = _curve(summary, family, method, "one", key)
                if len(xs) > 1:
                    ax.plot(xs, ys, marker="o", ms=2, lw=1.2, color=_COLOURS.get(method), label=method)
            ax.tick_params(labelsize=6)
            ax.set_xticks(range(4))
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(label, fontsize=8)
            if j == 0:
                ax.set_ylabel(family.replace("_", "\n"), fontsize=7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", fontsize=7, ncol=len(methods))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    _save_png(fig, path)
    plt.close(fig)
    return path


def _display_plane(image: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.rot90(np.take(image, index, axis=axis)) if image.ndim == 3 else image


def save_montage(record: MontageRecord, path: Path) -> Path:
    """Row 1: clean inputs and each method's clean fusion; row 2: perturbed inputs and fusions.

    Volumes show one plane through the foreground centre: axial (last axis), or the first axis when a
    truncation removed a slab along the last axis (so the slab is visible as a band).
    """
    plt = _pyplot()
    axis, index = 0, 0
    if record.clean.ndim == 4:
        axis = 2
        if record.family == "truncation" and record.mask.any():
            inside, _ = slab_boxes(record.mask)
            if inside[2] != slice(None):
                axis = 0
        signal = (record.clean > FOREGROUND_THRESHOLD).any(axis=0)
        others = tuple(a for a in range(3) if a != axis)
        profile = signal.sum(axis=others)
        index = int(round(np.average(np.arange(len(profile)), weights=profile))) if profile.sum() else 0
    methods = list(record.fused)
    count = len(record.labels)
    columns = count + len(methods)
    fig, axes = plt.subplots(2, columns, figsize=(1.9 * columns, 4.6), dpi=80, squeeze=False)
    parameter = get_family(record.family).levels[record.level]
    level_text = f"{record.family} level {record.level} ({parameter}) on {record.labels[record.target]}"
    for row, (inputs, fused, label) in enumerate(
        ((record.clean, record.clean_fused, "clean"), (record.perturbed, record.fused, level_text))
    ):
        panels = [
            (label + (" *" if row == 1 and i == record.target else ""), inputs[i])
            for i, label in enumerate(record.labels)
        ]
        panels += [("ISFL (ours)" if m == "isfl" else m.upper(), fused[m]) for m in methods]
        for ax, (title, image) in zip(axes[row], panels, strict=True):
            ax.imshow(
                _display_plane(image, axis, index), cmap="gray", vmin=0, vmax=1, interpolation="nearest"
            )
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        axes[row, 0].text(
            -0.08,
            0.5,
            label,
            rotation=90,
            transform=axes[row, 0].transAxes,
            fontsize=7,
            va="center",
            ha="right",
        )
    plane = "" if record.clean.ndim == 3 else f", plane {index} of axis {axis}"
    fig.suptitle(f"{record.case}{plane}: top clean, bottom {level_text} (* = perturbed input)", fontsize=9)
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------------
def _write_csv(rows: Sequence[dict], path: Path) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_outputs(
    rows: Sequence[dict],
    output: str | Path,
    info: dict[str, Any],
    montages: Sequence[MontageRecord] = (),
    plots: bool = True,
) -> dict[str, Path]:
    """Write ``robustness.csv``, ``summary.csv``, ``summary.md``, ``run.json``, plots and montages.

    Returns:
        The written files by role (``csv``, ``summary_csv``, ``markdown``, ``run``, ``plot:<family>``,
        ``grid``, ``montage:<family>``).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    summary = summarize_robustness(rows)
    written = {
        "csv": _write_csv(rows, output / "robustness.csv"),
        "summary_csv": _write_csv([_rounded(r) for r in summary], output / "summary.csv"),
    }
    (output / "summary.md").write_text(markdown_report(rows, summary, info))
    written["markdown"] = output / "summary.md"
    (output / "run.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    written["run"] = output / "run.json"
    if plots:
        for family in dict.fromkeys(r["family"] for r in rows):
            if family != "clean":
                written[f"plot:{family}"] = plot_family(summary, family, output / "plots" / f"{family}.png")
        written["grid"] = plot_grid(summary, output / "plots" / "grid.png")
    for record in montages:
        written[f"montage:{record.family}"] = save_montage(
            record, output / "montages" / f"{record.family}.png"
        )
    return written


_TEXT_COLUMNS = ("task", "case", "method", "family", "target", "target_modality", "parameter")
_INT_COLUMNS = ("level", "target_index", "seed")


def load_rows(path: str | Path) -> list[dict]:
    """Read a ``robustness.csv`` back with its numbers as numbers (``inf``/``nan`` included)."""
    rows = []
    with open(path, newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for key, text in raw.items():
                if key in _TEXT_COLUMNS or text == "":
                    row[key] = text
                elif key in _INT_COLUMNS:
                    row[key] = int(text)
                else:
                    row[key] = float(text)
            rows.append(row)
    return rows


def report_from_csv(output: str | Path, plots: bool = True) -> dict[str, Path]:
    """Rewrite the summary, Markdown report and plots of a finished run from its ``robustness.csv``.

    Montages need the images and are left as they are. ``run.json`` supplies the setup lines.
    """
    output = Path(output)
    info_path = output / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return write_outputs(load_rows(output / "robustness.csv"), output, info, plots=plots)


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _levels(text: str) -> list[int]:
    values = []
    for part in _split(text):
        try:
            values.append(int(part))
        except ValueError:
            raise ValueError(f"--levels takes comma-separated integers 0..3, got {part!r}") from None
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by ``isfl benchmark robustness`` and ``benchmarks/robustness.py``)."""
    parser.add_argument(
        "data", help="folder (Harvard layout TASK/MODALITY/NAME.png) or CSV of co-registered sets"
    )
    parser.add_argument(
        "--data-root", help="folder the CSV's image paths are relative to (default: the CSV's)"
    )
    parser.add_argument(
        "--model", default="default", help="ISFL model: 'default', a shipped name or a checkpoint"
    )
    parser.add_argument(
        "--baseline-model", help="checkpoint of ISFL trained without interventions (isfl-noiv)"
    )
    parser.add_argument(
        "--methods",
        help=f"comma-separated from {', '.join(METHODS)} "
        "(default: isfl, isfl-noiv when --baseline-model is given, lp, dwt, gff)",
    )
    parser.add_argument("--families", help=f"comma-separated from {', '.join(PERTURBATIONS)} (default: all)")
    parser.add_argument("--levels", help="comma-separated severity levels 0..3 (default 1,2,3; 0 = identity)")
    parser.add_argument(
        "--cases", type=int, help=f"cases, spread over tasks (default {DEFAULT_CASES}; 0 = all)"
    )
    parser.add_argument(
        "--crop-3d",
        type=int,
        help=f"crop volumes to at most N voxels per axis (default {DEFAULT_CROP_3D}; 0 = no crop)",
    )
    parser.add_argument("--seed", type=int, default=0, help="perturbation seed (default 0)")
    parser.add_argument("--device", default="cpu", help="device of the ISFL models (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--montage-case", type=int, default=0, help="index of the selected case shown in montages"
    )
    parser.add_argument(
        "--no-montages", action="store_true", help="write no montages (e.g. unlicensed images)"
    )
    parser.add_argument("--no-plots", action="store_true", help="write no plots")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a few minutes: {QUICK_CASES} cases, families {', '.join(QUICK_FAMILIES)}, levels "
        f"{','.join(map(str, QUICK_LEVELS))}, 3D crop {QUICK_CROP_3D} (explicit options still win)",
    )
    parser.add_argument("--output", default="robustness", help="output folder (default ./robustness)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def options_from_args(args: argparse.Namespace) -> RobustnessOptions:
    """Options from parsed arguments, with the ``--quick`` and default subsets filled in."""
    quick = bool(getattr(args, "quick", False))
    if args.methods is not None:
        methods = _split(args.methods)
    else:
        methods = ["isfl", *(["isfl-noiv"] if args.baseline_model else []), "lp", "dwt", "gff"]
    if args.families is not None:
        families = list(PERTURBATIONS) if args.families.strip() == "all" else _split(args.families)
    else:
        families = list(QUICK_FAMILIES if quick else PERTURBATIONS)
    levels = (
        _levels(args.levels) if args.levels is not None else list(QUICK_LEVELS if quick else DEFAULT_LEVELS)
    )
    cases = args.cases if args.cases is not None else (QUICK_CASES if quick else DEFAULT_CASES)
    crop = args.crop_3d if args.crop_3d is not None else (QUICK_CROP_3D if quick else DEFAULT_CROP_3D)
    if cases < 0:
        raise ValueError(f"--cases must be >= 0 (0 = all), got {cases}")
    if crop < 0:
        raise ValueError(f"--crop-3d must be >= 0 (0 = no crop), got {crop}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    return RobustnessOptions(
        methods=methods,
        families=families,
        levels=levels,
        model=args.model,
        baseline_model=args.baseline_model,
        cases=cases or None,
        crop_3d=crop or None,
        seed=args.seed,
        device=args.device,
        montages=not args.no_montages,
        montage_case=args.montage_case,
    )


def _command_line() -> str:
    """The command as typed: ``isfl ...`` or ``python benchmarks/robustness.py ...``."""
    if not sys.argv:
        return ""
    program = sys.argv[0]
    head = ["python", program] if program.endswith(".py") else [Path(program).name]
    return shlex.join([*head, *sys.argv[1:]])


def run(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments; prints where the outputs went."""
    options = options_from_args(args)
    if options.baseline_model and "isfl-noiv" not in options.methods:
        print("note: --baseline-model is ignored: isfl-noiv is not among --methods", file=sys.stderr)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cases = select_cases(load_cases(args.data, args.data_root), options.cases)
    if options.montages and options.montage_case >= len(cases):
        raise ValueError(
            f"--montage-case {options.montage_case} is out of range: {len(cases)} case(s) selected"
        )
    runner = MethodRunner(options.methods, options.model, options.baseline_model, options.device)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    started = time.perf_counter()
    say = None if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    rows, montages = run_robustness(cases, options, runner=runner, progress=say)
    import torch

    info = {
        "command": _command_line(),
        "data": str(args.data),
        "cases": [c.name for c in cases],
        "options": options.__dict__,
        "models": runner.provenance(),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, python {platform.python_version()}, torch {torch.__version__}, "
        f"load average at start {load}",
        "seed": options.seed,
        "crop_3d": options.crop_3d,
    }
    written = write_outputs(rows, args.output, info, montages, plots=not args.no_plots)
    print(
        f"{len(rows)} rows in {info['seconds']} s; wrote {written['markdown']} and {len(written)} files "
        f"in {args.output}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``isfl benchmark robustness`` to the ``isfl`` command line."""
    parser = subparsers.add_parser(
        "benchmark",
        help="benchmarks of the fusion methods (robustness to data shifts)",
        description="Benchmarks of ISFL and the classical baselines.",
    )
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    benchmarks.required = True
    robustness = benchmarks.add_parser(
        "robustness",
        help="fusion quality and stability under perturbations of one or all input modalities",
        description="Perturb each input modality (and all at once where meaningful) with every perturbation "
        "family at every severity level, fuse with every method and score the fusions against the clean "
        "sources and the clean-input fusion. Writes robustness.csv, summary.csv, summary.md, run.json, "
        "plots/ and montages/ to --output.",
    )
    add_arguments(robustness)
    robustness.set_defaults(handler=run)


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/robustness.py ARGS``: the same as ``isfl benchmark robustness ARGS``."""
    from .cli import main as cli_main

    return cli_main(["benchmark", "robustness", *(sys.argv[1:] if argv is None else argv)])

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

import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...cases import Case
from ...io import read_image
from ...normalization import IntensitySpec, normalize_intensity
from ...spatial import foreground_box, resample_to_reference
from ..baselines import fuse_baseline
from ..evaluate import FOREGROUND_THRESHOLD, STANDARD_METRICS
from ..metrics import pearson, psnr, structural_similarity, to_uint8_scale
from ..perturbations import apply_to_all, apply_to_modality, get_family
from ..scores import fusion_metrics
from .options import DEFAULT_CROP_3D, ISFL_METHODS, RobustnessOptions

__all__ = [
    "MethodRunner",
    "MontageRecord",
    "PreparedCase",
    "crop_stack",
    "input_labels",
    "prepare_case",
    "rounded_row",
    "run_robustness",
    "score_fusion",
    "select_cases",
    "slab_boxes",
]

#: the value added to one voxel of a constant input before ISFL sees it (see the module docstring)
CONSTANT_NUDGE = 1e-6
#: columns of the family-specific measures
TRUNCATION_KEYS = ("out_ssim", "out_psnr", "in_ssim", "in_psnr", "fill_corr", "fill_corr_clean")
DROPOUT_KEYS = ("rest_ssim", "rest_psnr", "rest_corr", "rest_ssim_clean", "rest_corr_clean")
FIDELITY_KEYS = ("fid_ssim", "fid_psnr")
_NONE_SPEC = IntensitySpec("none")


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
        names: the inputs' file names, given to ISFL as ``isfl fuse`` gives them (its lesion guard finds
            the FLAIR by name).
    """

    name: str
    task: str
    modalities: list[str]
    stack: np.ndarray
    box: tuple[slice, ...] = field(default_factory=tuple)
    labels: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def _display_path(path: Path | str) -> str:
    """A shipped model as ``napari_isfl/weights/NAME`` (not this machine's install path), others as given."""
    from ...model.checkpoint import WEIGHTS_DIR

    path = Path(path)
    try:
        return f"napari_isfl/weights/{path.resolve().relative_to(WEIGHTS_DIR.resolve())}"
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


def crop_stack(stack: np.ndarray, crop_3d: int | None) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Crop ``(N, *S)`` to its foreground box and, for volumes, to ``crop_3d`` voxels per axis at most.

    The 3D window is centred on the foreground's centre of mass and kept inside the foreground box.

    Returns:
        The contiguous cropped stack and the crop box in the input's coordinates.
    """
    box = list(foreground_box(stack, FOREGROUND_THRESHOLD))
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
    names = [Path(p).name for p in case.images]
    return PreparedCase(
        case.name, case_task(case), list(case.modalities), cropped, box, input_labels(case), names
    )


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
        methods: method names (``isfl``, ``isfl-noiv`` and/or
            :data:`~napari_isfl.evaluation.baselines.BASELINES`).
        model: the ISFL model (``"default"``, a shipped name or a checkpoint path).
        baseline_model: the ISFL model trained without interventions (needed for ``isfl-noiv``).
        device: torch device for the ISFL models.
        lesion_guard: ``"auto"`` (as ``isfl fuse``: acts when an input's name says FLAIR) or ``"off"``.
    """

    def __init__(
        self,
        methods: Sequence[str],
        model: str = "default",
        baseline_model: str | None = None,
        device: str = "cpu",
        lesion_guard: str = "auto",
    ) -> None:
        self.methods = list(methods)
        self.lesion_guard = lesion_guard
        self.models = {"isfl": model, "isfl-noiv": baseline_model}
        self.device = device
        self._engines: dict[str, Any] = {}
        self._loaded: dict[tuple[str, int], Any] = {}

    def loaded(self, method: str, spatial_dims: int) -> Any:
        """The :class:`~napari_isfl.model.checkpoint.LoadedModel` of an ISFL method for 2D or 3D inputs."""
        if method not in self._engines:
            from ...inference import FusionEngine

            self._engines[method] = FusionEngine(str(self.models[method]), self.device)
        self._loaded[method, spatial_dims] = self._engines[method].loaded_model(spatial_dims)
        return self._loaded[method, spatial_dims]

    def fuse(
        self,
        method: str,
        stack: np.ndarray,
        modalities: Sequence[str],
        names: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Fuse a normalised ``(N, *S)`` stack in ``[0, 1]``; returns a float32 image in ``[0, 1]``.
        ``names`` (the inputs' file names) reach ISFL as ``isfl fuse`` passes them."""
        if method in ISFL_METHODS:
            self.loaded(method, stack.ndim - 1)
            result = self._engines[method].fuse(
                list(_nudge_constant(stack)),
                list(modalities),
                normalization=[_NONE_SPEC] * len(stack),
                names=list(names) if names else None,
                lesion_guard=self.lesion_guard,
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
            scores["fill_corr"] = pearson(fused[inside][region], others[inside][region])
            scores["fill_corr_clean"] = pearson(clean_fused[inside][region], others[inside][region])
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
                np.mean([pearson(image[foreground], clean_stack[i][foreground]) for i in rest])
            )
        scores["rest_psnr"] = float(psnr(f8, [sources[i] for i in rest]))
    return scores


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


def rounded_row(row: dict[str, Any]) -> dict[str, Any]:
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
    runner = runner or MethodRunner(
        options.methods, options.model, options.baseline_model, options.device, options.lesion_guard
    )
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
            clean_fused[method] = runner.fuse(method, stack, case.modalities, case.names)
            seconds = time.perf_counter() - tic
            scored = to_uint8_scale(np.clip(clean_fused[method], 0.0, 1.0))
            clean_scores[method] = fusion_metrics(scored, sources, names=STANDARD_METRICS)
            row = _base_row(case, method) | {"family": "clean", "level": 0, "parameter": ""}
            row |= _target_fields(case, None) | {"seed": "", "seconds": seconds}
            row |= score_fusion(clean_fused[method], clean_fused[method], stack, clean_scores[method])
            rows.append(rounded_row(row))
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
                        fused = runner.fuse(method, perturbed, case.modalities, case.names)
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
                        rows.append(rounded_row(row))
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

"""``isfl evaluate``: fusion metrics of ISFL and classical baselines on a data set, as tables and montages.

Every method sees the same normalised inputs (the per-modality rules of
:mod:`napari_isfl.normalization`) and every fused image is scored on the 8-bit scale the fusion
literature uses (:func:`napari_isfl.metrics.to_uint8_scale`). 3D volumes are scored on the bounding
box of their foreground (background-only voxels would otherwise dominate EN and SD), with VIF and Qabf
averaged over axial slices (``fusion_metrics(mode="auto")``).

For pairs with a functional modality (PET/SPECT) the functional-fidelity measures are added: the
correlation of the fused image with the functional image inside the head and the preserved contrast
of low-uptake regions (see :func:`napari_isfl.evaluation.scores.functional_fidelity`).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cases import Case, cases_from_csv, cases_from_folder
from ..io import read_image, ycbcr_to_rgb
from ..lesions import is_flair_name
from ..normalization import FUNCTIONAL_MODALITIES, normalize_intensity
from ..spatial import foreground_box, resample_to_reference
from .baselines import BASELINES, fuse_baseline
from .fidelity import lesion_contrast, oedema_mask, seam_ratio
from .metrics import to_uint8_scale
from .scores import METRIC_KEYS, functional_fidelity, fusion_metrics

__all__ = ["FOREGROUND_THRESHOLD", "STANDARD_METRICS", "evaluate", "load_cases", "summarize", "write_tables"]

#: the nine metrics of the quality bar (higher is better for each)
STANDARD_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")
FUNCTIONAL_KEYS = ("corr_functional", "low_uptake_contrast_ratio", "high_uptake_contrast_ratio")
#: a voxel is foreground when some normalised modality exceeds this: volumes are scored on that box
FOREGROUND_THRESHOLD = 0.02


def load_cases(data: str | Path, data_root: str | Path | None = None) -> list[Case]:
    """Cases from a Harvard-style folder or a CSV of co-registered sets."""
    data = Path(data)
    if data.suffix.lower() == ".csv":
        return cases_from_csv(data, data_root or data.parent)
    return cases_from_folder(data)


def _task(case: Case) -> str:
    return case.name.split("/")[0] if "/" in case.name else case.name


#: the ISFL methods: the model at its own dimensionality, and the 2D model slice by slice (3D inputs)
ISFL_METHODS = ("isfl", "isfl-2.5d")
#: window seams and lesion visibility, beside the nine metrics
FIDELITY_KEYS = ("lesion_contrast_ratio", "seam_ratio")
#: columns not ranked in the tables: time, and the seam ratio (best near 1, not at its maximum)
UNRANKED = ("seconds", "seam_ratio")


def _lesion_mask(case: Case, normalised: np.ndarray, brain: np.ndarray) -> np.ndarray | None:
    """The case's expert lesion mask, else the FLAIR oedema (brightest 5 % in the brain), else None."""
    if case.lesion_mask is not None:
        mask = np.asarray(read_image(case.lesion_mask).array) > 0
        if mask.shape != brain.shape:
            raise ValueError(f"{case.lesion_mask}: mask of shape {mask.shape} for images of {brain.shape}")
        return mask
    flair = [i for i, path in enumerate(case.images) if is_flair_name(Path(path).name)]
    return oedema_mask(normalised[flair[0]], brain) if flair and normalised.ndim == 4 else None


def _fuse(
    method: str,
    arrays: list[np.ndarray],
    normalised: np.ndarray,
    modalities: list[str],
    engines,
    isfl_options: dict,
    names: list[str],
) -> tuple[np.ndarray, dict]:
    """A method's fusion and (for ISFL) its provenance. ``names`` (the files'): ISFL's lesion guard finds
    the FLAIR by them, as ``isfl fuse`` does."""
    if method == "isfl":
        result = engines["isfl"].fuse(arrays, modalities, names=names, **isfl_options)
        return result.fused, result.provenance
    if method == "isfl-2.5d":
        if normalised.ndim != 4:
            raise ValueError("isfl-2.5d fuses volumes: the 2D model slice by slice; use isfl for 2D images")
        result = engines["isfl-2.5d"].fuse_slicewise(arrays, modalities)
        return result.fused, result.provenance
    return fuse_baseline(method, normalised), {}


def evaluate(
    cases: Sequence[Case],
    methods: Sequence[str] = ("isfl", "lp", "dwt"),
    model: str = "default",
    device: str = "cpu",
    montage_dir: str | Path | None = None,
    montage_count: int = 3,
    progress: bool = True,
    roi_size: Sequence[int] | int | str | None = None,
    overlap: float = 0.25,
    model_2d: str = "isfl-2d",
    lesion_guard: str | None = "auto",
) -> list[dict]:
    """Fuse every case with every method and score it.

    ``roi_size`` and ``overlap`` are the sliding-window settings of :func:`napari_isfl.inference.fuse`
    for ISFL (``None``: its automatic choice, see :func:`napari_isfl.inference.resolve_roi_size`);
    ``model_2d`` is the 2D model of ``isfl-2.5d``; ``lesion_guard`` (``"auto"`` or ``None``) is ISFL's, as
    ``isfl fuse`` has it (``None``: the learned blend alone, for ablations).

    Beside the metrics, every row has ``lesion_contrast_ratio`` where the case has a lesion mask or a
    FLAIR input (the fused lesion's contrast relative to the best source's, see
    :func:`~napari_isfl.evaluation.fidelity.lesion_contrast`) and, for a fusion run in several windows,
    ``seam_ratio`` (:func:`~napari_isfl.evaluation.fidelity.seam_ratio`).

    Returns:
        one row per (case, method): ``task``, ``case``, ``method``, ``seconds`` and every metric.
    """
    unknown = [m for m in methods if m not in ISFL_METHODS and m not in BASELINES]
    if unknown:
        raise ValueError(
            f"unknown method {unknown[0]!r}; use {', '.join(ISFL_METHODS)} or one of {', '.join(BASELINES)}"
        )
    engines = {}
    if any(m in ISFL_METHODS for m in methods):
        from ..inference import FusionEngine

        engines = {"isfl": FusionEngine(model, device), "isfl-2.5d": FusionEngine(model_2d, device)}
    isfl_options = {"roi_size": roi_size, "overlap": overlap, "lesion_guard": lesion_guard}
    rows: list[dict] = []
    montages: dict[str, int] = {}
    for index, case in enumerate(cases):
        data = [read_image(p) for p in case.images]
        if case.resample:
            data = [data[0]] + [resample_to_reference(d, data[0]) for d in data[1:]]
        arrays = [d.array for d in data]
        normalised = np.stack(
            [normalize_intensity(a, m)[0] for a, m in zip(arrays, case.modalities, strict=True)]
        )
        box = (
            foreground_box(normalised, FOREGROUND_THRESHOLD)
            if normalised.ndim == 4
            else tuple(slice(None) for _ in arrays[0].shape)
        )
        sources = [to_uint8_scale(s[box]) for s in normalised]
        functional = [i for i, m in enumerate(case.modalities) if m in FUNCTIONAL_MODALITIES]
        anatomical = [i for i, m in enumerate(case.modalities) if m == "mri"]
        brain = (normalised > FOREGROUND_THRESHOLD).any(axis=0)
        lesion = _lesion_mask(case, normalised, brain)
        fused_by_method = {}
        for method in methods:
            started = time.perf_counter()
            fused, provenance = _fuse(
                method,
                arrays,
                normalised,
                list(case.modalities),
                engines,
                isfl_options,
                [d.name for d in data],
            )
            seconds = time.perf_counter() - started
            fused_by_method[method] = fused
            scored = to_uint8_scale(np.clip(fused[box], 0, 1))
            row = {"task": _task(case), "case": case.name, "method": method, "seconds": round(seconds, 3)}
            row |= fusion_metrics(scored, sources)
            if functional:
                ff = functional_fidelity(
                    scored, sources[functional[0]], sources[anatomical[0]] if anatomical else None
                )
                row |= {k: ff[k] for k in FUNCTIONAL_KEYS if k in ff}
            if lesion is not None:
                contrast = lesion_contrast(np.clip(fused, 0, 1), normalised, lesion, brain)
                row["lesion_contrast_ratio"] = contrast["lesion_contrast_ratio"]
            if any(provenance.get("window_edges", [])):
                seam = seam_ratio(fused, list(normalised), provenance["window_edges"], mask=brain)
                row["seam_ratio"] = seam["seam_ratio"]
            rows.append(row)
        task = _task(case)
        if montage_dir is not None and montages.get(task, 0) < montage_count:
            montages[task] = montages.get(task, 0) + 1
            save_montage(
                Path(montage_dir) / f"{task}_{montages[task]}.png".replace("/", "_"),
                normalised,
                list(case.modalities),
                fused_by_method,
                data,
                case.name,
            )
        if progress:
            print(f"\revaluated {index + 1}/{len(cases)} cases", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return rows


def _display_slice(volume: np.ndarray) -> np.ndarray:
    """A 2D view: the image itself, or the axial slice through the foreground's centre of a volume."""
    if volume.ndim == 2:
        return volume
    weights = volume.reshape(-1, volume.shape[-1]).sum(axis=0)
    z = (
        int(np.average(np.arange(volume.shape[-1]), weights=weights))
        if weights.sum() > 0
        else volume.shape[-1] // 2
    )
    return np.rot90(volume[:, :, z])  # (x, y) -> rows = anterior..posterior for display


def save_montage(
    path: Path, normalised: np.ndarray, modalities: list[str], fused_by_method: dict, data: list, title: str
) -> Path:
    """Inputs then every method's fusion side by side; PET/SPECT colour re-attached where available."""
    from .._optional import pyplot

    plt = pyplot("evaluation montages (or leave out --montages)")

    colour_source = next((d for d in data if d.is_color), None)
    panels = [(f"input {i + 1}: {m.upper()}", normalised[i], data[i]) for i, m in enumerate(modalities)]
    panels += [
        (name.upper() if name != "isfl" else "ISFL (ours)", fused, None)
        for name, fused in fused_by_method.items()
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.7), dpi=110)
    for ax, (label, image, source) in zip(np.atleast_1d(axes), panels, strict=True):
        view = _display_slice(image)
        if source is not None and source.is_color:
            ax.imshow(ycbcr_to_rgb(np.concatenate([source.array[None], source.chroma])))
        elif colour_source is not None and source is None and image.ndim == 2:
            ax.imshow(
                ycbcr_to_rgb(np.concatenate([np.clip(image, 0, 1)[None] * 255.0, colour_source.chroma]))
            )
        else:
            ax.imshow(view, cmap="gray", vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Mean of every metric per (task, method), plus an ``all`` task over every case."""
    keys = [
        k for k in (*METRIC_KEYS, *FUNCTIONAL_KEYS, *FIDELITY_KEYS, "seconds") if any(k in r for r in rows)
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"]), []).append(row)
        groups.setdefault(("all", row["method"]), []).append(row)
    summary = []
    for (task, method), members in groups.items():
        entry = {"task": task, "method": method, "cases": len(members)}
        for key in keys:
            values = [float(r[key]) for r in members if key in r and r[key] == r[key]]
            entry[key] = float(np.mean(values)) if values else float("nan")
        summary.append(entry)
    return summary


def wins_over(summary: Sequence[dict], method: str, baseline: str, task: str) -> list[str]:
    """The standard metrics on which ``method`` beats ``baseline`` for ``task``."""
    table = {(r["task"], r["method"]): r for r in summary}
    if (task, method) not in table or (task, baseline) not in table:
        return []
    ours, theirs = table[(task, method)], table[(task, baseline)]
    return [k for k in STANDARD_METRICS if ours.get(k, np.nan) > theirs.get(k, np.nan)]


def markdown_table(summary: Sequence[dict], task: str) -> str:
    rows = [r for r in summary if r["task"] == task]
    keys = [
        k
        for k in (*STANDARD_METRICS, "CC", "PSNR", *FUNCTIONAL_KEYS, *FIDELITY_KEYS, "seconds")
        if any(k in r for r in rows)
    ]
    best = {
        k: max((r[k] for r in rows if r.get(k, np.nan) == r.get(k, np.nan)), default=np.nan) for k in keys
    }
    header = "| method | cases | " + " | ".join(k.replace("_", " ") for k in keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 2)]
    for r in rows:
        cells = []
        for k in keys:
            value = r.get(k, np.nan)
            text = "–" if value != value else f"{value:.3f}"
            cells.append(f"**{text}**" if k not in UNRANKED and value == best[k] else text)
        lines.append(f"| {r['method']} | {r['cases']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(rows: Sequence[dict], output: str | Path, title: str = "Evaluation") -> Path:
    """``metrics.csv`` (per case), ``summary.csv`` and ``summary.md`` (per task) in ``output``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(output / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    sfields = list(dict.fromkeys(k for r in summary for k in r))
    with open(output / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sfields)
        writer.writeheader()
        writer.writerows(summary)
    tasks = list(dict.fromkeys(r["task"] for r in summary))
    parts = [
        f"# {title}\n",
        "Means over cases. Metrics on the 8-bit scale; MI in bits; SSIM summed over the sources; "
        "VIF/Qabf per slice for volumes; bold = best of the column. Higher is better for every "
        "metric except `seconds`. `lesion contrast ratio`: the lesion's (expert mask, or the brightest 5 % "
        "of FLAIR) contrast against normal tissue relative to the best source's (1 = as visible); `seam "
        "ratio`: curvature on window borders relative to elsewhere, over the sources' own (1 = no seam).\n",
    ]
    methods = list(dict.fromkeys(r["method"] for r in summary))
    for task in tasks:
        parts.append(f"## {task}\n\n{markdown_table(summary, task)}\n")
        for ours in (m for m in ISFL_METHODS if m in methods):
            for baseline in (m for m in ("lp", "dwt", "gff", "mean") if m in methods):
                won = wins_over(summary, ours, baseline, task)
                parts.append(
                    f"{ours.upper().replace('ISFL-', 'ISFL ')} beats {baseline.upper()} on {len(won)}/9 "
                    "standard metrics" + (f" ({', '.join(won)})" if won else "") + ".\n"
                )
    (output / "summary.md").write_text("\n".join(parts))
    return output / "summary.md"

"""Robustness plots (metric against severity, per family; the overview grid) and montages (matplotlib)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate import FOREGROUND_THRESHOLD, STANDARD_METRICS
from ..perturbations import get_family
from .run import MontageRecord, slab_boxes

__all__ = ["plot_family", "plot_grid", "save_montage"]

_COLOURS = {
    "isfl": "#d62728",
    "isfl-noiv": "#ff7f0e",
    "mean": "#7f7f7f",
    "max": "#bcbd22",
    "lp": "#1f77b4",
    "dwt": "#2ca02c",
    "gff": "#9467bd",
}


def _pyplot():
    from ..._optional import pyplot

    plt = pyplot("robustness plots and montages (or pass --no-plots --no-montages)")

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

"""Which fixed per-scale blends of the sources could meet the 2D quality bars at all?

The pyramid head's output is a per-scale convex blend of the normalised sources. This script scores a
grid of *hand-set* blends of that family on a Harvard task (no network: spatially constant weights per
scale, or max-abs selection of the details as in LP, or GFF's detail layer) with the same scoring as
``isfl evaluate``, so the trade-off between VIF/Qabf (which reward keeping the MRI's detail), SCD and the
functional correlation (which rewards keeping the PET/SPECT's low frequencies) can be read before any
training.

    python scripts/blend_frontier.py ../shared/data/harvard/dev --task SPECT-MRI \
        --output docs/ablation_frontier/spect --reference docs/models/eval_2d/summary.csv

``--reference`` (an ``isfl evaluate`` summary.csv) adds the evaluated methods (ISFL, GFF, LP, ...) of the
same task to ``frontier.png``: VIF and Qabf against the functional correlation (PET/SPECT tasks) or SCD.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from napari_isfl.evaluation.baselines import (
    _collapse,
    _downsample,
    _laplacian_pyramid,
    _max_abs_select,
    fuse_baseline,
)
from napari_isfl.evaluation.evaluate import load_cases
from napari_isfl.evaluation.metrics import to_uint8_scale
from napari_isfl.evaluation.scores import functional_fidelity, fusion_metrics
from napari_isfl.io import read_image
from napari_isfl.normalization import FUNCTIONAL_MODALITIES, normalize_intensity

LEVELS = 4
KEYS = ("SCD", "VIF", "Qabf", "SSIM", "corr_functional")


class CaseBands:
    """One case's normalised ``(2, H, W)`` sources and what several rules share, computed once: the
    sources' Laplacian pyramids and GFF's fusion."""

    def __init__(self, sources: np.ndarray) -> None:
        self.sources = sources

    @cached_property
    def pyramids(self) -> list[list[np.ndarray]]:
        return [_laplacian_pyramid(s, LEVELS, 1.0) for s in self.sources]

    @cached_property
    def gff(self) -> np.ndarray:
        return fuse_baseline("gff", self.sources)


def task_cases(data: str, task: str, limit: int = 0) -> Iterator[tuple[str, np.ndarray, list[str], int]]:
    """Each case of ``task`` under ``data``: its name, normalised ``(2, H, W)`` sources (as ``isfl
    evaluate`` normalises them), their modalities and the index of the non-MRI source."""
    cases = [c for c in load_cases(data) if c.name.startswith(task + "/")]
    for case in cases[:limit] if limit else cases:
        arrays = [read_image(p).array for p in case.images]
        normalised = np.stack(
            [normalize_intensity(a, m)[0] for a, m in zip(arrays, case.modalities, strict=True)]
        )
        modalities = list(case.modalities)
        yield case.name, normalised, modalities, next(i for i, m in enumerate(modalities) if m != "mri")


def score(fused: np.ndarray, sources: list[np.ndarray], second: int, functional: bool) -> dict[str, float]:
    """The bars' metrics of a [0, 1] fusion, scored as ``isfl evaluate`` scores it (8-bit ``sources``; the
    functional correlation when the ``second`` source is PET/SPECT)."""
    scored = to_uint8_scale(np.clip(fused, 0, 1))
    row = fusion_metrics(scored, sources, names=KEYS[:4])
    if functional:
        row["corr_functional"] = functional_fidelity(scored, sources[second], sources[1 - second])[
            "corr_functional"
        ]
    return row


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def blends(second: int) -> dict[str, Callable[[CaseBands], np.ndarray]]:
    """Named fusion rules of one case's :class:`CaseBands`; ``second`` is the index of the source whose
    share the weights give (the PET/SPECT or CT)."""
    first = 1 - second

    def constant(base_share: float, detail_share: float):
        def fuse(bands: CaseBands) -> np.ndarray:
            pyramids = bands.pyramids
            shares = [detail_share] * LEVELS + [base_share]
            fused = [
                (1 - w) * pyramids[first][level] + w * pyramids[second][level]
                for level, w in enumerate(shares)
            ]
            return np.clip(_collapse(fused), 0, 1)

        return fuse

    def max_abs(base_share: float):
        def fuse(bands: CaseBands) -> np.ndarray:
            pyramids = bands.pyramids
            fused = [_max_abs_select(np.stack([p[level] for p in pyramids])) for level in range(LEVELS)]
            fused.append((1 - base_share) * pyramids[first][-1] + base_share * pyramids[second][-1])
            return np.clip(_collapse(fused), 0, 1)

        return fuse

    def gff_base(base_share: float):
        """GFF's fusion with its coarsest pyramid band replaced by a fixed blend of the sources' bands."""

        def fuse(bands: CaseBands) -> np.ndarray:
            gff = _laplacian_pyramid(bands.gff, LEVELS, 1.0)
            gff[-1] = (1 - base_share) * bands.pyramids[first][-1] + base_share * bands.pyramids[second][-1]
            return np.clip(_collapse(gff), 0, 1)

        return fuse

    def select_share(sources: np.ndarray, temperature: float, smoothing: float) -> np.ndarray:
        smooth = [ndimage.gaussian_filter(s, smoothing) if smoothing else s for s in sources]
        return special.expit(np.clip((smooth[second] - smooth[first]) / temperature, -50, 50))

    def select(temperature: float, smoothing: float):
        """Per-pixel soft selection of the brighter source, the same weight at every scale (``max`` as the
        temperature goes to 0): a spatially varying blend, unlike the rules above."""

        def fuse(bands: CaseBands) -> np.ndarray:
            sources = bands.sources
            share = select_share(sources, temperature, smoothing)
            return np.clip((1 - share) * sources[first] + share * sources[second], 0, 1)

        return fuse

    def select_pyramid(temperature: float, max_abs_levels: int):
        """The selection share (smoothed by 2 px) weights every pyramid level, except the finest
        ``max_abs_levels`` detail levels, which take the larger detail (LP's rule): the brighter source's
        regions, the sharper source's edges."""

        def fuse(bands: CaseBands) -> np.ndarray:
            pyramids = bands.pyramids
            shares = [select_share(bands.sources, temperature, 2.0)]  # and its Gaussian pyramid
            for _ in range(LEVELS):
                shares.append(_downsample(shares[-1], 1.0))
            fused = [
                _max_abs_select(np.stack([p[level] for p in pyramids]))
                if level < max_abs_levels
                else (1 - shares[level]) * pyramids[first][level] + shares[level] * pyramids[second][level]
                for level in range(LEVELS + 1)
            ]
            return np.clip(_collapse(fused), 0, 1)

        return fuse

    rules = {"gff": lambda b: b.gff, "lp": lambda b: fuse_baseline("lp", b.sources)}
    for temperature in (0.01, 0.05, 0.1):
        for levels in (1, 2):
            rules[f"selpyr_t{temperature}_m{levels}"] = select_pyramid(temperature, levels)
    for temperature in (0.01, 0.05, 0.1, 0.2):
        for smoothing in (0.0, 2.0):
            rules[f"select_t{temperature}_s{smoothing:g}"] = select(temperature, smoothing)
    for base in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9):
        rules[f"maxabs_b{base}"] = max_abs(base)
        rules[f"gffbase_b{base}"] = gff_base(base)
        for detail in (0.0, 0.2, 0.5):
            rules[f"const_b{base}_d{detail}"] = constant(base, detail)
    return rules


def plot(summary: list[dict], reference: Path | None, task: str, path: Path) -> None:
    """VIF and Qabf of every rule against the functional correlation (or SCD), the evaluated methods on top,
    with the bars' lines (VIF/Qabf of GFF, correlation of LP, SCD of max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = "corr_functional" if "corr_functional" in summary[0] else "SCD"
    methods = []
    if reference is not None:
        with open(reference, newline="") as handle:
            methods = [r for r in csv.DictReader(handle) if r["task"] == task]
    by_method = {r["method"]: r for r in methods}
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    families = {
        "const": "tab:blue",
        "maxabs": "tab:orange",
        "gffbase": "tab:green",
        "select": "tab:purple",
        "selpyr": "tab:red",
    }
    for ax, y_key in zip(axes, ("VIF", "Qabf"), strict=True):
        for family, colour in families.items():
            rows = [r for r in summary if r["rule"].startswith(family + "_")]
            ax.scatter(
                [r[x_key] for r in rows],
                [r[y_key] for r in rows],
                s=18,
                c=colour,
                alpha=0.7,
                label=f"hand-set: {family}",
            )
        for name, row in by_method.items():
            x, y = float(row[x_key]), float(row[y_key])
            ax.scatter(
                [x], [y], s=70, marker="*" if name == "isfl" else "s", c="crimson" if name == "isfl" else "k"
            )
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=9)
        if "gff" in by_method:
            ax.axhline(float(by_method["gff"][y_key]), ls="--", c="grey", lw=1)
        bar_x = by_method.get("lp" if x_key == "corr_functional" else "max")
        if bar_x is not None:
            ax.axvline(float(bar_x[x_key]), ls="--", c="grey", lw=1)
        ax.set_xlabel("functional correlation" if x_key == "corr_functional" else "SCD")
        ax.set_ylabel(y_key)
        ax.set_title(f"{task}: {y_key} (bars: dashed; the bars' corner is top right)")
    axes[0].legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="Harvard-style folder (TASK/MODALITY/NAME.png)")
    parser.add_argument("--task", default="SPECT-MRI")
    parser.add_argument("--output", required=True, type=Path, help="folder for per_case.csv and summary.csv")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N cases (0: all)")
    parser.add_argument(
        "--reference", type=Path, help="an isfl evaluate summary.csv to plot beside the rules"
    )
    parser.add_argument("--rules", default="", help="only the rules whose name starts with this")
    parser.add_argument("--plot-only", action="store_true", help="re-plot from an existing summary.csv")
    args = parser.parse_args()
    if args.plot_only:
        with open(args.output / "summary.csv", newline="") as handle:
            summary = [
                {k: v if k == "rule" else float(v) for k, v in r.items()} for r in csv.DictReader(handle)
            ]
        plot(summary, args.reference, args.task, args.output / "frontier.png")
        return
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, (case_name, normalised, modalities, second) in enumerate(
        task_cases(args.data, args.task, args.limit), 1
    ):
        sources = [to_uint8_scale(s) for s in normalised]
        functional = modalities[second] in FUNCTIONAL_MODALITIES
        bands = CaseBands(normalised)
        for name, rule in blends(second).items():
            if not name.startswith(args.rules):
                continue
            rows.append({"case": case_name, "rule": name} | score(rule(bands), sources, second, functional))
        print(f"\r{number}", end="", flush=True)
    print()
    write_rows(args.output / "per_case.csv", rows)
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    summary = [
        {"rule": rule}
        | {k: float(np.nanmean([r[k] for r in rows if r["rule"] == rule])) for k in rows[0] if k in KEYS}
        for rule in rules
    ]
    with open(args.output / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    plot(summary, args.reference, args.task, args.output / "frontier.png")
    for row in summary:
        print(row["rule"].ljust(22), "  ".join(f"{k} {row[k]:.3f}" for k in row if k != "rule"))


if __name__ == "__main__":
    main()

"""The quality bars of the model cards, checked against an ``isfl evaluate`` output (``metrics.csv``).

3D (``--dims 3``), per validation pair: at least 6 of the 9 standard metrics against 3D DWT and against the
plain mean, VIF at least the mean's, lesion/oedema contrast at least 80 % of the best source's (where the
pair has a lesion mask or a FLAIR), and no visible seam (seam ratio within 10 % of the inputs', i.e. at most
1.1). 2D (``--dims 2``), per task: VIF and Qabf at least GFF's, SSIM and SCD the highest of all methods,
and the functional correlation with PET/SPECT at least LP's.

    python scripts/quality_bars.py docs/models/eval_3d/metrics.csv --dims 3
    python scripts/quality_bars.py docs/models/eval_2d/metrics.csv --dims 2 --method isfl

``--ci`` adds, for every 2D bar, the 95 % paired-bootstrap interval of the per-pair margin (ISFL minus the
method the bar compares with, 2000 resamples of the pairs, seed 0): a bar "met" by a margin whose
interval includes 0 is within the noise of which pairs happen to be in the dev split.

A candidate evaluated alone (``isfl evaluate ... --method isfl``) is held to the baselines of a full
evaluation with ``--baselines docs/models/eval_2d/metrics.csv`` (its rows of the other methods).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict

STANDARD = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")


def _value(row: dict, key: str) -> float:
    try:
        return float(row.get(key, "nan"))
    except ValueError:
        return math.nan


def wins(ours: dict, theirs: dict) -> list[str]:
    return [k for k in STANDARD if _value(ours, k) > _value(theirs, k)]


def bars_3d(rows: list[dict], method: str) -> list[str]:
    by_case: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        by_case[row["case"]][row["method"]] = row
    lines = [
        "| pair | vs DWT | vs mean | VIF >= mean | lesion contrast | seam | all bars |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, methods in by_case.items():
        ours = methods.get(method)
        if ours is None:
            continue
        checks = []
        cells = []
        for baseline in ("dwt", "mean"):
            if baseline in methods:
                count = len(wins(ours, methods[baseline]))
                checks.append(count >= 6)
                cells.append(f"{count}/9")
            else:
                cells.append("–")
        vif_ok = _value(ours, "VIF") >= _value(methods.get("mean", {}), "VIF") if "mean" in methods else None
        cells.append("yes" if vif_ok else ("–" if vif_ok is None else "**no**"))
        checks += [vif_ok] if vif_ok is not None else []
        lesion = _value(ours, "lesion_contrast_ratio")
        cells.append(f"{lesion:.2f}" if math.isfinite(lesion) else "–")
        if math.isfinite(lesion):
            checks.append(lesion >= 0.8)
        seam = _value(ours, "seam_ratio")
        cells.append(f"{seam:.3f}" if math.isfinite(seam) else "one window")
        if math.isfinite(seam):
            checks.append(seam <= 1.1)
        cells.append("**met**" if all(checks) else "not met")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return lines


def _margin_interval(rows: list[dict], task: str, key: str, method: str, other: str) -> str:
    """95 % paired-bootstrap interval of the mean per-pair margin ``method - other`` on ``key``."""
    import numpy as np

    by_case: dict[str, dict[str, float]] = defaultdict(dict)
    for row in rows:
        if row["task"] == task and row["method"] in (method, other):
            by_case[row["case"]][row["method"]] = _value(row, key)
    margins = np.array(
        [
            v[method] - v[other]
            for v in by_case.values()
            if len(v) == 2 and math.isfinite(v[method] - v[other])
        ]
    )
    if margins.size == 0:
        return "–"
    draws = np.random.default_rng(0).choice(margins, size=(2000, margins.size)).mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return f"{margins.mean():+.3f} [{low:+.3f}, {high:+.3f}]"


def bars_2d(rows: list[dict], method: str, intervals: bool = False) -> list[str]:
    sums: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for key in (*STANDARD, "corr_functional"):
            value = _value(row, key)
            if math.isfinite(value):
                sums[row["task"], row["method"]][key].append(value)
    means = {k: {m: sum(v) / len(v) for m, v in d.items()} for k, d in sums.items()}
    tasks = sorted({task for task, _ in means})
    lines = [
        "| task | VIF vs GFF | Qabf vs GFF | SSIM first | SCD first | functional corr vs LP | all bars |",
        "|---|---|---|---|---|---|---|",
    ]
    ci_lines = [
        "",
        "95 % paired-bootstrap interval of the mean per-pair margin (ISFL minus the bar's comparator):",
        "",
        "| task | VIF - GFF | Qabf - GFF | SSIM - next | SCD - next | corr - LP |",
        "|---|---|---|---|---|---|",
    ]
    for task in tasks:
        ours = means.get((task, method))
        if ours is None:
            continue
        gff = means.get((task, "gff"), {})
        lp = means.get((task, "lp"), {})
        others = [v for (t, m), v in means.items() if t == task and m != method]
        checks, cells = [], []
        for key in ("VIF", "Qabf"):
            ok = ours[key] >= gff.get(key, math.inf)
            checks.append(ok)
            cells.append(f"{ours[key]:.3f} vs {gff.get(key, math.nan):.3f}" + ("" if ok else " **no**"))
        comparators = {"VIF": "gff", "Qabf": "gff", "corr_functional": "lp"}
        for key in ("SSIM", "SCD"):
            best_other = max((o.get(key, -math.inf) for o in others), default=-math.inf)
            comparators[key] = next(
                (m for (t, m), v in means.items() if t == task and m != method and v.get(key) == best_other),
                "",
            )
            ok = ours[key] >= best_other
            checks.append(ok)
            cells.append(f"{ours[key]:.3f} (next {best_other:.3f})" + ("" if ok else " **no**"))
        if "corr_functional" in ours:
            ok = ours["corr_functional"] >= lp.get("corr_functional", math.inf)
            checks.append(ok)
            cells.append(
                f"{ours['corr_functional']:.3f} vs {lp.get('corr_functional', math.nan):.3f}"
                + ("" if ok else " **no**")
            )
        else:
            cells.append("–")
        cells.append("**met**" if all(checks) else "not met")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
        if intervals:
            keys = ("VIF", "Qabf", "SSIM", "SCD", "corr_functional")
            spans = [
                _margin_interval(rows, task, k, method, comparators[k]) if k in ours else "–" for k in keys
            ]
            ci_lines.append(f"| {task} | " + " | ".join(spans) + " |")
    return lines + (ci_lines if intervals else [])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("metrics", help="metrics.csv written by isfl evaluate")
    parser.add_argument("--dims", type=int, choices=(2, 3), required=True)
    parser.add_argument("--method", default="isfl", help="the method held to the bars (default isfl)")
    parser.add_argument("--baselines", help="a metrics.csv whose rows of the other methods are added")
    parser.add_argument("--ci", action="store_true", help="2D: bootstrap intervals of every bar's margin")
    args = parser.parse_args()
    with open(args.metrics, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if not args.baselines or r["method"] == args.method]
    if args.baselines:
        with open(args.baselines, newline="") as handle:
            rows += [r for r in csv.DictReader(handle) if r["method"] != args.method]
    lines = bars_3d(rows, args.method) if args.dims == 3 else bars_2d(rows, args.method, args.ci)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

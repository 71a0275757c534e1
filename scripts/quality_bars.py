"""The quality bars of the model cards, checked against an ``isfl evaluate`` output (``metrics.csv``).

3D (``--dims 3``), per validation pair: at least 6 of the 9 standard metrics against 3D DWT and against the
plain mean, VIF at least the mean's, lesion/oedema contrast at least 80 % of the best source's (where the
pair has a lesion mask or a FLAIR), and no visible seam (seam ratio within 10 % of the inputs', i.e. at most
1.1). 2D (``--dims 2``), per task: VIF and Qabf at least GFF's, SSIM and SCD the highest of all methods,
and the functional correlation with PET/SPECT at least LP's.

    python scripts/quality_bars.py docs/models/eval_3d/metrics.csv --dims 3
    python scripts/quality_bars.py docs/models/eval_2d/metrics.csv --dims 2 --method isfl

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


def bars_2d(rows: list[dict], method: str) -> list[str]:
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
        for key in ("SSIM", "SCD"):
            best_other = max((o.get(key, -math.inf) for o in others), default=-math.inf)
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
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("metrics", help="metrics.csv written by isfl evaluate")
    parser.add_argument("--dims", type=int, choices=(2, 3), required=True)
    parser.add_argument("--method", default="isfl", help="the method held to the bars (default isfl)")
    parser.add_argument("--baselines", help="a metrics.csv whose rows of the other methods are added")
    args = parser.parse_args()
    with open(args.metrics, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if not args.baselines or r["method"] == args.method]
    if args.baselines:
        with open(args.baselines, newline="") as handle:
            rows += [r for r in csv.DictReader(handle) if r["method"] != args.method]
    lines = bars_3d(rows, args.method) if args.dims == 3 else bars_2d(rows, args.method)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

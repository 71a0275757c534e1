"""Markdown tables of the 3D ablation from ``isfl evaluate`` outputs on one validation CSV.

Each variant is ``LABEL=METRICS.csv`` (its ``isfl`` rows) or ``LABEL=METRICS.csv:METHOD`` (another method's
rows, e.g. ``isfl-2.5d``); ``--baselines`` names the metrics.csv whose ``dwt``/``mean``/``lp``/``gff`` rows
every variant is compared with (the baselines are deterministic, so one run serves all variants).

    python scripts/ablation_3d_table.py --baselines runs/eval/synth3d/metrics.csv \\
        "pyramid head=runs/eval/pyr3d_1000/metrics.csv" "synthesis head=runs/eval/synth3d/metrics.csv"
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from quality_bars import STANDARD, _value, wins  # noqa: E402

BASELINES = ("dwt", "lp", "gff", "mean")


def _rows(path: str, method: str) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle) if row["method"] == method}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="+", help="LABEL=metrics.csv[:method]")
    parser.add_argument("--baselines", required=True, help="metrics.csv holding the baseline rows")
    args = parser.parse_args()
    variants: dict[str, dict[str, dict]] = {}
    for spec in args.variants:
        label, _, source = spec.partition("=")
        path, _, method = source.partition(":")
        variants[label] = _rows(path, method or "isfl")
    baselines = {name: _rows(args.baselines, name) for name in BASELINES}
    cases = list(next(iter(baselines.values())))

    extra = ("lesion_contrast_ratio", "seam_ratio")
    print(
        "| variant | "
        + " | ".join(STANDARD)
        + " | lesion contrast | seam | wins vs DWT | wins vs mean | VIF >= mean |"
    )
    print("|" + "---|" * (len(STANDARD) + 6))
    table = {**variants, **{name.upper() + " (classical)": rows for name, rows in baselines.items()}}
    for label, rows in table.items():
        cells = [
            f"{_mean([_value(rows[c], k) for c in cases if c in rows]):.3f}" for k in (*STANDARD, *extra)
        ]
        if label in variants:
            dwt = sum(len(wins(rows[c], baselines["dwt"][c])) for c in cases if c in rows)
            mean = sum(len(wins(rows[c], baselines["mean"][c])) for c in cases if c in rows)
            vif = sum(
                _value(rows[c], "VIF") >= _value(baselines["mean"][c], "VIF") for c in cases if c in rows
            )
            n = sum(c in rows for c in cases)
            cells += [f"{dwt}/{9 * n}", f"{mean}/{9 * n}", f"{vif}/{n}"]
        else:
            cells += ["", "", ""]
        print(f"| {label} | " + " | ".join(cells).replace("nan", "–") + " |")

    print("\nPer pair: metrics won against 3D DWT / against the mean (of 9), lesion contrast, seam ratio\n")
    print("| pair | " + " | ".join(variants) + " |")
    print("|" + "---|" * (len(variants) + 1))
    for case in cases:
        cells = []
        for rows in variants.values():
            row = rows.get(case)
            if row is None:
                cells.append("–")
                continue
            text = f"{len(wins(row, baselines['dwt'][case]))} / {len(wins(row, baselines['mean'][case]))}"
            lesion, seam = _value(row, "lesion_contrast_ratio"), _value(row, "seam_ratio")
            if math.isfinite(lesion):
                text += f", lesion {lesion:.2f}"
            if math.isfinite(seam):
                text += f", seam {seam:.2f}"
            cells.append(text)
        print(f"| {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

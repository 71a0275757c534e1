"""Markdown tables of the 2D ablation (scripts/run_ablation.sh) from its evaluation outputs.

python scripts/ablation_table.py runs/ablation > docs/ablation_tables.md
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM")
EXTRA = ("corr_functional", "low_uptake_contrast_ratio")
ORDER = (
    "necessity_penalize",
    "necessity_reward",
    "necessity_off",
    "no_interventions",
    "no_cfi",
    "per_modality_encoder",
)
LABELS = {
    "necessity_penalize": "ISFL default (necessity: penalize, released code)",
    "necessity_reward": "necessity: reward (paper text)",
    "necessity_off": "necessity off",
    "no_interventions": "no interventions (no masking, no dropout)",
    "no_cfi": "no CFI (plain mean of features)",
    "per_modality_encoder": "per-modality encoders (paper) instead of shared + FiLM",
}


def _rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _steps(run: Path) -> str:
    # wall time is not comparable (varying load, resumed runs), the step budget is
    log = run / "log.csv"
    return _rows(log)[-1]["step"] if log.exists() else ""


def main(root: str) -> None:
    root = Path(root)
    entries = []
    for name in ORDER:
        summary = root / name / "eval" / "summary.csv"
        if summary.exists():
            for row in _rows(summary):
                entries.append((LABELS[name], name, row, _steps(root / name)))
    for row in _rows(root / "baselines" / "summary.csv"):
        if row["method"] in ("lp", "dwt", "gff"):
            entries.append((row["method"].upper() + " (classical)", row["method"], row, ""))
    for task in ("CT-MRI", "SPECT-MRI", "all"):
        print(f"\n### {task}\n")
        keys = METRICS + (EXTRA if task != "CT-MRI" else ())
        print("| variant | steps | " + " | ".join(k.replace("_", " ") for k in keys) + " |")
        print("|" + "---|" * (len(keys) + 2))
        rows = [(label, row, secs) for label, _, row, secs in entries if row["task"] == task]
        best = {k: max(float(r[k]) for _, r, _ in rows if r.get(k) not in (None, "", "nan")) for k in keys}
        for label, row, secs in rows:
            cells = []
            for k in keys:
                value = row.get(k)
                if value in (None, "", "nan"):
                    cells.append("–")
                    continue
                text = f"{float(value):.3f}"
                cells.append(f"**{text}**" if float(value) == best[k] else text)
            print(f"| {label} | {secs} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/ablation")

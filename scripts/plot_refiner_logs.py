"""Plot the dev scores of ``train_refiner.py`` runs against their steps, one panel per bar metric, with
the bar (GFF's VIF and Qabf, the best other SSIM and SCD, LP's correlation) as a dashed line.

    python scripts/plot_refiner_logs.py docs/ablation_refiner/tags_balanced_levels3_corr5_log.csv \
        docs/ablation_refiner/tags_balanced_levels2_log.csv --output docs/ablation_refiner/logs.png \
        [--front docs/ablation_refiner/front.png]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: the Harvard dev bars of issue 12 (docs/models/eval_2d): (task, metric) -> value
BARS = {
    ("CT-MRI", "VIF"): 0.580,
    ("CT-MRI", "Qabf"): 0.595,
    ("CT-MRI", "SSIM"): 1.552,
    ("CT-MRI", "SCD"): 1.445,
    ("SPECT-MRI", "VIF"): 0.774,
    ("SPECT-MRI", "Qabf"): 0.706,
    ("SPECT-MRI", "SSIM"): 1.597,
    ("SPECT-MRI", "SCD"): 1.474,
    ("SPECT-MRI", "corr_functional"): 0.730,
}


def read_log(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("logs", nargs="+", type=Path, help="log.csv files of train_refiner.py")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument(
        "--front",
        type=Path,
        help="also draw SPECT-MRI VIF against the functional correlation, every checkpoint of every run, "
        "with both bars: the trade the base level makes",
    )
    args = parser.parse_args()
    logs = {path.stem.removesuffix("_log"): read_log(path) for path in args.logs}
    fig, axes = plt.subplots(2, 5, figsize=(16, 6), dpi=100)
    for row, task in enumerate(("CT-MRI", "SPECT-MRI")):
        for col, metric in enumerate(("VIF", "Qabf", "SSIM", "SCD", "corr_functional")):
            ax = axes[row, col]
            key = f"{task} {metric}"
            if (task, metric) not in BARS:
                ax.axis("off")
                continue
            for name, log in logs.items():
                if key in log:
                    ax.plot(log["step"], log[key], marker="o", label=name)
            ax.axhline(BARS[task, metric], color="k", linestyle="--", linewidth=1, label="bar")
            ax.set_title(key, fontsize=10)
            ax.set_xlabel("step")
    handles, labels = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=9)
    fig.tight_layout(rect=(0, 0.04 * -(-len(labels) // 4) + 0.02, 1, 1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output)
    print(args.output)
    if args.front:
        plot_front(logs, args.front)


def plot_front(logs: dict[str, dict[str, list[float]]], output: Path) -> None:
    """SPECT VIF (y) against the functional correlation (x) of every logged checkpoint; the last one of
    each run is ringed. The bars' corner (upper right) is where a model meets both."""
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    x_key, y_key = "SPECT-MRI corr_functional", "SPECT-MRI VIF"
    for name, log in logs.items():
        if x_key in log and y_key in log:
            (line,) = ax.plot(log[x_key], log[y_key], marker="o", markersize=4, alpha=0.7, label=name)
            ax.plot(
                log[x_key][-1], log[y_key][-1], "o", markersize=11, fillstyle="none", color=line.get_color()
            )
    ax.axvline(BARS["SPECT-MRI", "corr_functional"], color="k", linestyle="--", linewidth=1)
    ax.axhline(BARS["SPECT-MRI", "VIF"], color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("SPECT-MRI functional correlation (bar: LP's)")
    ax.set_ylabel("SPECT-MRI VIF (bar: GFF's)")
    ax.set_title("Harvard dev, every logged checkpoint (ringed: the last)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    print(output)


if __name__ == "__main__":
    main()

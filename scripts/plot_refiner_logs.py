"""Plot the dev scores of ``train_refiner.py`` runs against their steps, one panel per bar metric, with
the bar (GFF's VIF and Qabf, the best other SSIM and SCD, LP's correlation) as a dashed line.

    python scripts/plot_refiner_logs.py docs/ablation_refiner/tags_balanced_levels3_corr5_log.csv \
        docs/ablation_refiner/tags_balanced_levels2_log.csv --output docs/ablation_refiner/logs.png \
        [--front docs/ablation_refiner/front.png]

Logs of single-task runs name their metrics without the task (``Qabf``); ``--single-task CT-MRI`` reads
them as that task's. ``--front-keys "CT-MRI SCD,CT-MRI Qabf"`` draws another pair of metrics as the front.
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
    # a column a step does not log (the distillation term's mean at step 0) reads as NaN
    return {key: [float(row[key] or "nan") for row in rows] for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("logs", nargs="+", type=Path, help="log.csv files of train_refiner.py")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument(
        "--front",
        type=Path,
        help="also draw the front: --front-keys (default SPECT-MRI VIF against the functional "
        "correlation, the trade the base level makes) for every checkpoint of every run, with both bars",
    )
    parser.add_argument(
        "--front-keys",
        default="SPECT-MRI corr_functional,SPECT-MRI VIF",
        help="the front's x and y: two 'TASK metric' keys of the logs",
    )
    parser.add_argument("--single-task", help="the task of logs whose metrics carry no task name")
    parser.add_argument(
        "--mark",
        action="append",
        default=[],
        metavar="LABEL=X,Y",
        help="a labelled star on the front (e.g. the blend oracle's scores); repeatable",
    )
    args = parser.parse_args()
    logs = {path.stem.removesuffix("_log"): read_log(path) for path in args.logs}
    if args.single_task:
        logs = {
            name: {
                key if " " in key or key in ("step", "seconds", "distill") else f"{args.single_task} {key}": v
                for key, v in log.items()
            }
            for name, log in logs.items()
        }
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
        x_key, y_key = args.front_keys.split(",")
        marks = {m.split("=")[0]: tuple(float(v) for v in m.split("=")[1].split(",")) for m in args.mark}
        plot_front(logs, args.front, x_key, y_key, marks)


def plot_front(
    logs: dict[str, dict[str, list[float]]],
    output: Path,
    x_key: str,
    y_key: str,
    marks: dict[str, tuple[float, ...]] | None = None,
) -> None:
    """``y_key`` against ``x_key`` (``"TASK metric"``) for every logged checkpoint; the last one of each
    run is ringed. The bars' corner (upper right) is where a model meets both."""
    many = len(logs) > 8  # then distinct colours for up to 20 runs and the legend beside the plot
    fig, ax = plt.subplots(figsize=(10.5, 5.5) if many else (7, 5), dpi=100)
    colours = plt.get_cmap("tab20").colors if many else plt.get_cmap("tab10").colors
    for index, (name, log) in enumerate(logs.items()):
        if x_key in log and y_key in log:
            (line,) = ax.plot(
                log[x_key],
                log[y_key],
                marker="o",
                markersize=4,
                alpha=0.7,
                label=name,
                color=colours[index % len(colours)],
            )
            ax.plot(
                log[x_key][-1], log[y_key][-1], "o", markersize=11, fillstyle="none", color=line.get_color()
            )
    for x, y in (marks or {}).values():
        ax.plot(x, y, "*", markersize=14, color="k")
    left, right = ax.get_xlim()
    bottom, top = ax.get_ylim()
    for label, (x, y) in (marks or {}).items():
        # labelled toward the middle of the plot, so a mark near an edge keeps its label inside the axes
        on_left = x > left + 2 * (right - left) / 3
        below = y > bottom + 2 * (top - bottom) / 3
        ax.annotate(
            label,
            (x, y),
            textcoords="offset points",
            xytext=(-9 if on_left else 9, -9 if below else 9),
            ha="right" if on_left else "left",
            va="top" if below else "bottom",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    ax.axvline(BARS[tuple(x_key.split(" ", 1))], color="k", linestyle="--", linewidth=1)
    ax.axhline(BARS[tuple(y_key.split(" ", 1))], color="k", linestyle="--", linewidth=1)
    ax.set_xlabel(f"{x_key} (dashed: its bar)")
    ax.set_ylabel(f"{y_key} (dashed: its bar)")
    ax.set_title("Harvard dev, every logged checkpoint (ringed: the last)", fontsize=10)
    if many:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    print(output)


if __name__ == "__main__":
    main()

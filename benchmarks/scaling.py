"""Speed and scale of ``napari_isfl.fuse`` on CPU against the classical baselines, with a scaling plot.

Every point is one fresh child process of ``benchmarks/speed.py`` (time: median of ``--repeat`` runs
after one warm-up run; memory: the child's peak resident size, and its increase during the fusion).
ISFL and the baselines run in the same invocation, one after the other, so their **ratio** is the
figure to quote on a machine whose load changes: absolute seconds move with the load, the ratio much
less. The plan:

* the headline inputs: 2D 256x256, 3D 128^3, synthetic 240x240x155, the real TCGA-DU-7294 T1c + FLAIR
  pair (240x240x155, from ``--data-root``) and 256^3, each with every baseline;
* scaling with volume size: cubes 64^3 .. 256^3 (2 modalities);
* scaling with the number of modalities: 2, 3, 4 at 128^3 and at 256x256.

Outputs in ``--output``: ``speed.csv`` (every row), ``speed.md`` (tables with the ISFL/baseline ratios)
and ``scaling.png``.

Examples::

    # the full plan, default models (about 15 minutes on 2 cores)
    OMP_WAIT_POLICY=PASSIVE python benchmarks/scaling.py --threads 2 --output docs/benchmarks/speed_cpu
    # a quick check of the machinery
    python benchmarks/scaling.py --quick --output /tmp/scaling
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing as mp
import os
import platform
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import make_spec, measure  # noqa: E402

HEADLINE = ["256x256", "128x128x128", "240x240x155", "brats", "256x256x256"]
CUBES = ["64x64x64", "96x96x96", "128x128x128", "160x160x160", "192x192x192", "256x256x256"]
MODALITY_SIZES = ["256x256", "128x128x128"]
MODALITY_COUNTS = [2, 3, 4]
QUICK = {
    "headline": ["256x256", "64x64x64"],
    "cubes": ["48x48x48", "64x64x64"],
    "modality_sizes": ["64x64x64"],
}


def plan(quick: bool, with_case: bool) -> list[tuple[str, int]]:
    """The (input, modalities) points to measure: headline, cubes, modality counts; no duplicates."""
    headline = QUICK["headline"] if quick else HEADLINE
    cubes = QUICK["cubes"] if quick else CUBES
    modality_sizes = QUICK["modality_sizes"] if quick else MODALITY_SIZES
    points = [(size, 2) for size in headline if with_case or size != "brats"]
    points += [(size, 2) for size in cubes]
    points += [(size, count) for size in modality_sizes for count in MODALITY_COUNTS]
    return list(dict.fromkeys(points))


def voxels(shape: str) -> int:
    """Number of voxels of an ``AxBxC`` shape string."""
    return math.prod(int(v) for v in shape.split("x"))


def ratio_table(rows: list[dict], baselines: list[str]) -> list[str]:
    """Markdown: ISFL time and peak memory per input, and its ratio to each baseline."""
    lines = [
        "| input | shape | modalities | ISFL s | ISFL Mvox/s | ISFL peak RSS GB | ISFL fusion RSS GB | "
        + " | ".join(f"{b} s | ISFL/{b} time" for b in baselines)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|---|" * len(baselines),
    ]
    by_key = {(r["input"], r["modalities"], r["method"]): r for r in rows if "error" not in r}
    for (source, count, method), row in by_key.items():
        if method != "isfl":
            continue
        cells = [
            source,
            row["shape"],
            str(count),
            f"{row['seconds']:.3f}",
            f"{row['megavoxels_per_s']:.3f}",
            f"{row['peak_rss_gb']:.2f}",
            f"{row['fusion_rss_gb']:.2f}",
        ]
        for baseline in baselines:
            other = by_key.get((source, count, baseline))
            if other is None:
                cells += ["–", "–"]
            else:
                cells += [f"{other['seconds']:.3f}", f"{row['seconds'] / max(other['seconds'], 1e-9):.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(rows: list[dict], path: Path) -> Path:
    """Time and memory against voxels (2 modalities) and against the number of modalities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r for r in rows if "error" not in r]
    methods = list(dict.fromkeys(r["method"] for r in good))
    colours = {
        "isfl": "#d62728",
        "mean": "#7f7f7f",
        "max": "#bcbd22",
        "lp": "#1f77b4",
        "dwt": "#2ca02c",
        "gff": "#9467bd",
    }
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), dpi=80)
    synthetic_3d = [
        r for r in good if r["modalities"] == 2 and r["input"] != "brats" and r["shape"].count("x") == 2
    ]
    for method in methods:
        points = sorted((voxels(r["shape"]) / 1e6, r) for r in synthetic_3d if r["method"] == method)
        if points:
            xs = [p[0] for p in points]
            axes[0, 0].plot(
                xs, [p[1]["seconds"] for p in points], "o-", color=colours.get(method), label=method
            )
            axes[0, 1].plot(
                xs, [p[1]["peak_rss_gb"] for p in points], "o-", color=colours.get(method), label=method
            )
        for size, marker in zip(MODALITY_SIZES + QUICK["modality_sizes"], "sD^", strict=False):
            counts = sorted(
                (r["modalities"], r) for r in good if r["method"] == method and r["input"] == size
            )
            if len(counts) > 1:
                for axis, key in ((axes[1, 0], "seconds"), (axes[1, 1], "peak_rss_gb")):
                    axis.plot(
                        [c[0] for c in counts],
                        [c[1][key] for c in counts],
                        marker=marker,
                        color=colours.get(method),
                        label=f"{method} {size}",
                    )
    from matplotlib.ticker import NullFormatter

    for ax in axes[0]:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("megavoxels (synthetic 3D, 2 modalities)")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylabel("seconds")
    axes[0, 1].set_ylabel("peak resident memory (GB)")
    for ax in axes[1]:
        ax.set_xlabel("number of modalities")
        ax.set_xticks(MODALITY_COUNTS)
    axes[1, 0].set_ylabel("seconds")
    axes[1, 0].set_yscale("log")
    axes[1, 1].set_ylabel("peak resident memory (GB)")
    for ax in axes.ravel():
        ax.grid(alpha=0.3, which="both")
    for ax, size, columns in ((axes[0, 0], 7, 1), (axes[1, 0], 6, 2)):
        if ax.get_legend_handles_labels()[0]:  # a quick plan may leave a panel empty
            ax.legend(fontsize=size, ncol=columns)
    fig.suptitle("napari-isfl fuse on CPU vs classical baselines", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-2d", default="default", help="ISFL model for 2D inputs")
    parser.add_argument("--model-3d", default="default", help="ISFL model for 3D inputs")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--baselines", default="lp,dwt,gff", help="comma-separated baselines (default lp,dwt,gff)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="timed runs after the warm-up (default 1)")
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--no-case", action="store_true", help="skip the real TCGA-DU-7294 case")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a check of the machinery)")
    parser.add_argument("--patch-size", default="auto", help="ISFL sliding-window size: auto, training, N")
    parser.add_argument("--output", default="speed_cpu", help="output folder (default ./speed_cpu)")
    args = parser.parse_args(argv)
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    with_case = not args.no_case and (Path(args.data_root) / "volumes").is_dir()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)

    import torch

    machine = (
        f"{platform.processor() or platform.machine()}, {mp.cpu_count()} CPUs, "
        f"python {platform.python_version()}, torch {torch.__version__}, torch threads {args.threads}, "
        "OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}, load average at start "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    command = shlex.join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    print(f"# machine: {machine}\n# command: {command}", flush=True)
    rows = []
    started = time.perf_counter()
    for source, count in plan(args.quick, with_case):
        dims = 2 if source.count("x") == 1 else 3
        for method in ["isfl", *baselines]:
            spec = make_spec(
                method,
                case=source if source == "brats" else None,
                size=None if source == "brats" else source,
                modalities=count,
                threads=args.threads,
                model=args.model_2d if dims == 2 else args.model_3d,
                repeat=args.repeat,
                patch_size=args.patch_size,
                amp=False,
                data_root=args.data_root,
            )
            row = measure(spec) | {"modalities": count, "input": source, "method": method}
            rows.append(row)
            print(json.dumps(row), flush=True)
    elapsed = time.perf_counter() - started
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(output / "speed.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    errors = [r for r in rows if "error" in r]
    report = [
        "# CPU speed and scale of `fuse` against the classical baselines\n",
        f"Machine: {machine}.\n",
        f"Command: `{command}` ({elapsed / 60:.1f} min in all).\n",
        f"Models: 2D `{args.model_2d}`, 3D `{args.model_3d}`. Time = median of {args.repeat} run(s) after a "
        "warm-up, in a fresh process per row; ISFL includes normalisation and foreground crop, the "
        "baselines fuse already normalised inputs. Peak RSS = the child process's peak resident size "
        "(python, torch, model and inputs included); fusion RSS = its increase during the fusion.\n",
        *ratio_table(rows, baselines),
        "",
    ]
    if errors:
        report += ["Failed points:", *(f"- {r['input']} {r['method']}: {r['error']}" for r in errors), ""]
    (output / "speed.md").write_text("\n".join(report))
    plot(rows, output / "scaling.png")
    print("\n".join(report))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""Cohort throughput: cases per minute of ``napari_isfl.fuse_cohort`` for 1, 2, ... local workers (and 1 GPU
worker where there is one), on 8 real co-registered brain cases (T1c + FLAIR, 240x240x155) of
``../shared/data/volumes``, with the projection for a 1,000-subject cohort on K workers.

Every worker count is a fresh run into an empty folder: its own ``LocalCluster`` (start-up, the workers'
torch import and model load included in the wall time), the shipped 3D model by default, one torch thread
per CPU worker. The machine and its load average before and after each run are printed and recorded:
the figures only mean something on an otherwise idle machine.

Outputs in ``--output``: ``cohort.csv`` (one row per run), ``cohort.md`` (tables and the projection) and
``cohort.png`` (cases per minute against workers, with the ideal line).

Examples::

    # the figures of docs/BENCHMARKS.md (a few minutes on 2 cores)
    python benchmarks/cohort.py --workers 1 2 --output docs/benchmarks/cohort
    # on a GPU machine: CPU workers and one GPU worker
    python benchmarks/cohort.py --workers 1 2 --gpu --output /tmp/cohort_gpu
    # a quick check of the machinery (crops, 4 cases)
    python benchmarks/cohort.py --cases 4 --crop 48 --output /tmp/cohort_quick
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
#: (case, T1c, FLAIR) under volumes/: 8 glioma patients, all 240x240x155 at 1 mm (SRI24 space)
CASES = (
    ("brats-gli-00001", "brats/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz",
     "brats/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz"),
    ("brats-sample", "brats/BraTS-sample-528ab54/t1c.nii.gz", "brats/BraTS-sample-528ab54/t2f.nii.gz"),
    ("tcga-du-7294", "brats/TCGA-DU-7294/TCGA-DU-7294_t1c_bet.nii.gz",
     "brats/TCGA-DU-7294/TCGA-DU-7294_fla_bet.nii.gz"),
    ("tcga-fg-6692", "brats/TCGA-FG-6692/OtherEXampleFromTCIA_t1c_bet.nii.gz",
     "brats/TCGA-FG-6692/OtherEXampleFromTCIA_fla_bet.nii.gz"),
    *((f"brats2013-{k:04d}", f"brats2013/brats_2013_pat{k:04d}_1/t1c.nii.gz",
       f"brats2013/brats_2013_pat{k:04d}_1/flair.nii.gz") for k in range(1, 5)),
)  # fmt: skip
PROJECTION_WORKERS = (1, 2, 4, 8, 16, 32, 64)
PROJECTION_SUBJECTS = 1000


def write_manifest(folder: Path, data_root: Path, count: int, crop: int | None) -> Path:
    """The benchmark's CSV manifest in ``folder``: the volumes in place, or centred ``crop``^3 crops."""
    import nibabel as nib

    rows = ["case,t1c,flair"]
    for case, t1c, flair in CASES[:count]:
        paths = []
        for role, source in (("t1c", t1c), ("flair", flair)):
            path = data_root / "volumes" / source
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file; point --data-root at the shared data folder")
            if crop:
                image = nib.load(path)
                start = [max(0, (n - crop) // 2) for n in image.shape[:3]]
                target = folder / case / f"{role}.nii.gz"
                target.parent.mkdir(parents=True, exist_ok=True)
                nib.save(image.slicer[tuple(slice(s, s + crop) for s in start)], target)
                path = target
            paths.append(str(path))
        rows.append(",".join([case, *paths]))
    manifest = folder / "cohort.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def machine() -> str:
    import torch

    memory = ""
    try:
        import psutil

        memory = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs{memory}{gpu}, python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_once(manifest: Path, output: Path, workers: int, device: str, model: str, patch_size: str) -> dict:
    """One cohort run on a fresh local cluster; the row of cohort.csv."""
    from napari_isfl.cohort import fuse_cohort

    before = load()
    started = time.perf_counter()
    result = fuse_cohort(
        manifest, output, workers=workers, device=device, model=model, patch_size=patch_size, progress=False
    )
    wall = time.perf_counter() - started
    failed = [f"{o.case}: {o.error}" for o in result.failed]
    if failed:
        raise RuntimeError(f"{len(failed)} case(s) failed, e.g. {failed[0]}")
    seconds = [o.seconds for o in result.outcomes if o.seconds is not None]
    return {
        "device": device,
        "workers": workers,
        "cases": len(result.outcomes),
        "wall_s": round(wall, 2),
        "cases_per_min": round(60.0 * len(result.outcomes) / wall, 3),
        "mean_case_s": round(statistics.mean(seconds), 2),
        "median_case_s": round(statistics.median(seconds), 2),
        # wall time not spent fusing: cluster start and close, the workers' imports and model loads, and
        # the last cases' imbalance
        "overhead_s": round(wall - sum(seconds) / workers, 2),
        "case_device": result.outcomes[0].device,
        "load_before": before,
        "load_after": load(),
    }


def projection(rows: list[dict]) -> list[str]:
    """Markdown: hours for 1,000 subjects on K workers, from the per-case time measured at one worker of
    each device (each worker on its own core or GPU, I/O not limiting) plus the measured start-up."""
    lines = [
        "| device | per-case s (1 worker) | overhead s | "
        + " | ".join(f"K={k}" for k in PROJECTION_WORKERS)
        + " |",
        "|---|---|---|" + "---|" * len(PROJECTION_WORKERS),
    ]
    for row in rows:
        if row["workers"] != 1:
            continue
        per_case = row["mean_case_s"]
        cells = [row["device"], f"{per_case:.1f}", f"{row['overhead_s']:.0f}"]
        for k in PROJECTION_WORKERS:
            hours = (row["overhead_s"] + math.ceil(PROJECTION_SUBJECTS / k) * per_case) / 3600
            cells.append(f"{hours:.2f} h")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(rows: list[dict], path: Path) -> Path:
    from napari_isfl._optional import pyplot

    plt = pyplot("the cohort benchmark's plot")
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=90)
    for device, marker in (("cpu", "o-"), ("cuda", "s")):
        points = sorted((r["workers"], r["cases_per_min"]) for r in rows if r["device"] == device)
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker, label=f"{device} workers (measured)")
        if device == "cpu":
            one = dict(points).get(1)
            if one:
                ax.plot(xs, [one * x for x in xs], ":", color="grey", label="ideal (linear in workers)")
    ax.set_xlabel("workers")
    ax.set_ylabel("cases per minute (8 real 240x240x155 cases)")
    ax.set_xticks(sorted({r["workers"] for r in rows}))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("isfl cohort throughput", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="CPU worker counts (default 1 2)"
    )
    parser.add_argument("--gpu", action="store_true", help="also one GPU worker (device cuda)")
    parser.add_argument("--cases", type=int, default=8, help=f"cases, at most {len(CASES)} (default 8)")
    parser.add_argument("--crop", type=int, help="crop each volume to N^3 voxels around its centre")
    parser.add_argument("--model", default="default", help="model (default: the shipped 3D model)")
    parser.add_argument("--patch-size", default="auto", help="sliding-window size, as isfl cohort")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help="the shared data folder")
    parser.add_argument("--output", type=Path, required=True, help="folder for cohort.csv/.md/.png")
    args = parser.parse_args(argv)
    if not 1 <= args.cases <= len(CASES):
        parser.error(f"--cases must lie in 1..{len(CASES)}")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the isfl command sets it
    command = shlex.join(["python", "benchmarks/cohort.py", *(argv if argv is not None else sys.argv[1:])])
    info = machine()
    print(f"machine: {info}; load average {load()}", flush=True)
    plan = [("cpu", n) for n in args.workers] + ([("cuda", 1)] if args.gpu else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="isfl_cohort_bench_") as scratch:
        manifest = write_manifest(Path(scratch), args.data_root, args.cases, args.crop)
        for device, workers in plan:
            row = run_once(manifest, Path(scratch) / f"out_{device}_{workers}", workers, device, args.model,
                           args.patch_size)  # fmt: skip
            rows.append(row)
            print(
                f"{device} x{workers}: {row['cases']} cases in {row['wall_s']:.1f} s = "
                f"{row['cases_per_min']:.2f} cases/min (mean case {row['mean_case_s']:.1f} s, overhead "
                f"{row['overhead_s']:.1f} s; load {row['load_before']} -> {row['load_after']})",
                flush=True,
            )
    args.output.mkdir(parents=True, exist_ok=True)
    with open(args.output / "cohort.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cpu = {r["workers"]: r["cases_per_min"] for r in rows if r["device"] == "cpu"}
    speedups = [f"{n} workers: {cpu[n] / cpu[1]:.2f}x" for n in sorted(cpu) if 1 in cpu and n != 1]
    table = [
        "| device | workers | cases | wall s | cases/min | mean case s | overhead s | load before -> after |",
        "|---|---|---|---|---|---|---|---|",
    ] + [
        f"| {r['device']} | {r['workers']} | {r['cases']} | {r['wall_s']:.1f} | {r['cases_per_min']:.2f} | "
        f"{r['mean_case_s']:.1f} | {r['overhead_s']:.1f} | {r['load_before']} -> {r['load_after']} |"
        for r in rows
    ]
    text = "\n".join(
        [
            "# isfl cohort throughput",
            "",
            f"`{command}`",
            "",
            f"Machine: {info}. Cases: {args.cases} real T1c + FLAIR pairs"
            + (f" cropped to {args.crop}^3" if args.crop else " (240x240x155)")
            + f", model {args.model}, patch size {args.patch_size}.",
            "",
            *table,
            "",
            "Speed-up over 1 worker: " + (", ".join(speedups) or "n/a") + ".",
            "",
            f"Projection for {PROJECTION_SUBJECTS} subjects on K workers (hours: overhead + "
            f"ceil({PROJECTION_SUBJECTS} / K) x the per-case time at 1 worker; each worker on its own "
            "core or GPU, I/O not limiting):",
            "",
            *projection(rows),
            "",
        ]
    )
    (args.output / "cohort.md").write_text(text)
    plot(rows, args.output / "cohort.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

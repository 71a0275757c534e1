"""Soak test: N fusions in one process, resident memory after each, to show that nothing accumulates.

Three paths, each N times: ``fuse_files`` to disk (the CLI's path, atomic writes), ``napari_isfl.fuse``
(a new engine per call, as the one-call API does) and one kept ``FusionEngine`` (the widget's and the
cohort workers' path). Prints one line per path (RSS after the first call, after the last, the largest
growth between consecutive calls) and writes every call's figures to ``--output`` as CSV.

    python benchmarks/soak.py --count 40 --threads 2                  # the bundled 3D sample, cropped
    python benchmarks/soak.py --count 200 --size 128 --output soak.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=40, help="fusions per path (default 40)")
    parser.add_argument("--size", type=int, default=96, help="crop of the bundled sample, voxels per axis")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="default")
    parser.add_argument("--output", help="CSV of every call (default: none)")
    args = parser.parse_args(argv)

    import nibabel as nib
    import numpy as np
    import torch

    import napari_isfl
    from napari_isfl.inference import FusionEngine, fuse_files
    from napari_isfl.samples import sample_files

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        crops = []
        for path in sample_files("tcga_du_7294")[::2]:  # T1c and FLAIR
            image = nib.load(path)
            data = np.asarray(image.dataobj)
            start = [max(0, (n - args.size) // 2) for n in data.shape]
            box = tuple(slice(s, s + args.size) for s in start)
            crop = Path(folder) / path.name
            nib.save(nib.Nifti1Image(data[box], image.affine, image.header), crop)
            crops.append(crop)
        arrays = [napari_isfl.read_image(p).array for p in crops]
        engine = FusionEngine(args.model, "cpu")
        paths = {
            "fuse_files": lambda i: fuse_files(
                crops, Path(folder) / "fused.nii.gz", ["mri", "mri"], engine=engine, stability_output=None
            ),
            "fuse (new engine per call)": lambda i: napari_isfl.fuse(
                arrays, ["mri", "mri"], model=args.model, device="cpu"
            ),
            "kept FusionEngine": lambda i: engine.fuse(arrays, ["mri", "mri"]),
        }
        for name, call in paths.items():
            previous = rss_mb()
            for index in range(args.count):
                started = time.perf_counter()
                call(index)
                now = rss_mb()
                rows.append(
                    {
                        "path": name,
                        "call": index + 1,
                        "seconds": round(time.perf_counter() - started, 3),
                        "rss_mb": round(now, 1),
                        "growth_mb": round(now - previous, 1),
                    }
                )
                previous = now
    print(
        f"{args.count} fusions per path, {args.size}^3 crop of TCGA-DU-7294 T1c + FLAIR, model {args.model}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads, "
        f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print("| path | RSS after call 1 (MB) | after the last (MB) | largest growth after call 5 | s/call |")
    print("|---|---|---|---|---|")
    for name in paths:
        mine = [r for r in rows if r["path"] == name]
        late = max((r["growth_mb"] for r in mine[5:]), default=0.0)
        seconds = sorted(r["seconds"] for r in mine)[len(mine) // 2]
        print(f"| {name} | {mine[0]['rss_mb']} | {mine[-1]['rss_mb']} | {late} | {seconds} |")
    if args.output:
        with open(args.output, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

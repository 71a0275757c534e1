"""``isfl cohort``: fuse every case of a cohort (CSV manifest or BIDS tree) on a Dask cluster, resumably."""

from __future__ import annotations

import argparse
import csv
import signal
import sys
import threading
from pathlib import Path


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the run cleans up as after Ctrl-C (exit status 143)."""


def _raise_terminated(number: int, frame: object) -> None:
    raise _Terminated()


def _counts(summary: Path) -> str:
    """``": 3 done, 1 failed, 12 pending"`` from the summary the interrupted run wrote ("" without one)."""
    try:
        with open(summary, newline="") as handle:
            statuses = [row["status"] for row in csv.DictReader(handle)]
    except (OSError, KeyError, csv.Error):
        return ""
    counts = {s: statuses.count(s) for s in ("done", "skipped", "failed", "pending") if statuses.count(s)}
    return (": " + ", ".join(f"{n} {s}" for s, n in counts.items())) if counts else ""


def _tags(text: str | None) -> list[str] | None:
    return [t.strip().lower() for t in text.split(",") if t.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    from ..cohort.manifest import bids_manifest, read_manifest
    from ..cohort.run import fuse_cohort

    parser = args.cohort_parser
    if (args.manifest is None) == (args.bids is None):
        parser.error("give a CSV manifest or --bids ROOT (one of them)")
    if args.bids is not None and not args.inputs:
        parser.error("--bids needs --inputs, e.g. --inputs T1w,FLAIR")
    if args.inputs and args.bids is None:
        parser.error("--inputs applies to --bids; a CSV manifest names its inputs in its header")
    if args.scheduler and args.workers is not None:
        parser.error("--workers starts a local cluster; an existing one (--scheduler) has its own workers")
    if args.bids is not None:
        manifest = bids_manifest(args.bids, args.inputs.split(","), _tags(args.modality))
    else:
        manifest = read_manifest(args.manifest, _tags(args.modality))
    if not args.quiet:
        inputs = ", ".join(f"{c} ({m})" for c, m in zip(manifest.columns, manifest.modalities, strict=True))
        print(f"isfl cohort: {len(manifest.cases)} cases; inputs {inputs}", file=sys.stderr)
        for note in manifest.notes[:10]:
            print(f"left out {note}", file=sys.stderr)
        if len(manifest.notes) > 10:
            print(f"... and {len(manifest.notes) - 10} more left out", file=sys.stderr)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        result = fuse_cohort(
            manifest,
            args.output_dir,
            model=args.model,
            device=args.device,
            workers=args.workers,
            scheduler=args.scheduler,
            stability=args.stability,
            resample=args.resample,
            patch_size=args.patch_size,
            overlap=args.overlap,
            amp=not args.no_amp,
            crop_foreground=not args.no_crop,
            color=not args.grey,
            threads=args.threads,
            force=args.force,
            progress=not args.quiet,
        )
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, _Terminated)
        summary = Path(args.output_dir) / "summary.csv"
        print(
            f"isfl cohort: {'terminated' if terminated else 'interrupted'}{_counts(summary)}; finished cases "
            f"are kept and a rerun skips them (summary: {summary})",
            file=sys.stderr,
        )
        return 143 if terminated else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        print(f"isfl cohort: {result}", file=sys.stderr)
    return result.exit_code


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cohort",
        help="fuse every case of a cohort (CSV manifest or BIDS tree) on a Dask cluster, resumably",
        description="Fuse every case of a cohort with one model per Dask worker: a local cluster by default, "
        "or an existing one (--scheduler; SLURM, Kubernetes: see docs/COHORT.md). Writes "
        "DIR/<case>/fused.nii.gz (+ stability.nii.gz) and provenance.json, and DIR/summary.csv (status done, "
        "skipped, failed or pending, error, seconds, device, model checksum). A rerun skips cases whose "
        "outputs match (same inputs' checksums, model and parameters). Exit status 0 when every case is "
        "done or skipped, 1 when any failed, 130 on Ctrl-C, 143 on SIGTERM. Needs napari-isfl[cohort].",
    )
    parser.add_argument(
        "manifest",
        nargs="?",
        metavar="MANIFEST",
        help="CSV: header 'case' then one column per input (case,t1c,flair or case,mri,pet), paths relative "
        "to the CSV; column names that name a modality (ct, pet, spect; t1c, flair... are mri) tag it",
    )
    parser.add_argument(
        "--bids", metavar="ROOT", help="a BIDS dataset instead of a CSV: one case per subject/session"
    )
    parser.add_argument(
        "--inputs",
        metavar="SUFFIXES",
        help="with --bids: comma-separated BIDS suffixes, the first the reference grid (T1w,FLAIR; "
        "entities select among several files: acq-mprage_T1w,FLAIR)",
    )
    parser.add_argument("-o", "--output-dir", required=True, metavar="DIR", help="the cohort's output folder")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local single-threaded worker processes (default: one per core, or per GPU, at most one per "
        "2 GB of available memory and one per case)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="use an existing Dask cluster: scheduler address (tcp://host:8786) or scheduler file",
    )
    parser.add_argument(
        "--model",
        default="default",
        help="'default', isfl-2d, isfl-3d, isfl-2d-synthesis, or a checkpoint path",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (each worker's GPU when present), cpu, cuda, cuda:N"
    )
    parser.add_argument(
        "--modality",
        help="comma-separated tags per input (mri, ct, pet, spect), overriding the column names",
    )
    parser.add_argument("--stability", action="store_true", help="also write each case's stability map")
    parser.add_argument("--resample", action="store_true", help="resample inputs onto the first input's grid")
    parser.add_argument(
        "--patch-size",
        default="auto",
        help="sliding-window size: auto, training, N or N,N,N (as isfl fuse)",
    )
    parser.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap (default 0.25)")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads per worker (default: the worker's Dask threads, 1 locally)",
    )
    parser.add_argument("--grey", action="store_true", help="write grey output even when an input is colour")
    parser.add_argument("--no-amp", action="store_true", help="disable mixed precision on GPU")
    parser.add_argument(
        "--no-crop", action="store_true", help="run on the whole field of view, not the foreground box"
    )
    parser.add_argument("--force", action="store_true", help="redo every case, even those already done")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=run, cohort_parser=parser)

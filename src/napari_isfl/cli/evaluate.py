"""``isfl evaluate``: score ISFL and the classical baselines with the standard fusion metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..evaluation.baselines import BASELINES


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate, load_cases, write_tables
    from ..inference.windows import parse_patch_size

    cases = load_cases(args.data, args.data_root)
    if args.limit:
        cases = cases[: args.limit]
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    rows = evaluate(
        cases,
        methods,
        args.model,
        args.device,
        montage_dir=Path(args.output) / "montages" if args.montages else None,
        montage_count=args.montages,
        progress=not args.quiet,
        roi_size=parse_patch_size(args.patch_size),
        overlap=args.overlap,
        model_2d=args.model_2d,
        lesion_guard=None if args.lesion_guard == "off" else "auto",
    )
    title = f"Evaluation of {args.data}"
    if args.lesion_guard == "off":
        title += " (ISFL without its lesion guard)"
    if args.patch_size not in (None, "", "auto"):
        title += f" (ISFL in {args.patch_size} windows, overlap {args.overlap})"
    path = write_tables(rows, args.output, title=title)
    print(path.read_text())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score ISFL and classical baselines with the standard fusion metrics",
        description="Fuse every co-registered set of DATA (a TASK/MODALITY/NAME.png folder or a CSV of sets) "
        "with each method and write metrics.csv, summary.csv and summary.md to --output.",
    )
    parser.add_argument("data", help="folder (Harvard layout) or CSV with 'images' and 'modalities' columns")
    parser.add_argument(
        "--method",
        default="isfl,lp,dwt",
        help=f"comma-separated: isfl, isfl-2.5d (the 2D model slice by slice, for volumes) and/or "
        f"{', '.join(BASELINES)} (default isfl,lp,dwt)",
    )
    parser.add_argument("--model", default="default", help="ISFL model name or checkpoint")
    parser.add_argument("--model-2d", default="isfl-2d", help="the 2D model of isfl-2.5d (default isfl-2d)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", help="folder the CSV's image paths are relative to")
    parser.add_argument("--output", default="evaluation", help="output folder (default ./evaluation)")
    parser.add_argument("--montages", type=int, default=0, metavar="N", help="save N montages per task")
    parser.add_argument("--limit", type=int, help="only the first N cases")
    parser.add_argument(
        "--patch-size",
        default="auto",
        help="ISFL sliding-window size: auto, training, N or N,N,N (as isfl fuse)",
    )
    parser.add_argument(
        "--overlap", type=float, default=0.25, help="ISFL sliding-window overlap (default 0.25)"
    )
    parser.add_argument(
        "--lesion-guard",
        choices=("auto", "off"),
        default="auto",
        help="ISFL's lesion guard as isfl fuse has it (auto, the default) or off (the learned blend alone)",
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.set_defaults(handler=run)

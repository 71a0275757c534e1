"""``isfl train``: train or fine-tune an ISFL model from a YAML config."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..training.config import load_config
    from ..training.trainer import train

    overrides = list(args.set or [])
    if args.output:
        overrides.append(f"run.output_dir={args.output}")
    if args.device:
        overrides.append(f"run.device={args.device}")
    if args.max_steps:
        overrides.append(f"optim.max_steps={args.max_steps}")
    if args.max_minutes:
        overrides.append(f"optim.max_minutes={args.max_minutes}")
    if args.init:  # a shipped model's name as is; a file by its absolute path (runs may change folder)
        init = Path(args.init).expanduser()
        overrides.append(f"run.init={init.resolve() if init.exists() else args.init}")
    config = load_config(args.config, overrides)
    if args.data_root:  # after the file: a config file's relative root is resolved against its folder
        config.data.root = str(Path(args.data_root).resolve())
    path = train(config, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model written to {path}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune an ISFL model",
        description="Train an ISFL fusion network from a YAML config (see configs/). Multi-GPU: "
        "torchrun --nproc_per_node K $(which isfl) train --config ...",
    )
    parser.add_argument("--config", help="YAML config (defaults for everything not given)")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config entry, e.g. --set optim.lr=5e-4 (repeatable)",
    )
    parser.add_argument("--output", help="run directory (run.output_dir)")
    parser.add_argument(
        "--resume",
        help="state.pt to continue from, or 'auto' for the run directory's; the learning rate and "
        "step budget of the current config apply from there",
    )
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (run.device)")
    parser.add_argument("--max-steps", type=int, help="optim.max_steps")
    parser.add_argument("--max-minutes", type=float, help="stop after this wall time (optim.max_minutes)")
    parser.add_argument(
        "--init",
        help="start from this model's weights (fine-tuning): a shipped name (isfl-2d, isfl-3d) or a "
        "checkpoint; into another head, the weights that fit are copied",
    )
    parser.add_argument("--data-root", help="folder the data sources are relative to (data.root)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)

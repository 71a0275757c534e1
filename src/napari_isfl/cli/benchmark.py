"""``isfl benchmark robustness``: fusion quality and stability under controlled data shifts."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from ..evaluation.robustness.options import add_arguments, options_from_args


def _command_line() -> str:
    """The command as typed: ``isfl ...`` or ``python benchmarks/robustness.py ...``."""
    if not sys.argv:
        return ""
    program = sys.argv[0]
    head = ["python", program] if program.endswith(".py") else [Path(program).name]
    return shlex.join([*head, *sys.argv[1:]])


def run(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments; prints where the outputs went."""
    from ..evaluation.evaluate import load_cases
    from ..evaluation.robustness.report import write_outputs
    from ..evaluation.robustness.run import MethodRunner, run_robustness, select_cases

    options = options_from_args(args)
    if options.baseline_model and "isfl-noiv" not in options.methods:
        print("note: --baseline-model is ignored: isfl-noiv is not among --methods", file=sys.stderr)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cases = select_cases(load_cases(args.data, args.data_root), options.cases)
    if options.montages and options.montage_case >= len(cases):
        raise ValueError(
            f"--montage-case {options.montage_case} is out of range: {len(cases)} case(s) selected"
        )
    runner = MethodRunner(
        options.methods, options.model, options.baseline_model, options.device, options.lesion_guard
    )
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    started = time.perf_counter()
    say = None if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    rows, montages = run_robustness(cases, options, runner=runner, progress=say)
    import torch

    info = {
        "command": _command_line(),
        "data": str(args.data),
        "cases": [c.name for c in cases],
        "options": options.__dict__,
        "models": runner.provenance(),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, python {platform.python_version()}, torch {torch.__version__}, "
        f"load average at start {load}",
        "seed": options.seed,
        "crop_3d": options.crop_3d,
    }
    written = write_outputs(rows, args.output, info, montages, plots=not args.no_plots)
    print(
        f"{len(rows)} rows in {info['seconds']} s; wrote {written['markdown']} and {len(written)} files "
        f"in {args.output}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``isfl benchmark robustness`` to the ``isfl`` command line."""
    parser = subparsers.add_parser(
        "benchmark",
        help="benchmarks of the fusion methods (robustness to data shifts)",
        description="Benchmarks of ISFL and the classical baselines.",
    )
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    benchmarks.required = True
    robustness = benchmarks.add_parser(
        "robustness",
        help="fusion quality and stability under perturbations of one or all input modalities",
        description="Perturb each input modality (and all at once where meaningful) with every perturbation "
        "family at every severity level, fuse with every method and score the fusions against the clean "
        "sources and the clean-input fusion. Writes robustness.csv, summary.csv, summary.md, run.json, "
        "plots/ and montages/ to --output.",
    )
    add_arguments(robustness)
    robustness.set_defaults(handler=run)

"""The ``isfl`` command line: ``fuse``, ``train``, ``evaluate``, ``benchmark``, ``demo``.

Every subcommand has a module here with ``register(subparsers)`` (its options) and ``run(args)``, which
imports the implementation (torch, MONAI) only when the command runs: building the parser is cheap, so
``isfl --help``, ``--version`` and usage errors answer at once. This file only dispatches and turns
errors into one-line messages with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .. import __version__

__all__ = ["main"]

#: subcommand modules, each exposing ``register(subparsers)``
SUBCOMMAND_MODULES = (
    "napari_isfl.cli.fuse",
    "napari_isfl.cli.train",
    "napari_isfl.cli.evaluate",
    "napari_isfl.cli.demo",
    "napari_isfl.cli.benchmark",
    "napari_isfl.cli.cohort",
)


class CommandError(Exception):
    """An error whose message is shown to the user as is."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isfl",
        description="Intervention-stable fusion of co-registered medical images (napari-isfl).",
    )
    parser.add_argument("--version", action="version", version=f"napari-isfl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 success, 1 failure, 2 usage error, 130 cancelled)."""
    # OpenMP threads that spin while waiting slow torch down badly on a busy machine (measured: a
    # 240x240x155 fusion 12.2 s -> 9.1 s with PASSIVE); must be set before torch is imported
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("isfl: cancelled", file=sys.stderr)
        return 130
    except (CommandError, ValueError, OSError, RuntimeError, ImportError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"isfl {args.command}: error: {message}", file=sys.stderr)
        return 1

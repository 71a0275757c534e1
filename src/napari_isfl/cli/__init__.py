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
    "napari_isfl.cli.register",
    "napari_isfl.cli.train",
    "napari_isfl.cli.evaluate",
    "napari_isfl.cli.demo",
    "napari_isfl.cli.benchmark",
    "napari_isfl.cli.cohort",
)


class CommandError(Exception):
    """An error whose message is shown to the user as is."""


class ProgressLine:
    """A one-line progress display on stderr (``\r``-updated); :meth:`close` ends the line, so a message
    printed after an interruption or error starts on a line of its own."""

    def __init__(self, stream=None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.open = False

    def update(self, text: str) -> None:
        if not self.quiet:
            print(f"\r{text}", end="", file=self.stream, flush=True)
            self.open = True

    def close(self) -> None:
        if self.open:
            print(file=self.stream, flush=True)
            self.open = False


#: the progress line of the running command (closed before any final message)
progress_line = ProgressLine()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isfl",
        description="Intervention-stable fusion of co-registered medical images (napari-isfl).",
    )
    parser.add_argument("--version", action="version", version=f"napari-isfl {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the full traceback after the one-line message"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def _one_line(error: BaseException) -> str:
    """The first line of an error's message (an OSError as ``PATH: reason``, without ``[Errno N]``)."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    else:
        text = str(error)
    text = text.strip()
    return text.splitlines()[0] if text else type(error).__name__


#: errors the user can act on from the message alone; anything else also names its type
EXPECTED_ERRORS = (CommandError, ValueError, OSError, RuntimeError, ImportError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 success, 1 failure, 2 usage error, 130 interrupted by
    Ctrl-C, 143 terminated by SIGTERM). Every failure is one line on stderr; ``--debug`` adds the
    traceback."""
    from ..outputs import Terminated, terminate_as_interrupt

    # OpenMP threads that spin while waiting slow torch down badly on a busy machine (measured: a
    # 240x240x155 fusion 12.2 s -> 9.1 s with PASSIVE); must be set before torch is imported
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    progress_line.quiet = bool(getattr(args, "quiet", False))
    try:
        with terminate_as_interrupt():
            return int(args.handler(args) or 0)
    except Terminated:
        progress_line.close()
        print("isfl: terminated; nothing was replaced and no partial file is left", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        progress_line.close()
        print("isfl: cancelled; nothing was replaced and no partial file is left", file=sys.stderr)
        return 130
    except Exception as error:  # every failure ends in one line (and the traceback with --debug)
        progress_line.close()
        message = _one_line(error)
        if not isinstance(error, EXPECTED_ERRORS):
            message = f"{type(error).__name__}: {message} (isfl --debug ... shows the traceback)"
        print(f"isfl {args.command}: error: {message}", file=sys.stderr)
        if args.debug:
            import traceback

            traceback.print_exception(error, file=sys.stderr)
        return 1
    finally:
        progress_line.close()

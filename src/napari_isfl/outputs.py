"""Never lose a user's data: plan every output of a run before any compute, write them all or none.

:class:`OutputPlan` is the one step every writing path takes (``isfl fuse``, :func:`fuse_files`, the demo,
cohorts): before anything is computed it resolves every output path and refuses

* an output that is one of the inputs (by real path or as the same file, hard links included), or the
  same file as another output of the run;
* an output that is a folder, or whose folder cannot be made or written to;
* an existing output when overwriting is off, and an unsupported file type;
* (once the sizes are known, :meth:`OutputPlan.check_space`) a run the disk cannot hold.

:meth:`OutputPlan.write` then stages every output as a hidden temporary file beside its target and
renames them into place only when all are written; SIGINT and SIGTERM are held back during the renames,
and on any failure or interruption every temporary file is removed and no existing file is replaced.
:func:`terminate_as_interrupt` turns SIGTERM (what ``timeout``, schedulers and systemd send) into an
exception, so ``finally`` clauses clean up exactly as they do for Ctrl-C.

Examples:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "t1.nii.gz").write_bytes(b"input")
    5
    >>> OutputPlan({"fused": folder / "t1.nii.gz"}, inputs=[folder / "t1.nii.gz"])
    Traceback (most recent call last):
    ...
    napari_isfl.outputs.OutputError: output .../t1.nii.gz is the input .../t1.nii.gz: ...
    >>> plan = OutputPlan({"fused": folder / "out" / "f.nii.gz", "provenance": folder / "out" / "p.json"})
    >>> writers = {"fused": lambda tmp: tmp.write_bytes(b"1"), "provenance": lambda tmp: tmp.write_text("{}")}
    >>> [p.name for p in plan.write(writers)]
    ['f.nii.gz', 'p.json']
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .io import IMAGE_SUFFIXES, atomic_write_all, image_suffix

__all__ = [
    "OutputError",
    "OutputPlan",
    "Terminated",
    "free_bytes",
    "terminate_as_interrupt",
]

#: suffixes of the non-image outputs a plan accepts (provenance, tables)
DATA_SUFFIXES = (".json", ".csv", ".tfm", ".txt", ".h5")
#: head room over the estimated bytes when checking the disk (headers, compression overhead)
SPACE_MARGIN = 1.1


class OutputError(ValueError):
    """An output that cannot or must not be written; the message names the path and the fix."""


class Terminated(KeyboardInterrupt):
    """SIGTERM while :func:`terminate_as_interrupt` is active: handled like Ctrl-C (exit status 143)."""


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _existing_ancestor(path: Path) -> Path:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing folder)."""
    return shutil.disk_usage(_existing_ancestor(Path(path) / "_")).free


@dataclass(frozen=True)
class PlannedOutput:
    role: str
    path: Path


class OutputPlan:
    """Every output of one run, checked before any compute and written all together.

    Args:
        outputs: role (``"fused"``, ``"stability"``, ``"provenance"``...) -> path; ``None`` paths are
            left out.
        inputs: the run's input files (or folders): no output may be one of them.
        overwrite: replace existing outputs (only once everything is written); ``False`` refuses them.

    Raises:
        OutputError: an output aliasing an input or another output, a folder as output, a folder that
            cannot be made or written to, an unsupported type.
        FileExistsError: an existing output with ``overwrite=False``.
    """

    def __init__(
        self,
        outputs: Mapping[str, str | os.PathLike | None],
        inputs: Sequence[str | os.PathLike] = (),
        *,
        overwrite: bool = True,
    ) -> None:
        self.outputs = [PlannedOutput(role, Path(path)) for role, path in outputs.items() if path is not None]
        if not self.outputs:
            raise OutputError("no output given; name an output file (e.g. -o fused.nii.gz)")
        input_paths = [Path(p) for p in inputs]
        for index, planned in enumerate(self.outputs):
            path = planned.path
            if path.is_dir():
                raise OutputError(f"output {path} is a folder; give a file name inside it")
            suffix = image_suffix(path)
            if suffix not in IMAGE_SUFFIXES + DATA_SUFFIXES:
                raise OutputError(
                    f"{path}: unsupported output type {suffix or '(none)'!r}; use .nii.gz, .nii, .png, .jpg, "
                    ".bmp or .tif for images, .json for provenance"
                )
            for source in input_paths:
                if _same_file(path, source):
                    raise OutputError(
                        f"output {path} is the input {source}: writing it would destroy the input; "
                        "choose another output name"
                    )
            for other in self.outputs[:index]:
                if _same_file(path, other.path):
                    raise OutputError(
                        f"the {planned.role} output {path} and the {other.role} output {other.path} are "
                        "the same file; give each output its own name"
                    )
            if path.exists() and not overwrite:
                raise FileExistsError(f"{path} exists; choose another name or allow overwriting")
            folder = _existing_ancestor(path)
            if not folder.is_dir():
                raise OutputError(f"cannot create the folder of {path}: {folder} is a file")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise OutputError(
                    f"cannot write {path}: folder {folder} is not writable; choose another folder"
                )

    def path(self, role: str) -> Path | None:
        """The planned path of ``role``, or ``None``."""
        return next((p.path for p in self.outputs if p.role == role), None)

    @property
    def paths(self) -> list[Path]:
        return [p.path for p in self.outputs]

    def check_space(self, expected_bytes: Mapping[str, int]) -> None:
        """Refuse, before any compute, a run whose outputs (``role -> bytes``) the disk cannot hold.

        Raises:
            OutputError: naming the folder, the bytes needed and the bytes free.
        """
        needed: dict[Path, int] = {}
        for planned in self.outputs:
            folder = _existing_ancestor(planned.path)
            needed[folder] = needed.get(folder, 0) + int(expected_bytes.get(planned.role, 0))
        for folder, count in needed.items():
            free = free_bytes(folder)
            if count * SPACE_MARGIN > free:
                raise OutputError(
                    f"not enough disk space in {folder} for the outputs: about {count / 1e6:.1f} MB "
                    f"needed, {free / 1e6:.1f} MB free; free some space or write elsewhere"
                )

    def write(self, writers: Mapping[str, Callable[[Path], object]]) -> list[Path]:
        """Stage every output with its writer (``role -> write(tmp_path)``), then rename all into place.

        Folders are made here, not at planning, so a refused run leaves nothing behind. Errors while
        writing name the output, not the temporary file.

        Raises:
            OutputError: a role without a planned path.
            OSError: the write failed (disk full, permissions): no output was replaced.
        """
        unknown = sorted(set(writers) - {p.role for p in self.outputs})
        if unknown:
            raise OutputError(f"no planned output for {', '.join(unknown)}")
        staged: dict[Path, Callable[[Path], object]] = {}
        for planned in self.outputs:
            if planned.role in writers:
                staged[planned.path] = _naming(planned.path, writers[planned.role])
        for path in staged:
            path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_all(staged)


def _naming(path: Path, write: Callable[[Path], object]) -> Callable[[Path], object]:
    """``write``, with an OSError re-raised naming the output instead of its temporary file."""

    def staged_write(tmp: Path) -> object:
        try:
            return write(tmp)
        except OSError as error:
            reason = error.strerror or str(error)
            raise OSError(error.errno, f"could not write {path}: {reason}") from error

    return staged_write


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated("terminated (SIGTERM)")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``:
    every ``finally`` clause runs, so staged files are removed as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

"""Session logic of the "Fuse modalities" widget: one fusion at a time, off the GUI thread.

Threading contract:

* :meth:`FusionSession._work` runs on a napari worker thread (``napari.qt.threading.create_worker``).
  It must not touch Qt widgets, layers or the viewer: it only reads the :class:`FusionRequest`
  snapshot and returns an :class:`Outcome`. Exceptions are caught there and returned, so every
  failure reaches the user as a napari notification and none is lost in the thread.
* Progress reports from the worker are marshalled to the GUI thread (``superqt.ensure_main_thread``)
  before they update the napari progress bar (activity dock) and the widget's status line.
* Everything else (start, cancel, adding the layers) runs on the GUI thread.

Cancel sets a flag that :func:`napari_isfl.inference.fuse` polls before every sliding-window batch,
so the worker stops within one batch and nothing is added to the viewer.

Set ``NAPARI_ISFL_SYNC=1`` (or ``session.synchronous = True``) to run in the calling thread, for
tests and scripts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from .layers import FusionRequest

__all__ = ["JOBS", "SYNC_ENV", "FusionSession", "Outcome"]

#: environment flag: run fusions synchronously (tests, scripts)
SYNC_ENV = "NAPARI_ISFL_SYNC"
#: what a session runs, and how its progress bar says it
JOBS = {"fuse": "Fusing", "register": "Registering"}
logger = logging.getLogger(__name__)

StateCallback = Callable[[str, str], None]


@dataclass
class Outcome:
    """What a worker run produced: ``status`` is ``"done"``, ``"cancelled"`` or ``"failed"``."""

    status: str
    outputs: list = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0


def _sync_from_env() -> bool:
    return os.environ.get(SYNC_ENV, "").strip().lower() in ("1", "true", "yes")


def _lesion_guard_line(outputs: Any) -> str | None:
    """The lesion guard's line (:func:`~napari_isfl.lesions.describe_lesion_guard`) for a fusion's output
    layers, from the provenance in the first one's metadata; ``None`` when the guard was off."""
    from ..lesions import describe_lesion_guard
    from .layers import METADATA_KEY

    if not outputs:
        return None
    provenance = outputs[0][1].get("metadata", {}).get(METADATA_KEY) or {}
    return describe_lesion_guard(provenance)


def describe_error(error: BaseException, job: str = "fuse") -> str:
    """A one-line message for a failed job, with a hint where one helps."""
    text = str(error) or type(error).__name__
    if "out of memory" in text.lower():
        text += " (try a smaller patch size, or device cpu)"
    if not isinstance(error, (ValueError, FileNotFoundError)):  # unexpected: name the type
        text = f"{type(error).__name__}: {text}"
    return f"{'Registration' if job == 'register' else 'Fusion'} failed: {text}"


class FusionSession:
    """Runs fusions for one viewer and reports their state to a callback.

    Args:
        viewer: where the output layers go.
        on_state: called on the GUI thread as ``on_state(state, message)`` with state ``"running"``,
            ``"progress"``, ``"cancelling"``, ``"done"``, ``"cancelled"`` or ``"failed"``.
        synchronous: run in the calling thread; default from ``NAPARI_ISFL_SYNC``.
    """

    def __init__(
        self,
        viewer: napari.components.ViewerModel,
        on_state: StateCallback | None = None,
        synchronous: bool | None = None,
    ) -> None:
        self.viewer = viewer
        self.on_state = on_state
        self.synchronous = _sync_from_env() if synchronous is None else synchronous
        self.last_outcome: Outcome | None = None
        self.last_layers: list = []
        self.windows_done = 0
        self._cancel_requested = threading.Event()
        self._running = False
        self._progress_bar = None
        self._worker = None
        self._engine = None
        self._engine_key: tuple | None = None
        self.job = "fuse"

    @property
    def running(self) -> bool:
        return self._running

    # -- GUI thread ------------------------------------------------------------------------------

    def start(self, request: FusionRequest, options: dict[str, Any], job: str = "fuse") -> None:
        """Start a job on ``request``: ``"fuse"`` (``options`` for compute_fusion) or ``"register"``
        (``options["transform"]``: register the inputs off the reference grid onto it). Returns at once
        unless synchronous."""
        from napari.utils import progress

        if job not in JOBS:
            raise ValueError(f"job must be one of {', '.join(JOBS)}, got {job!r}")
        if self._running:
            raise RuntimeError("a job is already running; cancel it or wait for it to finish")
        self._running = True
        self.job = job
        self._cancel_requested.clear()
        self.windows_done = 0
        verb = JOBS[job]
        # indeterminate until the first report gives the number of steps
        self._progress_bar = progress(total=0, desc=f"{verb} {', '.join(request.names)}")
        self._emit("running", f"{verb}…")
        if self.synchronous:
            self._finish(self._work(request, options, self._on_progress))
            return
        from napari.qt.threading import create_worker
        from superqt.utils import ensure_main_thread

        report = ensure_main_thread(self._on_progress)
        self._worker = create_worker(self._work, request, options, report, _start_thread=False)
        self._worker.returned.connect(self._finish)
        self._worker.errored.connect(self._on_worker_crash)  # only if _work itself breaks
        self._worker.start()

    def cancel(self) -> None:
        """Ask the running fusion to stop before its next window batch; the viewer stays unchanged."""
        if self._running and not self._cancel_requested.is_set():
            self._cancel_requested.set()
            self._emit("cancelling", "Cancelling after the current window batch…")

    def _on_progress(self, done: int, total: int) -> None:
        bar = self._progress_bar
        if bar is None or not self._running:  # a late report after the run ended
            return
        self.windows_done = done
        if not self._cancel_requested.is_set():
            step = "Window batch" if self.job == "fuse" else "Registration step"
            self._emit("progress", f"{step} {done}/{total}")
        # last: updating napari's progress bar can process Qt events, the run's end among them
        if bar.total != total:
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)

    def _finish(self, outcome: Outcome) -> None:
        from napari.utils.notifications import show_error, show_info

        from .layers import add_or_update_layers

        self._close_progress()
        self.last_outcome = outcome
        try:
            if outcome.status == "done":
                self.last_layers = add_or_update_layers(self.viewer, outcome.outputs)
                names = ", ".join(layer.name for layer in self.last_layers)
                done = "Registered" if self.job == "register" else "Fused"
                message = f"{done} in {outcome.seconds:.1f} s: {names}"
                guarded = _lesion_guard_line(outcome.outputs) if self.job == "fuse" else None
                if guarded:  # what the fusion did to the learned blend belongs in plain sight
                    message = f"{message}. {guarded[0].upper()}{guarded[1:]}"
                state = "done"
                show_info(message)
            elif outcome.status == "cancelled":
                message, state = f"{JOBS[self.job]} cancelled; no layer was added or changed", "cancelled"
                show_info(message)
            else:
                message, state = describe_error(outcome.error, self.job), "failed"
                logger.error(message, exc_info=outcome.error)
                show_error(message)
        except Exception as error:  # adding layers failed: still tell the user, never fail silently
            message, state = describe_error(error, self.job), "failed"
            logger.exception(message)
            show_error(message)
        finally:
            self._running = False
            self._worker = None
        self._emit(state, message)

    def _on_worker_crash(self, error: BaseException) -> None:
        # napari relays worker errors to its notification manager (with the traceback) already
        self._finish(Outcome("failed", error=error))

    def _close_progress(self) -> None:
        if self._progress_bar is not None:
            self._progress_bar.close()
            self._progress_bar = None

    def _emit(self, state: str, message: str) -> None:
        if self.on_state is not None:
            self.on_state(state, message)

    # -- worker thread: no Qt widgets, layers or viewer here -------------------------------------

    def _engine_for(self, model: Any, device: str):
        """The session's :class:`~napari_isfl.inference.FusionEngine`: kept across runs with the same
        model and device, so the network is loaded once; a checkpoint file changed on disk is reloaded."""
        from ..inference import FusionEngine

        path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        stamp = os.stat(path).st_mtime_ns if path and os.path.isfile(path) else None
        key = (str(model), str(device), stamp)
        if self._engine is None or key != self._engine_key:
            self._engine, self._engine_key = FusionEngine(model, device), key
        return self._engine

    def _work(
        self, request: FusionRequest, options: dict[str, Any], report: Callable[[int, int], None]
    ) -> Outcome:
        """Runs on the worker thread; must not touch Qt widgets, layers or the viewer."""
        from ..inference import FusionCancelled
        from .layers import compute_fusion, compute_registration

        started = time.perf_counter()
        cancelled: tuple[type[BaseException], ...] = (FusionCancelled,)
        try:
            options = dict(options)
            if self.job == "register":
                from ..registration import RegistrationCancelled

                cancelled = (FusionCancelled, RegistrationCancelled)
                outputs = compute_registration(
                    request,
                    options.get("transform", "rigid"),
                    progress=report,
                    cancel=self._cancel_requested.is_set,
                )
            else:
                engine = self._engine_for(options.pop("model", "default"), options.pop("device", "auto"))
                outputs = compute_fusion(
                    request, engine=engine, progress=report, cancel=self._cancel_requested.is_set, **options
                )
        except cancelled:
            return Outcome("cancelled", seconds=time.perf_counter() - started)
        except Exception as error:  # returned, not raised: the GUI thread shows it
            return Outcome("failed", error=error, seconds=time.perf_counter() - started)
        return Outcome("done", outputs, seconds=time.perf_counter() - started)

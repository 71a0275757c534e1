"""Fusing a whole cohort on Dask: :func:`fuse_cohort`, the engine of ``isfl cohort``.

The client (this process) reads the manifest, starts or joins a Dask cluster, registers the worker
plugin (one model per worker), submits one task per case and collects outcomes as they complete:
a failed case is a row of the summary, never the end of the run. ``DIR/summary.csv`` is rewritten
atomically as cases finish and once at the end. Interrupted (Ctrl-C, SIGTERM turned into
``KeyboardInterrupt``), the run cancels what is left, closes a cluster it started, removes staging
files of unfinished cases, writes the summary (unfinished cases ``pending``) and re-raises: every
finished case stays finished, and the next run skips it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._optional import require
from ..io import atomic_write
from .manifest import CohortCase, Manifest, read_manifest
from .resume import remove_temporaries
from .settings import SUMMARY_COLUMNS, CaseOutcome, CohortSettings

__all__ = ["WORKER_MEMORY_GB", "CohortResult", "default_worker_count", "fuse_cohort", "write_summary"]

#: memory one CPU worker is given room for when choosing the worker count: a 240x240x155 T1c + FLAIR
#: case peaks at 0.84 GB resident with the shipped 3D model on one thread (measured), plus the Dask
#: worker itself and headroom for larger volumes
WORKER_MEMORY_GB = 2.0
#: seconds between rewrites of summary.csv while a run goes on
SUMMARY_INTERVAL = 10.0
LOCK_NAME = ".isfl-cohort.lock"
SUMMARY_NAME = "summary.csv"


@dataclass
class CohortResult:
    """The outcome of a cohort run.

    Attributes:
        outcomes: one :class:`~napari_isfl.cohort.settings.CaseOutcome` per case, in manifest order.
        output_dir: the cohort's output folder.
        summary_path: ``output_dir/summary.csv``.
        workers: the number of Dask workers (when the run started).
        seconds: the run's wall time.
        notes: what the manifest left out (e.g. BIDS sessions lacking an input).
    """

    outcomes: list[CaseOutcome]
    output_dir: Path
    summary_path: Path
    workers: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        """How many cases have ``status`` (``done``, ``skipped``, ``failed``, ``pending``)."""
        return sum(outcome.status == status for outcome in self.outcomes)

    @property
    def failed(self) -> list[CaseOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when every case is done or skipped, 1 when any failed or is pending."""
        return 0 if all(o.status in ("done", "skipped") for o in self.outcomes) else 1

    def __str__(self) -> str:
        return (
            f"{self.count('done')} done, {self.count('skipped')} skipped, {self.count('failed')} failed"
            + (f", {self.count('pending')} pending" if self.count("pending") else "")
            + f" of {len(self.outcomes)} cases in {self.seconds:.1f} s on {self.workers} worker(s); "
            f"summary: {self.summary_path}"
        )


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use (taskset, cgroups cpusets)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _visible_gpus(device: str) -> int:
    """CUDA devices the workers would use for ``device``; no torch import on a machine without a driver."""
    if device == "cpu" or device.startswith("mps"):
        return 0
    if device.startswith("cuda:"):
        return 1  # every worker on that one GPU
    if sys.platform.startswith("linux") and not Path("/proc/driver/nvidia").exists():
        return 0
    import torch

    return torch.cuda.device_count()


def default_worker_count(
    device: str = "auto", cases: int | None = None, threads: int = 1, available_gb: float | None = None
) -> int:
    """The number of local workers ``isfl cohort`` starts without ``--workers``.

    The rule: on GPUs, one worker per visible GPU (one for ``cuda:N``); on CPU, one single-threaded
    worker per usable core (``threads`` cores each with ``--threads``). Either way at most one worker
    per :data:`WORKER_MEMORY_GB` of available memory and at most one per case, and at least one.

    Examples:
        >>> default_worker_count("cpu", cases=3, available_gb=64.0) <= 3
        True
        >>> default_worker_count("cpu", cases=100, available_gb=3.0)
        1
    """
    if available_gb is None:
        import psutil  # a dependency of distributed

        available_gb = psutil.virtual_memory().available / 1e9
    gpus = _visible_gpus(device)
    count = gpus if gpus else _usable_cores() // max(1, threads)
    count = min(count, int(available_gb // WORKER_MEMORY_GB))
    if cases is not None:
        count = min(count, cases)
    return max(1, count)


def write_summary(path: str | os.PathLike, outcomes: Sequence[CaseOutcome]) -> Path:
    """Write ``summary.csv`` atomically: one row per case (:data:`SUMMARY_COLUMNS`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for outcome in outcomes:
        writer.writerow(outcome.row())
    text = buffer.getvalue()
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while cleaning up (closing the cluster, writing the summary), then deliver
    the first one held: a second Ctrl-C must not cut the cleanup short and leave temporary files."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (inherited): Ctrl-C in a terminal reaches the whole
    process group, and must stop the client, which then closes the workers in order."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _output_lock(output_dir: Path) -> Iterator[None]:
    """One run per output folder at a time (an advisory lock the OS releases if this process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; runs are not guarded
        yield
        return
    path = output_dir / LOCK_NAME
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RuntimeError(
                f"{output_dir} is in use by another isfl cohort run (lock {path}); wait for it to end or "
                "choose another output folder"
            ) from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _connect(distributed, scheduler: str | os.PathLike):
    """A client of an existing cluster: ``tcp://host:port`` (or ``host:port``) or a scheduler file."""
    text = str(scheduler)
    try:
        if "://" in text or re.fullmatch(r"[\w.\-\[\]:]+:\d+", text):
            return distributed.Client(text)
        if Path(text).is_file():
            return distributed.Client(scheduler_file=text)
    except OSError as error:
        raise OSError(
            f"could not connect to the Dask scheduler {text} ({str(error).splitlines()[0]}); check that it "
            "runs and the address, or leave --scheduler out to start a local cluster"
        ) from None
    raise ValueError(
        f"--scheduler {text}: neither an address (tcp://host:8786) nor an existing scheduler file; "
        "give one of them"
    )


def _cases_of(cases, modalities: Sequence[str] | None) -> tuple[list[CohortCase], list[str]]:
    if isinstance(cases, (str, os.PathLike)):
        cases = read_manifest(cases, modalities)
    elif modalities is not None:
        raise ValueError("modalities applies to a CSV manifest path; tag CohortCase objects themselves")
    if isinstance(cases, Manifest):
        return list(cases.cases), list(cases.notes)
    cases = list(cases)
    if not cases or not all(isinstance(c, CohortCase) for c in cases):
        raise ValueError("cases must be a CSV manifest path, a Manifest, or a non-empty list of CohortCase")
    names = [c.name.lower() for c in cases]
    if len(set(names)) != len(names):
        raise ValueError("case names must differ (output folders are named after them)")
    return cases, []


def _task_error(error: BaseException) -> str:
    """A task-level failure (not a bad case: the worker died, the task was lost) in one line."""
    name = type(error).__name__
    if name == "KilledWorker":
        return (
            "the worker running this case died (out of memory or killed) every time it was retried; "
            "see the worker logs, or give workers more memory"
        )
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{name}: {text}" if text else name


def fuse_cohort(
    cases: str | os.PathLike | Manifest | Sequence[CohortCase],
    output_dir: str | os.PathLike,
    *,
    model: str | os.PathLike = "default",
    device: str = "auto",
    workers: int | None = None,
    scheduler: str | os.PathLike | None = None,
    client=None,
    modalities: Sequence[str] | None = None,
    stability: bool = False,
    resample: bool = False,
    patch_size: int | Sequence[int] | str | None = None,
    overlap: float = 0.25,
    amp: bool = True,
    crop_foreground: bool = True,
    color: bool = True,
    threads: int | None = None,
    force: bool = False,
    progress: bool | Callable[[CaseOutcome], None] = True,
) -> CohortResult:
    """Fuse every case of a cohort on a Dask cluster, resumably; one bad case never stops the others.

    Each case's outputs go to ``output_dir/<case>/``: ``fused.nii.gz`` (``.png``/``.tif`` for 2D
    raster/TIFF inputs), ``stability.nii.gz`` with ``stability``, and ``provenance.json`` (inputs'
    and outputs' SHA-256, model and checksum, device, parameters, timings). ``output_dir/summary.csv``
    has one row per case: status (``done``, ``skipped``, ``failed``, ``pending``), the one-line error,
    seconds, device, model and its checksum, worker, output paths. A case whose recorded inputs' content,
    model checksum and parameters equal this run's, and whose outputs are intact, is ``skipped``.

    Args:
        cases: a CSV manifest path (see :func:`~napari_isfl.cohort.read_manifest`), a
            :class:`~napari_isfl.cohort.Manifest` (e.g. from :func:`~napari_isfl.cohort.bids_manifest`),
            or a list of :class:`~napari_isfl.cohort.CohortCase`.
        output_dir: the cohort's output folder (created; on a cluster, a path every worker can write).
        model: ``"default"`` (the shipped model of the inputs' dimensionality), ``"isfl-2d"``,
            ``"isfl-3d"`` or a checkpoint path.
        device: ``"auto"`` (each worker's GPU when it has one, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        workers: local workers (single-threaded processes); ``None``: :func:`default_worker_count`.
            Not with ``scheduler`` or ``client``.
        scheduler: an existing cluster's scheduler address (``tcp://host:8786``) or scheduler file.
        client: an existing :class:`distributed.Client` to use (left open).
        modalities: tags per input column of a CSV manifest, overriding the column names.
        stability: also write each case's stability map.
        resample: resample each case's inputs onto its first input's grid.
        patch_size: sliding-window size: ``None`` (auto), ``"training"``, N or per-axis sizes.
        overlap: sliding-window overlap in [0, 1).
        amp: bfloat16 autocast on CUDA workers.
        crop_foreground: run the network on each case's foreground box only.
        color: re-attach a colour input's chroma (PNG/TIFF inputs).
        threads: torch CPU threads per worker; ``None``: the worker's Dask threads (1 locally).
        force: redo every case even when its outputs match.
        progress: ``True``: a progress bar on stderr; a callable: called with each finished case's
            outcome; ``False``: silent.

    Returns:
        a :class:`CohortResult`; ``result.exit_code`` is 0 when every case is done or skipped.

    Raises:
        ValueError: bad arguments or manifest (one line, naming the input and the fix).
        MissingDependencyError: Dask's ``distributed`` is not installed (``napari-isfl[cohort]``).
        RuntimeError: another run holds ``output_dir``.
        KeyboardInterrupt: the run was interrupted; finished cases are kept, ``summary.csv`` written.

    Examples::

        result = napari_isfl.fuse_cohort("cohort.csv", "fused/", workers=4)
        print(result)                       # 97 done, 0 skipped, 3 failed of 100 cases ...
        for outcome in result.failed:
            print(outcome.case, outcome.error)

        manifest = napari_isfl.cohort.bids_manifest("ds000001", ["T1w", "FLAIR"])
        napari_isfl.fuse_cohort(manifest, "fused/", scheduler="tcp://scheduler:8786", device="cuda")
    """
    started = time.perf_counter()
    if sum(x is not None for x in (workers, scheduler, client)) > 1:
        raise ValueError("give at most one of workers (a local cluster), scheduler and client")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    if isinstance(patch_size, str):
        from ..inference.windows import parse_patch_size  # torch-free

        patch_size = parse_patch_size(patch_size)
    case_list, notes = _cases_of(cases, modalities)
    distributed = require("distributed", "cohort", "isfl cohort")
    from .worker import CohortWorkerPlugin, probe_worker, run_case

    model = str(model)
    if model != "default" and Path(model).is_file():
        model = str(Path(model).resolve())  # workers may run elsewhere: no relative paths
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = CohortSettings(
        output_dir=str(output_dir),
        model=model,
        device=str(device),
        threads=threads,
        stability=stability,
        resample=resample,
        color=color,
        roi_size=tuple(patch_size) if isinstance(patch_size, (list, tuple)) else patch_size,
        overlap=float(overlap),
        amp=amp,
        crop_foreground=crop_foreground,
        force=force,
        run_id=uuid.uuid4().hex,
    )
    summary_path = output_dir / SUMMARY_NAME
    outcomes = {case.name: CaseOutcome(case.name, "pending") for case in case_list}
    for case in case_list:
        if case.problem:  # known bad before any work: failed without a task
            outcomes[case.name] = CaseOutcome(case.name, "failed", case.problem, 0.0)
    runnable = [case for case in case_list if not case.problem]
    result = CohortResult([], output_dir, summary_path, notes=notes)

    def finish() -> CohortResult:
        result.outcomes = [outcomes[case.name] for case in case_list]
        result.seconds = time.perf_counter() - started
        write_summary(summary_path, result.outcomes)
        return result

    with _output_lock(output_dir):
        if not runnable:
            return finish()
        cluster = None
        if client is None and scheduler is None:
            count = workers or default_worker_count(device, len(runnable), threads or 1)
            # workers inherit an ignored SIGINT (a Python handler is not inherited): Ctrl-C in a terminal
            # reaches the whole process group, and only this process should act on it. A Ctrl-C during
            # these seconds of start-up is therefore ignored.
            with _sigint_ignored():
                cluster = distributed.LocalCluster(
                    n_workers=count,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # a free port: never clash with another cluster
                    silence_logs=logging.ERROR,
                    # one retry: a case that kills its worker (out of memory) should not do so 4 times
                    scheduler_kwargs={"allowed_failures": 1},
                )
        session = _Session(client, cluster, settings.plugin_name)
        try:
            if cluster is not None:
                session.client = distributed.Client(cluster)
            elif client is None:
                session.client = _connect(distributed, scheduler)
            client = session.client
            result.workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
            client.register_plugin(CohortWorkerPlugin(model, settings.device, threads), name=session.plugin)
            # a bad device or model stops the run here, before any case (no summary: nothing ran)
            client.submit(probe_worker, settings, pure=False).result()
        except BaseException:
            with _signals_deferred():
                session.stop()
            raise
        try:
            session.futures = {
                client.submit(
                    run_case, case, settings, key=f"isfl-cohort-{case.name}-{settings.run_id[:8]}"
                ): case
                for case in runnable
            }
            _collect(distributed, session.futures, outcomes, summary_path, case_list, progress)
        except BaseException:
            with _signals_deferred():
                session.stop()
                for case in runnable:  # a worker stopped mid-write leaves a staging file
                    if outcomes[case.name].status == "pending":
                        remove_temporaries(output_dir / case.name)
                        with contextlib.suppress(OSError):
                            (output_dir / case.name).rmdir()  # only if empty: nothing of it was written
                finish()
            raise
        session.stop()
        return finish()


class _Session:
    """The Dask side of one run: the client (ours, or the caller's), a local cluster it started, the
    plugin it registered and its tasks; :meth:`stop` undoes exactly what the run set up."""

    def __init__(self, given_client, cluster, plugin: str) -> None:
        self.client = given_client
        self.own_client = given_client is None
        self.cluster = cluster
        self.plugin = plugin
        self.futures: dict = {}

    def stop(self) -> None:
        """Cancel what is left; on a cluster that outlives the run remove the plugin (and with it each
        worker's model); close the client and the cluster this run started. Never raises."""
        client = self.client
        if client is not None:
            with contextlib.suppress(Exception):
                if self.futures:
                    client.cancel(list(self.futures))
            if self.cluster is None:
                with contextlib.suppress(Exception):
                    client.unregister_worker_plugin(self.plugin)
            if self.own_client:
                with contextlib.suppress(Exception):
                    client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def _collect(
    distributed,
    futures: dict,
    outcomes: dict[str, CaseOutcome],
    summary_path: Path,
    case_list: list[CohortCase],
    progress: bool | Callable[[CaseOutcome], None],
) -> None:
    """Gather outcomes as tasks complete; show progress; rewrite the summary now and then."""
    bar = None
    if progress is True:
        from tqdm import tqdm

        # in a batch job's log (no terminal) a line every 30 s, not every tenth of a second
        interval = 0.1 if sys.stderr.isatty() else 30.0
        bar = tqdm(
            total=len(case_list),
            unit="case",
            desc="isfl cohort",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=interval,
        )
        bar.update(len(case_list) - len(futures))  # cases failed before any task
    last_summary = time.monotonic()
    try:
        for future in distributed.as_completed(list(futures)):
            case = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # the task itself was lost (its worker died), not a bad case
                outcome = CaseOutcome(case.name, "failed", _task_error(error))
            outcomes[case.name] = outcome
            if bar is not None:
                counts = {
                    s: sum(o.status == s for o in outcomes.values()) for s in ("done", "skipped", "failed")
                }
                bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in counts.items()), refresh=False)
                bar.update(1)
                if outcome.status == "failed":
                    bar.write(f"failed {outcome.case}: {outcome.error}", file=sys.stderr)
            elif callable(progress):
                progress(outcome)
            if time.monotonic() - last_summary > SUMMARY_INTERVAL:
                write_summary(summary_path, [outcomes[c.name] for c in case_list])
                last_summary = time.monotonic()
    finally:
        if bar is not None:
            bar.close()

"""The cohort's worker side: a Dask worker plugin that holds one fusion engine per worker, and the task
that fuses (or skips) one case.

The plugin is registered once per run; each worker sets it up when it joins (its torch thread budget,
its device) and loads the model on its first case only, so tasks carry a case's file names and the
settings, never weights. A worker process fuses one case at a time (a process-wide lock, shared by
concurrent runs), which bounds its memory to one case whatever its Dask thread count; its torch threads
default to that thread count, so N workers do not oversubscribe the cores. :func:`run_case` never
raises for a bad case: it returns a ``failed`` :class:`~napari_isfl.cohort.settings.CaseOutcome` with
the one-line reason.

Imports Dask's ``distributed`` (the ``cohort`` extra) at module level; torch only inside functions.
"""

from __future__ import annotations

import datetime as _dt
import gc
import socket
import threading
import time
import uuid
from pathlib import Path

from distributed import WorkerPlugin, get_worker

from ..io import file_sha256
from .manifest import CohortCase
from .resume import (
    case_request,
    outputs_match,
    read_provenance,
    remove_temporaries,
    write_provenance,
)
from .settings import CaseOutcome, CohortSettings

__all__ = ["CohortWorkerPlugin", "error_line", "probe_worker", "run_case", "worker_device"]

#: plugins of processes that are not Dask workers (a task run in the client, tests), by plugin name
_LOCAL_PLUGINS: dict[str, CohortWorkerPlugin] = {}
#: one case at a time per process, whatever the Dask thread count and however many runs share the worker:
#: a worker's memory is bounded by one case
CASE_LOCK = threading.Lock()


def worker_device(device: str, worker_name: object = None) -> str:
    """The device a worker fuses on: ``"auto"`` and ``"cuda"`` become this worker's GPU when there are
    several (worker ``i`` of a local cluster gets ``cuda:i mod count``; a worker that sees one GPU, as
    under SLURM ``--gres=gpu:1`` or dask-cuda, uses it), ``"auto"`` becomes ``"cpu"`` without CUDA;
    other names are kept (and checked by :func:`~napari_isfl.device.select_device`)."""
    if device not in ("auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu" if device == "auto" else device
    count = torch.cuda.device_count()
    if count > 1 and isinstance(worker_name, int):
        return f"cuda:{worker_name % count}"
    return "cuda"


class CohortWorkerPlugin(WorkerPlugin):
    """One fusion engine per worker, set up when the worker joins and freed when the plugin goes.

    Args:
        model: ``"default"``, a shipped model name, or an absolute checkpoint path.
        device: the requested device (see :func:`worker_device`).
        threads: torch CPU threads; ``None``: the worker's Dask thread count.
    """

    def __init__(self, model: str, device: str, threads: int | None):
        self.model = model
        self.device = device
        self.threads = threads

    def setup(self, worker=None) -> None:
        import torch

        nthreads = worker.state.nthreads if worker is not None else 1
        self.torch_threads = int(self.threads or max(1, nthreads))
        torch.set_num_threads(self.torch_threads)
        self.worker_name = str(worker.name) if worker is not None else "local"
        self.device_name = worker_device(self.device, worker.name if worker is not None else None)
        self.engine_id = f"{self.worker_name}-{uuid.uuid4().hex[:8]}"
        self._engine = None

    def engine(self):
        """The worker's :class:`~napari_isfl.inference.FusionEngine` (models load on first use)."""
        if self._engine is None:
            from ..inference.engine import FusionEngine

            self._engine = FusionEngine(self.model, self.device_name)
        return self._engine

    def teardown(self, worker=None) -> None:
        # on a shared cluster the model must not outlive the run (GPU memory)
        self._engine = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _plugin(settings: CohortSettings) -> CohortWorkerPlugin:
    """This worker's plugin for ``settings`` (a local one outside Dask workers)."""
    try:
        worker = get_worker()
    except ValueError:  # not running in a Dask worker
        worker = None
    plugin = worker.plugins.get(settings.plugin_name) if worker is not None else None
    if plugin is None:
        plugin = _LOCAL_PLUGINS.get(settings.plugin_name)
        if plugin is None:
            plugin = CohortWorkerPlugin(settings.model, settings.device, settings.threads)
            plugin.setup(worker)
            _LOCAL_PLUGINS[settings.plugin_name] = plugin
    return plugin


def error_line(error: BaseException) -> str:
    """A failure in one line: the message's first line, with the type when it is not self-explaining."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, (ValueError, OSError)) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def probe_worker(settings: CohortSettings) -> dict:
    """Check the settings on one worker before any case runs: the device exists, and a model that is not
    ``"default"`` loads. Raises what a bad device or model raises, so a run with a typo stops at once
    rather than failing every case."""
    plugin = _plugin(settings)
    with CASE_LOCK:
        engine = plugin.engine()
        info = {"device": str(engine.device), "worker": plugin.worker_name, "threads": plugin.torch_threads}
        if settings.model != "default":
            from ..model.checkpoint import load_model

            loaded = load_model(settings.model, None, "cpu")
            info.update(model=loaded.name, spatial_dims=loaded.spatial_dims)
    return info


def _output_entry(path: Path) -> dict:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def run_case(case: CohortCase, settings: CohortSettings) -> CaseOutcome:
    """Fuse one case into ``OUTPUT_DIR/<case>/`` unless its outputs already match (then ``skipped``).

    Outputs (``fused`` and, with ``settings.stability``, ``stability``; NIfTI for NIfTI inputs) are
    written atomically together by :func:`~napari_isfl.inference.fuse_files`; ``provenance.json`` is
    written after them, as the case's commit record. A failed case leaves the folder's existing files
    as they were (apart from stale temporary files of an interrupted earlier attempt).

    Returns:
        the case's :class:`~napari_isfl.cohort.settings.CaseOutcome`; never raises for a bad case.
    """
    started = time.perf_counter()
    plugin = _plugin(settings)
    case_dir = Path(settings.output_dir) / case.name
    outcome = CaseOutcome(case.name, "failed", worker=plugin.worker_name, device=plugin.device_name)
    if case.problem:
        outcome.error = case.problem
        outcome.seconds = 0.0
        return outcome
    try:
        with CASE_LOCK:
            remove_temporaries(case_dir)  # left by a worker killed while writing this case
            engine = plugin.engine()
            outcome.device = str(engine.device)
            for path in case.inputs:
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: no such file")
            input_sha256 = [file_sha256(path) for path in case.inputs]
            parameters = settings.parameters()
            if not settings.force:
                skipped = _skip_if_done(case, case_dir, input_sha256, parameters, engine, outcome)
                if skipped is not None:
                    skipped.seconds = time.perf_counter() - started
                    return skipped
            _fuse(case, case_dir, settings, engine, input_sha256, parameters, plugin, outcome, started)
            outcome.status = "done"
    except Exception as error:  # a bad case is reported, never raised: the others go on
        outcome.status = "failed"
        outcome.error = error_line(error)
        outcome.outputs = {}
    finally:
        gc.collect()  # one case's arrays must be gone before the next case is read
    outcome.seconds = time.perf_counter() - started
    return outcome


def _skip_if_done(
    case: CohortCase,
    case_dir: Path,
    input_sha256: list[str],
    parameters: dict,
    engine,
    outcome: CaseOutcome,
) -> CaseOutcome | None:
    """The ``skipped`` outcome when the recorded request equals this one and the outputs match, else
    ``None``."""
    record = read_provenance(case_dir)
    if record is None or not isinstance(record.get("request"), dict):
        return None
    if record["request"].get("input_sha256") != input_sha256:
        return None  # inputs changed: no need to look further (nor to load a model)
    spatial_dims = record.get("spatial_dims")
    if spatial_dims not in (2, 3):
        return None
    # the same inputs have the recorded dimensionality, so the model to compare is that of those dims
    model_sha256 = engine.loaded_model(spatial_dims).sha256
    if record["request"] != case_request(input_sha256, case.modalities, model_sha256, parameters):
        return None
    if not outputs_match(case_dir, record):
        return None
    fusion = record.get("fusion", {})
    outcome.status = "skipped"
    outcome.device = str(fusion.get("device", ""))
    outcome.model = str(fusion.get("model", ""))
    outcome.model_sha256 = model_sha256
    outcome.outputs = {role: f"{case.name}/{entry['file']}" for role, entry in record["outputs"].items()}
    return outcome


def _fuse(
    case: CohortCase,
    case_dir: Path,
    settings: CohortSettings,
    engine,
    input_sha256: list[str],
    parameters: dict,
    plugin: CohortWorkerPlugin,
    outcome: CaseOutcome,
    started: float,
) -> None:
    """Fuse the case, remove a stale stability map, then write the provenance record (last)."""
    from ..inference.files import fuse_files

    suffix = case.output_suffix
    fused_path = case_dir / f"fused{suffix}"
    stability_path = case_dir / f"stability{suffix}" if settings.stability else None
    result = fuse_files(
        inputs=list(case.inputs),
        output=fused_path,
        modalities=list(case.modalities),
        stability_output=stability_path,
        resample=settings.resample,
        color=settings.color,
        overwrite=True,
        engine=engine,
        **settings.fuse_options(),
    )
    if stability_path is None:
        # a stability map of an earlier run with other settings would now describe another fusion
        for stale in (case_dir / f"stability{s}" for s in (".nii.gz", ".png", ".tif")):
            stale.unlink(missing_ok=True)
    provenance = result.provenance
    outputs = {"fused": _output_entry(fused_path)}
    if stability_path is not None:
        outputs["stability"] = _output_entry(stability_path)
    model_sha256 = str(provenance.get("model_sha256", ""))
    record = {
        "case": case.name,
        "request": case_request(input_sha256, case.modalities, model_sha256, parameters),
        "spatial_dims": int(result.fused.ndim),
        "inputs": [
            {"path": str(path), "sha256": digest, "modality": modality}
            for path, digest, modality in zip(case.inputs, input_sha256, case.modalities, strict=True)
        ],
        "outputs": outputs,
        "fusion": provenance,
        "run": {
            "source": case.source,
            "worker": plugin.worker_name,
            "host": socket.gethostname(),
            "engine": plugin.engine_id,
            "torch_threads": plugin.torch_threads,
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 3),
        },
    }
    write_provenance(case_dir, record)
    outcome.device = str(provenance.get("device", outcome.device))
    outcome.model = str(provenance.get("model", ""))
    outcome.model_sha256 = model_sha256
    outcome.outputs = {role: f"{case.name}/{entry['file']}" for role, entry in outputs.items()}

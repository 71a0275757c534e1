"""What travels between the cohort's client and its workers: the run's settings and each case's outcome.

Both are small plain dataclasses (no model weights, no arrays), pickled with every task. This module
needs neither torch nor Dask.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

__all__ = ["STATUSES", "CaseOutcome", "CohortSettings"]

#: a case's status in the summary: finished now, finished before (outputs match), failed, not finished
STATUSES = ("done", "skipped", "failed", "pending")


@dataclass(frozen=True)
class CohortSettings:
    """How every case of a cohort run is fused and where its outputs go.

    Attributes:
        output_dir: absolute path of the cohort's output folder (the same path on every worker).
        model: ``"default"``, a shipped model name, or an absolute checkpoint path.
        device: ``"auto"`` (each worker's GPU when it has one, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        threads: torch CPU threads per worker; ``None``: the worker's Dask thread count.
        stability: also write the stability map.
        stability_passes: test-time intervention passes of the stability map.
        resample: resample inputs onto the first input's grid instead of refusing other grids.
        color: re-attach a colour input's chroma to the fused luminance (PNG/TIFF inputs).
        roi_size: sliding-window size (``None`` = auto, ``"training"``, N or per-axis sizes).
        overlap: sliding-window overlap in [0, 1).
        amp: bfloat16 autocast on CUDA (ignored on CPU).
        crop_foreground: run the network on the foreground box only.
        seed: seed of the stability map's interventions.
        force: redo every case, even one whose outputs match.
        run_id: names this run's worker plugin, so concurrent runs on one cluster keep their own.
    """

    output_dir: str
    model: str = "default"
    device: str = "auto"
    threads: int | None = None
    stability: bool = False
    stability_passes: int = 8
    resample: bool = False
    color: bool = True
    roi_size: int | tuple[int, ...] | str | None = None
    overlap: float = 0.25
    amp: bool = True
    crop_foreground: bool = True
    seed: int = 0
    force: bool = False
    run_id: str = ""

    def parameters(self) -> dict:
        """The fusion parameters a case's outputs depend on (compared on resume; the model is compared
        by checksum, the device not at all)."""
        roi = (
            list(self.roi_size)
            if isinstance(self.roi_size, Sequence) and not isinstance(self.roi_size, str)
            else self.roi_size
        )
        return {
            "resample": self.resample,
            "color": self.color,
            "roi_size": roi,
            "overlap": self.overlap,
            "amp": self.amp,
            "crop_foreground": self.crop_foreground,
            "stability": self.stability,
            "stability_passes": self.stability_passes if self.stability else 0,
            "seed": self.seed,
        }

    def fuse_options(self) -> dict:
        """Keyword options of :meth:`~napari_isfl.inference.FusionEngine.fuse` for these settings."""
        return {
            "roi_size": self.roi_size,
            "overlap": self.overlap,
            "amp": self.amp,
            "crop_foreground": self.crop_foreground,
            "stability_passes": self.stability_passes,
            "seed": self.seed,
            "contributions": False,
        }

    @property
    def plugin_name(self) -> str:
        """The worker plugin's name: one per run (two runs sharing a cluster must not replace or remove
        each other's plugin) and per model, device and thread budget."""
        key = json.dumps([self.run_id, self.model, self.device, self.threads])
        return "isfl-cohort-" + hashlib.sha1(key.encode()).hexdigest()[:12]


@dataclass
class CaseOutcome:
    """What became of one case: a row of ``summary.csv``.

    Attributes:
        case: the case's name.
        status: ``done`` (fused now), ``skipped`` (outputs already match), ``failed``, or ``pending``
            (not finished: the run was interrupted).
        error: the one-line reason of a failure.
        seconds: time spent on the case in this run (fusing, or checking that it is done).
        device: the device that fused it (for ``skipped``: the one recorded).
        model: the model's name.
        model_sha256: the model's checksum.
        worker: the Dask worker that handled it.
        outputs: output role (``fused``, ``stability``) -> path relative to the cohort's output folder.
    """

    case: str
    status: str
    error: str = ""
    seconds: float | None = None
    device: str = ""
    model: str = ""
    model_sha256: str = ""
    worker: str = ""
    outputs: dict[str, str] = field(default_factory=dict)

    def row(self) -> dict[str, str]:
        """The ``summary.csv`` row."""
        values = asdict(self)
        outputs = values.pop("outputs")
        values["seconds"] = "" if self.seconds is None else f"{self.seconds:.2f}"
        values["fused"] = outputs.get("fused", "")
        values["stability"] = outputs.get("stability", "")
        return {key: str(value) for key, value in values.items()}


#: summary.csv's columns, in order
SUMMARY_COLUMNS = (
    "case",
    "status",
    "error",
    "seconds",
    "device",
    "model",
    "model_sha256",
    "worker",
    "fused",
    "stability",
)

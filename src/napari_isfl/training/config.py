"""Training configuration: dataclasses per section, read from YAML plus ``section.key=value`` overrides.

A config file (see ``configs/``) names only what differs from the defaults below; unknown keys are refused
with the list of known ones, and every section validates its values when it is built. The whole
configuration is recorded in ``config.yaml`` and inside every checkpoint (as a plain dict, see
:meth:`TrainingConfig.to_dict`), so a model says how it was trained.

Examples:
    >>> config = load_config(overrides=["optim.lr=5e-4", "model.spatial_dims=3", "data.crop_size=[32,32,32]"])
    >>> config.optim.lr, config.model.spatial_dims, config.data.crop_size
    (0.0005, 3, [32, 32, 32])
    >>> load_config(overrides=["optim.learning_rate=1"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown config key 'optim.learning_rate'; known: amp, batched_passes, ...
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..model.losses import ISFLLossWeights
from ..normalization import MODALITIES
from .step import InterventionConfig

__all__ = [
    "VAL_WINDOWS",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainingConfig",
    "load_config",
]

#: run.val_window: validation in one piece, in the default inference windows, or in training windows
VAL_WINDOWS = ("whole", "auto", "training")


@dataclass
class ModelConfig:
    """The network's constructor arguments (:class:`~napari_isfl.model.network.ISFLNet`)."""

    spatial_dims: int = 2
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    features: list[int] = field(default_factory=lambda: [32, 32, 32])
    grid_size: int = 8
    encoder: str = "shared"
    integrator: str = "cfi"
    norm: str = "batch"
    head: str = "synthesis"
    residual: float = 0.0
    saliency: bool = False
    selector_hidden: int = 0
    refiner_levels: int = 0
    refiner_hidden: int = 32
    refiner_tags: int = 0
    refiner_depth: int = 2
    refiner_passes: int = 1

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"model.spatial_dims must be 2 or 3, got {self.spatial_dims}")


@dataclass
class DataConfig:
    """What to train and validate on and how crops are drawn (see :mod:`napari_isfl.cases` for sources)."""

    root: str = "."
    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    crop_size: list[int] = field(default_factory=lambda: [128, 128])
    num_inputs: list[int] = field(default_factory=lambda: [2])
    batch_size: int = 16
    num_workers: int = 2
    foreground_prob: float = 0.9
    augment: bool = True
    gamma_range: list[float] | None = None
    val_max_cases: int | None = 64
    #: a folder of target fusions ``TASK/NAME.npy`` (float in [0, 1] on the case's full grid, as
    #: ``scripts/blend_oracle.py --save-fused`` writes them) for the ``loss.distill`` term; cases
    #: without a file train without it
    targets: str | None = None

    def __post_init__(self) -> None:
        if not self.num_inputs or min(self.num_inputs) < 2:
            raise ValueError("data.num_inputs must all be >= 2")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be positive, got {self.batch_size}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay, optional time budget and weight average."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    max_steps: int = 2000
    max_minutes: float | None = None
    grad_clip: float = 1.0
    ema_decay: float | None = None
    amp: bool = True
    batched_passes: bool = True

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.lr <= 0:
            raise ValueError("optim.max_steps and optim.lr must be positive")
        if self.ema_decay is not None and not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"optim.ema_decay must be in [0, 1), or null or 0 for off; got {self.ema_decay}")


@dataclass
class RunConfig:
    """Where and how the run goes: seed, device, output folder, checkpoint/validation/log cadence."""

    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs/isfl"
    checkpoint_every: int = 200
    val_every: int = 200
    val_window: str = "whole"
    log_every: int = 10
    threads: int | None = None
    init: str | None = None

    def __post_init__(self) -> None:
        if self.val_window not in VAL_WINDOWS:
            raise ValueError(
                f"run.val_window must be one of {', '.join(VAL_WINDOWS)}; got {self.val_window!r}"
            )


#: section name -> its dataclass
SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "loss": ISFLLossWeights,
    "interventions": InterventionConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "run": RunConfig,
}


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively: configs are written as YAML and into checkpoints."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass
class TrainingConfig:
    """The whole training configuration, one dataclass per section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: ISFLLossWeights = field(default_factory=ISFLLossWeights)
    interventions: InterventionConfig = field(default_factory=InterventionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if len(self.data.crop_size) != self.model.spatial_dims:
            raise ValueError(
                f"data.crop_size {self.data.crop_size} does not match model.spatial_dims "
                f"{self.model.spatial_dims}"
            )

    @classmethod
    def from_dict(cls, values: dict) -> TrainingConfig:
        """Build from a (partial) nested dict over the defaults; unknown keys are refused."""
        merged = _merge(cls().to_dict(), values or {})
        sections = {}
        for name, section in SECTIONS.items():
            entries = dict(merged[name])
            if section is InterventionConfig:
                entries["num_holes"] = tuple(entries["num_holes"])
            sections[name] = section(**entries)
        return cls(**sections)

    def to_dict(self) -> dict:
        """The configuration as plain nested dicts and lists (YAML- and checkpoint-safe)."""
        return {name: _plain(asdict(getattr(self, name))) for name in SECTIONS}

    def replace(self, **sections: Any) -> TrainingConfig:
        """A copy with whole sections, or ``section={"key": value}`` updates of them, replaced."""
        values = self.to_dict()
        for name, update in sections.items():
            if dataclasses.is_dataclass(update):
                update = asdict(update)
            values = _merge(values, {name: update})
        return TrainingConfig.from_dict(values)


def _merge(base: dict, update: dict, path: str = "") -> dict:
    merged = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if key not in merged:
            raise ValueError(f"unknown config key {path + key!r}; known: {', '.join(sorted(base))}")
        if isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _merge(merged[key], value, f"{path}{key}.")
        else:
            merged[key] = value
    return merged


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.2 booleans and floats. Only true/false are booleans: YAML 1.1's on/off/yes/no stay strings, so
    ``necessity_mode: off`` (in a file or as ``--set loss.necessity_mode=off``) means ``"off"``, not
    ``False``; ``5e-4`` is a float, not a string."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 floats: PyYAML (1.1) reads 5e-4 (no dot) as a string, which broke --set optim.lr=5e-4
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text: str):
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def _beside(config_path: Path, value: str) -> str:
    """``value`` as an absolute path, a relative one taken from the config file's folder."""
    target = Path(value).expanduser()
    return str(target if target.is_absolute() else (config_path.parent / target).resolve())


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainingConfig:
    """Merge a YAML file and ``section.key=value`` overrides over the defaults.

    A relative ``data.root`` is taken relative to the config file's folder, and so are relative CSV
    data sources and ``data.targets`` (overrides are taken as given, from the working directory).

    Raises:
        FileNotFoundError: the config file is missing.
        ValueError: unknown keys, malformed overrides or invalid values (the message names them).
    """
    values: dict = TrainingConfig().to_dict()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config {path}: no such file")
        values = _merge(values, _load_yaml(path.read_text()) or {})
        data = values["data"]
        data["root"] = _beside(path, data["root"])
        if data.get("targets"):
            data["targets"] = _beside(path, data["targets"])
        # CSV lists sit beside the config; the images they name are relative to data.root
        for split in ("train", "val"):
            for source in data[split]:
                if source.get("type") == "csv":
                    source["path"] = _beside(path, source["path"])
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        update: dict = {}
        cursor = update
        for key in keys[:-1]:
            cursor = cursor.setdefault(key, {})
        cursor[keys[-1]] = _load_yaml(raw)
        values = _merge(values, update)
    try:
        return TrainingConfig.from_dict(values)
    except TypeError as error:  # a section given a scalar, or the like
        raise ValueError(f"invalid config: {error}") from error

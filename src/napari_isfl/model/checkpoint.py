"""Self-describing checkpoints and the registry of shipped models.

A checkpoint is a plain dict (loadable with ``torch.load(..., weights_only=True)``)::

    format: "napari-isfl-checkpoint", format_version: 1
    architecture: "ISFLNet", arch_args: {spatial_dims, modalities, features, grid_size, encoder, norm}
    modalities: [...], normalization: {modality: {method, low, high}}
    training: {...config...}, package_version, data_hash, created, metrics: {...}
    state_dict: {...}

Loading checks every part and refuses a mismatch with a message that names the file and the fix.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..io import atomic_write
from ..normalization import DEFAULT_SPECS, IntensitySpec
from .network import ISFLNet

__all__ = [
    "CheckpointError",
    "LoadedModel",
    "available_models",
    "file_sha256",
    "load_model",
    "model_path",
    "save_checkpoint",
]

FORMAT = "napari-isfl-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).parent.parent / "weights"
#: shipped models: name -> file in ``napari_isfl/weights``
SHIPPED = {"isfl-2d": "isfl_2d.pt", "isfl-3d": "isfl_3d.pt"}
_ARCH_KEYS = (
    "spatial_dims",
    "modalities",
    "features",
    "grid_size",
    "encoder",
    "integrator",
    "act",
    "norm",
    "head",
    "residual",
)


class CheckpointError(ValueError):
    """A file that is not a usable napari-isfl checkpoint."""


@dataclass
class LoadedModel:
    """A network ready for inference, with its checkpoint's description."""

    network: ISFLNet
    name: str
    path: Path | None
    sha256: str
    normalization: dict[str, IntensitySpec]
    meta: dict = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        return self.network.spatial_dims

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.network.modalities

    @property
    def training_crop_size(self) -> list[int] | None:
        """The crop size the network was trained on (its recorded training config), or ``None``."""
        crop = self.meta.get("training", {}).get("config", {}).get("data", {}).get("crop_size")
        return [int(c) for c in crop] if crop else None


def save_checkpoint(
    path: str | os.PathLike,
    network: ISFLNet,
    normalization: dict[str, IntensitySpec] | None = None,
    training: dict | None = None,
    data_hash: str | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a self-describing checkpoint atomically (an existing file is replaced only on success)."""
    network = getattr(network, "module", network)
    specs = normalization or DEFAULT_SPECS
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": "ISFLNet",
        "arch_args": dict(network.init_args),
        "modalities": list(network.modalities),
        "normalization": {k: v.to_dict() for k, v in specs.items()},
        "training": training or {},
        "package_version": __version__,
        "data_hash": data_hash or "",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": metrics or {},
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
    }
    if extra:
        payload.update(extra)
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def available_models() -> dict[str, Path]:
    """Shipped models that are present in this installation, by name."""
    return {name: WEIGHTS_DIR / file for name, file in SHIPPED.items() if (WEIGHTS_DIR / file).is_file()}


def model_path(name: str, spatial_dims: int | None = None) -> Path:
    """Resolve ``"default"``, a shipped model name, or a checkpoint path to a file.

    Raises:
        CheckpointError: unknown name, or ``"default"`` without ``spatial_dims``.
        FileNotFoundError: a path that does not exist.
    """
    if name == "default":
        if spatial_dims not in (2, 3):
            raise CheckpointError("model 'default' needs the input's dimensionality (2 or 3) to pick a model")
        name = f"isfl-{spatial_dims}d"
    if name in SHIPPED:
        path = WEIGHTS_DIR / SHIPPED[name]
        if not path.is_file():
            raise CheckpointError(
                f"shipped model {name!r} is missing from this installation ({path}); reinstall napari-isfl "
                "or pass a checkpoint file"
            )
        return path
    path = Path(name).expanduser()
    if path.suffix in (".pt", ".pth", ".ckpt") or path.exists() or os.sep in name:
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path}: no such file")
        return path
    raise CheckpointError(
        f"unknown model {name!r}: use 'default', one of {', '.join(SHIPPED)}, or a checkpoint file path"
    )


def _read(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(
            f"{path} is not a readable napari-isfl checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'unreadable'}); pass a file written by "
            "'isfl train' or napari_isfl.save_checkpoint"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a napari-isfl checkpoint (no '{FORMAT}' marker); pass a file "
            "written by 'isfl train' or napari_isfl.save_checkpoint"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {payload.get('format_version')}, newer than this napari-isfl "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade napari-isfl"
        )
    if payload.get("architecture") != "ISFLNet":
        raise CheckpointError(
            f"{path} holds architecture {payload.get('architecture')!r}, not ISFLNet; "
            "it cannot be used for fusion"
        )
    return payload


def load_model(
    model: str | os.PathLike = "default", spatial_dims: int | None = None, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Load a shipped model by name or a checkpoint file, in evaluation mode on ``device``.

    Args:
        model: ``"default"`` (the shipped model for ``spatial_dims``), ``"isfl-2d"``, ``"isfl-3d"``, or a
            path to a checkpoint.
        spatial_dims: required for ``"default"``; when given, a checkpoint of the other
            dimensionality is refused.
        device: where the network goes.

    Raises:
        CheckpointError: corrupt file, not a checkpoint, another architecture, or weights that do not
            match the architecture the file describes.
        FileNotFoundError: the path does not exist.
    """
    name = str(model)
    path = model_path(name, spatial_dims)
    payload = _read(path)
    args = payload.get("arch_args") or {}
    missing = [k for k in ("spatial_dims", "modalities", "features") if k not in args]
    if missing:
        raise CheckpointError(f"{path}: checkpoint does not describe its architecture (missing {missing})")
    if spatial_dims is not None and args["spatial_dims"] != spatial_dims:
        raise CheckpointError(
            f"{path} is a {args['spatial_dims']}D model but the input is {spatial_dims}D; "
            f"use a {spatial_dims}D model (e.g. 'default')"
        )
    network = ISFLNet(**{k: args[k] for k in _ARCH_KEYS if k in args})
    try:
        network.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError) as error:
        first = str(error).splitlines()[0] if str(error) else "no state_dict"
        raise CheckpointError(
            f"{path}: weights do not match the ISFLNet it describes ({first}); the file is damaged or "
            "was written by an incompatible version"
        ) from error
    network.to(device).eval()
    specs = {k: IntensitySpec(**v) for k, v in (payload.get("normalization") or {}).items()}
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return LoadedModel(
        network,
        name if name in SHIPPED or name == "default" else path.name,
        path,
        file_sha256(path),
        specs or dict(DEFAULT_SPECS),
        meta,
    )

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
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..io import atomic_write, file_sha256
from ..normalization import DEFAULT_SPECS, IntensitySpec
from .network import HEADS, ISFLNet

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
SHIPPED = {"isfl-2d": "isfl_2d.pt", "isfl-3d": "isfl_3d.pt", "isfl-2d-synthesis": "isfl_2d_synthesis.pt"}
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
    "saliency",
    "selector_hidden",
    "refiner_levels",
    "refiner_hidden",
    "refiner_tags",
    "refiner_depth",
    "refiner_passes",
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
        crop = _nested(self.meta, "training", "config", "data", "crop_size")
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
        # contiguous: the file does not depend on the layout the weights were trained in
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()},
    }
    if extra:
        payload.update(extra)
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


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
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):  # a corrupt or foreign file, not a refused object
            raise CheckpointError(
                f"{path} is not a readable napari-isfl checkpoint (not a PyTorch file); pass a file "
                "written by 'isfl train' or napari_isfl.save_checkpoint"
            ) from error
        # never echo torch's hint to retry with weights_only=False: that runs whatever the file holds
        raise CheckpointError(
            f"{path} is not a napari-isfl checkpoint: it holds Python objects that safe loading "
            "(weights_only=True) refuses to run; only use checkpoints written by 'isfl train' or "
            "napari_isfl.save_checkpoint"
        ) from error
    except Exception as error:  # torch raises many types for corrupt or foreign files
        first = str(error).splitlines()[0] if str(error) else "unreadable"
        raise CheckpointError(
            f"{path} is not a readable napari-isfl checkpoint ({type(error).__name__}: {first[:200]}); "
            "pass a file written by 'isfl train' or napari_isfl.save_checkpoint"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a napari-isfl checkpoint (no '{FORMAT}' marker); pass a file "
            "written by 'isfl train' or napari_isfl.save_checkpoint"
        )
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: field format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, newer than this napari-isfl "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade napari-isfl"
        )
    if payload.get("architecture") != "ISFLNet":
        raise CheckpointError(
            f"{path} holds architecture {payload.get('architecture')!r}, not ISFLNet; "
            "it cannot be used for fusion"
        )
    _check_schema(path, payload)
    return payload


#: sane limits of the architecture fields (far above any trained model, far below a memory bomb)
MAX_CHANNELS = 1024
MAX_SCALES = 6
MAX_GRID = 64


def _nested(mapping: object, *keys: str) -> object:
    """``mapping[k1][k2]...``, or ``None`` where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _field_error(path: Path, name: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: field {name} {problem}; the file is damaged or not a napari-isfl model")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_schema(path: Path, payload: dict) -> None:
    """Check, before anything is built, every checkpoint field :func:`load_model` uses: types and ranges.

    Raises:
        CheckpointError: ``PATH: field NAME ...``, one line.
    """
    args = payload.get("arch_args")
    if not isinstance(args, dict):
        raise _field_error(path, "arch_args", f"must be a mapping, got {type(args).__name__}")
    for key in ("spatial_dims", "modalities", "features"):
        if key not in args:
            raise _field_error(
                path, f"arch_args.{key}", "is missing (the checkpoint does not describe its network)"
            )
    if args["spatial_dims"] not in (2, 3) or not _is_int(args["spatial_dims"]):
        raise _field_error(path, "arch_args.spatial_dims", f"must be 2 or 3, got {args['spatial_dims']!r}")
    modalities = args["modalities"]
    if (
        not isinstance(modalities, (list, tuple))
        or not modalities
        or not all(isinstance(m, str) and m for m in modalities)
        or len(set(modalities)) != len(modalities)
    ):
        raise _field_error(
            path, "arch_args.modalities", f"must be a list of distinct tags, got {modalities!r}"
        )
    features = args["features"]
    if (
        not isinstance(features, (list, tuple))
        or not 2 <= len(features) <= MAX_SCALES
        or not all(_is_int(f) and 1 <= f <= MAX_CHANNELS for f in features)
    ):
        raise _field_error(
            path,
            "arch_args.features",
            f"must list 2 to {MAX_SCALES} channel counts in 1..{MAX_CHANNELS}, got {features!r}",
        )
    grid = args.get("grid_size", 8)
    if not _is_int(grid) or not 1 <= grid <= MAX_GRID:
        raise _field_error(path, "arch_args.grid_size", f"must be an integer in 1..{MAX_GRID}, got {grid!r}")
    choices = {"encoder": ("shared", "per_modality"), "integrator": ("cfi", "mean"), "head": HEADS}
    for key, allowed in choices.items():
        if key in args and args[key] not in allowed:
            raise _field_error(
                path, f"arch_args.{key}", f"must be one of {', '.join(allowed)}, got {args[key]!r}"
            )
    residual = args.get("residual", 0.0)
    if not isinstance(residual, (int, float)) or isinstance(residual, bool) or not 0.0 <= residual <= 1.0:
        raise _field_error(path, "arch_args.residual", f"must be a number in [0, 1], got {residual!r}")
    if not isinstance(args.get("saliency", False), bool):
        raise _field_error(path, "arch_args.saliency", f"must be true or false, got {args['saliency']!r}")
    hidden = args.get("selector_hidden", 0)
    if not _is_int(hidden) or not 0 <= hidden <= MAX_CHANNELS:
        raise _field_error(
            path, "arch_args.selector_hidden", f"must be an integer in 0..{MAX_CHANNELS}, got {hidden!r}"
        )
    levels = args.get("refiner_levels", 0)
    if not _is_int(levels) or not 0 <= levels <= MAX_SCALES:
        raise _field_error(
            path, "arch_args.refiner_levels", f"must be an integer in 0..{MAX_SCALES}, got {levels!r}"
        )
    hidden = args.get("refiner_hidden", 32)
    if not _is_int(hidden) or not 1 <= hidden <= MAX_CHANNELS:
        raise _field_error(
            path, "arch_args.refiner_hidden", f"must be an integer in 1..{MAX_CHANNELS}, got {hidden!r}"
        )
    tags = args.get("refiner_tags", 0)
    if not _is_int(tags) or not 0 <= tags <= MAX_CHANNELS:
        raise _field_error(
            path, "arch_args.refiner_tags", f"must be an integer in 0..{MAX_CHANNELS}, got {tags!r}"
        )
    depth = args.get("refiner_depth", 2)
    if not _is_int(depth) or not 1 <= depth <= 8:
        raise _field_error(path, "arch_args.refiner_depth", f"must be an integer in 1..8, got {depth!r}")
    passes = args.get("refiner_passes", 1)
    if not _is_int(passes) or not 1 <= passes <= 8:
        raise _field_error(path, "arch_args.refiner_passes", f"must be an integer in 1..8, got {passes!r}")
    normalization = payload.get("normalization") or {}
    if not isinstance(normalization, dict):
        raise _field_error(path, "normalization", f"must be a mapping, got {type(normalization).__name__}")
    for modality, spec in normalization.items():
        if not isinstance(spec, dict) or set(spec) - {"method", "low", "high"}:
            raise _field_error(
                path, f"normalization.{modality}", f"must hold method, low and high only, got {spec!r}"
            )
        try:
            IntensitySpec(**spec)
        except (TypeError, ValueError) as error:
            raise _field_error(path, f"normalization.{modality}", f"is invalid ({error})") from error
    training = payload.get("training", {})
    if not isinstance(training, dict):
        raise _field_error(path, "training", f"must be a mapping, got {type(training).__name__}")
    crop = _nested(payload, "training", "config", "data", "crop_size")
    if crop is not None and (
        not isinstance(crop, (list, tuple)) or not all(_is_int(c) and 1 <= c <= 4096 for c in crop)
    ):
        raise _field_error(path, "training.config.data.crop_size", f"must list sizes in voxels, got {crop!r}")
    if not isinstance(payload.get("state_dict"), dict):
        raise _field_error(path, "state_dict", "is missing or not a mapping of tensors")


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
    args = payload["arch_args"]
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

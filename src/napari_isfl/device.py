"""Choosing the torch device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda[:N]"``, ``"mps"``."""

from __future__ import annotations

import torch

__all__ = ["select_device"]


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; an explicit device must exist.

    Raises:
        ValueError: an unknown device name, or a requested device that is not available.
    """
    name = str(device) if isinstance(device, torch.device) else str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from error
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} requested but CUDA is not available here; use --device cpu or auto"
            )
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found"
            )
    elif chosen.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but Apple MPS is not available here; use cpu or auto")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return chosen

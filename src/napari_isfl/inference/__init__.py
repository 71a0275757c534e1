"""Fusion of whole images and volumes: window planning, the fusion engine, and files in and out.

* :mod:`~napari_isfl.inference.windows`: sliding-window size, overlap and batching (torch-free to import);
* :mod:`~napari_isfl.inference.engine`: :class:`FusionEngine` (model + device) and :func:`fuse`;
* :mod:`~napari_isfl.inference.files`: :func:`fuse_files` (read, check or resample, fuse, write).

Names are imported from their modules on first use, so ``napari_isfl.inference.windows`` loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

_NAMES = {
    "FusionCancelled": "engine",
    "FusionEngine": "engine",
    "FusionResult": "engine",
    "fuse": "engine",
    "fuse_files": "files",
    "parse_patch_size": "windows",
    "resolve_roi_size": "windows",
    "window_plan": "windows",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)

if TYPE_CHECKING:  # pragma: no cover
    from .engine import FusionCancelled, FusionEngine, FusionResult, fuse  # noqa: F401
    from .files import fuse_files  # noqa: F401
    from .windows import parse_patch_size, resolve_roi_size, window_plan  # noqa: F401

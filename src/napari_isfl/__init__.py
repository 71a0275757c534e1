"""napari-isfl: intervention-stable fusion of co-registered medical images (2D and 3D, N modalities).

The plain API (no napari needed)::

    import napari_isfl
    result = napari_isfl.fuse([mri, pet], modalities=["mri", "pet"])   # numpy arrays in, numpy out
    result.fused, result.stability, result.contributions

From the napari console::

    napari_isfl.fuse_layers(viewer.layers["MRI"], viewer.layers["PET"], viewer=viewer)

Importing the package is cheap: torch, MONAI and napari are imported only when a function needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first use)
_LAZY = {
    "fuse": "inference",
    "FusionResult": "inference",
    "FusionCancelled": "inference",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
    "available_models": "checkpoint",
    "ISFLNet": "model",
    "read_image": "io",
    "write_image": "io",
    "fuse_files": "inference",
    "fuse_layers": "_layers",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from ._layers import fuse_layers  # noqa: F401
    from .checkpoint import available_models, load_model, save_checkpoint  # noqa: F401
    from .inference import FusionCancelled, FusionResult, fuse, fuse_files  # noqa: F401
    from .io import read_image, write_image  # noqa: F401
    from .model import ISFLNet  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

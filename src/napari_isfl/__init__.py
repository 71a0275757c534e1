"""napari-isfl: intervention-stable fusion of co-registered medical images (2D and 3D, N modalities).

The plain API (no napari needed)::

    import napari_isfl
    result = napari_isfl.fuse([mri, pet], modalities=["mri", "pet"])   # numpy arrays in, numpy out
    result.fused, result.stability, result.contributions

    engine = napari_isfl.FusionEngine("default", device="cuda")         # one model, many fusions
    for t1c, flair in cases:
        fused = engine.fuse([t1c, flair]).fused

From the napari console::

    napari_isfl.fuse_layers(viewer.layers["MRI"], viewer.layers["PET"], viewer=viewer)

Importing the package is cheap: torch, MONAI and napari are imported only when a function needs them.
The layers, and which may import which, are drawn in ``docs/DESIGN.md``: the core (this package's
modules, ``model``, ``inference``) never imports napari or Qt; ``plugin`` is the thin napari layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first use)
_LAZY = {
    "fuse": "inference.engine",
    "FusionEngine": "inference.engine",
    "FusionResult": "inference.engine",
    "FusionCancelled": "inference.engine",
    "fuse_files": "inference.files",
    "load_model": "model.checkpoint",
    "save_checkpoint": "model.checkpoint",
    "available_models": "model.checkpoint",
    "ISFLNet": "model.network",
    "read_image": "io",
    "write_image": "io",
    "fuse_layers": "plugin.layers",
    "fuse_cohort": "cohort.run",
}

__all__ = ["__version__", *_LAZY]
__getattr__, _lazy_dir = lazy_attributes(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from .cohort.run import fuse_cohort  # noqa: F401
    from .inference.engine import FusionCancelled, FusionEngine, FusionResult, fuse  # noqa: F401
    from .inference.files import fuse_files  # noqa: F401
    from .io import read_image, write_image  # noqa: F401
    from .model.checkpoint import available_models, load_model, save_checkpoint  # noqa: F401
    from .model.network import ISFLNet  # noqa: F401
    from .plugin.layers import fuse_layers  # noqa: F401

"""The ISFL network, its training interventions and losses, and self-describing checkpoints.

* :mod:`~napari_isfl.model.network`: :class:`ISFLNet` and the Causal Feature Integrator;
* :mod:`~napari_isfl.model.interventions`: complementary and shared masking, as MONAI transforms;
* :mod:`~napari_isfl.model.losses`: fidelity, invariance and necessity terms;
* :mod:`~napari_isfl.model.checkpoint`: saving, loading (``weights_only=True``) and the shipped models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

_NAMES = {
    "ISFLNet": "network",
    "CausalFeatureIntegrator": "network",
    "ISFLLoss": "losses",
    "ISFLLossWeights": "losses",
    "RandComplementaryMask": "interventions",
    "RandSharedMask": "interventions",
    "CheckpointError": "checkpoint",
    "LoadedModel": "checkpoint",
    "available_models": "checkpoint",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_attributes(__name__, _NAMES)

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import CheckpointError, LoadedModel, available_models, load_model, save_checkpoint  # noqa: F401
    from .interventions import RandComplementaryMask, RandSharedMask  # noqa: F401
    from .losses import ISFLLoss, ISFLLossWeights  # noqa: F401
    from .network import CausalFeatureIntegrator, ISFLNet  # noqa: F401

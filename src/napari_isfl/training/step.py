"""One ISFL training step: the clean input plus every intervention, and every loss term.

The training loop (``napari_isfl.trainer``) is a thin layer on :func:`training_step`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..model.interventions import RandComplementaryMask, RandSharedMask
from ..model.losses import ISFLLoss
from ..model.network import ISFLNet, modality_indices
from ..normalization import FUNCTIONAL_MODALITIES

__all__ = ["InterventionConfig", "Interventions", "training_step"]


@dataclass
class InterventionConfig:
    """Which interventions a training step runs, and their hole parameters."""

    complementary: bool = True
    shared: bool = True
    dropout: bool = True
    num_holes: tuple[int, int] = (1, 6)
    hole_size: int = 16
    box_prob: float = 0.7

    def to_dict(self) -> dict:
        return asdict(self)


class Interventions:
    """Draws the intervened copies of a batch ``(B, N, *S)``; each sample gets its own holes.

    Args:
        config: what to apply.
        seed: seed of the mask generators (``None``: unseeded).
    """

    def __init__(self, config: InterventionConfig | None = None, seed: int | None = None) -> None:
        self.config = config or InterventionConfig()
        c = self.config
        self.complementary = RandComplementaryMask(c.num_holes, c.hole_size, c.box_prob)
        self.shared = RandSharedMask(c.num_holes, c.hole_size, c.box_prob)
        self.set_random_state(seed)

    def set_random_state(self, seed: int | None) -> Interventions:
        self.complementary.set_random_state(seed)
        self.shared.set_random_state(None if seed is None else seed + 1)
        return self

    def masked(self, images: torch.Tensor) -> torch.Tensor | None:
        """``(P, B, N, *S)`` with P the number of enabled masking interventions, or ``None``."""
        passes = []
        if self.config.complementary:
            passes.append(torch.stack([self.complementary(sample) for sample in images]))
        if self.config.shared:
            passes.append(torch.stack([self.shared(sample) for sample in images]))
        return torch.stack(passes) if passes else None

    def dropped(self, images: torch.Tensor) -> torch.Tensor | None:
        """``(N, B, N, *S)``: pass ``i`` has modality ``i`` zeroed, or ``None`` when disabled."""
        if not self.config.dropout:
            return None
        num_mod = images.shape[1]
        keep = 1.0 - torch.eye(num_mod, dtype=images.dtype, device=images.device)
        view = (num_mod, 1, num_mod) + (1,) * (images.ndim - 2)
        return images.unsqueeze(0) * keep.view(view)


def _run(model: ISFLNet, images: torch.Tensor, modality: torch.Tensor) -> dict:
    return model(images, modality, return_maps=True)


def training_step(
    model: ISFLNet,
    images: torch.Tensor,
    modalities: Sequence[str] | torch.Tensor,
    criterion: ISFLLoss,
    interventions: Interventions,
    batched: bool = True,
    targets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Forward the clean batch and all its intervened copies and compute every loss term.

    Args:
        model: the network (in training mode).
        images: ``(B, N, *S)`` clean inputs in [0, 1].
        modalities: N modality tags, or a ``(B, N)`` index tensor (mixed tasks in one batch).
        criterion: the ISFL objective.
        interventions: the intervention generator (seed it for reproducible steps).
        batched: run all passes as one forward of batch ``B * (1 + P + N)`` (faster on GPU and on
            CPU for small crops); ``False`` runs them one by one (less peak memory).
        targets: ``(target fusions (B, 1, *S), has_target (B,))`` for ``loss.distill``, or None.

    Returns:
        ``loss`` (with gradient; call ``backward`` on it) and every term, detached.
    """
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the network
    batch, num_mod = images.shape[:2]
    modality = modality_indices(modalities, inner.modalities, batch, images.device)
    weights = criterion.weights
    # passes whose loss term is switched off would only cost time
    masked = interventions.masked(images) if weights.invariance > 0 else None
    dropped = (
        interventions.dropped(images) if weights.necessity > 0 and weights.necessity_mode != "off" else None
    )
    groups = [images.unsqueeze(0)] + [g for g in (masked, dropped) if g is not None]
    sizes = [g.shape[0] for g in groups]

    if batched:
        stacked = torch.cat(groups).flatten(0, 1)
        out = _run(model, stacked, modality.repeat(sum(sizes), 1))
        fused = out["fused"].unflatten(0, (sum(sizes), batch))
        gates = [g.unflatten(0, (sum(sizes), batch)) for g in out["gates"]]
    else:
        outs = [_run(model, x, modality) for g in groups for x in g]
        fused = torch.stack([o["fused"] for o in outs])
        gates = [torch.stack([o["gates"][s] for o in outs]) for s in range(len(outs[0]["gates"]))]

    clean = {"fused": fused[0], "gates": [g[0] for g in gates]}
    start = 1
    masked_maps = dropped_maps = None
    if masked is not None:
        stop = start + masked.shape[0]
        masked_maps = {"fused": fused[start:stop], "gates": [g[start:stop] for g in gates]}
        start = stop
    if dropped is not None:
        dropped_maps = {"fused": fused[start : start + num_mod]}
    is_functional = torch.tensor([m in FUNCTIONAL_MODALITIES for m in inner.modalities], device=images.device)
    return criterion(
        images, clean, masked_maps, dropped_maps, functional=is_functional[modality], targets=targets
    )

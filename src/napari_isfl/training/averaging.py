"""Exponential moving average of a network's weights, validated and exported instead of the raw weights."""

from __future__ import annotations

import copy

import torch

__all__ = ["WeightAverage"]


class WeightAverage:
    """Exponential moving average of a network's weights and normalisation statistics.

    Small crops and batches make single-step weights noisy (the validation loss of the 3D model swung by
    about 0.1 between checkpoints); the average is what gets validated and exported. The effective decay
    ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so an average started from a
    fresh or fine-tuned network follows it early on instead of remembering its initial weights.

    Args:
        network: the network being trained; the average starts as a copy of it.
        decay: the long-run weight of the old average per update, in [0, 1).
    """

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.network = copy.deepcopy(network).eval()
        self.network.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = network.state_dict()
        for name, average in self.network.state_dict().items():
            if average.is_floating_point():
                average.lerp_(current[name].to(average.dtype), 1.0 - decay)
            else:  # step counters (BatchNorm's num_batches_tracked)
                average.copy_(current[name])

    def state_dict(self) -> dict:
        return {"weights": self.network.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["weights"])
        self.updates = int(state["updates"])

"""Experiment (ABLATION, "A refiner that sees its own fusion"): ``train_refiner.py`` with feedback passes
that also see, per source, Qabf's two comparisons of each source's edges with the fusion's: the
orientation agreement |cos| of their gradients and the ratio of their magnitudes (central differences
at each refined level). It overrides one method, so its checkpoints load only through this script:

    cd scripts && python ../docs/ablation_refiner/edge_feedback_experiment.py ../../shared/data/harvard \\
        --task CT-MRI --objective Qabf=8,SSIM=6,SCD=2 --levels 3 --tags 4 --passes 2 --cosine \\
        --model ../runs/v6.pt --steps 300 --eval-every 150 --output ../runs/fb_edges_q8_scd2
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from napari_isfl.model import network  # noqa: E402

Refiner = network.BlendRefiner
_standard_maps = Refiner._feedback_maps


def _gradients(image: torch.Tensor) -> list[torch.Tensor]:
    return [torch.gradient(image, dim=dim)[0] for dim in range(2, image.ndim)]


def _feedback_maps_with_edges(self, level_image, fused_band, fused):
    source_gradients, fused_gradients = _gradients(level_image), _gradients(fused)
    dot = sum(a * b for a, b in zip(source_gradients, fused_gradients, strict=True))
    source_strength = torch.sqrt(sum(a * a for a in source_gradients) + 1e-8)
    fused_strength = torch.sqrt(sum(b * b for b in fused_gradients) + 1e-8)
    orientation = dot.abs() / (source_strength * fused_strength)
    strength = torch.minimum(source_strength, fused_strength) / torch.maximum(source_strength, fused_strength)
    edges = torch.stack([orientation, strength], dim=2)
    return torch.cat([_standard_maps(self, level_image, fused_band, fused), edges], dim=2)


Refiner.FEEDBACK += 2
Refiner._feedback_maps = _feedback_maps_with_edges
import train_refiner  # noqa: E402

if __name__ == "__main__":
    train_refiner.main()

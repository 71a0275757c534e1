"""``isfl`` with the pyramid head's coarsest level blended by the plain mean (an ablation, not an option).

The classical Laplacian-pyramid fusion averages the low-pass base; this runs any ``isfl`` command with the
shipped pyramid head doing the same (the learned weights are kept at every finer level), to measure what
the learned base weights cost and buy (docs/ABLATION.md, "2D output head"):

    python scripts/eval_mean_base.py evaluate ../shared/data/harvard/dev --method isfl --model isfl-2d \\
        --output runs/eval/v3_2d_meanbase
"""

from __future__ import annotations

import sys

import torch

import napari_isfl.model.network as network

_compose = network.ISFLNet.compose


def _compose_mean_base(self, images, weights, residual=None):
    weights = list(weights)
    weights[-1] = torch.full_like(weights[-1], 1.0 / weights[-1].shape[1])
    return _compose(self, images, weights, residual)


network.ISFLNet.compose = _compose_mean_base

if __name__ == "__main__":
    from napari_isfl.cli import main

    sys.exit(main(sys.argv[1:]))

"""``isfl`` with the pyramid head's blend weights overridden (an ablation, not an option).

Runs any ``isfl`` command (``evaluate``, ``fuse``, ...) with the shipped pyramid head's weights kept at
every level except the ``--coarse-levels`` coarsest, which are changed in one of two ways:

* ``--coarse-mean``: the plain mean, as the classical Laplacian-pyramid fusion averages its low-pass base
  (what the learned base weights cost and buy; docs/ABLATION.md, "2D output head"):

      python scripts/eval_coarse_weights.py --coarse-mean evaluate ../shared/data/harvard/dev \\
          --method isfl --model isfl-2d --output runs/eval/v3_2d_meanbase

* ``--coarse-floor INDEX=SHARE``: source ``INDEX`` (in the order of the inputs) gets at least ``SHARE`` of
  the weight, ``SHARE * onehot + (1 - SHARE) * learned`` (still a convex blend): how much of the FLAIR's
  lesion contrast a floor on its coarse weight keeps, and what it costs ("A FLAIR floor at the coarse
  levels" in docs/ABLATION.md):

      python scripts/eval_coarse_weights.py --coarse-floor 1=0.6 evaluate flair_second.csv \\
          --data-root ../shared/data --method isfl --model isfl-3d --output runs/eval/flair_floor

* ``--coverage-rule``: at every level (not only the coarse ones), where an input has no data (outside its
  coverage, :func:`napari_isfl.lesions.coverage_mask`, blurred by the level's Gaussian pyramid) its share
  goes to the inputs that have; unchanged where all or none have ("Three probes on that pair" in
  docs/ABLATION.md):

      python scripts/eval_coarse_weights.py --coverage-rule evaluate configs/volumes12_val.csv \\
          --data-root ../shared/data --method isfl --model isfl-3d --output runs/eval/coverage_rule
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import napari_isfl.model.network as network
from napari_isfl.lesions import coverage_mask
from napari_isfl.model import pyramid


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s (--coarse-mean | --coarse-floor INDEX=SHARE | --coverage-rule) [--coarse-levels N] "
        "ISFL_COMMAND ...",
    )
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--coarse-mean", action="store_true", help="the mean of the sources")
    how.add_argument("--coarse-floor", metavar="INDEX=SHARE", help="source INDEX gets at least SHARE")
    how.add_argument("--coverage-rule", action="store_true", help="no share where an input has no data")
    parser.add_argument("--coarse-levels", type=int, default=1, help="how many of the coarsest levels")
    args, isfl_argv = parser.parse_known_args(argv)
    if args.coarse_levels < 1:
        parser.error(f"--coarse-levels must be at least 1, got {args.coarse_levels}")
    index, share = 0, 0.0
    if args.coarse_floor:
        try:
            index_text, share_text = args.coarse_floor.split("=")
            index, share = int(index_text), float(share_text)
        except ValueError:
            parser.error(f"--coarse-floor takes INDEX=SHARE (e.g. 1=0.6), got {args.coarse_floor!r}")
        if not 0.0 <= share <= 1.0:
            parser.error(f"--coarse-floor's share must lie in [0, 1], got {share}")

    compose = network.ISFLNet.compose

    def covered_weights(images: torch.Tensor, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each level's weights times each input's coverage at that level, renormalised; where no input
        covers a voxel every input counts as covering it (the learned weights stay)."""
        masks = np.stack([coverage_mask(image) for image in images[0].float().cpu().numpy()])
        reach = pyramid.gaussian_pyramid(torch.from_numpy(masks[None].astype(np.float32)), len(weights))
        covered = []
        for learned, level_reach in zip(weights, reach, strict=True):
            level_reach = level_reach.to(learned.device)
            level_reach = level_reach + (1.0 - level_reach.amax(dim=1, keepdim=True))
            kept = learned * level_reach
            covered.append(kept / kept.sum(dim=1, keepdim=True).clamp_min(1e-6))
        return covered

    def compose_overridden(self, images, weights, residual=None):
        weights = list(weights)
        if args.coverage_rule:
            return compose(self, images, covered_weights(images, weights), residual)
        for level in range(1, min(args.coarse_levels, len(weights)) + 1):
            learned = weights[-level]
            if args.coarse_mean:
                weights[-level] = torch.full_like(learned, 1.0 / learned.shape[1])
            else:
                if index >= learned.shape[1]:
                    sources = learned.shape[1]
                    raise SystemExit(f"--coarse-floor names source {index}, but a case has {sources} sources")
                onehot = torch.zeros_like(learned)
                onehot[:, index] = 1.0
                weights[-level] = share * onehot + (1.0 - share) * learned
        return compose(self, images, weights, residual)

    network.ISFLNet.compose = compose_overridden
    from napari_isfl.cli import main as isfl_main

    return isfl_main(isfl_argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

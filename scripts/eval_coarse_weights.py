"""``isfl`` with the pyramid head's coarsest blend weights overridden (an ablation, not an option).

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
"""

from __future__ import annotations

import argparse
import sys

import torch

import napari_isfl.model.network as network


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s (--coarse-mean | --coarse-floor INDEX=SHARE) [--coarse-levels N] ISFL_COMMAND ...",
    )
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--coarse-mean", action="store_true", help="the mean of the sources")
    how.add_argument("--coarse-floor", metavar="INDEX=SHARE", help="source INDEX gets at least SHARE")
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

    def compose_overridden(self, images, weights, residual=None):
        weights = list(weights)
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

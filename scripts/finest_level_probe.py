"""Inference-time probes of a refined 2D model's blend weights (no training), scored as ``isfl evaluate``.

Two questions about the Qabf gap between ``isfl-2d`` and guided-filter fusion (GFF):

* ``--sharpen K0,K1,...``: are the refined weights too soft? Level ``l``'s weights become
  ``w ** K_l`` renormalised over the sources (the softmax of ``K_l`` times the logits; ``K > 1``
  sharpens toward a per-pixel selection, ``K < 1`` softens toward the mean).
* ``--gff-detail A0,A1,...``: are GFF's detail weights (its saliency selection refined by the guided
  filter, ``r 7, eps 1e-6``; :func:`napari_isfl.evaluation.baselines.fuse_gff`) what the finest levels
  lack? Level ``l``'s weights become ``A_l * GFF + (1 - A_l) * refined`` (GFF's full-resolution map
  area-averaged to coarser levels).

* ``--detail-gain P0,P1,...``: does the convex blend attenuate edges that GFF keeps? Level ``l``'s
  weights become ``w / max_n(w) ** P_l``: at ``P = 1`` the leading source's band passes at full
  strength and every other source's at ``w_n / w_max`` (each source's band scaled by at most 1, so
  the fused band holds only the sources' own detail, but the weights no longer sum to 1). Use it on
  detail levels only: on the coarsest (base) level it would brighten the image.

The first two keep the output a convex per-scale blend of the sources.

    python scripts/finest_level_probe.py ../shared/data/harvard/dev --sharpen 2,1,1 --output /tmp/sharpen
    python scripts/quality_bars.py /tmp/sharpen/metrics.csv --dims 2 \
        --baselines docs/models/eval_2d/metrics.csv
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_isfl.evaluation.baselines import gff_refined_weights, gff_selection
from napari_isfl.evaluation.evaluate import evaluate, load_cases, write_tables
from napari_isfl.model.checkpoint import load_model


def gff_detail_weights(sources: np.ndarray) -> np.ndarray:
    """GFF's detail-layer weights ``(N, *spatial)`` for sources ``(N, *spatial)`` in [0, 1], as
    :func:`~napari_isfl.evaluation.baselines.fuse_gff` computes them (its defaults: r 7, eps 1e-6)."""
    return gff_refined_weights(sources, gff_selection(sources), 7, 1e-6)


class ProbedRefiner(nn.Module):
    """The model's refiner, with its output weights sharpened and/or mixed with GFF's, level by level."""

    def __init__(
        self,
        refiner: nn.Module,
        sharpen: Sequence[float],
        gff_share: Sequence[float],
        detail_gain: Sequence[float] = (),
    ) -> None:
        super().__init__()
        self.refiner, self.sharpen, self.gff_share = refiner, list(sharpen), list(gff_share)
        self.detail_gain = list(detail_gain)

    def forward(
        self, images: torch.Tensor, weights: Sequence[torch.Tensor], modality=None
    ) -> list[torch.Tensor]:
        refined = [w.float() for w in self.refiner(images, weights, modality)]
        for level, power in enumerate(self.sharpen):
            refined[level] = torch.softmax(power * torch.log(refined[level].clamp_min(1e-6)), dim=1)
        if any(self.gff_share):
            gff = torch.from_numpy(np.stack([gff_detail_weights(b.double().numpy()) for b in images.cpu()]))
            for level, share in enumerate(self.gff_share):
                target = F.interpolate(gff.float(), size=refined[level].shape[2:], mode="area")
                refined[level] = share * target.to(refined[level].device) + (1 - share) * refined[level]
        if len(self.detail_gain) >= len(refined):
            raise ValueError(
                f"--detail-gain has {len(self.detail_gain)} levels for a {len(refined)}-level pyramid: "
                "give one per detail level at most (the coarsest, base level keeps convex weights)"
            )
        for level, power in enumerate(self.detail_gain):
            leading = refined[level].amax(dim=1, keepdim=True).clamp_min(1e-6)
            refined[level] = refined[level] / leading**power
        return [r.to(w.dtype) for r, w in zip(refined, weights, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="Harvard-style folder (task/modality/*.png) or a case CSV")
    parser.add_argument("--model", default="isfl-2d", help="a 2D model with a refiner (name or checkpoint)")
    parser.add_argument("--sharpen", default="", help="power per level, finest first: 2,1,1")
    parser.add_argument("--gff-detail", default="", help="GFF's detail-weight share per level, finest first")
    parser.add_argument("--detail-gain", default="", help="gain power per level, finest first: 1,1")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    loaded = load_model(args.model, 2)
    network = loaded.network
    if network.refiner is None:
        raise SystemExit(f"{args.model} has no refiner (model.refiner_levels): nothing to probe")
    sharpen = [float(k) for k in args.sharpen.split(",")] if args.sharpen else []
    gff_share = [float(a) for a in args.gff_detail.split(",")] if args.gff_detail else []
    detail_gain = [float(p) for p in args.detail_gain.split(",")] if args.detail_gain else []
    network.refiner = ProbedRefiner(network.refiner, sharpen, gff_share, detail_gain)
    rows = evaluate(load_cases(args.data), methods=("isfl",), model=loaded)
    title = f"{args.model}, sharpen {sharpen}, GFF detail {gff_share}, detail gain {detail_gain}"
    print(write_tables(rows, args.output, title=title))


if __name__ == "__main__":
    main()

"""A pyramid-head model with a fixed band-saliency prior added, to see what the cue does before training.

Copies ``MODEL`` into the same network with ``saliency=True`` and sets each level's saliency filter to
``TAP`` on its centre tap (0 elsewhere): every level's blend logits then get ``TAP * log(local band
energy)`` of each source (``napari_isfl.model.pyramid.band_saliency``), i.e. a lean toward the source
with the stronger detail at that scale. Score the result with ``isfl evaluate``:

    python scripts/saliency_prior.py isfl-2d --taps 1,1,1 --output /tmp/prior.pt
    isfl evaluate ../shared/data/harvard/dev --method isfl --model /tmp/prior.pt --output /tmp/prior
"""

from __future__ import annotations

import argparse

import torch

from napari_isfl.model.checkpoint import load_model, save_checkpoint
from napari_isfl.model.network import ISFLNet


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a pyramid-head model: shipped name or checkpoint path")
    parser.add_argument("--taps", required=True, help="centre tap per pyramid level, finest first: 1,1,0")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    loaded = load_model(args.model)
    network = ISFLNet(**(loaded.network.init_args | {"saliency": True}))
    network.load_state_dict(loaded.network.state_dict(), strict=False)
    taps = [float(t) for t in args.taps.split(",")]
    if len(taps) != len(network.saliency_filters):
        raise SystemExit(f"--taps needs {len(network.saliency_filters)} values, one per pyramid level")
    with torch.no_grad():
        for saliency_filter, tap in zip(network.saliency_filters, taps, strict=True):
            saliency_filter.conv.weight.zero_()
            saliency_filter.conv.weight[(0, 0) + (1,) * network.spatial_dims] = tap
    training = loaded.meta.get("training", {}) | {"saliency_prior": taps, "from": args.model}
    save_checkpoint(args.output, network.eval(), loaded.normalization, training=training)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

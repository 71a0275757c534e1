"""Where does the blend oracle's edge over the network sit: in which pyramid level, and how sharp?

For the first ``--limit`` cases of a task, the oracle of ``blend_oracle.py`` (weights started from the
model's) is found, then fusions are scored that take the oracle's weights at some levels and the
model's at the others, and the oracle's weights with their logits blurred by a Gaussian of ``sigma``
pixels. Scored as ``isfl evaluate`` scores (8-bit). With ``--fit-steps N`` the model is also trained,
all its weights, on each image alone toward that image's oracle fusion (L1 plus L1 of the detail bands,
as ``loss.distill`` and ``loss.distill_detail``): can the network express the oracle's weights at all?

    python scripts/oracle_anatomy.py ../shared/data/harvard/dev --task CT-MRI \
        --objective VIF=1,Qabf=4,SSIM=6,SCD=1 --limit 12
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from blend_frontier import score, task_cases
from blend_oracle import LEVELS, blend_with, initial_logits, optimise_logits
from scipy import ndimage

from napari_isfl.evaluation.metrics import to_uint8_scale
from napari_isfl.model.checkpoint import load_model
from napari_isfl.model.losses import detail_l1
from napari_isfl.normalization import FUNCTIONAL_MODALITIES

SIGMAS = (0.7, 1.5, 3.0)


def variants(oracle: list[torch.Tensor], model: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Named per-level logits: the model's, the oracle's, each oracle level alone, and blurred oracles."""
    out = {"model": model, "oracle": oracle}
    for level in range(LEVELS):
        out[f"oracle at level {level} only"] = [
            o if i == level else m for i, (o, m) in enumerate(zip(oracle, model, strict=True))
        ]
    out["model at level 0, oracle above"] = [model[0], *oracle[1:]]
    for sigma in SIGMAS:
        blur = (0, 0, sigma, sigma)
        out[f"oracle, logits blurred {sigma} px"] = [
            torch.as_tensor(ndimage.gaussian_filter(o.numpy(), blur)) for o in oracle
        ]
    return out


def fit_model(
    normalised: np.ndarray, modalities: list[str], target: np.ndarray, model: str, steps: int
) -> np.ndarray:
    """The model's fusion after ``steps`` Adam steps (lr 1e-3) on this one image toward ``target``."""
    network = load_model(model, spatial_dims=2).network.train()
    images = torch.as_tensor(normalised, dtype=torch.float32)[None]
    wanted = torch.as_tensor(target)[None, None]
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    for _ in range(steps):
        difference = network(images, modalities) - wanted
        loss = 100 * difference.abs().mean() + 300 * detail_l1(difference, LEVELS)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return network.eval()(images, modalities)[0, 0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data")
    parser.add_argument("--task", default="CT-MRI")
    parser.add_argument("--objective", default="VIF=1,Qabf=4,SSIM=6,SCD=1")
    parser.add_argument("--model", default="isfl-2d")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--fit-steps", type=int, default=0, help="also fit the model to each oracle fusion")
    args = parser.parse_args()
    objective = {key: float(value) for key, value in (item.split("=") for item in args.objective.split(","))}
    torch.set_num_threads(1)
    rows: dict[str, list[dict]] = {}
    for _, normalised, modalities, second in task_cases(args.data, args.task, args.limit):
        model = initial_logits(normalised, modalities, args.model)
        oracle = optimise_logits(normalised, modalities, second, objective, args.model, args.steps, args.lr)
        sources = [to_uint8_scale(s) for s in normalised]
        functional = modalities[second] in FUNCTIONAL_MODALITIES
        for name, logits in variants(oracle, model).items():
            rows.setdefault(name, []).append(
                score(blend_with(normalised, logits), sources, second, functional)
            )
        if args.fit_steps:
            fitted = fit_model(
                normalised, modalities, blend_with(normalised, oracle), args.model, args.fit_steps
            )
            rows.setdefault(f"model fitted to this oracle fusion, {args.fit_steps} steps", []).append(
                score(fitted, sources, second, functional)
            )
    keys = list(next(iter(rows.values()))[0])
    print("| weights |", " | ".join(keys), "|")
    print("|---|" + "---|" * len(keys))
    for name, scored in rows.items():
        print(f"| {name} |", " | ".join(f"{np.nanmean([r[k] for r in scored]):.3f}" for k in keys), "|")


if __name__ == "__main__":
    main()

"""Where does the blend oracle's edge over the network sit: in which pyramid level, and how sharp?

For the first ``--limit`` cases of a task, the oracle of ``blend_oracle.py`` (weights started from the
model's) is found, then fusions are scored that take the oracle's weights at some levels and the
model's at the others, and the oracle's weights with their logits blurred by a Gaussian of ``sigma``
pixels, and the model's weights with the finest levels taken by max-abs selection of the bands. Scored
as ``isfl evaluate`` scores (8-bit). With ``--fit-steps N`` the model is also trained, all its weights, on
each image alone toward that image's oracle fusion (``--fit-to fusion``: L1 plus L1 of the detail bands,
as ``loss.distill`` and ``loss.distill_detail``) or toward the oracle's weights themselves (``--fit-to
weights``: cross-entropy per level): can the network express the oracle's weights at all? ``--figure``
draws the first case's bands and weights, the model's and the oracle's, level by level.

    python scripts/oracle_anatomy.py ../shared/data/harvard/dev --task CT-MRI \
        --objective VIF=1,Qabf=4,SSIM=6,SCD=1 --limit 12
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from blend_frontier import score, task_cases
from blend_oracle import LEVELS, blend_with, initial_logits, optimise_logits, weight_divergence
from scipy import ndimage

from napari_isfl.evaluation.metrics import to_uint8_scale
from napari_isfl.model import pyramid
from napari_isfl.model.checkpoint import load_model
from napari_isfl.model.losses import detail_l1
from napari_isfl.normalization import FUNCTIONAL_MODALITIES

SIGMAS = (0.7, 1.5, 3.0)


def max_abs_logits(bands: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-level logits that select, per pixel, the source with the largest band magnitude."""
    return [
        torch.log(F.one_hot(b.abs().argmax(1), b.shape[1]).movedim(-1, 1).float().clamp_min(1e-4))
        for b in bands
    ]


def variants(
    oracle: list[torch.Tensor], model: list[torch.Tensor], max_abs: list[torch.Tensor]
) -> dict[str, list[torch.Tensor]]:
    """Named per-level logits: the model's, the oracle's, each oracle level alone, blurred oracles, and
    the model's with max-abs selection at the finest level(s)."""
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
    out["model, max-abs at level 0"] = [max_abs[0], *model[1:]]
    out["model, max-abs at levels 0-1"] = [*max_abs[:2], *model[2:]]
    return out


def weight_errors(weights: list[torch.Tensor], wanted: list[torch.Tensor]) -> list[float]:
    """Mean |weight - wanted weight| per level."""
    return [float((w - o).abs().mean()) for w, o in zip(weights, wanted, strict=True)]


def fit_model(
    normalised: np.ndarray, modalities: list[str], oracle: list[torch.Tensor], model: str, steps: int, to: str
) -> tuple[np.ndarray, list[float]]:
    """The model's fusion after ``steps`` Adam steps (lr 1e-3) on this one image toward the oracle's
    fusion (``to="fusion"``) or weights (``"weights"``), and its mean |weight - oracle weight| per level."""
    network = load_model(model, spatial_dims=2).network.train()
    images = torch.as_tensor(normalised, dtype=torch.float32)[None]
    wanted = [torch.softmax(t, dim=1) for t in oracle]
    target = pyramid.blend(images, wanted).clamp(0, 1).detach()
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    for _ in range(steps):
        if to == "weights":
            weights = network.blend_maps(images, modalities)["weights"]
            loss = weight_divergence(weights, wanted)
        else:
            difference = network(images, modalities) - target
            loss = 100 * difference.abs().mean() + 300 * detail_l1(difference, LEVELS)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    network.eval()
    with torch.no_grad():
        weights = network.blend_maps(images, modalities)["weights"]
        fused = pyramid.blend(images, weights)[0, 0].clamp(0, 1).numpy()
    return fused, weight_errors(weights, wanted)


def figure(bands: list[torch.Tensor], modalities: list[str], model, oracle, path: str) -> None:
    """Bands of both sources and the first source's weight (model, oracle, difference) per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(LEVELS, 5, figsize=(15, 3 * LEVELS))
    for level, row in enumerate(axes):
        w_model, w_oracle = (torch.softmax(t[level], dim=1)[0, 0] for t in (model, oracle))
        panels = [
            (bands[level][0, 0], "gray", None, f"{modalities[0]} band {level}"),
            (bands[level][0, 1], "gray", None, f"{modalities[1]} band {level}"),
            (w_model, "viridis", (0, 1), f"model: {modalities[0]} weight"),
            (w_oracle, "viridis", (0, 1), f"oracle: {modalities[0]} weight"),
            (w_oracle - w_model, "bwr", (-0.5, 0.5), "oracle - model"),
        ]
        for ax, (image, cmap, limits, title) in zip(row, panels, strict=True):
            ax.imshow(image.numpy(), cmap=cmap, **({"vmin": limits[0], "vmax": limits[1]} if limits else {}))
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=52)
    plt.close(fig)


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
    parser.add_argument("--fit-steps", type=int, default=0, help="also fit the model to each oracle")
    parser.add_argument("--fit-to", choices=("fusion", "weights"), default="fusion")
    parser.add_argument("--figure", help="PNG of the first case's bands and weights")
    args = parser.parse_args()
    objective = {key: float(value) for key, value in (item.split("=") for item in args.objective.split(","))}
    torch.set_num_threads(1)
    rows: dict[str, list[dict]] = {}
    for number, (_, normalised, modalities, second) in enumerate(
        task_cases(args.data, args.task, args.limit)
    ):
        model = initial_logits(normalised, modalities, args.model)
        oracle = optimise_logits(normalised, modalities, second, objective, args.model, args.steps, args.lr)
        bands = pyramid.laplacian_pyramid(torch.as_tensor(normalised, dtype=torch.float32)[None], LEVELS)
        if args.figure and number == 0:
            figure(bands, modalities, model, oracle, args.figure)
        sources = [to_uint8_scale(s) for s in normalised]
        functional = modalities[second] in FUNCTIONAL_MODALITIES
        for name, logits in variants(oracle, model, max_abs_logits(bands)).items():
            rows.setdefault(name, []).append(
                score(blend_with(normalised, logits), sources, second, functional)
            )
        if args.fit_steps:
            fitted, errors = fit_model(
                normalised, modalities, oracle, args.model, args.fit_steps, args.fit_to
            )
            rows.setdefault(
                f"model fitted to this oracle's {args.fit_to}, {args.fit_steps} steps", []
            ).append(score(fitted, sources, second, functional))
            before = weight_errors(
                [torch.softmax(t, dim=1) for t in model], [torch.softmax(t, dim=1) for t in oracle]
            )
            print(
                "mean |weight - oracle weight| per level, model:",
                np.round(before, 3),
                "fitted:",
                np.round(errors, 3),
            )
    keys = list(next(iter(rows.values()))[0])
    print("| weights |", " | ".join(keys), "|")
    print("|---|" + "---|" * len(keys))
    for name, scored in rows.items():
        print(f"| {name} |", " | ".join(f"{np.nanmean([r[k] for r in scored]):.3f}" for k in keys), "|")


if __name__ == "__main__":
    main()

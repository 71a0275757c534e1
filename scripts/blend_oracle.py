"""How far can *any* per-pixel, per-scale blend of the sources go toward the 2D quality bars?

The pyramid head's output is ``collapse(sum_i w_i^s L_i^s)`` (``model.pyramid.blend``, three levels as
in ``isfl-2d``). A network can only choose the weights ``w``; this script chooses them freely for each
image, by gradient ascent on differentiable re-implementations of the bars' metrics (VIF, Qabf, SSIM,
SCD and, for PET/SPECT, the functional correlation) computed on that very image. That is an upper
bound on what any weight-predicting network of this output family can reach on the pairs (it sees the
metrics of the image it fuses), so a bar this oracle cannot meet is a bar no such network will meet.
The metrics are ``napari_isfl.model.metric_losses``, which the tests hold equal to the evaluation's.
Each oracle fusion is then scored with ``isfl evaluate``'s own metrics (quantised to 8 bits), not the
re-implementations.

    python scripts/blend_oracle.py ../shared/data/harvard/dev --task SPECT-MRI \
        --objective VIF=1,Qabf=1,SSIM=1,SCD=1,corr_functional=1 --output /tmp/oracle_spect

The weights start from the shipped model's (``--init isfl-2d``) or from equal shares (``--init mean``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from blend_frontier import KEYS, score, task_cases, write_rows
from scipy import ndimage

from napari_isfl.evaluation.metrics import to_uint8_scale
from napari_isfl.model import metric_losses, pyramid
from napari_isfl.model.checkpoint import load_model
from napari_isfl.normalization import FUNCTIONAL_MODALITIES

LEVELS = 3


def surrogate_metrics(
    fused: torch.Tensor, sources: list[torch.Tensor], functional: int | None, mask: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The bars' metrics of ``fused`` ``(1, 1, H, W)`` on the 0..255 scale, differentiable."""
    values = {
        "SCD": metric_losses.scd(fused, sources)[0],
        "VIF": sum(metric_losses.vif(fused, source)[0] for source in sources),
        "Qabf": metric_losses.qabf(fused, sources)[0],
        "SSIM": sum(metric_losses.ssim(fused, source)[0] for source in sources),
    }
    if functional is not None:
        inside = fused[mask][None], sources[functional][mask][None]
        values["corr_functional"] = metric_losses.pearson(*inside)[0]
    return values


def functional_mask(functional: np.ndarray, anatomical: np.ndarray) -> np.ndarray:
    """``functional_fidelity``'s default mask (5 % of each image's range, holes filled)."""
    region = np.zeros(functional.shape, dtype=bool)
    for array in (functional, anatomical):
        region |= array > array.min() + 0.05 * (array.max() - array.min())
    return ndimage.binary_fill_holes(region)


def initial_logits(normalised: np.ndarray, modalities: list[str], init: str) -> list[torch.Tensor]:
    images = torch.as_tensor(normalised, dtype=torch.float32)[None]
    if init == "mean":
        return [torch.zeros_like(band) for band in pyramid.laplacian_pyramid(images, LEVELS)]
    network = load_model(init, spatial_dims=2).network
    with torch.no_grad():
        weights = network.blend_maps(images, modalities)["weights"]
    return [torch.log(w.clamp_min(1e-4)) for w in weights]


def optimise_logits(
    normalised: np.ndarray,
    modalities: list[str],
    second: int,
    objective: dict[str, float],
    init: str,
    steps: int,
    lr: float,
) -> list[torch.Tensor]:
    """The oracle's per-level weight logits ``(1, 2, *spatial_s)`` maximising ``objective`` on this image."""
    images = torch.as_tensor(normalised, dtype=torch.float32)[None]
    sources = [images[:, i : i + 1] * 255 for i in range(2)]
    functional = second if modalities[second] in FUNCTIONAL_MODALITIES else None
    mask = None
    if functional is not None:
        mask = torch.as_tensor(functional_mask(normalised[second], normalised[1 - second]))[None, None]
    logits = [t.clone().requires_grad_(True) for t in initial_logits(normalised, modalities, init)]
    optimiser = torch.optim.Adam(logits, lr=lr)
    for _ in range(steps):
        fused = pyramid.blend(images, [torch.softmax(t, dim=1) for t in logits]).clamp(0, 1) * 255
        values = surrogate_metrics(fused, sources, functional, mask)
        loss = -sum(weight * values[key] for key, weight in objective.items() if key in values)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return [t.detach() for t in logits]


def weight_divergence(weights: list[torch.Tensor], wanted: list[torch.Tensor]) -> torch.Tensor:
    """Mean KL divergence of per-level blend ``weights`` from ``wanted`` ones (0 when they match), summed
    over the levels given: the loss that fits a network's weights to the oracle's."""
    return sum(
        (target * (torch.log(target.clamp_min(1e-6)) - torch.log(w.clamp_min(1e-6)))).sum(1).mean()
        for w, target in zip(weights, wanted, strict=True)
    )


def blend_with(normalised: np.ndarray, logits: list[torch.Tensor]) -> np.ndarray:
    """The [0, 1] fusion of ``normalised`` ``(2, H, W)`` with per-level weight ``logits``."""
    images = torch.as_tensor(normalised, dtype=torch.float32)[None]
    with torch.no_grad():
        fused = pyramid.blend(images, [torch.softmax(t, dim=1) for t in logits])
    return fused[0, 0].clamp(0, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="Harvard-style folder (TASK/MODALITY/NAME.png)")
    parser.add_argument("--task", default="SPECT-MRI")
    parser.add_argument("--output", required=True, type=Path, help="folder for per_case.csv")
    parser.add_argument(
        "--objective",
        default="VIF=1,Qabf=1,SSIM=1,SCD=1,corr_functional=1",
        help="weights of the metrics the oracle maximises, KEY=WEIGHT,...",
    )
    parser.add_argument(
        "--init", default="isfl-2d", help="'mean' or a 2D model whose weights start the search"
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--limit", type=int, default=0, help="only the first N cases (0: all)")
    parser.add_argument(
        "--save-fused",
        action="store_true",
        help="also keep every oracle fusion as OUTPUT/fused/CASE.npy (float32 in [0, 1]), e.g. as targets",
    )
    parser.add_argument(
        "--save-weights",
        action="store_true",
        help="also keep the oracle's blend weights as OUTPUT/weights/CASE.npz (level0, level1, ...: "
        "float16 (2, *spatial) each), e.g. as a refiner's targets (train_refiner.py --targets)",
    )
    args = parser.parse_args()
    objective = {key: float(value) for key, value in (item.split("=") for item in args.objective.split(","))}
    if unknown := set(objective) - set(KEYS):
        parser.error(f"--objective: unknown metrics {sorted(unknown)}; choose from {KEYS}")
    torch.set_num_threads(1)
    args.output.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, (name, normalised, modalities, second) in enumerate(
        task_cases(args.data, args.task, args.limit)
    ):
        logits = optimise_logits(normalised, modalities, second, objective, args.init, args.steps, args.lr)
        fused = blend_with(normalised, logits)
        if args.save_fused:
            (args.output / "fused").mkdir(exist_ok=True)
            np.save(args.output / "fused" / f"{Path(name).stem}.npy", fused.astype(np.float32))
        if args.save_weights:
            (args.output / "weights").mkdir(exist_ok=True)
            levels = {
                f"level{i}": torch.softmax(t, dim=1)[0].numpy().astype(np.float16)
                for i, t in enumerate(logits)
            }
            np.savez_compressed(args.output / "weights" / f"{Path(name).stem}.npz", **levels)
        sources = [to_uint8_scale(s) for s in normalised]
        functional = modalities[second] in FUNCTIONAL_MODALITIES
        rows.append({"case": name} | score(fused, sources, second, functional))
        print(f"\r{number + 1}", end="", flush=True)
    print()
    write_rows(args.output / "per_case.csv", rows)
    means = {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0] if key != "case"}
    print(
        args.task, args.objective, f"init {args.init}:", "  ".join(f"{k} {v:.3f}" for k, v in means.items())
    )


if __name__ == "__main__":
    main()

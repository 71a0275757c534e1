"""Train the full-resolution blend refiner (``model.refiner_levels``) of a frozen 2D model.

The blend oracle's edge over the network sits in pixel-sharp weights at the two finest levels
(``oracle_anatomy.py``), and the network cannot even memorise them. This stage keeps a 2D model frozen
and grafts a :class:`napari_isfl.model.network.BlendRefiner` onto its pyramid head: at each of the finest
``--levels`` levels a small convolutional net sees every source's own band there (and its magnitude,
the level image's gradient magnitude, the level image and the model's weight logit, with their mean and
maximum over the sources) and corrects the weight logits. The output stays a convex per-scale blend of
the sources. It is trained on whole images of the **train** split with the metrics' differentiable
surrogates (``blend_oracle.surrogate_metrics``, weighted as ``--objective``; the functional correlation
applies to PET/SPECT pairs only) and scored, as ``isfl evaluate`` scores, on the **dev** split every
``--eval-every`` steps (scored only: the last step is kept). Writes ``OUTPUT/model.pt`` (the whole
network, loadable with ``--model``), ``log.csv`` and ``dev_per_case.csv``.

    python scripts/train_refiner.py ../shared/data/harvard --task CT-MRI,PET-MRI,SPECT-MRI \
        --objective VIF=2,Qabf=4.5,SSIM=6,SCD=1,corr_functional=2.5 --steps 1200 --output runs/refiner

``--targets TASK=DIR`` (repeatable) adds, with weight ``--distill``, the KL divergence of the refined
weights from the blend oracle's weights for that task's train pairs (``blend_oracle.py --save-weights``
on the **train** split: ``DIR/NAME.npz``), at every refined level: a dense, per-pixel target where the
metric terms give a weak one.

``--tags E`` gives the refiner an E-channel embedding of every source's modality tag, so one refiner
learns a different choice per combination of modalities (per-task refiners beat one tag-blind refiner
for all tasks).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from blend_frontier import KEYS, score, task_cases, write_rows
from blend_oracle import functional_mask, surrogate_metrics, weight_divergence

from napari_isfl.evaluation.metrics import to_uint8_scale
from napari_isfl.model import pyramid
from napari_isfl.model.checkpoint import load_model, save_checkpoint
from napari_isfl.model.network import BlendRefiner, ISFLNet, modality_indices
from napari_isfl.normalization import FUNCTIONAL_MODALITIES


class Case:
    """One pair: normalised sources ``(1, 2, H, W)``, the frozen model's per-level weights, the functional
    mask (PET/SPECT pairs) and the 8-bit sources ``isfl evaluate`` scores against."""

    def __init__(self, name: str, normalised: np.ndarray, modalities: list[str], second: int, model) -> None:
        self.name, self.second, self.modalities = name, second, modalities
        self.tags = modality_indices(modalities, model.modalities, 1, torch.device("cpu"))
        self.images = torch.as_tensor(normalised, dtype=torch.float32)[None]
        with torch.no_grad():
            weights = model.blend_maps(self.images, modalities)["weights"]
        self.weights = [w.detach() for w in weights]
        self.functional = modalities[second] in FUNCTIONAL_MODALITIES
        self.mask = (
            torch.as_tensor(functional_mask(normalised[second], normalised[1 - second]))[None, None]
            if self.functional
            else None
        )
        self.sources = [to_uint8_scale(s) for s in normalised]
        self.targets: list[torch.Tensor] | None = None  # the oracle's per-level weights, if given

    def load_targets(self, folder: Path) -> bool:
        """Read this case's oracle weights from ``folder/NAME.npz``; False when it has none."""
        path = folder / f"{Path(self.name).stem}.npz"
        if not path.is_file():
            return False
        with np.load(path) as levels:
            self.targets = [
                torch.as_tensor(levels[f"level{i}"].astype(np.float32))[None]
                for i in range(len(self.weights))
            ]
        shapes = [tuple(t.shape) for t in self.targets], [tuple(w.shape) for w in self.weights]
        if shapes[0] != shapes[1]:
            raise SystemExit(f"{path}: oracle weights of shapes {shapes[0]}, the model's are {shapes[1]}")
        return True


def refined_weights(refiner: BlendRefiner, case: Case, network: ISFLNet | None = None) -> list[torch.Tensor]:
    """The grafted network's per-level weights for this case: ``refiner`` on the frozen part's
    precomputed weights, or, with ``network`` (``--train-selectors``; ``refiner`` is then its own), the
    whole network's, since its selectors change too."""
    if network is not None:
        return network.blend_maps(case.images, case.modalities)["weights"]
    return refiner(case.images, case.weights, case.tags)


def fuse(case: Case, weights: list[torch.Tensor]) -> torch.Tensor:
    """The [0, 1] fusion of this case with per-level ``weights``, as the grafted network returns it."""
    return pyramid.blend(case.images, weights).clamp(0, 1)


def evaluate(refiner: BlendRefiner, cases: list[Case], network: ISFLNet | None = None) -> list[dict]:
    """Every case's scores; the functional correlation is NaN where there is no PET/SPECT."""
    with torch.no_grad():
        return [
            {"case": c.name, "corr_functional": float("nan")}
            | score(
                fuse(c, refined_weights(refiner, c, network))[0, 0].numpy(), c.sources, c.second, c.functional
            )
            for c in cases
        ]


def means(rows: list[dict]) -> dict[str, float]:
    """Mean of every metric per task (``TASK KEY``), or plain ``KEY`` when there is one task."""
    tasks = sorted({r["case"].split("/")[0] for r in rows})
    out = {}
    for task in tasks:
        chosen = [r for r in rows if r["case"].startswith(task + "/")]
        prefix = f"{task} " if len(tasks) > 1 else ""
        for key in KEYS:
            values = [r[key] for r in chosen if key in r and not np.isnan(r[key])]
            if values:
                out[prefix + key] = round(float(np.mean(values)), 4)
    return out


def parse_objective(text: str) -> dict[str, float]:
    objective = {key: float(value) for key, value in (item.split("=") for item in text.split(","))}
    if unknown := set(objective) - set(KEYS):
        raise SystemExit(f"unknown metrics {sorted(unknown)} in {text!r}; choose from {KEYS}")
    return objective


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="folder with train/ and dev/ Harvard-style splits")
    parser.add_argument("--task", default="CT-MRI", help="a task, or several separated by commas")
    parser.add_argument("--objective", default="VIF=1,Qabf=4,SSIM=6,SCD=1", help="KEY=WEIGHT,...")
    parser.add_argument(
        "--task-objective",
        action="append",
        default=[],
        metavar="TASK:KEY=WEIGHT,...",
        help="the objective for one task's pairs instead of --objective (repeatable)",
    )
    parser.add_argument(
        "--model",
        default="isfl-2d",
        help="the frozen 2D model whose weights are refined; one with a refiner continues training it",
    )
    parser.add_argument("--levels", type=int, default=2, help="refine the N finest levels")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument(
        "--depth",
        type=int,
        default=2,
        help="3x3 convolutions per level (dilated 1, 1, 2, 4, ...: a wider view)",
    )
    parser.add_argument(
        "--tags", type=int, default=0, help="size of the refiner's modality-tag embedding (0: tag-blind)"
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=1,
        help="correct the weights this many times, each pass after the first seeing the previous fusion; "
        "a --model with fewer passes keeps its refiner as the first pass",
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--balance-tasks",
        action="store_true",
        help="draw every task equally often (default: every pair equally often, so small tasks are rare)",
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cosine", action="store_true", help="cosine learning-rate decay to 2 %% of --lr")
    parser.add_argument(
        "--train-selectors",
        action="store_true",
        help="train the pyramid head's selectors with the refiner (the encoder and integrators stay frozen)",
    )
    parser.add_argument(
        "--targets",
        action="append",
        default=[],
        metavar="TASK=DIR",
        help="the blend oracle's weights for TASK's train pairs (blend_oracle.py --save-weights; repeatable)",
    )
    parser.add_argument("--distill", type=float, default=10.0, help="weight of the --targets term")
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args()
    default_objective = parse_objective(args.objective)
    objectives = {}
    for item in args.task_objective:
        task, _, weights = item.partition(":")
        objectives[task] = parse_objective(weights)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    base = load_model(args.model, spatial_dims=2)
    if base.network.init_args["head"] != "pyramid":
        parser.error(f"--model {args.model}: needs a pyramid-head model")
    refiner_args = {
        "refiner_levels": args.levels,
        "refiner_hidden": args.hidden,
        "refiner_tags": args.tags,
        "refiner_depth": args.depth,
    }
    # a model with a refiner continues training its own: the same sizes are needed (more passes may be
    # added after its own)
    if base.network.refiner is not None and (
        any(base.network.init_args[k] != v for k, v in refiner_args.items())
        or base.network.init_args.get("refiner_passes", 1) > args.passes
    ):
        parser.error(
            f"--model {args.model} has a refiner with "
            + ", ".join(f"{k}={base.network.init_args[k]}" for k in refiner_args)
            + ": give the same --levels, --hidden, --tags and --depth (and at least its passes) to continue"
        )
    network = ISFLNet(**base.network.init_args | refiner_args | {"refiner_passes": args.passes})
    missing, unexpected = network.load_state_dict(base.network.state_dict(), strict=False)
    if unexpected or any(not key.startswith("refiner.") for key in missing):
        raise RuntimeError(f"grafting failed: missing {missing}, unexpected {unexpected}")
    network.eval()
    model = base.network
    model.refiner = None  # the frozen part's own weights, before any refiner
    train, dev = (
        [
            Case(*case, model)
            for task in args.task.split(",")
            for case in task_cases(f"{args.data}/{split}", task)
        ]
        for split in ("train", "dev")
    )
    by_task = [[c for c in train if c.name.startswith(task + "/")] for task in args.task.split(",")]
    for item in args.targets:
        task, _, folder = item.partition("=")
        found = sum(c.load_targets(Path(folder)) for c in train if c.name.startswith(task + "/"))
        if not found:
            parser.error(f"--targets {item}: no {task} train pair has oracle weights in {folder}")
        print(f"{task}: oracle weights for {found} train pairs", flush=True)
    refiner = network.refiner
    trained = [refiner]
    whole = None  # with --train-selectors every step runs the whole network (the encoder without grads)
    if args.train_selectors:
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        trained += [
            m
            for m in (network.selectors, network.selector_branches, network.saliency_filters)
            if m is not None
        ]
        whole = network
    parameters = [p for module in trained for p in module.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimiser = torch.optim.Adam(parameters, lr=args.lr)
    # --cosine: the learning rate falls to 2 % by the last step, so the kept step is not one sample of
    # a constant-rate wobble
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: 0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * step / args.steps)) if args.cosine else 1.0,
    )
    log = [{"step": 0, "seconds": 0.0} | means(evaluate(refiner, dev, whole))]
    print(log[-1], flush=True)
    start = time.time()
    distilled: list[float] = []  # the divergence from the oracle's weights since the last evaluation
    for step in range(1, args.steps + 1):
        loss = torch.zeros(())
        for _ in range(args.batch):
            pool = by_task[int(torch.randint(len(by_task), ()))] if args.balance_tasks else train
            case = pool[int(torch.randint(len(pool), ()))]
            sources = [case.images[:, i : i + 1] * 255 for i in range(2)]
            weights = refined_weights(refiner, case, whole)
            fused = fuse(case, weights)
            values = surrogate_metrics(
                fused * 255, sources, case.second if case.functional else None, case.mask
            )
            objective = objectives.get(case.name.split("/")[0], default_objective)
            loss = loss - sum(weight * values[key] for key, weight in objective.items() if key in values)
            if case.targets is not None:
                # the refined levels only: the others are the frozen part's
                divergence = weight_divergence(weights[: args.levels], case.targets[: args.levels])
                loss = loss + args.distill * divergence
                distilled.append(float(divergence.detach()))
        optimiser.zero_grad()
        (loss / args.batch).backward()
        optimiser.step()
        scheduler.step()
        if step % args.eval_every == 0 or step == args.steps:
            rows = evaluate(refiner, dev, whole)
            log.append({"step": step, "seconds": round(time.time() - start, 1)} | means(rows))
            if args.targets:
                log[-1]["distill"] = round(float(np.mean(distilled)), 4) if distilled else float("nan")
                distilled.clear()
            print(log[-1], flush=True)
            write_rows(args.output / "dev_per_case.csv", rows)
            recipe = {
                "script": "scripts/train_refiner.py",
                "base_model": str(args.model),
                "base_sha256": base.sha256,
            }
            recipe |= {k: v for k, v in vars(args).items() if k not in ("data", "output", "model")}
            save_checkpoint(
                args.output / "model.pt",
                network,
                normalization=base.normalization,
                training=base.meta.get("training", {}) | {"refiner": recipe | {"last_step": step}},
                data_hash=base.meta.get("data_hash"),
            )
            with open(args.output / "log.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in log for k in row)))
                writer.writeheader()
                writer.writerows(log)


if __name__ == "__main__":
    main()

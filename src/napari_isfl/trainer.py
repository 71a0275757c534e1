"""``isfl train``: the training loop, a thin layer on :func:`napari_isfl.training.training_step`.

Configuration is a YAML file (see ``configs/``) merged over :data:`DEFAULT_CONFIG`, plus
``--set section.key=value`` overrides. A run directory gets

* ``state.pt``: the resumable training state (weights, optimizer, scheduler, step), every
  ``checkpoint_every`` steps and at the end; ``--resume`` continues from it with identical batches;
* ``model.pt``: the self-describing model checkpoint with the best validation loss (or the last one
  when there is no validation data), usable by ``isfl fuse --model``. With ``optim.ema_decay`` set,
  validation and ``model.pt`` use the exponential moving average of the weights; with
  ``run.val_window: auto`` validation fuses in the sliding windows inference uses by default (the
  default ``whole`` runs each validation case in one piece);
* ``log.csv`` (every ``log_every`` steps) and ``val.csv``, ``config.yaml`` and ``loss.png``.

Distributed data parallel: launch the same command with ``torchrun --nproc_per_node K``; every
process draws its own batches (``batch_size`` is per process), rank 0 logs and saves.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import re
import sys
import time
from pathlib import Path

import torch
import yaml

from .checkpoint import save_checkpoint
from .data import CropDataset, LoadedCase, cases_from_sources, collate_crops, data_hash, load_case
from .io import atomic_write
from .losses import ISFLLoss, ISFLLossWeights
from .model import ISFLNet
from .normalization import DEFAULT_SPECS, FUNCTIONAL_MODALITIES
from .training import InterventionConfig, Interventions, training_step

__all__ = ["DEFAULT_CONFIG", "WeightAverage", "load_config", "train"]

DEFAULT_CONFIG: dict = {
    "model": {
        "spatial_dims": 2,
        "modalities": ["mri", "ct", "pet", "spect"],
        "features": [32, 32, 32],
        "grid_size": 8,
        "encoder": "shared",
        "integrator": "cfi",
        "norm": "batch",
    },
    "loss": ISFLLossWeights().to_dict(),
    "interventions": {**InterventionConfig().to_dict(), "num_holes": [1, 6]},
    "data": {
        "root": ".",
        "train": [],
        "val": [],
        "crop_size": [128, 128],
        "num_inputs": [2],
        "batch_size": 16,
        "num_workers": 2,
        "foreground_prob": 0.9,
        "augment": True,
        "gamma_range": None,
        "val_max_cases": 64,
    },
    "optim": {
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "warmup_steps": 100,
        "max_steps": 2000,
        "max_minutes": None,
        "grad_clip": 1.0,
        "ema_decay": None,
        "amp": True,
        "batched_passes": True,
    },
    "run": {
        "seed": 0,
        "device": "auto",
        "output_dir": "runs/isfl",
        "checkpoint_every": 200,
        "val_every": 200,
        "val_window": "whole",
        "log_every": 10,
        "threads": None,
        "init": None,
    },
}

#: run.val_window: validation in one piece, in the default inference windows, or in training windows
VAL_WINDOWS = ("whole", "auto", "training")

LOG_TERMS = (
    "loss",
    "fidelity",
    "intensity",
    "gradient",
    "ssim",
    "invariance",
    "consistency",
    "gate_reg",
    "gate_mean",
    "necessity",
)


def _merge(base: dict, update: dict, path: str = "") -> dict:
    merged = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if key not in merged:
            raise ValueError(f"unknown config key {path + key!r}; known: {', '.join(sorted(base))}")
        if isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _merge(merged[key], value, f"{path}{key}.")
        else:
            merged[key] = value
    return merged


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.2 booleans and floats. Only true/false are booleans: YAML 1.1's on/off/yes/no stay strings, so
    ``necessity_mode: off`` (in a file or as ``--set loss.necessity_mode=off``) means ``"off"``, not
    ``False``; ``5e-4`` is a float, not a string."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 floats: PyYAML (1.1) reads 5e-4 (no dot) as a string, which broke --set optim.lr=5e-4
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text: str):
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> dict:
    """Merge a YAML file and ``section.key=value`` overrides over :data:`DEFAULT_CONFIG`.

    A relative ``data.root`` is taken relative to the config file's folder.

    Raises:
        ValueError: unknown keys or malformed overrides (the message names them).
    """
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config {path}: no such file")
        loaded = _load_yaml(path.read_text()) or {}
        config = _merge(config, loaded)
        root = Path(config["data"]["root"]).expanduser()
        config["data"]["root"] = str(root if root.is_absolute() else (path.parent / root).resolve())
        # CSV lists sit beside the config; the images they name are relative to data.root
        for split in ("train", "val"):
            for source in config["data"][split]:
                csv_path = Path(source["path"]).expanduser()
                if source.get("type") == "csv" and not csv_path.is_absolute():
                    source["path"] = str((path.parent / csv_path).resolve())
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        update: dict = {}
        cursor = update
        for key in keys[:-1]:
            cursor = cursor.setdefault(key, {})
        cursor[keys[-1]] = _load_yaml(raw)
        config = _merge(config, update)
    _validate(config)
    return config


def _validate(config: dict) -> None:
    model, data, optim = config["model"], config["data"], config["optim"]
    if len(data["crop_size"]) != model["spatial_dims"]:
        raise ValueError(
            f"data.crop_size {data['crop_size']} does not match model.spatial_dims {model['spatial_dims']}"
        )
    if min(data["num_inputs"]) < 2:
        raise ValueError("data.num_inputs must all be >= 2")
    if data["batch_size"] < 1 or optim["max_steps"] < 1 or optim["lr"] <= 0:
        raise ValueError("data.batch_size, optim.max_steps and optim.lr must be positive")
    if optim.get("ema_decay") is not None and not 0.0 <= float(optim["ema_decay"]) < 1.0:
        raise ValueError(f"optim.ema_decay must be in [0, 1), or null or 0 for off; got {optim['ema_decay']}")
    if config["run"]["val_window"] not in VAL_WINDOWS:
        raise ValueError(
            f"run.val_window must be one of {', '.join(VAL_WINDOWS)}; got {config['run']['val_window']!r}"
        )
    ISFLLossWeights(**config["loss"])  # validates the weights and the necessity mode


def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local_rank


class _Schedule:
    """Linear warm-up, then cosine decay to 2 % of the peak learning rate.

    The decay follows the step count, or the elapsed fraction of ``max_minutes`` when that is
    further along, so a time-budgeted run still ends at a low learning rate. (Time-budgeted runs
    are therefore not bit-reproducible; step-budgeted runs, and their resumes, are.)
    """

    def __init__(self, optim: dict) -> None:
        self.warmup, self.total = max(1, int(optim["warmup_steps"])), int(optim["max_steps"])
        self.time_fraction = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, max((step - self.warmup) / max(1, self.total - self.warmup), self.time_fraction))
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


class WeightAverage:
    """Exponential moving average of a network's weights and normalisation statistics.

    Small crops and batches make single-step weights noisy (the validation loss of the 3D model swung by
    about 0.1 between checkpoints); the average is what gets validated and exported. The effective decay
    ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so an average started from a
    fresh or fine-tuned network follows it early on instead of remembering its initial weights.

    Args:
        network: the network being trained; the average starts as a copy of it.
        decay: the long-run weight of the old average per update, in [0, 1).
    """

    def __init__(self, network: torch.nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.network = copy.deepcopy(network).eval()
        self.network.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = network.state_dict()
        for name, average in self.network.state_dict().items():
            if average.is_floating_point():
                average.lerp_(current[name].to(average.dtype), 1.0 - decay)
            else:  # step counters (BatchNorm's num_batches_tracked)
                average.copy_(current[name])

    def state_dict(self) -> dict:
        return {"weights": self.network.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["weights"])
        self.updates = int(state["updates"])


def _load_cases(sources: list, config: dict) -> tuple[list[LoadedCase], list]:
    cases = cases_from_sources(sources, config["data"]["root"]) if sources else []
    return [load_case(c) for c in cases], cases


def _validation_fusion(
    network: ISFLNet,
    images: torch.Tensor,
    modalities: list[str],
    window: str,
    crop_size: list[int] | None,
    device: torch.device,
    amp: bool,
) -> torch.Tensor:
    """The clean fusion of one validation case, in one piece or in the windows inference would use."""

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return network(batch, modalities).float()

    if window == "whole":
        return forward(images)
    from .inference import run_windows, window_plan

    shape = images.shape[2:]
    multiple = int(network.size_multiple)
    padding = [p for n in reversed(shape) for p in (0, (-n) % multiple)]  # F.pad: last axis first
    padded = torch.nn.functional.pad(images, padding)
    roi_size = None if window == "auto" else list(crop_size or [])
    roi, overlaps, per_call = window_plan(padded.shape[2:], roi_size, 0.25, multiple, crop_size)
    fused = run_windows(forward, padded, roi, overlaps, per_call, device).to(device)
    return fused[(slice(None), slice(None), *(slice(0, n) for n in shape))]


@torch.no_grad()
def validate(
    network: ISFLNet,
    cases: list[LoadedCase],
    criterion: ISFLLoss,
    device: torch.device,
    amp: bool,
    window: str = "whole",
    crop_size: list[int] | None = None,
) -> dict[str, float]:
    """Mean fidelity terms of the clean pass over the validation images/volumes.

    ``window`` (``run.val_window``): ``"whole"`` runs each case in one piece; ``"auto"`` in the windows
    :func:`napari_isfl.inference.fuse` uses by default (``crop_size`` windows for cases more than twice
    that size), so checkpoints are chosen on the fusion users get; ``"training"``: always ``crop_size``.
    """
    was_training = network.training
    network.eval()
    sums: dict[str, float] = {}
    for case in cases:
        images = torch.from_numpy(case.array).unsqueeze(0).to(device)
        fused = _validation_fusion(network, images, case.modalities, window, crop_size, device, amp)
        functional = torch.tensor([[m in FUNCTIONAL_MODALITIES for m in case.modalities]], device=device)
        terms = criterion.fidelity(fused.float(), images.float(), functional)
        for key in ("fidelity", "intensity", "gradient", "ssim"):
            sums[key] = sums.get(key, 0.0) + float(terms[key])
    network.train(was_training)
    return {f"val_{k}": v / max(1, len(cases)) for k, v in sums.items()}


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def plot_log(run_dir: Path) -> Path | None:
    """``loss.png``: training terms (and validation fidelity) against the step."""
    log = run_dir / "log.csv"
    if not log.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log) as handle:
        rows = list(csv.DictReader(handle))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for term in ("loss", "fidelity", "invariance", "necessity"):
        if term in rows[0] and rows[0][term] != "":
            ax.plot(steps, [float(r[term]) for r in rows], label=term)
    val = run_dir / "val.csv"
    if val.exists():
        with open(val) as handle:
            vrows = list(csv.DictReader(handle))
        ax.plot(
            [int(r["step"]) for r in vrows],
            [float(r["val_fidelity"]) for r in vrows],
            "k--o",
            label="validation fidelity",
            markersize=3,
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(run_dir.name)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = run_dir / "loss.png"
    fig.savefig(out)
    plt.close(fig)
    return out


def train(config: dict, resume: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Train an ISFL network as configured; returns the path of ``model.pt``.

    Args:
        config: a config from :func:`load_config`.
        resume: a ``state.pt`` to continue from (``"auto"``: the run directory's, if any).
        progress: show a progress bar with the loss terms (rank 0).
    """
    world, rank, local_rank = _distributed()
    run_cfg, data_cfg, optim_cfg = config["run"], config["data"], config["optim"]
    out_dir = Path(run_cfg["output_dir"])
    seed = int(run_cfg["seed"])
    if run_cfg.get("threads"):
        torch.set_num_threads(int(run_cfg["threads"]))
    from .inference import select_device

    device = select_device(run_cfg["device"])
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    amp = bool(optim_cfg["amp"]) and device.type == "cuda"
    torch.manual_seed(seed)

    train_cases, train_defs = _load_cases(data_cfg["train"], config)
    if not train_cases:
        raise ValueError("no training data: set data.train in the config (folder or csv sources)")
    val_cases, _ = _load_cases(data_cfg["val"], config)
    val_cases = val_cases[: int(data_cfg.get("val_max_cases") or len(val_cases))]
    network = ISFLNet(**config["model"]).to(device)
    if run_cfg.get("init"):  # fine-tune: start from a model checkpoint's weights with a fresh optimizer
        from .checkpoint import load_model

        network.load_state_dict(load_model(run_cfg["init"], network.spatial_dims).network.state_dict())
    criterion = ISFLLoss(network.spatial_dims, ISFLLossWeights(**config["loss"])).to(device)
    icfg = dict(config["interventions"])
    icfg["num_holes"] = tuple(icfg["num_holes"])
    interventions = Interventions(InterventionConfig(**icfg))
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=optim_cfg["lr"], weight_decay=optim_cfg["weight_decay"]
    )
    schedule = _Schedule(optim_cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    start_step, best = 0, float("inf")
    state_path = out_dir / "state.pt"
    if resume == "auto":
        resume = state_path if state_path.exists() else None
    if resume is not None:
        state = torch.load(resume, map_location=device, weights_only=True)
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # LambdaLR also restores the schedule object's fields and its base learning rates; the current
        # config's horizon wins, so `--resume auto --max-steps N` extends a finished run over N steps
        schedule.__init__(optim_cfg)  # warm-up and horizon from the current config
        # ... and so does the peak learning rate: `--resume auto --set optim.lr=...` takes effect
        scheduler.base_lrs = [float(optim_cfg["lr"])] * len(optimizer.param_groups)
        for group in optimizer.param_groups:
            group["initial_lr"] = float(optim_cfg["lr"])
            group["lr"] = float(optim_cfg["lr"]) * schedule(scheduler.last_epoch)
        start_step, best = int(state["step"]), float(state["best"])
    # the average starts from the (resumed) weights; a state saved with one continues it
    average = WeightAverage(network, float(optim_cfg["ema_decay"])) if optim_cfg.get("ema_decay") else None
    if average is not None and resume is not None and "average" in state:
        average.load_state_dict(state["average"])
    evaluated = network if average is None else average.network  # what validation and model.pt see
    model: torch.nn.Module = network
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )

    max_steps = int(optim_cfg["max_steps"])
    dataset = CropDataset(
        train_cases,
        data_cfg["crop_size"],
        data_cfg["batch_size"],
        max(0, max_steps - start_step),
        data_cfg["num_inputs"],
        seed,
        start_step,
        world,
        rank,
        data_cfg["foreground_prob"],
        data_cfg["augment"],
        data_cfg["gamma_range"],
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=data_cfg["batch_size"],
        shuffle=False,
        num_workers=int(data_cfg["num_workers"]),
        collate_fn=collate_crops,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    is_main = rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    hash_of_data = data_hash(train_defs) if is_main else ""
    training_meta = {
        "config": config,
        "world_size": world,
        "device": str(device),
        "interventions": icfg | {"num_holes": list(icfg["num_holes"])},
    }

    def save_state(step: int) -> None:
        payload = {
            "model": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "best": best,
        }
        if average is not None:
            payload["average"] = average.state_dict()
        atomic_write(state_path, lambda tmp: torch.save(payload, tmp))

    def export(step: int, metrics: dict) -> None:
        save_checkpoint(
            out_dir / "model.pt",
            evaluated,
            DEFAULT_SPECS,
            training=training_meta | {"steps": step, "seconds": round(time.time() - started, 1)},
            data_hash=hash_of_data,
            metrics=metrics,
        )

    started = time.time()
    deadline = started + 60 * float(optim_cfg["max_minutes"]) if optim_cfg.get("max_minutes") else None
    bar = None
    if is_main and progress:
        from tqdm import tqdm

        bar = tqdm(total=max_steps, initial=start_step, desc="isfl train", dynamic_ncols=True)
    model.train()
    step = saved_step = start_step
    last_val: dict = {}
    for images, tags in loader:
        interventions.set_random_state(seed * 1_000_003 + dataset.batch_key(step))
        images = images.to(device, non_blocking=True)
        modality = torch.tensor([[network.modalities.index(t) for t in row] for row in tags], device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            terms = training_step(
                model, images, modality, criterion, interventions, optim_cfg["batched_passes"]
            )
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if optim_cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(network.parameters(), float(optim_cfg["grad_clip"]))
        optimizer.step()
        if average is not None:
            average.update(network)
        if deadline is not None:
            schedule.time_fraction = (time.time() - started) / (deadline - started)
        scheduler.step()
        step += 1
        if is_main:
            if step % int(run_cfg["log_every"]) == 0 or step == max_steps:
                row = {
                    "step": step,
                    "seconds": round(time.time() - started, 2),
                    "lr": scheduler.get_last_lr()[0],
                }
                row |= {k: float(terms[k].detach()) if k in terms else "" for k in LOG_TERMS}
                _append_csv(out_dir / "log.csv", row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    {
                        k: f"{float(terms[k].detach()):.3f}"
                        for k in ("loss", "fidelity", "invariance")
                        if k in terms
                    }
                )
        stop = step >= max_steps or (deadline is not None and time.time() > deadline)
        if deadline is not None and world > 1:  # every rank must stop at the same step
            flag = torch.tensor([float(stop)], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
        if is_main and (step % int(run_cfg["val_every"]) == 0 or stop):
            if val_cases:
                last_val = validate(
                    evaluated, val_cases, criterion, device, amp, run_cfg["val_window"], data_cfg["crop_size"]
                ) | {"step": step}
                _append_csv(out_dir / "val.csv", last_val)
                if last_val["val_fidelity"] < best:
                    best = last_val["val_fidelity"]
                    export(step, last_val)
            elif stop:
                export(step, {"step": step})
        if is_main and (step % int(run_cfg["checkpoint_every"]) == 0 or stop):
            save_state(step)
            saved_step = step
        if stop:
            break
    if is_main and step > start_step and saved_step != step:  # the data ran out early: keep the state
        save_state(step)
    if bar is not None:
        bar.close()
    if is_main:
        if not (out_dir / "model.pt").exists():
            export(step, last_val | {"step": step})
        plot_log(out_dir)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return out_dir / "model.pt"


def run(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    if args.output:
        overrides.append(f"run.output_dir={args.output}")
    if args.device:
        overrides.append(f"run.device={args.device}")
    if args.max_steps:
        overrides.append(f"optim.max_steps={args.max_steps}")
    if args.max_minutes:
        overrides.append(f"optim.max_minutes={args.max_minutes}")
    config = load_config(args.config, overrides)
    if args.init:
        config["run"]["init"] = str(Path(args.init).resolve())
    if args.data_root:
        config["data"]["root"] = str(Path(args.data_root).resolve())
    path = train(config, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"model written to {path}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune an ISFL model",
        description="Train an ISFL fusion network from a YAML config (see configs/). Multi-GPU: "
        "torchrun --nproc_per_node K $(which isfl) train --config ...",
    )
    parser.add_argument("--config", help="YAML config (defaults for everything not given)")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config entry, e.g. --set optim.lr=5e-4 (repeatable)",
    )
    parser.add_argument("--output", help="run directory (run.output_dir)")
    parser.add_argument(
        "--resume",
        help="state.pt to continue from, or 'auto' for the run directory's; the learning rate and "
        "step budget of the current config apply from there",
    )
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (run.device)")
    parser.add_argument("--max-steps", type=int, help="optim.max_steps")
    parser.add_argument("--max-minutes", type=float, help="stop after this wall time (optim.max_minutes)")
    parser.add_argument("--init", help="start from this model checkpoint's weights (fine-tuning)")
    parser.add_argument("--data-root", help="folder the data sources are relative to (data.root)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)

"""The training loop (``isfl train``), a thin layer on :func:`~napari_isfl.training.step.training_step`.

Configuration: a :class:`~napari_isfl.training.config.TrainingConfig` (YAML plus ``--set
section.key=value`` overrides, see :func:`~napari_isfl.training.config.load_config`). A run directory gets

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

import csv
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from .._optional import MissingDependencyError
from ..cases import LoadedCase, cases_from_sources, data_hash, load_case
from ..io import atomic_write
from ..model.checkpoint import save_checkpoint
from ..model.losses import ISFLLoss
from ..model.network import ISFLNet
from ..normalization import DEFAULT_SPECS, FUNCTIONAL_MODALITIES
from .averaging import WeightAverage
from .config import OptimConfig, TrainingConfig
from .dataset import CropDataset, collate_crops
from .step import Interventions, training_step

__all__ = ["train", "validate"]

FIDELITY_TERMS = ("fidelity", "intensity", "gradient", "ssim", "functional", "contrast", "vif", "qabf", "scd")
LOG_TERMS = (
    "loss",
    *FIDELITY_TERMS,
    "invariance",
    "consistency",
    "gate_reg",
    "gate_mean",
    "necessity",
    "distill",
    "distill_detail",
)


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

    def __init__(self, optim: OptimConfig) -> None:
        self.warmup, self.total = max(1, int(optim.warmup_steps)), int(optim.max_steps)
        self.time_fraction = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, max((step - self.warmup) / max(1, self.total - self.warmup), self.time_fraction))
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _initialise_from(network: ISFLNet, checkpoint: str) -> list[str]:
    """Copy a checkpoint's weights into ``network`` wherever names and shapes match, and return the names
    that kept their fresh initialisation. Fine-tuning into the same architecture copies everything; into
    another head (``synthesis`` -> ``pyramid``) the encoder and integrators carry over, the new head
    starts fresh (the decoder of the old one is left out).

    Raises:
        ValueError: nothing of the checkpoint fits the network (another architecture).
    """
    from ..model.checkpoint import load_model

    loaded = load_model(checkpoint, network.spatial_dims).network
    source = loaded.state_dict()
    target = network.state_dict()
    matching = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    if not matching:
        raise ValueError(f"run.init {checkpoint}: none of its weights fit the configured network")
    network.load_state_dict(matching, strict=False)
    fresh = sorted(k for k in target if k not in matching)
    if fresh:
        print(f"init from {checkpoint}: {len(matching)} tensors copied, {len(fresh)} new", file=sys.stderr)
    # parts of the checkpoint the configured network has no place for (e.g. isfl-2d v7's refiner under
    # a config without model.refiner_levels) would vanish silently from the fine-tuned model: say so
    left_out = sorted({k.split(".")[0] for k in source if k not in matching})
    if left_out:
        settings = " ".join(
            f"--set model.{key}={value}"
            for key, value in loaded.init_args.items()
            if key != "spatial_dims" and network.init_args.get(key) != value
        )
        print(
            f"init from {checkpoint}: its {', '.join(left_out)} weights do not fit the configured network "
            f"and are left out; to keep them, configure the checkpoint's architecture ({settings})",
            file=sys.stderr,
        )
    return fresh


def _portable(config: dict) -> dict:
    """The config as a checkpoint records it: data paths and the ``run.init`` checkpoint (where it is a
    file, not a shipped model's name) relative to the working directory, so a shared checkpoint does not
    carry the trainer's absolute folder names (``config.yaml`` keeps them for resume)."""

    def relative(path: str) -> str:
        try:
            return os.path.relpath(path)
        except ValueError:  # another drive (Windows): keep the name only
            return Path(path).name

    data = config["data"]
    sources = {
        split: [s | {"path": relative(s["path"])} if "path" in s else s for s in data[split]]
        for split in ("train", "val")
    }
    portable = config | {"data": data | {"root": relative(data["root"])} | sources}
    if data.get("targets"):
        portable["data"]["targets"] = relative(data["targets"])
    init = config.get("run", {}).get("init")
    if init and Path(init).is_absolute():
        portable["run"] = config["run"] | {"init": relative(init)}
    return portable


def _load_cases(
    sources: list, config: TrainingConfig, targets: str | None = None
) -> tuple[list[LoadedCase], list]:
    """Load the cases of ``sources``; with a ``targets`` folder, each case's ``TASK/NAME.npy`` there
    (when it exists) becomes its target fusion."""
    cases = cases_from_sources(sources, config.data.root) if sources else []
    if targets is None:
        return [load_case(c) for c in cases], cases
    folder = Path(targets)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.targets: {folder} is not a folder of TASK/NAME.npy target fusions")
    paths = [folder / Path(case.name).with_suffix(".npy") for case in cases]
    if cases and not any(path.is_file() for path in paths):
        raise ValueError(
            f"data.targets: no file in {folder} matches a training case (expected e.g. {paths[0]})"
        )
    loaded = [
        load_case(case, target=np.load(path) if path.is_file() else None)
        for case, path in zip(cases, paths, strict=True)
    ]
    return loaded, cases


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
    from ..inference.engine import fuse_tensor
    from ..inference.windows import window_plan

    shape = images.shape[2:]
    multiple = int(network.size_multiple)
    padding = [p for n in reversed(shape) for p in (0, (-n) % multiple)]  # F.pad: last axis first
    padded = torch.nn.functional.pad(images, padding)
    roi_size = None if window == "auto" else list(crop_size or [])
    roi, overlaps, per_call = window_plan(padded.shape[2:], roi_size, 0.25, multiple, crop_size)
    modality = torch.tensor([network.modalities.index(m) for m in modalities], device=device)
    fused = fuse_tensor(network, padded, modality, roi, overlaps, per_call, amp=amp)["fused"].to(device)
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
        for key in FIDELITY_TERMS:
            sums[key] = sums.get(key, 0.0) + float(terms[key])
    network.train(was_training)
    return {f"val_{k}": v / max(1, len(cases)) for k, v in sums.items()}


def _append_csv(path: Path, row: dict) -> None:
    """Append ``row``; a run resumed by a newer version keeps the file's own columns (new ones dropped)."""
    new = not path.exists()
    fieldnames = list(row)
    if not new:
        with open(path, newline="") as handle:
            fieldnames = next(csv.reader(handle), fieldnames)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, extrasaction="ignore", restval="")
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of a run's ``log.csv``, one per step in step order. A resumed run logs again the steps
    after its last checkpoint; the later rows (the ones its weights continued from) are kept."""
    with open(path) as handle:
        by_step = {int(row["step"]): row for row in csv.DictReader(handle)}
    return [by_step[step] for step in sorted(by_step)]


def plot_log(run_dir: Path) -> Path | None:
    """``loss.png``: training terms (and validation fidelity) against the step."""
    log = run_dir / "log.csv"
    if not log.exists():
        return None
    from .._optional import pyplot

    plt = pyplot("the training plot loss.png")

    rows = read_log(log)
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for term in ("loss", "fidelity", "invariance", "necessity", "functional"):
        # the functional term is logged as 0 when no PET/SPECT is in a batch (or its weight is 0)
        if term in rows[0] and rows[0][term] != "" and any(float(r[term] or 0) > 0 for r in rows):
            ax.plot(steps, [float(r[term] or "nan") for r in rows], label=term)
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


def train(
    config: TrainingConfig | dict, resume: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """Train an ISFL network as configured; returns the path of ``model.pt``.

    Args:
        config: a :class:`TrainingConfig` (e.g. from :func:`~napari_isfl.training.config.load_config`),
            or a nested dict of the entries that differ from the defaults.
        resume: a ``state.pt`` to continue from (``"auto"``: the run directory's, if any).
        progress: show a progress bar with the loss terms (rank 0).
    """
    if isinstance(config, dict):
        config = TrainingConfig.from_dict(config)
    world, rank, local_rank = _distributed()
    run_cfg, data_cfg, optim_cfg = config.run, config.data, config.optim
    out_dir = Path(run_cfg.output_dir)
    seed = int(run_cfg.seed)
    if run_cfg.threads:
        torch.set_num_threads(int(run_cfg.threads))
    from ..device import fast_cpu_layout, select_device

    device = select_device(run_cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    amp = bool(optim_cfg.amp) and device.type == "cuda"
    torch.manual_seed(seed)

    train_cases, train_defs = _load_cases(data_cfg.train, config, data_cfg.targets)
    if not train_cases:
        raise ValueError("no training data: set data.train in the config (folder or csv sources)")
    val_cases, _ = _load_cases(data_cfg.val, config)
    val_cases = val_cases[: int(data_cfg.val_max_cases or len(val_cases))]
    network = ISFLNet(**dataclasses.asdict(config.model)).to(device)
    if run_cfg.init:  # fine-tune: start from a model checkpoint's weights with a fresh optimizer
        _initialise_from(network, run_cfg.init)
    if world == 1:  # (DDP's gradient buckets expect the default layout)
        fast_cpu_layout(network, device, network.spatial_dims)
    criterion = ISFLLoss(network.spatial_dims, config.loss).to(device)
    interventions = Interventions(config.interventions)
    optimizer = torch.optim.AdamW(network.parameters(), lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay)
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
        scheduler.base_lrs = [float(optim_cfg.lr)] * len(optimizer.param_groups)
        for group in optimizer.param_groups:
            group["initial_lr"] = float(optim_cfg.lr)
            group["lr"] = float(optim_cfg.lr) * schedule(scheduler.last_epoch)
        start_step, best = int(state["step"]), float(state["best"])
    # the average starts from the (resumed) weights; a state saved with one continues it
    average = WeightAverage(network, float(optim_cfg.ema_decay)) if optim_cfg.ema_decay else None
    if average is not None and resume is not None and "average" in state:
        average.load_state_dict(state["average"])
    evaluated = network if average is None else average.network  # what validation and model.pt see
    model: torch.nn.Module = network
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )

    max_steps = int(optim_cfg.max_steps)
    dataset = CropDataset(
        train_cases,
        data_cfg.crop_size,
        data_cfg.batch_size,
        max(0, max_steps - start_step),
        data_cfg.num_inputs,
        seed,
        start_step,
        world,
        rank,
        data_cfg.foreground_prob,
        data_cfg.augment,
        data_cfg.gamma_range,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=data_cfg.batch_size,
        shuffle=False,
        num_workers=int(data_cfg.num_workers),
        collate_fn=collate_crops,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    is_main = rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    hash_of_data = data_hash(train_defs) if is_main else ""
    training_meta = {
        "config": _portable(config.to_dict()),
        "world_size": world,
        "device": str(device),
        "interventions": config.to_dict()["interventions"],
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
    deadline = started + 60 * float(optim_cfg.max_minutes) if optim_cfg.max_minutes else None
    bar = None
    if is_main and progress:
        from tqdm import tqdm

        bar = tqdm(total=max_steps, initial=start_step, desc="isfl train", dynamic_ncols=True)
    model.train()
    step = saved_step = start_step
    last_val: dict = {}
    for images, tags, targets in loader:
        interventions.set_random_state(seed * 1_000_003 + dataset.batch_key(step))
        images = images.to(device, non_blocking=True)
        if targets is not None:
            targets = tuple(t.to(device, non_blocking=True) for t in targets)
        modality = torch.tensor([[network.modalities.index(t) for t in row] for row in tags], device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            terms = training_step(
                model, images, modality, criterion, interventions, optim_cfg.batched_passes, targets
            )
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if optim_cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(network.parameters(), float(optim_cfg.grad_clip))
        optimizer.step()
        if average is not None:
            average.update(network)
        if deadline is not None:
            schedule.time_fraction = (time.time() - started) / (deadline - started)
        scheduler.step()
        step += 1
        if is_main:
            if step % int(run_cfg.log_every) == 0 or step == max_steps:
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
        if is_main and (step % int(run_cfg.val_every) == 0 or stop):
            if val_cases:
                last_val = validate(
                    evaluated, val_cases, criterion, device, amp, run_cfg.val_window, data_cfg.crop_size
                ) | {"step": step}
                _append_csv(out_dir / "val.csv", last_val)
                if last_val["val_fidelity"] < best:
                    best = last_val["val_fidelity"]
                    export(step, last_val)
            elif stop:
                export(step, {"step": step})
        if is_main and (step % int(run_cfg.checkpoint_every) == 0 or stop):
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
        try:
            plot_log(out_dir)
        except MissingDependencyError as error:  # the run itself is complete; only the plot is missing
            print(f"note: no loss.png: {error}", file=sys.stderr)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return out_dir / "model.pt"

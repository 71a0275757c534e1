"""The training loop: config handling, learning, exact resume, checkpoints and the DDP code path."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from napari_isfl.cases import LoadedCase, cases_from_folder
from napari_isfl.model.checkpoint import load_model
from napari_isfl.training.config import OptimConfig, load_config
from napari_isfl.training.dataset import CropDataset
from napari_isfl.training.trainer import _initialise_from, _portable, read_log, train


def _phantom_pair(seed: int, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """An 'MRI' with soft blobs and a 'CT' with a bright ring: different content, one grid."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    mri = np.zeros((size, size))
    for _ in range(4):
        cy, cx, r = rng.uniform(0.25, 0.75, 2).tolist() + [rng.uniform(0.05, 0.15)]
        mri += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    radius = np.hypot(yy - 0.5, xx - 0.5)
    ct = ((radius > 0.35) & (radius < 0.42)) * 1.0 + 0.2 * (radius < 0.35)
    return (mri / mri.max() * 255).astype(np.uint8), (ct * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def harvard_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny data set in the Harvard layout: TASK/MRI/NAME.png + TASK/CT/NAME.png."""
    root = tmp_path_factory.mktemp("data")
    for split, seeds in (("train", range(4)), ("dev", range(10, 12))):
        for seed in seeds:
            mri, ct = _phantom_pair(seed)
            for modality, image in (("MRI", mri), ("CT", ct)):
                folder = root / split / "CT-MRI" / modality
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(folder / f"{seed:03d}.png")
    return root


def _config(root: Path, out: Path, steps: int, **extra: object) -> Path:
    config = {
        "model": {"spatial_dims": 2, "features": [4, 8, 8], "grid_size": 2},
        "data": {
            "root": str(root),
            "train": [{"type": "folder", "path": "train"}],
            "val": [{"type": "folder", "path": "dev"}],
            "crop_size": [32, 32],
            "batch_size": 2,
            "num_workers": 0,
        },
        "optim": {"lr": 0.005, "warmup_steps": 1, "max_steps": steps, "amp": False},
        "run": {
            "output_dir": str(out),
            "log_every": 1,
            "val_every": steps,
            "checkpoint_every": 2,
            "device": "cpu",
            "threads": 1,
        },
    }
    for dotted, value in extra.items():
        section, key = dotted.split("__")
        config[section][key] = value
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _losses(run: Path) -> list[float]:
    with open(run / "log.csv") as handle:
        return [float(r["loss"]) for r in csv.DictReader(handle)]


def test_config_merges_overrides_and_rejects_unknown_keys(harvard_like: Path, tmp_path: Path) -> None:
    path = _config(harvard_like, tmp_path / "run", 3)
    config = load_config(path, ["optim.lr=0.01", "model.features=[4,4,8]"])
    assert config.optim.lr == 0.01 and config.model.features == [4, 4, 8]
    assert config.loss.necessity_mode == "penalize"  # defaults fill what the file leaves out
    with pytest.raises(ValueError, match="optim.learning_rate"):
        load_config(path, ["optim.learning_rate=0.1"])
    with pytest.raises(ValueError, match="section.key=value"):
        load_config(path, ["lr0.1"])
    with pytest.raises(ValueError, match="crop_size"):
        load_config(path, ["data.crop_size=[32,32,32]"])
    with pytest.raises(ValueError, match="necessity"):
        load_config(path, ["loss.necessity_mode=sometimes"])
    # YAML 1.1 reads a bare `off` as false; the override still means the string
    assert load_config(path, ["loss.necessity_mode=off"]).loss.necessity_mode == "off"
    assert load_config(path, ["interventions.shared=false"]).interventions.shared is False
    # PyYAML reads 5e-4 (no dot) as a string; the config loader reads it as a float
    assert load_config(path, ["optim.lr=5e-4"]).optim.lr == 5e-4
    assert load_config(path, ["optim.lr=1.5E-3"]).optim.lr == 1.5e-3


@pytest.mark.slow
def test_a_few_steps_reduce_the_loss_and_write_a_usable_model(harvard_like: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    model_path = train(load_config(_config(harvard_like, out, 24, data__augment=False)), progress=False)
    losses = _losses(out)
    assert len(losses) == 24
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    loaded = load_model(model_path, 2)
    meta = loaded.meta
    assert meta["training"]["steps"] == 24 and len(meta["data_hash"]) == 16
    assert meta["training"]["config"]["model"]["features"] == [4, 8, 8]
    assert not Path(meta["training"]["config"]["data"]["root"]).is_absolute()
    assert (out / "val.csv").exists() and (out / "loss.png").exists() and (out / "config.yaml").exists()


@pytest.mark.slow
@pytest.mark.parametrize("ema_decay", [None, 0.9], ids=["raw", "ema"])
def test_resume_continues_identically(harvard_like: Path, tmp_path: Path, ema_decay: float | None) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    extra = {"optim__ema_decay": ema_decay}
    train(load_config(_config(harvard_like, straight, 6, **extra)), progress=False)
    _train_until(load_config(_config(harvard_like, split, 6, **extra)), 3)  # an interrupted run
    train(load_config(_config(harvard_like, split, 6, **extra)), resume="auto", progress=False)
    a = torch.load(straight / "state.pt", weights_only=True)
    b = torch.load(split / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert ("average" in a) == (ema_decay is not None)
    if ema_decay is not None:
        assert a["average"]["updates"] == b["average"]["updates"] == 6
        for key, value in a["average"]["weights"].items():
            assert torch.equal(value, b["average"]["weights"][key]), key
    assert _losses(straight) == _losses(split)


def test_weight_average_follows_early_and_smooths_later() -> None:
    from napari_isfl.training.averaging import WeightAverage

    network = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(network, 0.99)
    weight = network[0].weight
    start = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    average.update(network)  # effective decay 2/11: mostly the new weights
    assert torch.allclose(average.network[0].weight, start + 9 / 11)
    assert not average.network[0].weight.requires_grad
    network[1].num_batches_tracked.fill_(7)  # integer buffers are copied, not averaged
    for _ in range(2000):  # effective decay reaches 0.99: the average converges to fixed weights
        average.update(network)
    assert torch.allclose(average.network[0].weight, weight, atol=1e-6)
    assert int(average.network[1].num_batches_tracked) == 7
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(network, 1.0)


@pytest.mark.slow
def test_ema_run_validates_and_exports_the_average(harvard_like: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    model_path = train(load_config(_config(harvard_like, out, 6, optim__ema_decay=0.9)), progress=False)
    state = torch.load(out / "state.pt", weights_only=True)
    exported = load_model(model_path, 2).network.state_dict()
    for key, value in state["average"]["weights"].items():
        assert torch.equal(exported[key], value), key
    differs = [k for k in state["model"] if not torch.equal(state["model"][k], exported[k])]
    assert differs, "the exported weights are the raw weights, not their average"
    with pytest.raises(ValueError, match="ema_decay"):
        load_config(_config(harvard_like, out, 6), ["optim.ema_decay=1.5"])


@pytest.mark.slow
def test_resume_with_more_steps_follows_the_new_schedule(harvard_like: Path, tmp_path: Path) -> None:
    """Extending a finished run (``--resume auto --max-steps 10``) decays over the new horizon instead
    of staying at the old schedule's floor."""
    from napari_isfl.training.trainer import _Schedule

    out = tmp_path / "run"
    train(load_config(_config(harvard_like, out, 6)), progress=False)
    train(load_config(_config(harvard_like, out, 10)), resume="auto", progress=False)
    with open(out / "log.csv") as handle:
        lr = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(handle)}
    assert max(lr) == 10
    expected = _Schedule(OptimConfig(warmup_steps=1, max_steps=10))(7) * 0.005
    assert lr[7] == pytest.approx(expected) and lr[7] > 5 * lr[6]  # step 6 ended the old schedule


@pytest.mark.slow
def test_resume_follows_a_new_learning_rate(harvard_like: Path, tmp_path: Path) -> None:
    """``--resume auto --set optim.lr=...`` resumes at the new peak rate, not the saved one."""
    from napari_isfl.training.trainer import _Schedule

    out = tmp_path / "run"
    _train_until(load_config(_config(harvard_like, out, 8)), 4)
    train(load_config(_config(harvard_like, out, 8), ["optim.lr=0.001"]), resume="auto", progress=False)
    with open(out / "log.csv") as handle:
        lr = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(handle)}
    schedule = _Schedule(OptimConfig(warmup_steps=1, max_steps=8))
    assert lr[4] == pytest.approx(0.005 * schedule(4))
    assert lr[5] == pytest.approx(0.001 * schedule(5))


def _train_until(config: dict, steps: int) -> None:
    """Run the first ``steps`` steps of a longer schedule (as an interrupted run would have)."""
    from napari_isfl.training import trainer

    original = trainer.CropDataset

    class Interrupted(original):  # the loader simply runs dry after ``steps`` steps
        def __len__(self) -> int:
            return min(super().__len__(), (steps - self.start_step) * self.batch_size)

    trainer.CropDataset = Interrupted
    try:
        train(config, progress=False)
    finally:
        trainer.CropDataset = original


def test_crops_are_a_pure_function_of_seed_step_and_rank(harvard_like: Path) -> None:
    from napari_isfl.cases import load_case

    cases = [load_case(c) for c in cases_from_folder(harvard_like / "train")]

    def make(start: int, rank: int) -> CropDataset:
        return CropDataset(cases, (16, 16), 2, 4, seed=3, start_step=start, world_size=2, rank=rank)

    full, resumed, other_rank = make(0, 0), make(2, 0), make(0, 1)
    assert torch.equal(full[4][0], resumed[0][0])  # step 2, position 0, whatever the starting step
    assert not torch.equal(full[0][0], other_rank[0][0])


def test_batches_share_their_number_of_inputs() -> None:
    rng = np.random.default_rng(0)
    cases = [
        LoadedCase(rng.random((3, 20, 20), dtype=np.float32), ["mri", "ct", "pet"], "a"),
        LoadedCase(rng.random((2, 20, 20), dtype=np.float32), ["mri", "pet"], "b"),
    ]
    data = CropDataset(cases, (8, 8), 4, 6, num_inputs=(2, 3), seed=1)
    for step in range(6):
        counts = {data[step * 4 + i][0].shape[0] for i in range(4)}
        assert len(counts) == 1


@pytest.mark.parametrize("crop", [(9, 8), (5, 6, 7)], ids=["2d", "3d"])
def test_gamma_augmentation_varies_each_input_and_stays_in_range(crop: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    cases = [LoadedCase(rng.random((3, 12, 11, 10)[: len(crop) + 1], dtype=np.float32), ["mri"] * 3, "a")]

    def make(gamma_range: tuple[float, float] | None) -> CropDataset:
        return CropDataset(cases, crop, 1, 4, num_inputs=(3,), seed=2, augment=False, gamma_range=gamma_range)

    plain, same, varied = make(None), make((1.0, 1.0)), make((0.5, 2.0))
    for index in range(4):
        assert torch.allclose(plain[index][0], same[index][0])  # gamma 1: unchanged
        images = varied[index][0]
        assert torch.equal(images, varied[index][0])  # deterministic
        assert images.min() >= 0 and images.max() <= 1
        # one gamma per input: log(out) / log(in) is constant within an input and differs between them
        ratios = [
            (torch.log(out[inp > 0.05]) / torch.log(inp[inp > 0.05])).numpy()
            for out, inp in zip(images, plain[index][0], strict=True)
        ]
        assert all(np.ptp(r) < 1e-3 for r in ratios)
        assert np.ptp([r.mean() for r in ratios]) > 1e-3
        assert all(0.5 - 1e-4 <= r.mean() <= 2.0 + 1e-4 for r in ratios)
    with pytest.raises(ValueError, match="gamma_range"):
        make((0.0, 1.0))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_distributed_data_parallel_on_cpu_with_gloo(harvard_like: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 ... isfl train` trains one model with two gloo processes."""
    out = tmp_path / "ddp"
    config = _config(harvard_like, out, 3)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "napari_isfl.cli",
        "train",
        "--config",
        str(config),
        "-q",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = load_model(out / "model.pt", 2).meta
    assert meta["training"]["world_size"] == 2
    assert len(_losses(out)) == 3  # rank 0 alone writes the log


@pytest.mark.parametrize("dims", [2, 3])
def test_validation_in_inference_windows(dims: int) -> None:
    """``run.val_window``: auto equals one piece for a case at most twice the crop and the training
    windows for a larger one; the windows change the score of a large case."""
    from core_helpers import tiny_net
    from napari_isfl.model.losses import ISFLLoss, ISFLLossWeights
    from napari_isfl.training.trainer import validate

    network = tiny_net(dims).eval()
    criterion = ISFLLoss(dims, ISFLLossWeights())
    crop = [8] * dims

    def score(shape: tuple[int, ...], window: str) -> float:
        images = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
        case = LoadedCase(images, ["mri", "ct"], "case")
        return validate(network, [case], criterion, torch.device("cpu"), False, window, crop)["val_fidelity"]

    small, large = (16, 15, 14)[:dims], (37, 29, 21)[:dims]
    assert score(small, "auto") == score(small, "whole")
    assert score(large, "auto") == score(large, "training") != score(large, "whole")
    with pytest.raises(ValueError, match="val_window"):
        load_config(None, ["run.val_window=tiles"])


@pytest.mark.slow
def test_training_validates_in_windows_when_asked(harvard_like: Path, tmp_path: Path) -> None:
    """``run.val_window=auto`` reaches validation: 40 px dev images and 16 px crops validate in
    windows, so the logged score differs from the one-piece run's on the same weights."""
    scores = {}
    for window in ("whole", "auto"):
        out = tmp_path / window
        config = load_config(
            _config(harvard_like, out, 2, data__crop_size=[16, 16]), [f"run.val_window={window}"]
        )
        train(config, progress=False)
        with open(out / "val.csv") as handle:
            scores[window] = float(list(csv.DictReader(handle))[-1]["val_fidelity"])
    assert scores["whole"] != scores["auto"]


def test_read_log_keeps_one_row_per_step_the_resumed_one(tmp_path: Path) -> None:
    # killed after step 30 (checkpoint at 20), resumed from 20: steps 30 and 40 logged again
    log = tmp_path / "log.csv"
    rows = [(10, 1.0), (20, 0.9), (30, 0.8), (30, 0.7), (40, 0.6)]
    log.write_text("step,loss\n" + "".join(f"{step},{loss}\n" for step, loss in rows))
    kept = read_log(log)
    assert [int(r["step"]) for r in kept] == [10, 20, 30, 40]
    assert kept[2]["loss"] == "0.7"


def test_a_log_appended_by_a_newer_version_keeps_its_columns(tmp_path: Path) -> None:
    """A run resumed by a version that logs a new term (``functional``) keeps the file's header; the new
    column is dropped rather than shifting every value one column to the right."""
    from napari_isfl.training.trainer import _append_csv

    log = tmp_path / "log.csv"
    _append_csv(log, {"step": 10, "loss": 1.0, "ssim": 0.5})
    _append_csv(log, {"step": 20, "loss": 0.9, "functional": 0.3, "ssim": 0.4})
    rows = read_log(log)
    assert list(rows[0]) == ["step", "loss", "ssim"]
    assert rows[1] == {"step": "20", "loss": "0.9", "ssim": "0.4"}


def test_checkpoints_record_data_paths_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared checkpoint should not carry the trainer's absolute folder names; config.yaml (for resume)
    keeps them."""
    monkeypatch.chdir(tmp_path / "..")
    config = {
        "model": {"spatial_dims": 2},
        "data": {
            "root": str(tmp_path / "data"),
            "train": [{"type": "csv", "path": str(tmp_path / "lists" / "train.csv")}],
            "val": [{"type": "folder", "path": "harvard/dev"}],
            "crop_size": [64, 64],
        },
        "run": {"init": str(tmp_path / "runs" / "model.pt")},
    }
    portable = _portable(config)
    assert portable["run"]["init"] == str(Path(tmp_path.name) / "runs" / "model.pt")
    assert _portable(config | {"run": {"init": "isfl-2d"}})["run"]["init"] == "isfl-2d"
    assert portable["data"]["root"] == str(Path(tmp_path.name) / "data")
    assert portable["data"]["train"][0] == {
        "type": "csv",
        "path": str(Path(tmp_path.name) / "lists" / "train.csv"),
    }
    assert portable["data"]["val"][0]["path"] == "harvard/dev"
    assert portable["data"]["crop_size"] == [64, 64] and portable["model"] == config["model"]
    assert config["data"]["root"] == str(tmp_path / "data")  # the run's own config is untouched
    assert config["run"]["init"] == str(tmp_path / "runs" / "model.pt")


def test_fine_tuning_into_a_smaller_network_says_what_it_leaves_out(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A checkpoint with a refiner, fine-tuned under a config without one, keeps everything that fits and
    names the refiner it drops (it used to vanish silently)."""
    from napari_isfl.model.checkpoint import save_checkpoint
    from napari_isfl.model.network import ISFLNet

    kwargs = {"features": (8, 8), "grid_size": 2, "head": "pyramid"}
    refined = ISFLNet(2, refiner_levels=1, refiner_hidden=4, refiner_tags=2, **kwargs)
    path = save_checkpoint(tmp_path / "refined.pt", refined)
    plain = ISFLNet(2, **kwargs)
    assert _initialise_from(plain, str(path)) == []
    message = capsys.readouterr().err
    assert "refiner weights do not fit" in message and "model.refiner_levels" in message
    torch.testing.assert_close(
        plain.state_dict()["selectors.0.conv.weight"], refined.state_dict()["selectors.0.conv.weight"]
    )

"""Distillation of target fusions (``data.targets`` + ``loss.distill``): targets follow their crops,
the term scores only samples that have one, and a training run uses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from napari_isfl.cases import Case, LoadedCase, load_case
from napari_isfl.model.losses import ISFLLoss, ISFLLossWeights
from napari_isfl.training.config import load_config
from napari_isfl.training.dataset import CropDataset, collate_crops
from napari_isfl.training.trainer import _load_cases, read_log, train


@pytest.mark.parametrize("shape", [(2, 23, 19), (2, 13, 12, 11)], ids=["2d", "3d"])
def test_a_target_travels_with_its_crop_through_flips_and_rotations(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = rng.random(shape, dtype=np.float32)
    case = LoadedCase(array, ["mri", "ct"], "a", target=array[0].copy())
    crop = (9, 9) if len(shape) == 3 else (7, 7, 6)  # square in the rotated plane
    plain = CropDataset([case], crop, 2, 5, seed=4)
    for index in range(10):
        images, tags, target = plain[index]
        assert tags == ["mri", "ct"] and target.shape == (1, *crop)
        assert torch.equal(target[0], images[0])  # the target was the first image: still is
    # gamma changes the inputs, never the target
    gamma = CropDataset([case], crop, 2, 5, seed=4, gamma_range=(0.5, 2.0))
    assert torch.equal(gamma[3][2], plain[3][2]) and not torch.equal(gamma[3][0], plain[3][0])


def test_a_target_needs_all_the_case_images_and_batches_mark_who_has_one() -> None:
    rng = np.random.default_rng(1)
    three = LoadedCase(rng.random((3, 12, 12), dtype=np.float32), ["mri", "ct", "pet"], "a")
    three.target = three.array.mean(axis=0)
    two = LoadedCase(rng.random((2, 12, 12), dtype=np.float32), ["mri", "ct"], "b")
    data = CropDataset([three, two], (8, 8), 4, 8, num_inputs=(2, 3), seed=0)
    seen = set()
    for step in range(8):
        batch = [data[step * 4 + i] for i in range(4)]
        images, _, targets = collate_crops(batch)
        for item in batch:
            # only a draw of all three images of case "a" may carry the 3-image fusion
            assert item[2] is None or item[0].shape[0] == 3
        if targets is None:
            assert all(item[2] is None for item in batch)
            continue
        fused, has_target = targets
        assert fused.shape == (4, 1, 8, 8) and has_target.tolist() == [item[2] is not None for item in batch]
        assert torch.all(fused[~has_target] == 0)
        seen.add(images.shape[1])
    assert seen == {3}


def test_load_case_crops_the_target_with_the_images(tmp_path: Path) -> None:
    image = np.zeros((30, 40), dtype=np.uint8)
    image[5:20, 10:35] = 200
    paths = []
    for name in ("mri", "ct"):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(image).save(paths[-1])
    target = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    loaded = load_case(Case(paths, ["mri", "ct"], "x"), target=target)
    assert loaded.array.shape[1:] == loaded.target.shape == (15, 25)
    assert np.array_equal(loaded.target, target[5:20, 10:35])
    with pytest.raises(ValueError, match=r"case x: target fusion of shape \(30, 41\)"):
        load_case(Case(paths, ["mri", "ct"], "x"), target=np.zeros((30, 41)))


def test_the_distill_term_scores_only_samples_with_a_target() -> None:
    sources = torch.rand(3, 2, 16, 16)
    fused = torch.rand(3, 1, 16, 16, requires_grad=True)
    target = fused.detach().clone()
    target[1] += 0.5  # sample 1 has no target: its zeros must not count
    has_target = torch.tensor([True, False, True])
    criterion = ISFLLoss(2, ISFLLossWeights(distill=2.0))
    terms = criterion(sources, {"fused": fused, "gates": []}, targets=(target, has_target))
    assert float(terms["distill"]) == 0.0
    target[2] += 0.25
    terms = criterion(sources, {"fused": fused, "gates": []}, targets=(target, has_target))
    assert float(terms["distill"]) == pytest.approx(0.125)
    plain = ISFLLoss(2, ISFLLossWeights())(sources, {"fused": fused, "gates": []})
    assert float(terms["loss"].detach()) == pytest.approx(float(plain["loss"].detach()) + 0.25, rel=1e-5)
    # the detail term ignores a difference of brightness and sees one of edges
    detail = ISFLLoss(2, ISFLLossWeights(distill_detail=1.0))
    shifted = fused.detach() + 0.1
    assert (
        float(detail(sources, {"fused": fused, "gates": []}, targets=(shifted, has_target))["distill_detail"])
        < 1e-6
    )
    edged = fused.detach().clone()
    edged[..., 8:, :] += 0.1
    assert (
        float(detail(sources, {"fused": fused, "gates": []}, targets=(edged, has_target))["distill_detail"])
        > 1e-3
    )
    assert "distill" not in ISFLLoss(2, ISFLLossWeights())(
        sources, {"fused": fused, "gates": []}, targets=(target, has_target)
    )


@pytest.fixture
def phantom_data(tmp_path: Path) -> Path:
    """Three CT-MRI pairs in the Harvard layout, and target fusions for two of them (the MRI)."""
    rng = np.random.default_rng(0)
    for number in range(3):
        mri = (rng.random((36, 36)) * 255).astype(np.uint8)
        ct = np.zeros((36, 36), dtype=np.uint8)
        ct[8:28, 8:28] = 180
        for modality, image in (("MRI", mri), ("CT", ct)):
            folder = tmp_path / "data" / "train" / "CT-MRI" / modality
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{number}.png")
        if number < 2:
            (tmp_path / "targets" / "CT-MRI").mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / "targets" / "CT-MRI" / f"{number}.npy", mri.astype(np.float32) / 255)
    return tmp_path


def _write_config(root: Path, targets: str, steps: int = 3) -> Path:
    config = {
        "model": {"spatial_dims": 2, "features": [4, 8, 8], "grid_size": 2, "head": "pyramid"},
        "data": {
            "root": "data",
            "targets": targets,
            "train": [{"type": "folder", "path": "train"}],
            "crop_size": [24, 24],
            "batch_size": 3,
            "num_workers": 0,
        },
        "loss": {"distill": 1.0},
        "optim": {"lr": 0.005, "warmup_steps": 1, "max_steps": steps},
        "run": {"output_dir": str(root / "run"), "log_every": 1, "device": "cpu", "threads": 1},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_targets_are_found_by_case_name_and_a_wrong_folder_is_named(phantom_data: Path) -> None:
    config = load_config(_write_config(phantom_data, "targets"))
    assert config.data.targets == str((phantom_data / "targets").resolve())
    loaded, _ = _load_cases(config.data.train, config, config.data.targets)
    assert [c.target is not None for c in loaded] == [True, True, False]
    with pytest.raises(FileNotFoundError, match="data.targets: .*nowhere"):
        _load_cases(config.data.train, config, str(phantom_data / "nowhere"))
    (phantom_data / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no file in .*empty matches a training case .*CT-MRI/0.npy"):
        _load_cases(config.data.train, config, str(phantom_data / "empty"))


@pytest.mark.slow
def test_a_run_with_targets_logs_and_learns_the_distill_term(phantom_data: Path) -> None:
    train(load_config(_write_config(phantom_data, "targets", steps=12)), progress=False)
    rows = read_log(phantom_data / "run" / "log.csv")
    distill = [float(r["distill"]) for r in rows if r["distill"]]
    assert len(distill) >= 8 and np.mean(distill[-3:]) < np.mean(distill[:3])

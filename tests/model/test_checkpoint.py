"""Checkpoints: round trip of every architecture option, weights-only loading, and a clear refusal of
anything that is not a usable napari-isfl checkpoint."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from core_helpers import leftovers, tiny_net
from napari_isfl.model.checkpoint import (
    FORMAT,
    CheckpointError,
    load_model,
    model_path,
    save_checkpoint,
)
from napari_isfl.normalization import IntensitySpec

FIX = "save_checkpoint"  # every refusal names how to get a valid file


def _payload(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 2},
        {"spatial_dims": 3},
        {"spatial_dims": 2, "encoder": "per_modality", "modalities": ("mri", "pet")},
        {"spatial_dims": 2, "integrator": "mean"},
        {"spatial_dims": 3, "norm": None, "act": "relu"},
        {"spatial_dims": 2, "norm": "instance", "grid_size": 3},
        {"spatial_dims": 3, "head": "pyramid", "saliency": True},
        {"spatial_dims": 2, "head": "pyramid", "selector_hidden": 6},
        {"spatial_dims": 3, "head": "pyramid", "refiner_levels": 2, "refiner_hidden": 5},
        {"spatial_dims": 2, "head": "pyramid", "refiner_levels": 1, "refiner_hidden": 4, "refiner_tags": 3},
        {"spatial_dims": 3, "head": "pyramid", "refiner_levels": 1, "refiner_hidden": 3, "refiner_depth": 4},
        {"spatial_dims": 2, "head": "pyramid", "refiner_levels": 2, "refiner_hidden": 3, "refiner_passes": 2},
    ],
    ids=[
        "2d",
        "3d",
        "per-modality",
        "mean-integrator",
        "no-norm-relu",
        "instance-norm",
        "pyramid-saliency",
        "pyramid-selector-branches",
        "pyramid-refiner",
        "pyramid-refiner-tags",
        "pyramid-refiner-depth",
        "pyramid-refiner-passes",
    ],
)
def test_round_trip(tmp_path: Path, kwargs: dict) -> None:
    """Every architecture option survives save/load: same constructor arguments, same weights, same
    outputs, evaluation mode; the file loads with ``weights_only=True``."""
    dims = kwargs.pop("spatial_dims")
    net = tiny_net(dims, **kwargs).eval()
    path = save_checkpoint(tmp_path / "model.pt", net, training={"steps": 3}, metrics={"AG": 1.5})
    loaded = load_model(path, dims)
    assert loaded.network.init_args == net.init_args
    assert not loaded.network.training
    original, restored = net.state_dict(), loaded.network.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    images = torch.rand(1, 2, *((19, 21) if dims == 2 else (9, 10, 11)))
    tags = list(net.modalities[:2])
    with torch.no_grad():
        assert torch.equal(net(images, tags), loaded.network(images, tags))
    payload = _payload(path)
    assert payload["format"] == FORMAT and payload["architecture"] == "ISFLNet"
    assert loaded.meta["training"] == {"steps": 3} and loaded.meta["metrics"] == {"AG": 1.5}
    assert len(loaded.sha256) == 64 and loaded.name == "model.pt" and loaded.spatial_dims == dims


def test_a_channels_last_network_saves_the_default_layout(tmp_path: Path) -> None:
    """A 3D network trained channels-last on the CPU writes contiguous tensors with the same values, so
    the file does not depend on the layout it was trained in."""
    net = tiny_net(3).to(memory_format=torch.channels_last_3d)
    path = save_checkpoint(tmp_path / "model.pt", net)
    saved = _payload(path)["state_dict"]
    assert all(tensor.is_contiguous() for tensor in saved.values())
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())


def test_normalisation_rules_travel(tmp_path: Path) -> None:
    """The intensity rules stored with the model come back as IntensitySpec objects."""
    specs = {"mri": IntensitySpec("percentile", 1.0, 99.0), "ct": IntensitySpec("window", -100.0, 300.0)}
    loaded = load_model(save_checkpoint(tmp_path / "m.pt", tiny_net(2), normalization=specs))
    assert loaded.normalization == specs


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "good.pt", tiny_net(2))


def _refused(path: Path, *patterns: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message, message
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_truncated_file(good: Path) -> None:
    """A truncated (corrupt) file is refused, naming the file and how to get a valid one."""
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    _refused(good, "not a readable napari-isfl checkpoint", FIX)


def test_text_file(tmp_path: Path) -> None:
    """A text file with a checkpoint suffix is refused."""
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    _refused(path, "not a readable napari-isfl checkpoint", FIX)


def test_plain_tensor(tmp_path: Path) -> None:
    """A valid PyTorch file that holds a tensor, or a bare state dict, is not a napari-isfl checkpoint."""
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    _refused(path, "is a PyTorch file but not a napari-isfl checkpoint", FIX)
    torch.save(tiny_net(2).state_dict(), path)
    _refused(path, "not a napari-isfl checkpoint")


def test_other_architecture(good: Path) -> None:
    """A valid napari-isfl dict describing another architecture is refused by name."""
    payload = _payload(good)
    payload["architecture"] = "UNet"
    torch.save(payload, good)
    _refused(good, "holds architecture 'UNet', not ISFLNet")


@pytest.mark.parametrize("change", ["features", "missing-key", "renamed-key"])
def test_state_dict_does_not_match(good: Path, change: str) -> None:
    """Weights that do not fit the architecture the file describes are refused (not a torch traceback)."""
    payload = _payload(good)
    if change == "features":
        payload["arch_args"]["features"] = [8, 8, 8]
    elif change == "missing-key":
        payload["state_dict"].pop(next(iter(payload["state_dict"])))
    else:
        state = payload["state_dict"]
        state["extra.weight"] = state.pop(next(iter(state)))
    torch.save(payload, good)
    _refused(good, "weights do not match the ISFLNet it describes")


def test_selector_hidden_must_be_a_small_integer(good: Path) -> None:
    payload = torch.load(good, weights_only=True)
    payload["arch_args"]["selector_hidden"] = -3
    torch.save(payload, good)
    _refused(good, "field arch_args.selector_hidden must be an integer in 0..")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("refiner_levels", 9),
        ("refiner_hidden", 0),
        ("refiner_tags", -1),
        ("refiner_depth", 0),
        ("refiner_passes", 0),
    ],
)
def test_refiner_sizes_must_be_small_integers(good: Path, key: str, value: int) -> None:
    payload = _payload(good)
    payload["arch_args"][key] = value
    torch.save(payload, good)
    _refused(good, f"field arch_args.{key} must be an integer in")


def test_saliency_flag_must_be_a_boolean(good: Path) -> None:
    payload = _payload(good)
    payload["arch_args"]["saliency"] = "yes"
    torch.save(payload, good)
    _refused(good, "field arch_args.saliency must be true or false")


def test_missing_architecture_and_newer_format(good: Path) -> None:
    """A checkpoint without its architecture, or from a newer format, is refused with the fix."""
    payload = _payload(good)
    torch.save({**payload, "format_version": 99}, good)
    _refused(good, "newer than this napari-isfl", "upgrade")
    torch.save({**payload, "arch_args": {"features": [4, 8, 8]}}, good)
    _refused(good, "field arch_args.spatial_dims is missing")


class _Exploit:
    """A pickled object whose unpickling would run code (writes a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_weights_only_refuses_arbitrary_objects(tmp_path: Path) -> None:
    """Loading uses ``weights_only=True``: a pickle that would construct an arbitrary object (and run
    code) is refused and the code never runs."""
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "format_version": 1, "architecture": "ISFLNet", "x": _Exploit(marker)}
    with open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=2)  # torch.save's protocol
    message = _refused(path, "holds Python objects that safe loading (weights_only=True) refuses")
    assert not marker.exists() and "weights_only=False" not in message
    torch.save(payload, path)  # also through torch's own zip format
    message = _refused(path, "holds Python objects that safe loading (weights_only=True) refuses")
    assert not marker.exists() and "weights_only=False" not in message and len(message) < 400


def test_wrong_dimensionality(good: Path) -> None:
    """A 2D model asked for 3D input is refused with the fix."""
    with pytest.raises(CheckpointError, match="is a 2D model but the input is 3D; use a 3D model"):
        load_model(good, 3)


def test_model_names(tmp_path: Path) -> None:
    """'default' needs a dimensionality; an unknown name lists the valid ones; a missing path is a
    FileNotFoundError naming it."""
    with pytest.raises(CheckpointError, match="needs the input's dimensionality"):
        model_path("default")
    with pytest.raises(CheckpointError, match="unknown model 'isfl-4d'.*'default'"):
        model_path("isfl-4d")
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt: no such file"):
        load_model(missing)
    with pytest.raises(FileNotFoundError):
        model_path(str(tmp_path / "sub" / "model"))


def test_failed_save_keeps_the_old_file(good: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that fails half-way leaves the previous checkpoint byte for byte, and no temp file."""
    before = good.read_bytes()

    def broken_save(obj, target, *args, **kwargs):
        Path(target).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(good, tiny_net(2, seed=1))
    assert good.read_bytes() == before
    assert leftovers(good.parent) == []

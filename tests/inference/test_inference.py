"""``fuse``: shapes, sliding windows vs the single pass, foreground cropping, stability and contribution
maps, progress and cancellation, devices, and clear errors for bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core_helpers import (
    SHAPE_2D,
    SHAPE_3D,
    phantom,
    phantom_stack,
    receptive_radius,
    save_tiny_checkpoint,
)
from napari_isfl.device import select_device
from napari_isfl.inference import FusionCancelled, FusionEngine, fuse
from napari_isfl.inference.windows import count_windows, parse_patch_size, resolve_roi_size
from napari_isfl.model.checkpoint import CheckpointError, load_model
from napari_isfl.normalization import IntensitySpec, normalize_intensity

TAGS = ["mri", "ct", "pet"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory):
    """Tiny checkpoints by (spatial_dims, integrator): ``"cfi"`` is the real architecture, ``"mean"``
    its purely convolutional ablation (no pooled attention), whose results are local."""
    folder = tmp_path_factory.mktemp("ckpt")
    made: dict[tuple[int, str], Path] = {}

    def get(dims: int, integrator: str = "cfi") -> Path:
        if (dims, integrator) not in made:
            made[dims, integrator] = save_tiny_checkpoint(
                folder / f"tiny{dims}d_{integrator}.pt", dims, integrator=integrator
            )
        return made[dims, integrator]

    return get


def _direct(path: Path, images: list[np.ndarray], tags: list[str]) -> np.ndarray:
    """The network called directly on the normalised stack (what a single window must reproduce).

    The tiny checkpoints carry the default normalisation, so the default rule of each tag applies. The
    network comes as the engine prepares it (3D: channels-last weights on the CPU), so the rounding is
    the same.
    """
    loaded = FusionEngine(path, "cpu").loaded_model(images[0].ndim)
    stack = np.stack([normalize_intensity(im, t)[0] for im, t in zip(images, tags, strict=True)])
    with torch.no_grad():
        return loaded.network(torch.from_numpy(stack)[None], tags)[0, 0].numpy()


@pytest.mark.parametrize(
    ("shape", "num_mod"),
    [(SHAPE_2D, 2), (SHAPE_2D, 3), (SHAPE_3D, 2), (SHAPE_3D, 3)],
    ids=["2d-2mod", "2d-3mod", "3d-2mod", "3d-3mod"],
)
def test_output_shape_and_range(ckpt, shape: tuple[int, ...], num_mod: int) -> None:
    """Any real dtype in, float32 in [0, 1] out with exactly the input's (odd) shape."""
    images = phantom_stack(shape, num_mod)
    images[0] = np.rint(images[0] * 3000).astype(np.int16)  # an MRI stored as int16
    result = fuse(images, TAGS[:num_mod], model=ckpt(len(shape)), device="cpu")
    assert result.fused.shape == shape and result.fused.dtype == np.float32
    assert np.isfinite(result.fused).all()
    assert result.fused.min() >= 0.0 and result.fused.max() <= 1.0
    assert result.stability is None and result.contributions is None
    assert result.modalities == TAGS[:num_mod]
    assert result.provenance["device"] == "cpu" and result.provenance["windows"] == 1


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D], ids=["2d", "3d"])
def test_single_window_equals_network_call(ckpt, shape: tuple[int, ...]) -> None:
    """A window covering the whole image (auto size, or one larger than the image) gives exactly the
    network's output on the normalised stack: no blending, no padding artefacts."""
    images = phantom_stack(shape, 2, seed=3)
    path = ckpt(len(shape))
    direct = _direct(path, images, ["mri", "ct"])
    for roi in (None, 64):
        result = fuse(images, ["mri", "ct"], model=path, device="cpu", roi_size=roi, crop_foreground=False)
        assert result.provenance["windows"] == 1
        np.testing.assert_array_equal(result.fused, direct)


def test_channels_last_3d_network_fuses_as_the_default_layout(ckpt, monkeypatch) -> None:
    """The engine keeps a 3D network's weights channels-last on the CPU (faster convolutions); the fusion
    and the contribution maps are those of the default layout up to float rounding."""
    images = phantom_stack(SHAPE_3D, 2, seed=5)
    engine = FusionEngine(ckpt(3), "cpu")
    fast = engine.fuse(images, ["mri", "ct"], roi_size=16, contributions=True)
    convs = [m.weight for m in engine.loaded_model(3).network.modules() if isinstance(m, torch.nn.Conv3d)]
    mixing = [w for w in convs if w.shape[1] > 1 and w.shape[2] > 1]  # where the two layouts differ
    assert mixing and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in mixing)
    assert not any(w.is_contiguous() for w in mixing)
    monkeypatch.setattr("napari_isfl.inference.engine.fast_cpu_layout", lambda *args: None)
    plain = FusionEngine(ckpt(3), "cpu").fuse(images, ["mri", "ct"], roi_size=16, contributions=True)
    np.testing.assert_allclose(fast.fused, plain.fused, atol=1e-5)
    np.testing.assert_allclose(fast.contributions, plain.contributions, atol=1e-5)


def _window_slices(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float, multiple: int) -> list:
    """The windows ``fuse`` runs (grid-aligned sizes and steps, as MONAI enumerates them)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    from napari_isfl.inference.windows import _grid_windows

    padded = tuple(n + (-n) % multiple for n in shape)
    roi, overlaps = _grid_windows(padded, roi, overlap, multiple)
    return dense_patch_slices(padded, roi, _get_scan_interval(padded, roi, len(shape), overlaps))


def test_sliding_windows_exact_away_from_window_borders(ckpt) -> None:
    """Purely convolutional network: a voxel whose receptive field lies inside every window that covers
    it gets exactly the single-pass value. This checks the window placement (on the pooling grid; an odd
    image size makes MONAI's last window start off-grid unless it is aligned) and the blending."""
    path = ckpt(2, "mean")
    shape, roi, overlap = (101, 90), (64, 64), 0.5
    images = phantom_stack(shape, 2, seed=5)
    single = fuse(images, ["mri", "ct"], model=path, device="cpu", crop_foreground=False)
    windowed = fuse(images, ["mri", "ct"], model=path, device="cpu", crop_foreground=False, roi_size=roi,
                    overlap=overlap)  # fmt: skip
    net = load_model(path, 2).network
    radius = receptive_radius(net)
    windows = _window_slices(shape, roi, overlap, net.size_multiple)
    assert windowed.provenance["windows"] == len(windows) > 1
    safe = np.ones(shape, bool)
    for window in windows:
        inside = np.zeros(shape, bool)
        inside[window] = True
        core = tuple(
            slice(w.start + (radius if w.start > 0 else 0), w.stop - (radius if w.stop < n else 0))
            for w, n in zip(window, shape, strict=True)
        )
        in_core = np.zeros(shape, bool)
        in_core[core] = True
        safe &= ~inside | in_core
    assert safe.mean() > 0.15
    np.testing.assert_allclose(windowed.fused[safe], single.fused[safe], atol=2e-6, rtol=0)
    assert np.abs(windowed.fused - single.fused).max() > 1e-3  # the window borders do show


@pytest.mark.parametrize(
    ("shape", "roi"), [((101, 90), (64, 64)), ((41, 37, 30), (32, 28, 24))], ids=["2d", "3d"]
)
def test_sliding_windows_agree_with_single_pass(ckpt, shape: tuple[int, ...], roi: tuple[int, ...]) -> None:
    """The real (CFI) network with windows smaller than the image is close to, not equal to, the
    single pass (= the direct network call): each window's pooled attention sees only that window, and
    windows not much larger than the receptive field (about 26 voxels each way for three scales) see
    zero padding at their borders.

    Measured on this tiny calibrated network (random weights): mean |difference| 0.006 (2D) and 0.027
    (3D) against output standard deviations of 0.076 and 0.126, correlation 0.989 and 0.946. Bounds are
    about 2-3x the measurement; windows placed off the pooling grid gave correlations near 0.5-0.7."""
    path = ckpt(len(shape))
    images = phantom_stack(shape, 2, seed=6)
    direct = _direct(path, images, ["mri", "ct"])
    for overlap in (0.25, 0.5):
        result = fuse(images, ["mri", "ct"], model=path, device="cpu", roi_size=roi, overlap=overlap,
                      crop_foreground=False)  # fmt: skip
        assert result.provenance["windows"] > 1
        assert np.abs(result.fused - direct).mean() < (0.02 if len(shape) == 2 else 0.07)
        assert np.corrcoef(result.fused.ravel(), direct.ravel())[0, 1] > (0.97 if len(shape) == 2 else 0.9)


def test_crop_foreground_agrees_inside_the_box(ckpt) -> None:
    """Cropping to the foreground box: the box covers all foreground and starts on the pooling grid,
    the result is 0 outside it, and inside it a purely convolutional network gives exactly the
    uncropped values wherever its receptive field does not reach the box edge."""
    path = ckpt(2, "mean")
    shape = (120, 110)
    images = phantom_stack(shape, 2, seed=7, border=19)
    on = fuse(images, ["mri", "ct"], model=path, device="cpu", crop_foreground=True)
    off = fuse(images, ["mri", "ct"], model=path, device="cpu", crop_foreground=False)
    box = tuple(slice(a, b) for a, b in on.provenance["parameters"]["foreground_box"])
    net = load_model(path, 2).network
    assert all(s.start % net.size_multiple == 0 for s in box)
    foreground = np.zeros(shape, bool)
    foreground[tuple(slice(19, n - 19) for n in shape)] = True
    inside = np.zeros(shape, bool)
    inside[box] = True
    assert inside[foreground].all() and inside.mean() < 0.8
    assert (on.fused[~inside] == 0).all()
    radius = receptive_radius(net)
    core = tuple(slice(s.start + radius, s.stop - radius) for s in box)
    assert on.fused[core].size > 0
    np.testing.assert_allclose(on.fused[core], off.fused[core], atol=2e-6, rtol=0)


@pytest.mark.parametrize(("shape", "border"), [((120, 110), 12), ((40, 36, 30), 8)], ids=["2d", "3d"])
def test_crop_foreground_cfi_close_inside_the_box(ckpt, shape: tuple[int, ...], border: int) -> None:
    """The real (CFI) network: cropping changes what the pooled attention averages over (background is
    left out), and the 4-voxel margin puts the box edge inside the receptive field of the foreground,
    so inside the box the results are close, not equal.

    Measured on this tiny random network: mean |difference| 0.039 (2D) / 0.092 (3D) against output
    standard deviations of 0.12 / 0.26, correlation 0.875 / 0.89; bounds about 2x the measurement."""
    path = ckpt(len(shape))
    images = phantom_stack(shape, 2, seed=8, border=border)
    on = fuse(images, ["mri", "ct"], model=path, device="cpu", crop_foreground=True)
    off = fuse(images, ["mri", "ct"], model=path, device="cpu", crop_foreground=False)
    box = tuple(slice(a, b) for a, b in on.provenance["parameters"]["foreground_box"])
    assert all(s.start > 0 for s in box)
    # voxels that are background in every input are set to 0 with the crop (no box outline)
    background = np.all([im <= im.min() for im in images], axis=0)
    assert background.any() and (on.fused[background] == 0).all()
    region = np.zeros(shape, bool)
    region[box] = True
    region &= ~background
    assert np.abs(on.fused[region] - off.fused[region]).mean() < (0.08 if len(shape) == 2 else 0.18)
    assert np.corrcoef(on.fused[region], off.fused[region])[0, 1] > 0.75


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D], ids=["2d", "3d"])
def test_stability_map(ckpt, shape: tuple[int, ...]) -> None:
    """The stability map has the image's shape, is finite and non-negative, is reproducible with the
    seed and changes with it; the fused image does not depend on it."""
    images = phantom_stack(shape, 2, seed=9)
    path = ckpt(len(shape))
    kwargs = {"model": path, "device": "cpu", "stability": True, "stability_passes": 4}
    first = fuse(images, ["mri", "ct"], seed=1, **kwargs)
    again = fuse(images, ["mri", "ct"], seed=1, **kwargs)
    other = fuse(images, ["mri", "ct"], seed=2, **kwargs)
    plain = fuse(images, ["mri", "ct"], model=path, device="cpu")
    stability = first.stability
    assert stability.shape == shape and stability.dtype == np.float32
    assert np.isfinite(stability).all() and stability.min() >= 0 and stability.max() > 0
    np.testing.assert_array_equal(stability, again.stability)
    assert not np.array_equal(stability, other.stability)
    np.testing.assert_array_equal(first.fused, plain.fused)
    assert first.provenance["parameters"]["stability_passes"] == 4


def test_stability_zero_where_nothing_can_change(ckpt) -> None:
    """Test-time masking only hides signal, so where every input is zero within the receptive field the
    (purely convolutional) network's output cannot change: the raw stability (no smoothing) is exactly
    0 there; outside the foreground box of a cropped run it is 0 by construction. Near the signal it is
    positive."""
    path = ckpt(2, "mean")
    shape = (110, 100)
    images = phantom_stack(shape, 2, seed=10, border=40)
    result = fuse(
        images,
        ["mri", "ct"],
        model=path,
        device="cpu",
        stability=True,
        crop_foreground=False,
        stability_smoothing=0,
    )
    radius = receptive_radius(load_model(path, 2).network)
    near = np.zeros(shape, bool)
    near[tuple(slice(40 - radius, n - 40 + radius) for n in shape)] = True
    assert (~near).any()
    assert (result.stability[~near] == 0).all()
    assert result.stability[tuple(slice(40, n - 40) for n in shape)].mean() > 0
    cropped = fuse(images, ["mri", "ct"], model=path, device="cpu", stability=True)
    box = tuple(slice(a, b) for a, b in cropped.provenance["parameters"]["foreground_box"])
    outside = np.ones(shape, bool)
    outside[box] = False
    assert (cropped.stability[outside] == 0).all()


@pytest.mark.parametrize(("shape", "num_mod"), [(SHAPE_2D, 3), (SHAPE_3D, 2)], ids=["2d-3mod", "3d-2mod"])
def test_contributions(ckpt, shape: tuple[int, ...], num_mod: int) -> None:
    """Contribution maps: (N, *shape), within [0, 1], summing to 1 at every voxel (1/N outside the box)."""
    images = phantom_stack(shape, num_mod, seed=11, border=6)
    result = fuse(images, TAGS[:num_mod], model=ckpt(len(shape)), device="cpu", contributions=True)
    maps = result.contributions
    assert maps.shape == (num_mod, *shape)
    assert maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps.sum(axis=0), 1.0, atol=1e-5)
    box = tuple(slice(a, b) for a, b in result.provenance["parameters"]["foreground_box"])
    outside = np.ones(shape, bool)
    outside[box] = False
    assert outside.any() and (maps[:, outside] == np.float32(1 / num_mod)).all()


@pytest.mark.parametrize("sw_batch_size", [1, 3])
def test_progress_counts_window_batches(ckpt, sw_batch_size: int) -> None:
    """Progress starts at (0, total), ends at (total, total), counts one step per window batch, and
    ``count_windows`` gives the number of windows actually run."""
    calls: list[tuple[int, int]] = []
    images = phantom_stack((75, 64), 2, seed=12)
    result = fuse(images, ["mri", "ct"], model=ckpt(2), device="cpu", roi_size=32, overlap=0.25,
                  sw_batch_size=sw_batch_size, progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    windows = result.provenance["windows"]
    total = math.ceil(windows / sw_batch_size)
    roi = tuple(result.provenance["parameters"]["roi_size"])
    assert calls == [(i, total) for i in range(total + 1)]
    assert windows > 4
    # count_windows on the padded grid with the aligned windows matches what was run
    assert windows == len(_window_slices((75, 64), roi, 0.25, load_model(ckpt(2), 2).network.size_multiple))


def test_small_windows_are_batched_by_default(ckpt) -> None:
    """``sw_batch_size=None`` batches small windows (at most MAX_WINDOW_BATCH per call) with the same
    result as one by one; a whole-image window stays one call."""
    from napari_isfl.inference.windows import MAX_WINDOW_BATCH

    images = phantom_stack((75, 64), 2, seed=12)
    one = fuse(images, ["mri", "ct"], model=ckpt(2), roi_size=32, sw_batch_size=1)
    auto = fuse(images, ["mri", "ct"], model=ckpt(2), roi_size=32)
    assert auto.provenance["parameters"]["sw_batch_size"] == MAX_WINDOW_BATCH
    np.testing.assert_allclose(auto.fused, one.fused, atol=1e-5)
    whole = fuse(images, ["mri", "ct"], model=ckpt(2))
    assert whole.provenance["windows"] == 1
    with pytest.raises(ValueError, match="sw_batch_size"):
        fuse(images, ["mri", "ct"], model=ckpt(2), sw_batch_size=0)


def test_count_windows() -> None:
    """count_windows follows MONAI's scan: one window when it covers the image, ceil steps otherwise."""
    assert count_windows((40, 30), (40, 30), 0.25) == 1
    assert count_windows((64,), (32,), 0.5) == 3  # starts 0, 16, 32
    assert count_windows((64, 64), (32, 32), 0.0) == 4
    assert count_windows((64, 40), (32, 40), (0.5, 0.0)) == 3


def test_cancel_before_first_batch(ckpt) -> None:
    """A cancel callback that is already set stops before any window runs."""
    calls: list[tuple[int, int]] = []
    with pytest.raises(FusionCancelled, match="cancelled"):
        fuse(phantom_stack(SHAPE_2D, 2), ["mri", "ct"], model=ckpt(2), device="cpu", cancel=lambda: True,
             progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    assert [d for d, _ in calls] == [0]


def test_cancel_mid_run(ckpt) -> None:
    """Cancelling after two window batches raises FusionCancelled and runs no further windows."""
    calls: list[tuple[int, int]] = []
    with pytest.raises(FusionCancelled):
        fuse(phantom_stack((75, 64), 2), ["mri", "ct"], model=ckpt(2), device="cpu", roi_size=32,
             progress=lambda d, t: calls.append((d, t)), cancel=lambda: len(calls) > 2)  # fmt: skip
    assert [d for d, _ in calls] == [0, 1, 2]
    assert calls[-1][1] > 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_device_selection_without_cuda(ckpt) -> None:
    """'auto' gives the CPU here; asking for CUDA when there is none is a clear error naming the fix."""
    assert select_device("auto") == torch.device("cpu")
    assert select_device("CPU") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"device '{name}' requested but CUDA is not available.*cpu"):
            select_device(name)
    with pytest.raises(ValueError, match="CUDA is not available"):
        fuse(phantom_stack(SHAPE_2D, 2), ["mri", "ct"], model=ckpt(2), device="cuda")
    result = fuse(phantom_stack(SHAPE_2D, 2), ["mri", "ct"], model=ckpt(2), device="auto")
    assert result.provenance["device"] == "cpu"


@pytest.mark.parametrize("name", ["tpu", "gpu0", "cuda:x"])
def test_unknown_device(name: str) -> None:
    """A device name torch does not know is a ValueError listing the valid names."""
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        select_device(name)


BAD_INPUTS = {
    "one input": (lambda: [phantom(SHAPE_2D)], "at least two co-registered inputs, got 1"),
    "different shapes": (
        lambda: [phantom(SHAPE_2D), phantom((36, 50))],
        r"t2\.png has shape \(36, 50\) but t1\.png has \(37, 50\).*co-registered.*resample",
    ),
    "4D": (
        lambda: [np.ones((4, 5, 6, 2)), np.ones((4, 5, 6, 2))],
        r"t1\.png: expected a 2D image or 3D volume, got 4 dimensions.*one 3D volume",
    ),
    "1D": (lambda: [np.arange(9.0), np.arange(9.0)], "t1.png: expected a 2D image or 3D volume"),
    "NaN": (
        lambda: [phantom(SHAPE_2D), np.where(phantom(SHAPE_2D) > 0.5, np.nan, 1.0)],
        r"t2\.png: contains \d+ NaN/Inf voxels; replace them",
    ),
    "Inf": (
        lambda: [np.where(phantom(SHAPE_2D) > 0.5, -np.inf, phantom(SHAPE_2D)), phantom(SHAPE_2D)],
        r"t1\.png: contains \d+ NaN/Inf voxels",
    ),
    "constant": (
        lambda: [phantom(SHAPE_2D), np.full(SHAPE_2D, 7.0)],
        r"t2\.png: the image is constant \(every voxel is 7\).*right file",
    ),
    "complex": (
        lambda: [phantom(SHAPE_2D), phantom(SHAPE_2D).astype(np.complex64)],
        r"t2\.png: expected a real-valued image",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_messages(ckpt, case: str) -> None:
    """Each bad input is refused before any computation, with a message naming the input and the fix."""
    make, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        fuse(make(), None, model=ckpt(2), device="cpu", names=["t1.png", "t2.png"][: len(make())])


def test_argument_errors(ckpt) -> None:
    """Tag/name counts, unknown tags, overlap and a model of the other dimensionality are refused."""
    images = phantom_stack(SHAPE_2D, 2)
    kwargs = {"model": ckpt(2), "device": "cpu"}
    with pytest.raises(ValueError, match="3 modality tags for 2 inputs"):
        fuse(images, ["mri", "ct", "pet"], **kwargs)
    with pytest.raises(ValueError, match="1 names for 2 inputs"):
        fuse(images, ["mri", "ct"], names=["a"], **kwargs)
    with pytest.raises(ValueError, match=r"modality 'xray' is not supported by model .*mri, ct, pet, spect"):
        fuse(images, ["mri", "xray"], **kwargs)
    with pytest.raises(ValueError, match=r"overlap must lie in \[0, 1\)"):
        fuse(images, ["mri", "ct"], overlap=1.0, **kwargs)
    with pytest.raises(CheckpointError, match="is a 3D model but the input is 2D"):
        fuse(images, ["mri", "ct"], model=ckpt(3), device="cpu")
    with pytest.raises(ValueError, match="roi_size"):
        resolve_roi_size((10, 10), (5, 5, 5))


def test_loaded_model_object(ckpt) -> None:
    """A LoadedModel can be passed instead of a path (the napari widget keeps one); the wrong
    dimensionality is refused by name."""
    loaded = load_model(ckpt(2), 2)
    images = phantom_stack(SHAPE_2D, 2)
    by_object = fuse(images, ["mri", "ct"], model=loaded, device="cpu")
    by_path = fuse(images, ["mri", "ct"], model=ckpt(2), device="cpu")
    np.testing.assert_array_equal(by_object.fused, by_path.fused)
    with pytest.raises(ValueError, match="is 2D but the inputs are 3D"):
        fuse(phantom_stack(SHAPE_3D, 2), ["mri", "ct"], model=loaded, device="cpu")


def test_ct_normalisation_hounsfield_and_not(ckpt) -> None:
    """CT in Hounsfield units gets the model's HU window; CT that is not in HU (an 8-bit PNG) gets the
    percentile fallback, as in training, instead of being squashed by the HU window into a sliver of
    [0, 1]; an explicit rule is always used as given."""
    mri = phantom(SHAPE_2D, 1)
    ct_png = np.rint(phantom(SHAPE_2D, 2) * 255).astype(np.uint8)
    ct_hu = phantom(SHAPE_2D, 2) * 2000 - 1000
    kwargs = {"model": ckpt(2), "device": "cpu"}
    info_png = fuse([mri, ct_png], ["mri", "ct"], **kwargs).provenance["normalization"][1]
    info_hu = fuse([mri, ct_hu], ["mri", "ct"], **kwargs).provenance["normalization"][1]
    assert info_png["method"] == "percentile"
    assert info_png["high"] == normalize_intensity(ct_png, "mri")[1]["high"]
    assert info_hu["method"] == "window" and (info_hu["low"], info_hu["high"]) == (-150.0, 1350.0)
    explicit = IntensitySpec("window", 0, 255)
    info = fuse([mri, ct_png], ["mri", "ct"], normalization=[None, explicit], **kwargs).provenance
    assert info["normalization"][1]["method"] == "window" and info["normalization"][1]["high"] == 255


def test_parse_patch_size() -> None:
    assert parse_patch_size("auto") is None and parse_patch_size(" ") is None
    assert parse_patch_size("96") == 96
    assert parse_patch_size("128, 128, 96") == [128, 128, 96] == parse_patch_size("128x128x96")
    assert parse_patch_size("Training") == "training"
    with pytest.raises(ValueError, match="patch size"):
        parse_patch_size("big")


@pytest.mark.parametrize("dims", [2, 3])
def test_training_window_is_the_recorded_crop_size(tmp_path: Path, dims: int) -> None:
    """``roi_size="training"`` tiles with the crop size the checkpoint records, and refuses a checkpoint
    that records none."""
    from core_helpers import tiny_net
    from napari_isfl.model.checkpoint import save_checkpoint

    crop = [16] * dims
    path = save_checkpoint(
        tmp_path / "m.pt", tiny_net(dims), training={"config": {"data": {"crop_size": crop}}}
    )
    images = phantom_stack((40, 36, 20)[:dims], 2, seed=3)
    by_name = fuse(images, ["mri", "ct"], model=path, roi_size="training")
    by_size = fuse(images, ["mri", "ct"], model=path, roi_size=16)
    assert by_name.provenance["parameters"]["roi_size"] == crop
    np.testing.assert_array_equal(by_name.fused, by_size.fused)
    bare = save_tiny_checkpoint(tmp_path / "bare.pt", dims)
    with pytest.raises(ValueError, match="training crop size"):
        fuse(images, ["mri", "ct"], model=bare, roi_size="training")


@pytest.mark.parametrize(
    ("shape", "crop", "expected"),
    [
        ((65, 40), (32, 32), (32, 32)),  # more than twice the crop along one axis: training windows
        ((64, 64), (32, 32), (64, 64)),  # exactly twice: the whole image
        ((30, 20), (32, 32), (30, 20)),  # smaller than the crop
        ((97, 33, 21), (32, 32, 32), (32, 32, 21)),  # 3D, odd sizes: windows clipped to the image
        ((64, 63, 40), (32, 32, 32), (64, 63, 40)),
    ],
)
def test_auto_window_follows_the_training_crop(shape, crop, expected) -> None:
    assert resolve_roi_size(shape, None, training_crop=crop) == expected
    assert resolve_roi_size(shape, None) == shape  # no recorded crop: the whole image (it fits)


@pytest.mark.parametrize("dims", [2, 3])
def test_auto_uses_training_windows_for_large_images(tmp_path: Path, dims: int) -> None:
    """Auto tiles with the recorded crop size once the image is over twice its size, and runs the whole
    image below that; a checkpoint without a crop size keeps the whole-image behaviour."""
    from core_helpers import tiny_net
    from napari_isfl.model.checkpoint import save_checkpoint

    path = save_checkpoint(
        tmp_path / "m.pt", tiny_net(dims), training={"config": {"data": {"crop_size": [16] * dims}}}
    )
    large = phantom_stack((40, 36, 20)[:dims], 2, seed=3)
    auto = fuse(large, ["mri", "ct"], model=path, crop_foreground=False)
    training = fuse(large, ["mri", "ct"], model=path, crop_foreground=False, roi_size="training")
    assert auto.provenance["parameters"]["roi_size"] == [16] * dims and auto.provenance["windows"] > 1
    np.testing.assert_array_equal(auto.fused, training.fused)
    zero = fuse(large, ["mri", "ct"], model=path, crop_foreground=False, roi_size=0)  # 0 also means auto
    np.testing.assert_array_equal(auto.fused, zero.fused)
    small = phantom_stack((32, 28, 20)[:dims], 2, seed=3)
    whole = fuse(small, ["mri", "ct"], model=path, crop_foreground=False)
    assert (
        whole.provenance["parameters"]["roi_size"] == [32, 28, 20][:dims] and whole.provenance["windows"] == 1
    )
    bare = save_tiny_checkpoint(tmp_path / "bare.pt", dims)
    assert fuse(large, ["mri", "ct"], model=bare, crop_foreground=False).provenance["windows"] == 1


@pytest.mark.parametrize("shape", [SHAPE_2D, SHAPE_3D], ids=["2d", "3d"])
def test_stability_map_in_windows(ckpt, shape: tuple[int, ...]) -> None:
    """With several windows the stability map is finite, non-negative, reproducible, and the fusion
    is the one without it."""
    images = phantom_stack(shape, 2, seed=9)
    kwargs = {"model": ckpt(len(shape)), "device": "cpu", "roi_size": 16, "overlap": 0.5}
    first = fuse(images, ["mri", "ct"], stability=True, stability_passes=4, seed=1, **kwargs)
    again = fuse(images, ["mri", "ct"], stability=True, stability_passes=4, seed=1, **kwargs)
    assert first.provenance["windows"] > 1
    assert np.isfinite(first.stability).all() and first.stability.min() >= 0 and first.stability.max() > 0
    np.testing.assert_array_equal(first.stability, again.stability)
    np.testing.assert_array_equal(first.fused, fuse(images, ["mri", "ct"], **kwargs).fused)


def test_colour_arrays_are_never_guessed(ckpt) -> None:
    """(H, W, 3) is a colour image or a 3-slice volume: refused unless rgb= says which; rgb=True fuses
    the luminance and gives the colour back in fused_rgb; rgb=False fuses a volume."""
    rng = np.random.default_rng(0)
    colour = rng.random((40, 44, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"input 1 has shape \(40, 44, 3\): a colour image or a volume"):
        fuse([colour, colour], ["mri", "pet"], model=ckpt(3), device="cpu")
    result = fuse([colour, colour[..., 0]], ["mri", "pet"], model=ckpt(2), device="cpu", rgb=[True, False])
    assert result.fused.shape == (40, 44) and result.fused_rgb.shape == (40, 44, 3)
    assert result.fused_rgb.min() >= 0 and result.fused_rgb.max() <= 1
    volume = fuse([colour, colour], ["mri", "mri"], model=ckpt(3), device="cpu", rgb=False)
    assert volume.fused.shape == (40, 44, 3) and volume.fused_rgb is None
    with pytest.raises(ValueError, match="not a colour image"):
        fuse([colour[..., 0], colour[..., 0]], ["mri", "pet"], model=ckpt(2), device="cpu", rgb=True)

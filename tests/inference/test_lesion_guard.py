"""The lesion guard: a fusion keeps at least a given share of the FLAIR's hyperintensity contrast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from core_helpers import SHAPES, save_tiny_checkpoint, tiny_net
from napari_isfl.cli.fuse import parse_lesion_guard
from napari_isfl.inference import fuse
from napari_isfl.inference.engine import LesionGuard, resolve_lesion_guard
from napari_isfl.lesions import (
    GUARD_MARGIN,
    coverage_mask,
    describe_lesion_guard,
    guard_share,
    hyperintensity_mask,
    is_flair_name,
    normal_tissue,
    region_contrast,
)
from napari_isfl.normalization import normalize_intensity


@pytest.fixture(scope="module")
def pyramid_ckpt(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("guard")
    return {dims: save_tiny_checkpoint(folder / f"pyr{dims}d.pt", dims, head="pyramid") for dims in (2, 3)}


#: odd sizes large enough that the coarsest pyramid band sees the lesion
GUARD_SHAPES = {2: (61, 70), 3: (33, 38, 29)}


def t1_and_flair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A T1-like input bright in normal tissue and dark in a lesion, and a FLAIR that is darker in normal
    tissue and bright in the lesion (BRATS 2013 patient 6's situation), inside an elliptic 'brain'."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = sum(g**2 for g in grid) < 0.8
    lesion = sum((g - 0.15) ** 2 for g in grid) < 0.2  # large against the coarsest band, as an oedema
    t1 = np.where(brain, 600.0, 0.0) - 250.0 * lesion + rng.normal(0, 15, shape) * brain
    flair = np.where(brain, 300.0, 0.0) + 500.0 * lesion + rng.normal(0, 15, shape) * brain
    return t1.clip(0).astype(np.float32), flair.clip(0).astype(np.float32)


def kept_share(fused: np.ndarray, t1: np.ndarray, flair: np.ndarray) -> float:
    """The fusion's hyperintensity contrast over the FLAIR's, measured independently of the engine."""
    normalised = [normalize_intensity(a, "mri")[0] for a in (t1, flair)]
    brain = (np.stack(normalised) > 0.02).any(axis=0)
    lesion = hyperintensity_mask(normalised[1], brain)
    normal = normal_tissue(lesion, brain)
    return region_contrast(fused, lesion, normal) / region_contrast(normalised[1], lesion, normal)


@pytest.mark.parametrize(
    ("source", "learned", "floored", "ratio", "expected"),
    [
        (0.5, 0.3, 0.45, 0.8, (0.4 * (1 + GUARD_MARGIN) - 0.3) / 0.15),  # linear between the two fusions
        (0.5, 0.45, 0.5, 0.8, 0.0),  # kept already
        (0.5, 0.1, 0.2, 0.8, 1.0),  # even the full share falls short: the most the guard can do
        (0.5, 0.3, 0.2, 0.8, 0.0),  # the floor would lower the contrast: leave the blend alone
        (0.0, 0.0, 0.1, 0.8, 0.0),  # no hyperintensity in the input
        (float("nan"), 0.1, 0.2, 0.8, 0.0),  # no lesion voxels
    ],
)
def test_guard_share(source, learned, floored, ratio, expected) -> None:
    assert guard_share(source, learned, floored, ratio) == pytest.approx(expected)


@pytest.mark.parametrize("dims", [2, 3])
def test_normal_tissue_matches_a_full_dilation(dims: int) -> None:
    rng = np.random.default_rng(dims)
    shape = SHAPES[dims]
    brain = np.ones(shape, bool)
    lesion = np.zeros(shape, bool)
    lesion[tuple(slice(1, 4) for _ in shape)] = True  # near the border: the box is clipped there
    lesion[tuple(rng.integers(5, n - 2) for n in shape)] = True
    expected = brain & ~ndimage.binary_dilation(lesion, iterations=2)
    np.testing.assert_array_equal(normal_tissue(lesion, brain), expected)
    np.testing.assert_array_equal(normal_tissue(np.zeros(shape, bool), brain), brain)


def test_flair_names() -> None:
    for name in (
        "flair.nii.gz",
        "BraTS-GLI-00001-000-t2f.nii.gz",
        "OtherEXampleFromTCIA_fla_bet",
        "T2 FLAIR",
    ):
        assert is_flair_name(name), name
    for name in ("t1c.nii.gz", "flairish.nii", "input 2", "T2w"):
        assert not is_flair_name(name), name


@pytest.mark.parametrize("dims", [2, 3])
def test_guard_keeps_the_ratio_and_records_it(pyramid_ckpt, dims: int) -> None:
    t1, flair = t1_and_flair(GUARD_SHAPES[dims])
    plain = fuse([t1, flair], ["mri", "mri"], model=pyramid_ckpt[dims], device="cpu", lesion_guard=None)
    assert plain.provenance["parameters"]["lesion_guard"] is None
    learned = kept_share(plain.fused, t1, flair)
    guarded = fuse(
        [t1, flair],
        ["mri", "mri"],
        model=pyramid_ckpt[dims],
        device="cpu",
        lesion_guard=1,
        lesion_guard_ratio=0.95,
    )
    report = guarded.provenance["parameters"]["lesion_guard"]
    assert report["input"] == "input 2" and report["ratio"] == 0.95
    assert report["kept_learned"] == pytest.approx(learned, abs=1e-3)
    assert learned < 0.95, "the synthetic pair must need the guard"
    assert report["coarse_share"] > 0
    kept = kept_share(guarded.fused, t1, flair)
    assert kept == pytest.approx(report["kept"], abs=1e-3)
    # the least shares that keep 95 %: every level's share only when the coarsest level's is not enough
    assert kept >= 0.95 and kept < 0.96
    assert report["all_levels_share"] == 0 or report["coarse_share"] == 1
    assert guarded.fused.min() >= 0 and guarded.fused.max() <= 1
    # a ratio the learned blend already keeps changes nothing
    relaxed = fuse(
        [t1, flair],
        ["mri", "mri"],
        model=pyramid_ckpt[dims],
        device="cpu",
        lesion_guard=1,
        lesion_guard_ratio=max(learned - 0.05, 0.01),
    )
    assert relaxed.provenance["parameters"]["lesion_guard"]["coarse_share"] == 0
    np.testing.assert_array_equal(relaxed.fused, plain.fused)


def test_guarded_contributions_give_the_flair_more(pyramid_ckpt) -> None:
    t1, flair = t1_and_flair(GUARD_SHAPES[3])
    options = {"model": pyramid_ckpt[3], "device": "cpu", "contributions": True}
    plain = fuse([t1, flair], ["mri", "mri"], lesion_guard=None, **options)
    guarded = fuse([t1, flair], ["mri", "mri"], lesion_guard=1, lesion_guard_ratio=0.95, **options)
    share = guarded.provenance["parameters"]["lesion_guard"]["coarse_share"]
    assert share > 0
    np.testing.assert_allclose(guarded.contributions.sum(axis=0), 1.0, atol=1e-5)
    assert guarded.contributions[1].mean() > plain.contributions[1].mean()


def test_guarded_fusion_is_the_blend_of_its_weights() -> None:
    """The guard mixes two fusions; that mixture is the blend with the mixed coarsest weights."""
    torch.manual_seed(0)
    net = tiny_net(3, head="pyramid").eval()
    batch = torch.rand(1, 2, 32, 36, 28) * 0.2 + 0.4
    batch[0, 0] += 0.3  # T1 brighter than the FLAIR in normal tissue
    batch[0, 1, 8:24, 10:26, 6:22] = 0.95  # a large FLAIR hyperintensity
    with torch.no_grad():
        weights = list(net.blend_maps(batch, torch.tensor([0, 0]))["weights"])
        fused = net.compose(batch, weights)
        guarded, guarded_weights, report = LesionGuard(1, ratio=0.99).apply(net, batch, weights, None, fused)
        recomposed = net.compose(batch, guarded_weights)
    assert 0 < report["coarse_share"] <= 1 and report["kept"] >= 0.99
    if report["all_levels_share"] == 0:
        for level in range(len(weights) - 1):
            assert guarded_weights[level] is weights[level]  # finer levels stay as learned
    for level in guarded_weights:
        torch.testing.assert_close(level.sum(dim=1), torch.ones_like(level[:, 0]))
    torch.testing.assert_close(guarded, recomposed, atol=2e-3, rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_guard_leaves_what_the_flair_does_not_cover_to_the_learned_blend(dims: int) -> None:
    """A FLAIR missing a slab (partial coverage): the guard measures and raises its share only where it
    has data, so deep in the slab the fusion is the learned blend (the T1 fills it), not the FLAIR's
    zeros; and the contrast kept is measured on the covered brain."""
    torch.manual_seed(0)
    net = tiny_net(dims, head="pyramid").eval()
    shape = (1, 2) + (48, 40, 36)[:dims]
    batch = torch.rand(shape) * 0.2 + 0.4
    batch[0, 0] += 0.3  # T1 brighter than the FLAIR in normal tissue
    batch[(0, 1) + tuple(slice(n // 4, n // 2) for n in shape[2:])] = 0.95  # a large hyperintensity
    batch[0, 1, 30:] = 0.0  # the FLAIR does not cover the last 18 slices
    with torch.no_grad():
        weights = list(net.blend_maps(batch, torch.tensor([0, 0]))["weights"])
        fused = net.compose(batch, weights)
        guarded, guarded_weights, report = LesionGuard(1, ratio=0.95).apply(net, batch, weights, None, fused)
    assert report["coarse_share"] > 0 and report["kept"] >= 0.95
    deep = (0, 0, slice(40, None))  # 10 slices from the FLAIR's edge: beyond the coarsest level's blur
    torch.testing.assert_close(guarded[deep], fused[deep], atol=1e-5, rtol=0)
    assert not torch.allclose(guarded[0, 0, :26], fused[0, 0, :26])  # the covered part is guarded
    torch.testing.assert_close(guarded, net.compose(batch, guarded_weights), atol=2e-3, rtol=0)


def test_coverage_fills_enclosed_holes_only() -> None:
    flair = np.full((20, 20, 20), 0.5)
    flair[8:12, 8:12, 8:12] = 0.0  # dark ventricles inside the brain: covered
    flair[:, :, 16:] = 0.0  # a slab never imaged, open to the array's border: not covered
    covered = coverage_mask(flair)
    assert covered[9, 9, 9] and not covered[:, :, 16:].any() and covered[:, :, :16].all()


@pytest.mark.parametrize("dims", [2, 3])
def test_small_lesions_get_every_level(dims: int) -> None:
    """A lesion of a few voxels lives in the fine bands: the coarsest level's share cannot keep it, every
    level's share then does (up to the FLAIR itself)."""
    torch.manual_seed(0)
    net = tiny_net(dims, head="pyramid").eval()
    shape = (1, 2) + (36, 40, 28)[:dims]
    batch = torch.full(shape, 0.5)
    batch[0, 0] += 0.3  # T1 brighter in normal tissue
    spot = (0, 1) + tuple(slice(n // 2, n // 2 + 2) for n in shape[2:])
    batch[spot] = 0.95  # a lesion of 2 voxels per axis in the FLAIR
    with torch.no_grad():
        weights = list(net.blend_maps(batch, torch.tensor([0, 0]))["weights"])
        fused = net.compose(batch, weights)
        guard = LesionGuard(1, ratio=0.8, top_percent=100 * 2**dims / np.prod(shape[2:]))
        guarded, guarded_weights, report = guard.apply(net, batch, weights, None, fused)
    assert report["kept_learned"] < 0.8 and report["coarse_share"] == 1
    assert 0 < report["all_levels_share"] < 1 and 0.8 <= report["kept"] < 0.81
    torch.testing.assert_close(guarded, net.compose(batch, guarded_weights), atol=2e-3, rtol=0)


def test_auto_finds_the_flair_by_name(pyramid_ckpt) -> None:
    t1, flair = t1_and_flair(SHAPES[2])
    named = fuse(
        [t1, flair], ["mri", "mri"], model=pyramid_ckpt[2], device="cpu", names=["t1c.nii", "flair.nii"]
    )
    assert named.provenance["parameters"]["lesion_guard"]["input"] == "flair.nii"
    unnamed = fuse([t1, flair], ["mri", "mri"], model=pyramid_ckpt[2], device="cpu")
    assert unnamed.provenance["parameters"]["lesion_guard"] is None
    assert resolve_lesion_guard("auto", 0.8, ["ct", "flair"], ["ct", "mri"], True).source == 1
    assert resolve_lesion_guard("auto", 0.8, ["flair", "t1"], ["mri", "mri"], False) is None  # synthesis head
    assert resolve_lesion_guard("off", 0.8, ["t1", "flair"], ["mri", "mri"], True) is None


@pytest.mark.parametrize(
    ("choice", "ratio", "pyramid", "message"),
    [
        (2, 0.8, True, "names no input"),
        ("flair", 0.8, True, "must be an input index"),
        (1, 0.0, True, "0 < ratio <= 1"),
        (1, 1.5, True, "0 < ratio <= 1"),
        (1, 0.8, False, "needs a pyramid-head model"),
    ],
)
def test_bad_guard_requests(choice, ratio, pyramid: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_lesion_guard(choice, ratio, ["t1", "flair"], ["mri", "mri"], pyramid)


def test_cli_guard_option() -> None:
    assert parse_lesion_guard("auto", 2) == "auto"
    assert parse_lesion_guard("OFF", 2) == "off"
    assert parse_lesion_guard("2", 2) == 1
    for text, message in (("3", "from 1 to 2"), ("0", "from 1 to 2"), ("t2", "auto, off or an input number")):
        with pytest.raises(ValueError, match=message):
            parse_lesion_guard(text, 2)
    raised = {
        "input": "flair.nii.gz",
        "ratio": 0.8,
        "coarse_share": 0.57,
        "all_levels_share": 0.0,
        "kept_learned": 0.64,
        "kept": 0.8,
    }
    assert "raised to 0.57" in describe_lesion_guard({"parameters": {"lesion_guard": raised}})
    small = raised | {"coarse_share": 1.0, "all_levels_share": 0.3}
    assert "every level 0.30" in describe_lesion_guard({"parameters": {"lesion_guard": small}})
    kept = raised | {"coarse_share": 0.0, "kept_learned": 0.85, "kept": 0.85}
    assert "keeps 0.85" in describe_lesion_guard({"parameters": {"lesion_guard": kept}})
    assert describe_lesion_guard({"parameters": {"lesion_guard": None}}) is None

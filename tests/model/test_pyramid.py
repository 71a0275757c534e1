"""The pyramid head: a per-scale weighted Laplacian-pyramid blend of the sources, 2D and 3D, odd sizes.

What makes it worth having is tested directly: it reconstructs, it can only show the sources (identical
sources come back unchanged whatever the weights), its weights are convex, and windows leave no seam."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core_helpers import SHAPES, phantom_stack, tiny_net
from napari_isfl.inference import FusionEngine
from napari_isfl.model import pyramid
from napari_isfl.model.checkpoint import load_model, save_checkpoint
from napari_isfl.model.network import ISFLNet


@pytest.mark.parametrize("shape", [(37, 50), (17, 22, 13), (8, 9), (3, 5, 4)])
def test_pyramid_reconstructs_exactly(shape) -> None:
    images = torch.rand(2, 3, *shape, dtype=torch.float64)
    for levels in (1, 2, 3, 4):
        bands = pyramid.laplacian_pyramid(images, levels)
        assert len(bands) == levels
        assert [tuple(b.shape[2:]) for b in bands] == [
            tuple(-(-n // 2**s) for n in shape) for s in range(levels)
        ]
        torch.testing.assert_close(pyramid.collapse(bands), images)


def _random_weights(batch: int, count: int, shape, levels: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.softmax(4 * torch.randn(batch, count, *(-(-n // 2**s) for n in shape), generator=generator), 1)
        for s in range(levels)
    ]


@pytest.mark.parametrize("shape", [(37, 50), (17, 22, 13)])
def test_blend_of_identical_sources_is_that_source(shape) -> None:
    """Whatever the weights: nothing that is not in the sources can appear."""
    source = torch.rand(1, 1, *shape, dtype=torch.float64)
    weights = [w.double() for w in _random_weights(1, 3, shape, 3, seed=1)]
    fused = pyramid.blend(source.expand(1, 3, *shape), weights)
    torch.testing.assert_close(fused, source)


def test_one_hot_weights_select_a_source_and_bad_weights_are_refused() -> None:
    images = torch.rand(1, 2, 20, 24)
    one_hot = [torch.zeros(1, 2, 20 // 2**s, 24 // 2**s) for s in range(3)]
    for w in one_hot:
        w[:, 1] = 1.0
    torch.testing.assert_close(pyramid.blend(images, one_hot), images[:, 1:])
    with pytest.raises(ValueError, match="pyramid band"):
        pyramid.blend(images, [torch.ones(1, 2, 20, 24), torch.ones(1, 2, 9, 12), torch.ones(1, 2, 5, 6)])


@pytest.mark.parametrize("dims", [2, 3])
def test_untrained_pyramid_head_is_the_mean_and_its_weights_are_convex(dims) -> None:
    net = tiny_net(dims, head="pyramid").eval()
    images = torch.rand(2, 3, *SHAPES[dims])
    with torch.no_grad():
        out = net(images, ["mri", "ct", "pet"], return_maps=True)
    torch.testing.assert_close(out["fused"], images.mean(dim=1, keepdim=True), atol=1e-5, rtol=0)
    assert out["contributions"].shape == (2, 3, *SHAPES[dims])
    torch.testing.assert_close(out["contributions"].sum(dim=1), torch.ones(2, *SHAPES[dims]))
    for weights in out["weights"]:
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(dim=1), torch.ones_like(weights[:, 0]))


@pytest.mark.parametrize("dims", [2, 3])
def test_trained_looking_head_only_shows_the_sources(dims) -> None:
    """Random selector weights (a head that prefers some source somewhere): identical inputs still come
    back unchanged, and the fused image stays within the sources' range up to the pyramid's overshoot."""
    net = tiny_net(dims, head="pyramid")
    with torch.no_grad():
        for selector in net.selectors:
            selector.conv.weight.normal_(0, 1.0)
    net.eval()
    source = torch.rand(1, 1, *SHAPES[dims])
    with torch.no_grad():
        same = net(source.expand(1, 2, *SHAPES[dims]), ["mri", "ct"])
        mixed = net(torch.rand(1, 2, *SHAPES[dims]), ["mri", "ct"], return_maps=True)
    torch.testing.assert_close(same, source, atol=1e-5, rtol=0)
    assert not torch.allclose(mixed["weights"][0], torch.full_like(mixed["weights"][0], 0.5))


def test_residual_is_bounded_and_needs_the_pyramid_head() -> None:
    net = tiny_net(2, head="pyramid", residual=0.05)
    with torch.no_grad():
        net.residual.conv.bias.fill_(100.0)  # saturate the residual: it adds at most 0.05
    net.eval()
    images = torch.full((1, 2, 16, 16), 0.5)
    with torch.no_grad():
        assert float(net(images, ["mri", "ct"]).max()) == pytest.approx(0.55, abs=1e-5)
    with pytest.raises(ValueError, match="residual"):
        ISFLNet(2, head="synthesis", residual=0.1)
    with pytest.raises(ValueError, match="head"):
        ISFLNet(2, head="decoder")


@pytest.mark.parametrize("shape", [(37, 50), (17, 22, 13)])
def test_band_saliency_is_higher_where_a_source_has_the_stronger_detail(shape) -> None:
    """One map per pyramid level at that level's size; at every level the source with the stronger
    detail (here: the same texture, three times the amplitude) has the higher saliency almost
    everywhere, and identical sources have identical saliency."""
    texture = torch.rand(1, 1, *shape)
    images = torch.cat([0.5 + 0.1 * (texture - 0.5), 0.5 + 0.3 * (texture - 0.5)], dim=1)
    saliency = pyramid.band_saliency(images, 3)
    bands = pyramid.laplacian_pyramid(images, 3)
    assert [s.shape for s in saliency] == [b.shape for b in bands]
    for level in saliency:
        assert float((level[:, 1] > level[:, 0]).float().mean()) > 0.95
    same = pyramid.band_saliency(images[:, :1].expand(1, 2, *shape), 3)
    assert all(torch.equal(level[:, 0], level[:, 1]) for level in same)


@pytest.mark.parametrize("dims", [2, 3])
def test_saliency_cue_starts_as_the_old_blend_and_can_prefer_detail(dims) -> None:
    """``saliency=True`` adds zero-initialised filters only: with the other weights copied, the fusion
    is the one without it. With a positive filter the finest level leans to the source with stronger
    detail."""
    plain = tiny_net(dims, head="pyramid")
    with torch.no_grad():
        for selector in plain.selectors:
            selector.conv.weight.normal_(0, 0.1)
    cued = tiny_net(dims, head="pyramid", saliency=True)
    missing = cued.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("saliency_filters.") for key in missing)
    plain.eval(), cued.eval()
    texture = torch.rand(1, 1, *SHAPES[dims])
    images = torch.cat([0.5 + 0.05 * (texture - 0.5), 0.5 + 0.4 * (texture - 0.5)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(cued(images, ["mri", "ct"]), plain(images, ["mri", "ct"]))
        for saliency_filter in cued.saliency_filters:
            saliency_filter.conv.weight[(0, 0) + (1,) * dims] = 2.0  # centre tap: prefer the stronger band
        finest = cued(images, ["mri", "ct"], return_maps=True)["weights"][0]
    # inside the image (the padding to a multiple of 4 is an edge both sources share)
    assert float(finest[(slice(None), 1) + tuple(slice(0, n) for n in SHAPES[dims])].mean()) > 0.85
    with pytest.raises(ValueError, match="saliency"):
        ISFLNet(dims, head="synthesis", saliency=True)


@pytest.mark.parametrize("dims", [2, 3])
def test_selector_branches_start_as_the_old_blend_and_can_change_it(dims) -> None:
    """``selector_hidden`` adds nonlinear selector branches whose last layer starts at zero: with the
    other weights copied the fusion is the one without them; trained, they change the weights."""
    plain = tiny_net(dims, head="pyramid")
    with torch.no_grad():
        for selector in plain.selectors:
            selector.conv.weight.normal_(0, 0.1)
    branched = tiny_net(dims, head="pyramid", selector_hidden=5)
    missing = branched.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("selector_branches.") for key in missing)
    plain.eval(), branched.eval()
    images = torch.rand(1, 2, *SHAPES[dims])
    with torch.no_grad():
        torch.testing.assert_close(branched(images, ["mri", "ct"]), plain(images, ["mri", "ct"]))
        for branch in branched.selector_branches:
            branch[1].conv.weight.normal_(0, 0.5)
        assert not torch.allclose(branched(images, ["mri", "ct"]), plain(images, ["mri", "ct"]))
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="selector_hidden"):
            ISFLNet(dims, head="pyramid", selector_hidden=bad)
    with pytest.raises(ValueError, match="selector_hidden"):
        ISFLNet(dims, head="synthesis", selector_hidden=4)


@pytest.mark.parametrize("dims", [2, 3])
def test_refiner_starts_as_the_old_blend_and_stays_a_convex_blend_when_trained(dims) -> None:
    """``refiner_levels`` grafts a :class:`BlendRefiner` whose last layers start at zero: with the other
    weights copied the fusion is unchanged; trained (random last layers), the refined levels' weights
    change, still sum to one, and the coarser levels are left alone."""
    plain = tiny_net(dims, head="pyramid").eval()
    refined = tiny_net(dims, head="pyramid", refiner_levels=1, refiner_hidden=4).eval()
    missing = refined.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("refiner.") for key in missing)
    images = torch.rand(1, 2, *SHAPES[dims])
    with torch.no_grad():
        torch.testing.assert_close(refined(images, ["mri", "ct"]), plain(images, ["mri", "ct"]))
        refined.refiner.nets[0][-1].conv.weight.normal_(0, 0.5)
        before = plain(images, ["mri", "ct"], return_maps=True)["weights"]
        after = refined(images, ["mri", "ct"], return_maps=True)["weights"]
    assert not torch.allclose(after[0], before[0])
    torch.testing.assert_close(after[0].sum(dim=1), torch.ones_like(after[0][:, 0]))
    for coarser_after, coarser_before in zip(after[1:], before[1:], strict=True):
        torch.testing.assert_close(coarser_after, coarser_before)


@pytest.mark.parametrize("dims", [2, 3])
def test_refiner_follows_its_sources_in_any_order_and_number(dims) -> None:
    """The refiner treats every source alike: swapping two sources swaps their refined weights, and it
    takes three sources as well as two (odd sizes)."""
    from napari_isfl.model.network import BlendRefiner

    torch.manual_seed(0)
    refiner = BlendRefiner(dims, levels=2, hidden=6)
    with torch.no_grad():
        for net in refiner.nets:
            net[-1].conv.weight.normal_(0, 0.5)
    shape = (13, 18) if dims == 2 else (9, 10, 7)
    for count in (2, 3):
        images = torch.rand(1, count, *shape)
        weights = _random_weights(1, count, shape, levels=3, seed=count)
        out = refiner(images, weights)
        order = list(reversed(range(count)))
        swapped = refiner(images[:, order], [w[:, order] for w in weights])
        for level in range(3):
            torch.testing.assert_close(swapped[level], out[level][:, order], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out[level].sum(dim=1), torch.ones_like(out[level][:, 0]))


@pytest.mark.parametrize("dims", [2, 3])
def test_tagged_refiner_chooses_per_modality_pair_and_follows_source_order(dims) -> None:
    """With ``refiner_tags`` the refiner sees which modalities it blends: the same images tagged MRI+CT
    and MRI+SPECT get different weights, swapping sources with their tags swaps the weights, and a call
    without tags is refused."""
    from napari_isfl.model.network import BlendRefiner

    torch.manual_seed(0)
    refiner = BlendRefiner(dims, levels=1, hidden=6, num_modalities=4, tag_channels=3)
    with torch.no_grad():
        refiner.nets[0][-1].conv.weight.normal_(0, 0.5)
    shape = (13, 18) if dims == 2 else (9, 10, 7)
    images = torch.rand(2, 3, *shape)
    weights = _random_weights(2, 3, shape, levels=2, seed=1)
    tags = torch.tensor([[0, 1, 3], [0, 2, 3]])
    out = refiner(images, weights, tags)
    assert not torch.allclose(out[0][0], refiner(images[:1], [w[:1] for w in weights], tags[1:])[0][0])
    order = [2, 0, 1]
    swapped = refiner(images[:, order], [w[:, order] for w in weights], tags[:, order])
    torch.testing.assert_close(swapped[0], out[0][:, order], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[0].sum(dim=1), torch.ones_like(out[0][:, 0]))
    torch.testing.assert_close(out[1], weights[1])
    with pytest.raises(ValueError, match="tag indices"):
        refiner(images, weights)
    with pytest.raises(ValueError, match="num_modalities"):
        BlendRefiner(dims, levels=1, hidden=6, tag_channels=3)


@pytest.mark.parametrize(("dims", "depth", "reach"), [(2, 2, 2), (2, 4, 8), (3, 3, 4)])
def test_refiner_depth_widens_what_one_weight_sees(dims, depth, reach) -> None:
    """``depth`` 3x3 convolutions dilated 1, 1, 2, 4, ... see ``2 ** depth + 1`` pixels across: a change
    of the sources ``reach`` pixels away moves the refined weight at the centre, one pixel further does
    not. Still a convex blend, and an untrained refiner of any depth leaves the weights as they were."""
    from napari_isfl.model.network import BlendRefiner

    torch.manual_seed(0)
    refiner = BlendRefiner(dims, levels=1, hidden=4, depth=depth)
    shape = (41,) * dims
    images = torch.rand(1, 2, *shape)
    weights = [torch.full((1, 2, *(-(-n // 2**s) for n in shape)), 0.5) for s in range(2)]
    with torch.no_grad():
        torch.testing.assert_close(refiner(images, weights)[0], weights[0])
        refiner.nets[0][-1].conv.weight.normal_(0, 0.5)
        centre = (20,) * dims
        before = refiner(images, weights)[0][(0, 0, *centre)]
        for offset, moves in ((reach, True), (reach + 1, False)):
            # change only the incoming weights at one pixel (the image maps stay as they were), so what
            # is measured is the refiner's own receptive field
            pixel = (centre[0] + offset, *centre[1:])
            changed = [w.clone() for w in weights]
            changed[0][(0, 0, *pixel)], changed[0][(0, 1, *pixel)] = 0.01, 0.99
            after = refiner(images, changed)[0][(0, 0, *centre)]
            assert (abs(float(after - before)) > 1e-5) == moves, (offset, moves, float(after - before))


@pytest.mark.parametrize("dims", [2, 3])
def test_feedback_pass_sees_the_fusion_the_first_pass_made(dims) -> None:
    """With ``passes=2`` a second set of nets corrects the weights again from what the first pass's
    weights fused. Untrained it changes nothing: a one-pass refiner's weights load into it and give the
    same blend (to the 1e-4 its log weights are clamped at). Trained, a change of the first pass alone
    moves the second pass's correction (it reads the fusion), and the result is still a convex blend
    that follows its sources in any order."""
    from napari_isfl.model.network import BlendRefiner

    torch.manual_seed(0)
    one = BlendRefiner(dims, levels=2, hidden=4)
    two = BlendRefiner(dims, levels=2, hidden=4, passes=2)
    with torch.no_grad():
        for net in one.nets:
            net[-1].conv.weight.normal_(0, 0.5)
    missing = two.load_state_dict(one.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("feedback.0.") for key in missing)
    shape = (13, 18) if dims == 2 else (9, 10, 7)
    images = torch.rand(1, 3, *shape)
    weights = _random_weights(1, 3, shape, levels=3, seed=2)
    with torch.no_grad():
        for got, want in zip(two(images, weights), one(images, weights), strict=True):
            # a pass reads log weights clamped at 1e-4: weights move by at most that per source
            torch.testing.assert_close(got, want, atol=3e-4, rtol=0)
        for net in two.feedback[0]:
            net[-1].conv.weight.normal_(0, 0.5)
        refined = two(images, weights)
        first = one(images, weights)
        # the second pass's correction of the finest level, for two first passes
        correction = torch.log(refined[0]) - torch.log(first[0])
        two.nets[1][-1].conv.weight.normal_(0, 0.5)  # only the first pass's coarser level changes
        moved = torch.log(two(images, weights)[0]) - torch.log(one(images, weights)[0])
    correction, moved = (c - c.mean(dim=1, keepdim=True) for c in (correction, moved))  # softmax shift
    assert not torch.allclose(correction, moved, atol=1e-4)
    order = [2, 0, 1]
    with torch.no_grad():
        out = two(images, weights)
        swapped = two(images[:, order], [w[:, order] for w in weights])
    for level in range(3):
        torch.testing.assert_close(swapped[level], out[level][:, order], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out[level].sum(dim=1), torch.ones_like(out[level][:, 0]))


def test_refiner_arguments_are_checked() -> None:
    for kwargs in (
        {"refiner_levels": -1},
        {"refiner_levels": 1.5},
        {"refiner_levels": 1, "refiner_hidden": 0},
        {"refiner_levels": 1, "refiner_tags": -2},
        {"refiner_levels": 1, "refiner_depth": 0},
        {"refiner_levels": 1, "refiner_passes": 0},
    ):
        with pytest.raises(ValueError, match="refiner_"):
            ISFLNet(2, head="pyramid", **kwargs)
    with pytest.raises(ValueError, match="refiner_levels=1 needs head='pyramid'"):
        ISFLNet(2, head="synthesis", refiner_levels=1)
    with pytest.raises(ValueError, match="at most one level per scale"):
        ISFLNet(2, features=(8, 8), head="pyramid", refiner_levels=3)


def test_checkpoint_round_trip_keeps_the_head(tmp_path) -> None:
    net = tiny_net(3, head="pyramid", residual=0.02)
    loaded = load_model(save_checkpoint(tmp_path / "p.pt", net), 3)
    assert loaded.network.head_mode == "pyramid" and loaded.network.init_args["residual"] == 0.02
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.network.state_dict()[key], value)


@pytest.mark.parametrize("dims", [2, 3])
def test_windows_blend_the_weights_not_the_images(dims, tmp_path) -> None:
    """In sliding windows the weights are stitched and the blend runs once: with a head whose weights
    do not depend on the window (the untrained mean), windowed and whole-image fusions agree."""
    path = save_checkpoint(tmp_path / "p.pt", tiny_net(dims, head="pyramid"))
    shape = (70, 64) if dims == 2 else (36, 28, 33)
    images = phantom_stack(shape, 2)
    engine = FusionEngine(str(path), "cpu")
    whole = engine.fuse(images, ["mri", "ct"], roi_size=max(shape) * 2, contributions=True)
    windowed = engine.fuse(images, ["mri", "ct"], roi_size=16, overlap=0.25, contributions=True)
    assert windowed.provenance["windows"] > 4 and whole.provenance["windows"] == 1
    assert windowed.provenance["parameters"]["head"] == "pyramid"
    np.testing.assert_allclose(windowed.fused, whole.fused, atol=1e-5)
    np.testing.assert_allclose(windowed.contributions, whole.contributions, atol=1e-5)

"""ISFLNet: shapes and ranges in 2D/3D for N modalities, maps, order invariance and input errors."""

from __future__ import annotations

import math

import pytest
import torch

from core_helpers import SHAPE_2D, SHAPE_3D, TINY_FEATURES, randomize_film, tiny_net
from napari_isfl.model.network import ISFLNet, _attend, modality_indices

CASES = [
    pytest.param(2, SHAPE_2D, 2, id="2d-2mod"),
    pytest.param(2, SHAPE_2D, 3, id="2d-3mod"),
    pytest.param(3, SHAPE_3D, 2, id="3d-2mod"),
    pytest.param(3, SHAPE_3D, 3, id="3d-3mod"),
]
TAGS = ("mri", "ct", "pet")


def _inputs(shape: tuple[int, ...], num_mod: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, num_mod, *shape), generator=generator)


@pytest.mark.parametrize("encoder", ["shared", "per_modality"])
@pytest.mark.parametrize(("dims", "shape", "num_mod"), CASES)
def test_output_shape_and_range(dims: int, shape: tuple[int, ...], num_mod: int, encoder: str) -> None:
    """Any (odd) size in, the same size out, one channel, finite, inside [0, 1] (train and eval)."""
    net = tiny_net(dims, encoder=encoder)
    images = _inputs(shape, num_mod)
    for train in (True, False):
        net.train(train)
        with torch.no_grad():
            fused = net(images, list(TAGS[:num_mod]))
        assert isinstance(fused, torch.Tensor)
        assert fused.shape == (2, 1, *shape)
        assert torch.isfinite(fused).all()
        assert fused.min() >= 0.0 and fused.max() <= 1.0


@pytest.mark.parametrize(("dims", "shape", "num_mod"), CASES)
def test_return_maps_gates_per_scale_and_contributions(
    dims: int, shape: tuple[int, ...], num_mod: int
) -> None:
    """``return_maps`` adds one gate per scale (finest first, ceil-halved sizes, in [0, 1]) and
    contribution maps over the modalities that are non-negative and sum to 1 at every voxel."""
    net = randomize_film(tiny_net(dims)).eval()
    images = _inputs(shape, num_mod)
    with torch.no_grad():
        out = net(images, list(TAGS[:num_mod]), return_maps=True)
        plain = net(images, list(TAGS[:num_mod]))
    assert set(out) == {"fused", "gates", "contributions"}
    assert torch.equal(out["fused"], plain)
    assert len(out["gates"]) == len(TINY_FEATURES)
    for level, gate in enumerate(out["gates"]):
        assert gate.shape == (2, 1, *(math.ceil(s / 2**level) for s in shape))
        assert gate.min() >= 0.0 and gate.max() <= 1.0
    contributions = out["contributions"]
    assert contributions.shape == (2, num_mod, *shape)
    assert contributions.min() >= 0.0
    torch.testing.assert_close(contributions.sum(dim=1), torch.ones(2, *shape), atol=1e-5, rtol=0)


@pytest.mark.parametrize("encoder", ["shared", "per_modality"])
@pytest.mark.parametrize(("dims", "shape"), [(2, SHAPE_2D), (3, SHAPE_3D)])
def test_permutation_invariance(dims: int, shape: tuple[int, ...], encoder: str) -> None:
    """Permuting the inputs together with their tags leaves the fused image unchanged and permutes the
    contribution maps the same way; permuting the tags alone changes the result (so the invariance is
    not the trivial one of a network that ignores its tags)."""
    net = randomize_film(tiny_net(dims, encoder=encoder))
    if encoder == "per_modality":  # give each tag's encoder its own weights
        torch.manual_seed(1)
        for encoder_net in net.encoders:
            for p in encoder_net.parameters():
                p.data.add_(0.1 * torch.randn_like(p))
    net.eval()
    images = _inputs(shape, 3, batch=1)
    tags = ["mri", "ct", "pet"]
    order = [2, 0, 1]
    with torch.no_grad():
        ref = net(images, tags, return_maps=True)
        perm = net(images[:, order], [tags[i] for i in order], return_maps=True)
        swapped_tags = net(images, [tags[i] for i in order])
    torch.testing.assert_close(perm["fused"], ref["fused"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(perm["contributions"], ref["contributions"][:, order], atol=1e-5, rtol=1e-5)
    assert (swapped_tags - ref["fused"]).abs().max() > 1e-4


def test_modality_indices_equal_tags() -> None:
    """A 1D or (B, N) index tensor means the same as the tag list it encodes."""
    net = randomize_film(tiny_net(2)).eval()
    images = _inputs(SHAPE_2D, 2)
    with torch.no_grad():
        by_tag = net(images, ["mri", "pet"])
        by_index = net(images, torch.tensor([0, 2]))
        by_rows = net(images, torch.tensor([[0, 2], [0, 2]]))
    assert torch.equal(by_tag, by_index)
    assert torch.equal(by_tag, by_rows)
    index = modality_indices(["ct", "mri"], ("mri", "ct"), 3, torch.device("cpu"))
    assert index.tolist() == [[1, 0]] * 3


def test_batch_samples_independent_in_eval() -> None:
    """In evaluation mode a sample's output does not depend on the rest of its batch."""
    net = tiny_net(3).eval()
    images = _inputs(SHAPE_3D, 2, batch=3)
    with torch.no_grad():
        batched = net(images, ["mri", "ct"])
        single = net(images[1:2], ["mri", "ct"])
    torch.testing.assert_close(batched[1:2], single, atol=1e-6, rtol=1e-5)


def test_unknown_modality_tag() -> None:
    """An unknown tag names the tag, the known ones, and how to tag MRI contrasts."""
    net = tiny_net(2)
    with pytest.raises(ValueError, match=r"unknown modality 'flair'.*mri, ct, pet, spect.*'mri'"):
        net(_inputs(SHAPE_2D, 2), ["mri", "flair"])
    with pytest.raises(ValueError, match="out of range"):
        net(_inputs(SHAPE_2D, 2), torch.tensor([0, 7]))


def test_one_input_is_refused() -> None:
    """Fusion needs at least two inputs."""
    net = tiny_net(2)
    with pytest.raises(ValueError, match="at least two input modalities, got 1"):
        net(_inputs(SHAPE_2D, 1), ["mri"])


def test_tag_count_mismatch() -> None:
    """The number of tags must match the number of input images."""
    net = tiny_net(2)
    with pytest.raises(ValueError, match="3 modality tags for 2 input images"):
        net(_inputs(SHAPE_2D, 2), ["mri", "ct", "pet"])


@pytest.mark.parametrize(
    ("dims", "shape"),
    [(2, (1, 2, 8, 8, 8)), (2, (2, 8, 8)), (3, (1, 2, 8, 8)), (3, (1, 2, 4, 4, 4, 4))],
    ids=["2d-net-5d-in", "2d-net-3d-in", "3d-net-4d-in", "3d-net-6d-in"],
)
def test_wrong_ndim(dims: int, shape: tuple[int, ...]) -> None:
    """A tensor of the wrong rank gets the expected layout in the message."""
    net = tiny_net(dims)
    with pytest.raises(ValueError, match=rf"expected input of shape \(B, N, .*\) for a {dims}D network"):
        net(torch.rand(shape), ["mri", "ct"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_dims": 1}, "spatial_dims must be 2 or 3"),
        ({"spatial_dims": 2, "features": (8,)}, "at least two positive"),
        ({"spatial_dims": 2, "features": (8, 0)}, "at least two positive"),
        ({"spatial_dims": 2, "grid_size": 0}, "grid_size"),
        ({"spatial_dims": 2, "modalities": ("mri", "MRI")}, "unique"),
        ({"spatial_dims": 2, "encoder": "separate"}, "encoder must be"),
    ],
)
def test_constructor_validation(kwargs: dict, message: str) -> None:
    """Invalid constructor arguments are refused with a message naming the argument."""
    with pytest.raises(ValueError, match=message):
        ISFLNet(**kwargs)


def test_init_args_rebuild_the_same_network() -> None:
    """``init_args`` (what checkpoints store) rebuild a network with identical parameter shapes."""
    net = tiny_net(3, encoder="per_modality", modalities=("mri", "pet"))
    rebuilt = ISFLNet(**net.init_args)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}


@pytest.mark.parametrize(("channels", "width"), [(8, 11), (8, 8), (12, 5)])
def test_attention_equals_the_explicit_product(channels: int, width: int) -> None:
    """The fused attention (queries, keys and values zero-padded to one width, a multiple of 8) gives
    softmax(q k^T) v, in one piece or in query chunks, and the same gradients, whatever the widths."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 37, channels, generator=generator, requires_grad=True)
    key_t = torch.randn(2, channels, 5, generator=generator, requires_grad=True)
    value = torch.randn(2, 5, width, generator=generator, requires_grad=True)
    fused = _attend(query, key_t, value)
    explicit = torch.softmax(query @ key_t, dim=-1) @ value
    torch.testing.assert_close(fused, explicit)
    torch.testing.assert_close(_attend(query, key_t, value, chunk=6), explicit)  # query chunks
    upstream = torch.randn(explicit.shape, generator=generator)
    grads = torch.autograd.grad((fused * upstream).sum(), (query, key_t, value))
    expected = torch.autograd.grad((explicit * upstream).sum(), (query, key_t, value))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(("dims", "shape"), [(2, (1, 1)), (2, (3, 2)), (3, (1, 2, 3)), (3, (5, 1, 1))])
def test_smaller_than_the_coarsest_scale(dims: int, shape: tuple[int, ...]) -> None:
    """Images smaller than the pooling factor still give their own shape (padding is cropped away)."""
    net = tiny_net(dims).eval()
    with torch.no_grad():
        out = net(_inputs(shape, 2, batch=1), ["mri", "ct"], return_maps=True)
    assert out["fused"].shape == (1, 1, *shape)
    assert out["contributions"].shape == (1, 2, *shape)


def test_index_tensor_rows_must_match_batch() -> None:
    """A (rows, N) index tensor whose row count is not the batch size names the batch in its error."""
    net = tiny_net(2)
    with pytest.raises(ValueError, match="batch"):
        net(_inputs(SHAPE_2D, 2, batch=2), torch.tensor([[0, 1], [0, 1], [0, 1]]))

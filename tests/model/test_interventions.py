"""Intervention transforms: mask properties over many seeds, hole shapes, seeding and array types."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_isfl.model.interventions import (
    RandComplementaryMask,
    RandHoleMask,
    RandModalityDropout,
    RandSharedMask,
    drop_modality,
)

SEEDS = range(200)
#: small odd grids and holes that cover a good part of them, so masks overlap often
GRIDS = {2: ((29, 34), 9), 3: ((13, 15, 11), 5)}
CASES = [pytest.param(d, n, id=f"{d}d-{n}mod") for d, n in itertools.product((2, 3), (2, 3, 4))]


def _ones(num_mod: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.ones((num_mod, *shape), np.float32)


@pytest.mark.parametrize(("dims", "num_mod"), CASES)
def test_complementary_never_hides_a_voxel_everywhere(dims: int, num_mod: int) -> None:
    """Complementary masks are binary, hide something, and leave every voxel visible somewhere."""
    shape, hole = GRIDS[dims]
    transform = RandComplementaryMask(num_holes=(1, 6), hole_size=hole)
    differs = 0
    for seed in SEEDS:
        out = transform.set_random_state(seed)(_ones(num_mod, shape))
        assert out.shape == (num_mod, *shape)
        assert set(np.unique(out)) <= {0.0, 1.0}
        assert (out.max(axis=0) == 1).all(), f"seed {seed}: a voxel is hidden in every modality"
        assert (out == 0).any(), f"seed {seed}: no hole at all"
        differs += not all(np.array_equal(out[0], out[m]) for m in range(1, num_mod))
    assert differs == len(SEEDS)  # the modalities get their own holes


@pytest.mark.parametrize(("dims", "num_mod"), CASES)
def test_shared_masks_identical_across_modalities(dims: int, num_mod: int) -> None:
    """Shared masking hides the same voxels in every modality, and always hides some."""
    shape, hole = GRIDS[dims]
    transform = RandSharedMask(num_holes=(1, 6), hole_size=hole)
    for seed in SEEDS:
        out = transform.set_random_state(seed)(_ones(num_mod, shape))
        for m in range(1, num_mod):
            assert np.array_equal(out[0], out[m]), f"seed {seed}: modality {m} differs"
        assert (out[0] == 0).any()


@pytest.mark.parametrize(("dims", "num_mod"), CASES)
def test_dropout_zeroes_exactly_one_modality(dims: int, num_mod: int) -> None:
    """Dropout (prob 1) zeroes exactly one modality, keeps the others intact, and picks every one."""
    shape, _ = GRIDS[dims]
    rng = np.random.default_rng(0)
    image = rng.uniform(0.1, 1.0, (num_mod, *shape)).astype(np.float32)  # no voxel is 0 before
    transform = RandModalityDropout(prob=1.0)
    chosen = set()
    for seed in SEEDS:
        out = transform.set_random_state(seed)(image)
        zeroed = [m for m in range(num_mod) if (out[m] == 0).all()]
        assert len(zeroed) == 1, f"seed {seed}: zeroed {zeroed}"
        assert transform.index == zeroed[0]
        for m in set(range(num_mod)) - set(zeroed):
            assert np.array_equal(out[m], image[m])
        chosen.add(zeroed[0])
    assert chosen == set(range(num_mod))


def test_dropout_probability_zero_and_fill() -> None:
    """prob=0 never drops; ``fill`` is the value a dropped modality gets."""
    image = np.ones((3, 8, 9), np.float32)
    never = RandModalityDropout(prob=0.0)
    for seed in range(20):
        assert np.array_equal(never.set_random_state(seed)(image), image)
    out = RandModalityDropout(prob=1.0, fill=-1.0).set_random_state(0)(image)
    assert int((out.reshape(3, -1) == -1).all(axis=1).sum()) == 1


def test_drop_modality_index_and_copy() -> None:
    """``drop_modality`` zeroes the given (also negative) index on a copy and refuses a bad index."""
    image = np.ones((3, 5, 6), np.float32)
    out = drop_modality(image, -1)
    assert (out[2] == 0).all() and (out[:2] == 1).all()
    assert (image == 1).all()
    with pytest.raises(IndexError, match="modality index 3 out of range for 3"):
        drop_modality(image, 3)


@pytest.mark.parametrize("transform_cls", [RandComplementaryMask, RandModalityDropout])
def test_single_modality_refused(transform_cls: type) -> None:
    """Complementary masking and dropout need at least two modalities."""
    with pytest.raises(ValueError, match=">= 2 modalities"):
        transform_cls()(np.ones((1, 8, 8), np.float32))


@pytest.mark.parametrize("dims", [2, 3])
def test_hole_counts_within_range(dims: int) -> None:
    """Single-voxel holes on a large grid: the number of hidden islands never exceeds the maximum and
    covers the whole (min, max) range over the seeds; (0, 0) hides nothing."""
    shape = (64, 64) if dims == 2 else (24, 24, 24)
    low, high = 2, 5
    mask_gen = RandHoleMask(num_holes=(low, high), hole_size=1, box_prob=1.0)
    counts = []
    for seed in SEEDS:
        hidden = mask_gen.set_random_state(seed).draw(shape).numpy() == 0
        islands = ndimage.label(hidden)[1]
        assert 1 <= islands <= high
        assert hidden.sum() <= high
        counts.append(islands)
    # two random voxels rarely touch, so almost every mask shows its full hole count
    assert set(range(low, high + 1)) <= set(counts)
    assert sum(c >= low for c in counts) >= 0.95 * len(counts)
    none = RandHoleMask(num_holes=(0, 0)).set_random_state(0).draw(shape)
    assert bool((none == 1).all())


def _bbox(hidden: np.ndarray) -> tuple[slice, ...]:
    return ndimage.find_objects(hidden.astype(int))[0]


@pytest.mark.parametrize("dims", [2, 3])
def test_box_holes_are_axis_aligned_boxes(dims: int) -> None:
    """box_prob=1: a hole fills its bounding box, which is ``hole_size`` wide unless cut by the image's
    far edge."""
    shape = (40, 44) if dims == 2 else (20, 22, 18)
    size = 7
    mask_gen = RandHoleMask(num_holes=(1, 1), hole_size=size, box_prob=1.0)
    for seed in SEEDS:
        hidden = mask_gen.set_random_state(seed).draw(shape).numpy() == 0
        box = _bbox(hidden)
        assert hidden[box].all(), f"seed {seed}: hole is not a box"
        assert hidden.sum() == hidden[box].size
        for sl, n in zip(box, shape, strict=True):
            width = sl.stop - sl.start
            assert width == size or (width < size and sl.stop == n)


@pytest.mark.parametrize("dims", [2, 3])
def test_ball_holes_are_round(dims: int) -> None:
    """box_prob=0: a hole away from the edges is a disk/ball: its bounding box corners are kept, every
    hidden voxel is within the radius of its centre, and it holds about as many voxels as the continuous
    disk/ball of that diameter (pi/4 d^2 or pi/6 d^3)."""
    shape = (40, 44) if dims == 2 else (30, 32, 28)
    size = 9
    mask_gen = RandHoleMask(num_holes=(1, 1), hole_size=size, box_prob=0.0)
    volume = np.pi / 4 * size**2 if dims == 2 else np.pi / 6 * size**3
    checked = 0
    for seed in SEEDS:
        hidden = mask_gen.set_random_state(seed).draw(shape).numpy() == 0
        box = _bbox(hidden)
        if any(sl.start == 0 or sl.stop == n for sl, n in zip(box, shape, strict=True)):
            continue  # cut by the border
        checked += 1
        assert all(sl.stop - sl.start <= size for sl in box)
        for corner in itertools.product(*[(sl.start, sl.stop - 1) for sl in box]):
            assert not hidden[corner], f"seed {seed}: corner {corner} hidden"
        points = np.argwhere(hidden)
        assert (np.linalg.norm(points - points.mean(axis=0), axis=1) <= size / 2 + 0.5).all()
        assert abs(hidden.sum() / volume - 1.0) < 0.15
        assert hidden.sum() < 0.9 * hidden[box].size  # far from filling its box
    assert checked > len(SEEDS) // 4


def test_per_axis_hole_size() -> None:
    """A per-axis ``hole_size`` gives rectangular holes; a size of the wrong length is refused."""
    mask_gen = RandHoleMask(num_holes=(1, 1), hole_size=(3, 11), box_prob=1.0)
    widths = set()
    for seed in range(20):
        hidden = mask_gen.set_random_state(seed).draw((30, 40)).numpy() == 0
        box = _bbox(hidden)
        assert hidden[box].all()
        for sl, n, size in zip(box, (30, 40), (3, 11), strict=True):
            assert sl.stop - sl.start == size or (sl.stop - sl.start < size and sl.stop == n)
        widths.add((box[0].stop - box[0].start, box[1].stop - box[1].start))
    assert (3, 11) in widths
    with pytest.raises(ValueError, match="does not match a 3D image"):
        mask_gen.draw((10, 10, 10))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_holes": (3, 2)}, "num_holes"),
        ({"num_holes": (-1, 2)}, "num_holes"),
        ({"hole_size": 0}, "hole_size"),
        ({"hole_size": (4, 0)}, "hole_size"),
        ({"box_prob": 1.5}, "box_prob"),
    ],
)
def test_hole_mask_validation(kwargs: dict, message: str) -> None:
    """Bad hole parameters are refused with a message naming them."""
    with pytest.raises(ValueError, match=message):
        RandHoleMask(**kwargs)
    with pytest.raises(ValueError, match="prob"):
        RandModalityDropout(prob=-0.1)


TRANSFORMS = [
    pytest.param(lambda: RandComplementaryMask(hole_size=6), id="complementary"),
    pytest.param(lambda: RandSharedMask(hole_size=6), id="shared"),
    pytest.param(lambda: RandModalityDropout(prob=1.0), id="dropout"),
]


@pytest.mark.parametrize("make", TRANSFORMS)
@pytest.mark.parametrize("dims", [2, 3])
def test_seeded_determinism(make, dims: int) -> None:
    """Same seed, same result; another seed gives another result."""
    shape = (31, 26) if dims == 2 else (14, 13, 12)
    image = np.random.default_rng(0).uniform(0.1, 1.0, (3, *shape)).astype(np.float32)
    first = make().set_random_state(7)(image)
    again = make().set_random_state(7)(image)
    assert np.array_equal(first, again)
    others = [make().set_random_state(s)(image) for s in (8, 9, 10)]
    assert any(not np.array_equal(first, o) for o in others)


def test_complementary_reuses_masks_without_randomize() -> None:
    """``randomize=False`` applies the last masks again (e.g. to a second image of the same sample)."""
    transform = RandComplementaryMask(hole_size=6).set_random_state(3)
    first = transform(np.ones((2, 20, 21), np.float32))
    second = transform(2 * np.ones((2, 20, 21), np.float32), randomize=False)
    assert np.array_equal(second, 2 * first)


@pytest.mark.parametrize("make", TRANSFORMS)
def test_array_type_roundtrip(make) -> None:
    """numpy in gives numpy out and torch in gives torch out, same shape and dtype, input untouched."""
    image = np.random.default_rng(1).uniform(0.1, 1.0, (2, 12, 11, 10)).astype(np.float32)
    original = image.copy()
    out_np = make().set_random_state(0)(image)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32 and out_np.shape == image.shape
    assert np.array_equal(image, original)
    tensor = torch.from_numpy(original.copy())
    out_t = make().set_random_state(0)(tensor)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    assert torch.equal(tensor, torch.from_numpy(original))
    assert np.array_equal(out_t.numpy(), out_np)


@pytest.mark.parametrize("make", TRANSFORMS)
def test_non_contiguous_numpy_input(make) -> None:
    """Flipped numpy views (negative strides, as from ``np.flip`` or reoriented NIfTI) are accepted."""
    image = np.random.default_rng(2).uniform(0.1, 1.0, (2, 16, 15)).astype(np.float32)
    flipped = image[:, ::-1]
    out = make().set_random_state(0)(flipped)
    assert np.array_equal(out, make().set_random_state(0)(np.ascontiguousarray(flipped)))

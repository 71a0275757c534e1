"""Classical fusion baselines: identity, shapes, edge keeping and input validation, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_isfl.evaluation import baselines
from napari_isfl.evaluation.baselines import BASELINES, fuse_baseline, guided_filter

ODD_SHAPES = [(37, 50), (17, 22, 13)]


def structured_sources(shape: tuple[int, ...], count: int, seed: int = 0) -> list[np.ndarray]:
    """Different smooth-plus-edge images in [0, 1]: smoothed noise and one box per source."""
    rng = np.random.default_rng(seed)
    sources = []
    for index in range(count):
        image = ndimage.gaussian_filter(rng.random(shape), sigma=2.0)
        image = (image - image.min()) / (image.max() - image.min())
        corner = tuple(slice(size // (index + 3), size // 2 + 1) for size in shape)
        image[corner] = 0.5 * image[corner] + 0.5
        sources.append(image)
    return sources


@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("method", BASELINES)
def test_fusing_an_image_with_itself_returns_it(method: str, count: int, shape: tuple[int, ...]) -> None:
    image = structured_sources(shape, 1, seed=count)[0]
    fused = fuse_baseline(method, [image] * count)
    np.testing.assert_allclose(fused, image, atol=1e-6)
    stacked = fuse_baseline(method, np.stack([image] * count))  # one (N, *S) array is the same input
    np.testing.assert_array_equal(stacked, fused)


@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("method", BASELINES)
def test_output_shape_dtype_and_range(method: str, shape: tuple[int, ...]) -> None:
    sources = structured_sources(shape, 3)
    fused = fuse_baseline(method, sources)
    assert fused.shape == shape
    assert fused.dtype == np.float32
    assert np.all(np.isfinite(fused))
    assert fused.min() >= 0.0
    assert fused.max() <= 1.0
    assert fused.std() > 0.05  # structure survives, not a constant image


def test_mean_and_max_are_voxel_wise() -> None:
    sources = structured_sources((37, 50), 3)
    np.testing.assert_allclose(fuse_baseline("mean", sources), np.mean(sources, axis=0), atol=1e-6)
    np.testing.assert_allclose(fuse_baseline("max", sources), np.max(sources, axis=0), atol=1e-6)


def edge_pair(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """A step of 0.5 along axis 1 in source A only; B is smooth (a gentle ramp along axis 0)."""
    edge = shape[1] // 2
    with_edge = np.full(shape, 0.3)
    index = [slice(None)] * len(shape)
    index[1] = slice(edge, None)
    with_edge[tuple(index)] = 0.8
    ramp = np.linspace(0.0, 0.1, shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
    return with_edge, np.broadcast_to(0.5 + ramp, shape).copy(), edge


def step_across(image: np.ndarray, edge: int) -> float:
    """Mean jump of the image between the two voxels on either side of the edge (axis 1)."""
    return float(np.mean(np.take(image, edge, axis=1) - np.take(image, edge - 1, axis=1)))


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_detail_selection_keeps_an_edge_present_in_only_one_source(shape: tuple[int, ...]) -> None:
    with_edge, smooth, edge = edge_pair(shape)
    mean_step = step_across(fuse_baseline("mean", [with_edge, smooth]), edge)
    assert mean_step == pytest.approx(0.25, abs=1e-6)  # averaging halves the 0.5 step
    for method in ("lp", "dwt"):  # max-abs detail selection: the edge comes through (almost) whole
        assert step_across(fuse_baseline(method, [with_edge, smooth]), edge) > 0.8 * 0.5, method
        assert step_across(fuse_baseline(method, [smooth, with_edge]), edge) > 0.8 * 0.5, method
    # GFF weights the salient (edge) source near the edge: sharper than the mean.
    assert step_across(fuse_baseline("gff", [with_edge, smooth]), edge) > mean_step + 0.05


def test_method_options_change_the_result() -> None:
    sources = structured_sources((37, 50), 2)
    assert not np.allclose(fuse_baseline("lp", sources, levels=1), fuse_baseline("lp", sources, levels=3))
    assert not np.allclose(fuse_baseline("dwt", sources), fuse_baseline("dwt", sources, wavelet="haar"))
    assert not np.allclose(fuse_baseline("gff", sources), fuse_baseline("gff", sources, base_radius=5))


@pytest.mark.parametrize("shape", [(40, 41), (12, 13, 14)])
def test_guided_filter_edge_preserving_and_smoothing_limits(shape: tuple[int, ...]) -> None:
    image = structured_sources(shape, 1)[0]
    # Guided by itself with tiny eps the local linear model is exact: the image comes back.
    np.testing.assert_allclose(guided_filter(image, image, radius=2, eps=1e-10), image, atol=1e-4)

    # Huge eps makes the slope 0: the output is the box mean of the box mean.
    def box(x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, size=5, mode="reflect")

    np.testing.assert_allclose(guided_filter(image, image, radius=2, eps=1e8), box(box(image)), atol=1e-6)


def test_gff_takes_detail_from_the_source_that_has_it() -> None:
    textured = structured_sources((48, 48), 1)[0]
    flat = np.full((48, 48), 0.5)
    fused = fuse_baseline("gff", [textured, flat])
    detail = textured - ndimage.uniform_filter(textured, size=31, mode="reflect")
    fused_detail = fused - ndimage.uniform_filter(fused, size=31, mode="reflect")
    assert np.corrcoef(detail.ravel(), fused_detail.ravel())[0, 1] > 0.9


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ([np.zeros((8, 8))], "at least 2 sources, got 1"),
        ([np.zeros((8, 8)), np.zeros((8, 9))], r"same shape, got shapes \[\(8, 8\), \(8, 9\)\]"),
        ([np.zeros(8), np.zeros(8)], "2D or 3D images"),
        ([np.zeros((8, 8)), np.full((8, 8), np.nan)], "source 1 has NaN"),
        ([np.zeros((8, 8)), np.full((8, 8), 255.0)], r"source 1 has values in \[255, 255\].*\[0, 1\]"),
        (np.zeros((2, 1, 8, 8, 8)), r"shape \(N, H, W\) or \(N, D, H, W\)"),
    ],
)
def test_invalid_sources_are_rejected_with_a_reason(sources: list[np.ndarray], message: str) -> None:
    for method in BASELINES:
        with pytest.raises(ValueError, match=message):
            fuse_baseline(method, sources)


def test_unknown_method_and_option_are_rejected() -> None:
    sources = structured_sources((16, 16), 2)
    with pytest.raises(
        ValueError, match=r"unknown fusion baseline 'pca'; valid methods: mean, max, lp, dwt, gff"
    ):
        fuse_baseline("pca", sources)
    with pytest.raises(TypeError, match=r"'lp' got unexpected option\(s\) \['wavelet'\]; it accepts: levels"):
        fuse_baseline("lp", sources, wavelet="haar")
    with pytest.raises(TypeError, match="accepts: no options"):
        fuse_baseline("mean", sources, levels=2)
    with pytest.raises(ValueError, match="levels must be >= 1"):
        baselines.fuse_laplacian_pyramid(sources, levels=0)


def test_small_overshoot_is_clipped_not_rejected() -> None:
    image = structured_sources((16, 16), 1)[0]
    overshooting = image.copy()
    overshooting[0, 0] = 1.0005  # within tolerance, e.g. from resampling
    fused = fuse_baseline("mean", [overshooting, image])
    assert fused.max() <= 1.0

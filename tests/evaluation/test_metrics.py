"""Fusion metrics: cross-checks against independent implementations, properties, 2D and 3D."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from scipy.signal import convolve2d
from skimage.measure import shannon_entropy
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import mutual_info_score
from torchmetrics.image import VisualInformationFidelity

from napari_isfl.evaluation import metrics

SHAPE_2D = (96, 112)
SHAPE_3D = (45, 51, 41)  # odd sizes, every slice plane >= 41 (VIF's 4 scales fit)


def phantom(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Structured test image on the 8-bit scale: smooth gaussian blobs, a sharp box edge, mild noise.

    Integer-valued 0..255 like an image read back from an 8-bit file, so histogram metrics have one value
    per bin.
    """
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(size, dtype=np.float64) for size in shape], indexing="ij")
    image = np.zeros(shape)
    for _ in range(6):
        centre = [rng.uniform(0, size) for size in shape]
        width = rng.uniform(3, 12)
        distance_sq = sum((grid - c) ** 2 for grid, c in zip(grids, centre, strict=True))
        image += rng.uniform(0.3, 1.0) * np.exp(-distance_sq / (2 * width**2))
    offset = [int(rng.integers(1, size // 4)) for size in shape]
    image[tuple(slice(o, o + size // 3) for o, size in zip(offset, shape, strict=True))] += 0.5
    image += rng.normal(0.0, 0.03, shape)
    image = (image - image.min()) / (image.max() - image.min())
    return np.round(image * 255.0)


@pytest.fixture(scope="module", params=["2d", "3d"])
def triple(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fused, source_a, source_b) of one dimensionality, fused a weighted mean of the two sources."""
    shape = SHAPE_2D if request.param == "2d" else SHAPE_3D
    source_a, source_b = phantom(shape, 1), phantom(shape, 2)
    return np.round(0.6 * source_a + 0.4 * source_b), source_a, source_b


# ---------------------------------------------------------------------------------------------------------
# cross-checks against independent implementations
# ---------------------------------------------------------------------------------------------------------


def test_ssim_matches_skimage(triple: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    fused, source_a, source_b = triple
    expected = [
        structural_similarity(
            fused, source, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        for source in (source_a, source_b)
    ]
    per_source = metrics.structural_similarity(fused, [source_a, source_b], reduction="none")
    np.testing.assert_allclose(per_source, expected, rtol=1e-10)
    assert metrics.structural_similarity(fused, [source_a, source_b]) == pytest.approx(sum(expected))
    assert metrics.structural_similarity(fused, [source_a, source_b], reduction="mean") == pytest.approx(
        np.mean(expected)
    )


def test_psnr_matches_skimage_with_toolbox_mse_average(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    fused, source_a, source_b = triple
    single = peak_signal_noise_ratio(source_a, fused, data_range=255)
    assert metrics.psnr(fused, [source_a]) == pytest.approx(single, rel=1e-12)
    # Toolbox convention: MSE averaged over sources, then one PSNR. Recover each MSE from skimage's value.
    mse = [
        255.0**2 / 10 ** (peak_signal_noise_ratio(s, fused, data_range=255) / 10)
        for s in (source_a, source_b)
    ]
    expected = 10 * math.log10(255.0**2 / np.mean(mse))
    assert metrics.psnr(fused, [source_a, source_b]) == pytest.approx(expected, rel=1e-12)
    assert metrics.psnr(source_a, [source_a, source_a]) == math.inf


def test_mutual_information_matches_sklearn_in_bits_and_nats(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    fused, source_a, source_b = triple
    # Integer 0..255 values fall one per bin, so sklearn's contingency table is the same joint histogram.
    nats = sum(
        mutual_info_score(fused.ravel().astype(int), s.ravel().astype(int)) for s in (source_a, source_b)
    )
    assert metrics.mutual_information(fused, [source_a, source_b]) == pytest.approx(
        nats / math.log(2), rel=1e-9
    )
    assert metrics.mutual_information(fused, [source_a, source_b], base=math.e) == pytest.approx(
        nats, rel=1e-9
    )


def test_mutual_information_bins_fractional_values_like_numpy_histogram() -> None:
    rng = np.random.default_rng(3)
    first, second = rng.uniform(0, 255, (2, 40, 40))
    edges = np.linspace(0, 255, 257)
    expected = mutual_info_score(
        np.digitize(first.ravel(), edges[1:-1]), np.digitize(second.ravel(), edges[1:-1])
    )
    assert metrics.mutual_information(first, [second]) == pytest.approx(expected / math.log(2), rel=1e-9)


def test_vif_matches_torchmetrics_vifp() -> None:
    # torchmetrics implements the same pixel-domain multi-scale VIFp (vifp_mscale.m: 17/9/5/3-tap gaussian
    # windows, sigma_n^2 = 2), so in float64 the values agree to rounding.
    source_a, source_b = phantom(SHAPE_2D, 1), phantom(SHAPE_2D, 2)
    fused = np.round(0.6 * source_a + 0.4 * source_b)
    reference = VisualInformationFidelity()
    expected = sum(
        reference(torch.from_numpy(fused)[None, None], torch.from_numpy(s)[None, None]).item()
        for s in (source_a, source_b)
    )
    assert metrics.visual_information_fidelity(fused, [source_a, source_b]) == pytest.approx(
        expected, rel=1e-9
    )


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_vif_per_slice_matches_torchmetrics_on_each_slice(axis: int) -> None:
    source_a, source_b = phantom(SHAPE_3D, 1), phantom(SHAPE_3D, 2)
    fused = np.round(0.5 * source_a + 0.5 * source_b)

    def batch(volume: np.ndarray) -> torch.Tensor:  # slices as a batch (D, 1, H, W)
        return torch.from_numpy(np.moveaxis(volume, axis, 0).copy())[:, None]

    per_slice = sum(
        VisualInformationFidelity(reduction="none")(batch(fused), batch(s)).numpy()
        for s in (source_a, source_b)
    )
    value = metrics.visual_information_fidelity(fused, [source_a, source_b], slice_axis=axis)
    assert value == pytest.approx(per_slice.mean(), rel=1e-9)


def test_entropy_matches_skimage_and_scipy(triple: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    fused = triple[0]
    assert metrics.entropy(fused) == pytest.approx(shannon_entropy(fused), rel=1e-12)
    counts = np.histogram(fused, bins=256, range=(0, 255))[0]
    assert metrics.entropy(fused) == pytest.approx(stats.entropy(counts, base=2), rel=1e-12)


def test_correlation_coefficient_matches_numpy(triple: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    fused, source_a, source_b = triple
    expected = np.mean([np.corrcoef(fused.ravel(), s.ravel())[0, 1] for s in (source_a, source_b)])
    assert metrics.correlation_coefficient(fused, [source_a, source_b]) == pytest.approx(expected, rel=1e-12)


def test_scd_matches_definition_for_two_and_three_sources() -> None:
    a, b, c = (phantom(SHAPE_2D, seed) for seed in (1, 2, 3))
    fused = np.round((a + b + c) / 3)

    def corr(x: np.ndarray, y: np.ndarray) -> float:
        return np.corrcoef(x.ravel(), y.ravel())[0, 1]

    two = corr(fused - b, a) + corr(fused - a, b)  # Aslantas & Bendes
    assert metrics.sum_of_correlations_of_differences(fused, [a, b]) == pytest.approx(two, rel=1e-12)
    three = corr(fused - (b + c) / 2, a) + corr(fused - (a + c) / 2, b) + corr(fused - (a + b) / 2, c)
    assert metrics.sum_of_correlations_of_differences(fused, [a, b, c]) == pytest.approx(three, rel=1e-12)


def test_spatial_frequency_and_average_gradient_match_their_formulas(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    fused = triple[0]
    expected_sf = math.sqrt(sum(np.mean(np.diff(fused, axis=k) ** 2) for k in range(fused.ndim)))
    assert metrics.spatial_frequency(fused) == pytest.approx(expected_sf, rel=1e-12)
    # Central differences inside, one-sided differences at the borders (np.gradient), written out here.
    components = []
    for k in range(fused.ndim):
        moved = np.moveaxis(fused, k, 0)
        derivative = np.empty_like(moved)
        derivative[1:-1] = (moved[2:] - moved[:-2]) / 2
        derivative[0], derivative[-1] = moved[1] - moved[0], moved[-1] - moved[-2]
        components.append(np.moveaxis(derivative, 0, k))
    expected_ag = np.mean(np.sqrt(sum(c**2 for c in components) / fused.ndim))
    assert metrics.average_gradient(fused) == pytest.approx(expected_ag, rel=1e-12)
    assert metrics.standard_deviation(fused) == pytest.approx(np.std(fused), rel=1e-12)


def toolbox_qabf(fused: np.ndarray, sources: list[np.ndarray]) -> float:
    """Transliteration of the MATLAB/CDDFuse Qabf with full 2D convolutions (equal strengths -> G = 1)."""
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)

    def strength_angle(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sx, sy = convolve2d(image, h3, mode="same"), convolve2d(image, h1, mode="same")
        angle = np.full(image.shape, math.pi / 2)
        angle[sx != 0] = np.arctan(sy[sx != 0] / sx[sx != 0])
        return np.sqrt(sx**2 + sy**2), angle

    g_f, a_f = strength_angle(fused)
    numerator = denominator = 0.0
    for source in sources:
        g_s, a_s = strength_angle(source)
        ratio = np.ones_like(g_s)
        ratio[g_s > g_f] = g_f[g_s > g_f] / g_s[g_s > g_f]
        ratio[g_s < g_f] = g_s[g_s < g_f] / g_f[g_s < g_f]
        agreement = 1 - np.abs(a_s - a_f) / (math.pi / 2)
        quality = 0.9994 / (1 + np.exp(-15 * (ratio - 0.5))) * 0.9879 / (1 + np.exp(-22 * (agreement - 0.8)))
        numerator += np.sum(quality * g_s)
        denominator += np.sum(g_s)
    return numerator / denominator


def test_qabf_matches_toolbox_transliteration() -> None:
    a, b, c = (phantom(SHAPE_2D, seed) for seed in (1, 2, 3))
    fused = np.round(0.6 * a + 0.4 * b)
    assert metrics.qabf(fused, [a, b]) == pytest.approx(toolbox_qabf(fused, [a, b]), rel=1e-10)
    assert metrics.qabf(fused, [a, b, c]) == pytest.approx(toolbox_qabf(fused, [a, b, c]), rel=1e-10)


# ---------------------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------------------

PERFECT_QABF = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))


@pytest.mark.parametrize("n_sources", [2, 3])
@pytest.mark.parametrize("mode", ["auto", "native", "per_slice"])
def test_fusing_an_image_with_itself_scores_perfectly(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray], n_sources: int, mode: str
) -> None:
    image = triple[1]
    sources = [image] * n_sources
    scores = metrics.fusion_metrics(image, sources, mode=mode)
    assert scores["CC"] == pytest.approx(1.0)
    assert scores["SSIM"] == pytest.approx(n_sources)
    assert scores["SSIM_mean"] == pytest.approx(1.0)
    np.testing.assert_allclose(metrics.structural_similarity(image, sources, reduction="none"), 1.0)
    assert scores["Qabf"] == pytest.approx(PERFECT_QABF, rel=1e-9)
    assert scores["VIF"] == pytest.approx(n_sources, rel=1e-6)
    assert scores["MI"] == pytest.approx(n_sources * scores["EN"], rel=1e-9)  # I(X; X) = H(X)
    assert scores["PSNR"] == math.inf


def test_blurring_the_fused_image_lowers_sharpness_metrics(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    fused, source_a, source_b = triple
    blurred = ndimage.gaussian_filter(fused, sigma=2.0)
    for mode in ("auto", "native", "per_slice"):
        names = ["SF", "AG", "Qabf", "VIF"]
        sharp_scores = metrics.fusion_metrics(fused, [source_a, source_b], names=names, mode=mode)
        blurred_scores = metrics.fusion_metrics(blurred, [source_a, source_b], names=names, mode=mode)
        for key in names:  # VIF drops less: blurring the weighted mean keeps most of its coarse scales
            assert blurred_scores[key] < (0.9 if key == "VIF" else 0.8) * sharp_scores[key], (mode, key)


@pytest.mark.parametrize("mode", ["auto", "native", "per_slice"])
@pytest.mark.parametrize("shape", [SHAPE_3D, (17, 22, 13)])
def test_metrics_run_on_odd_sized_volumes(shape: tuple[int, int, int], mode: str) -> None:
    source_a, source_b = phantom(shape, 1), phantom(shape, 2)
    scores = metrics.fusion_metrics((source_a + source_b) / 2, [source_a, source_b], mode=mode)
    assert list(scores) == list(metrics.METRIC_KEYS)
    fits_vif = min(shape) >= 17 if mode == "native" else sorted(shape)[1] >= 17  # 17-tap first VIF window
    for key, value in scores.items():
        if key == "VIF" and not fits_vif:
            assert math.isnan(value)  # undefined: the smallest VIF window does not fit
        else:
            assert math.isfinite(value), (key, value)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_slice_mode_is_the_mean_of_2d_values_over_non_empty_slices(axis: int) -> None:
    source_a, source_b = phantom(SHAPE_3D, 1), phantom(SHAPE_3D, 2)
    for volume in (source_a, source_b):  # empty background slabs at both ends of every axis
        for k in range(3):
            np.moveaxis(volume, k, 0)[:2] = 0
            np.moveaxis(volume, k, 0)[-1:] = 0
    fused = np.round(0.5 * source_a + 0.5 * source_b)
    volume_scores = metrics.fusion_metrics(fused, [source_a, source_b], mode="per_slice", axis=axis)
    auto_scores = metrics.fusion_metrics(fused, [source_a, source_b], names=["VIF", "Qabf"], axis=axis)

    non_empty = [k for k in range(fused.shape[axis]) if np.take(source_a, k, axis).any()]
    assert len(non_empty) == fused.shape[axis] - 3
    slice_scores = [
        metrics.fusion_metrics(
            np.take(fused, k, axis), [np.take(source_a, k, axis), np.take(source_b, k, axis)]
        )
        for k in non_empty
    ]
    for key in metrics.METRIC_KEYS:
        expected = np.mean([scores[key] for scores in slice_scores])
        assert volume_scores[key] == pytest.approx(expected, rel=1e-9), key
    for key in ("VIF", "Qabf"):  # auto mode uses slices for the 2D-defined metrics
        assert auto_scores[key] == pytest.approx(volume_scores[key], rel=1e-9), key


def test_auto_mode_is_native_for_nd_metrics_and_2d_ignores_mode(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    fused, source_a, source_b = triple
    auto = metrics.fusion_metrics(fused, [source_a, source_b], mode="auto")
    native = metrics.fusion_metrics(fused, [source_a, source_b], mode="native")
    per_slice = metrics.fusion_metrics(fused, [source_a, source_b], mode="per_slice")
    for key in metrics.METRIC_KEYS:
        if key not in ("VIF", "Qabf"):
            assert auto[key] == native[key], key
    if fused.ndim == 2:
        assert auto == native == per_slice
    else:
        assert auto["SF"] != per_slice["SF"]  # 3 difference directions vs 2
        assert native["VIF"] != auto["VIF"]


def test_inputs_as_stacked_array_equal_sequence() -> None:
    a, b = phantom(SHAPE_2D, 1), phantom(SHAPE_2D, 2)
    fused = (a + b) / 2
    assert metrics.fusion_metrics(fused, np.stack([a, b])) == metrics.fusion_metrics(fused, [a, b])


def test_unit_range_inputs_warn_and_to_uint8_scale_maps_them() -> None:
    a, b = phantom(SHAPE_2D, 1) / 255, phantom(SHAPE_2D, 2) / 255
    with pytest.warns(UserWarning, match="to_uint8_scale"):
        metrics.fusion_metrics((a + b) / 2, [a, b], names=["EN"])
    np.testing.assert_array_equal(metrics.to_uint8_scale(a), np.round(a * 255))
    assert metrics.to_uint8_scale(np.array([0.25]), quantize=False)[0] == pytest.approx(63.75)
    assert metrics.to_uint8_scale(np.array([-0.01, 1.02])).tolist() == [0.0, 255.0]
    with pytest.raises(ValueError, match=r"expects an image in \[0, 1\]"):
        metrics.to_uint8_scale(np.array([0.0, 200.0]))


@pytest.mark.parametrize(
    ("fused", "sources", "kwargs", "message"),
    [
        (np.zeros((8, 8)), [np.zeros((8, 8))], {}, "at least 2 source"),
        (np.zeros((8, 8)), [np.zeros((8, 8)), np.zeros((8, 9))], {}, r"source 1 has shape \(8, 9\)"),
        (np.zeros((8, 8)), [np.zeros((8, 8)), np.full((8, 8), np.nan)], {}, "source 1 has NaN"),
        (np.zeros(8), [np.zeros(8), np.zeros(8)], {}, "2D or 3D"),
        (np.zeros((8, 8)), np.zeros((8, 8)), {}, r"shape \(N, \*\(8, 8\)\)"),
        (
            np.zeros((8, 8)),
            [np.zeros((8, 8))] * 2,
            {"names": ["EN", "FMI"]},
            r"unknown metric name\(s\) \['FMI'\]",
        ),
        (np.zeros((8, 8)), [np.zeros((8, 8))] * 2, {"mode": "3d"}, "mode must be one of"),
        (np.zeros((4, 8, 8)), [np.zeros((4, 8, 8))] * 2, {"axis": 3}, "axis 3 is out of range"),
    ],
)
@pytest.mark.filterwarnings("ignore:all inputs lie within")
def test_fusion_metrics_rejects_bad_input(
    fused: np.ndarray, sources: list[np.ndarray], kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.fusion_metrics(fused, sources, **kwargs)


def test_fusion_metrics_is_fast_on_a_256_pair() -> None:
    a, b = phantom((256, 256), 1), phantom((256, 256), 2)
    start = time.perf_counter()
    metrics.fusion_metrics((a + b) / 2, [a, b])
    assert time.perf_counter() - start < 2.0  # ~0.05 s on 2 CPU cores; generous for loaded CI machines


# ---------------------------------------------------------------------------------------------------------
# functional fidelity
# ---------------------------------------------------------------------------------------------------------


def functional_phantom(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(pet, mri): head-like ellipsoid, PET with two cold (hypo-uptake) spots where the MRI is bright.

    The spots cover about 20 % of the head in 2D and 3D, so they make up most of the lowest quartile.
    """
    grids = np.meshgrid(*[np.linspace(-1, 1, size) for size in shape], indexing="ij")
    head = sum(g**2 for g in grids) < 0.8
    rng = np.random.default_rng(5)
    mri = np.where(head, 0.5 + 0.2 * grids[-1] + 0.05 * rng.standard_normal(shape), 0.0)
    pet = np.where(head, 0.6 + 0.05 * grids[-1], 0.0)
    spot_radius = 0.283 if len(shape) == 2 else 0.415
    for centre in (0.42, -0.42):
        spot = head & ((grids[0] - centre) ** 2 + sum(g**2 for g in grids[1:]) < spot_radius**2)
        pet[spot] = 0.1
        mri[spot] = 0.9  # bright anatomy over the cold spots: what a max-fusion would show
    return np.clip(pet, 0, 1), np.clip(mri, 0, 1)


@pytest.mark.parametrize("shape", [(64, 72), (33, 36, 31)])
def test_functional_fidelity_separates_faithful_mean_and_max_fusions(shape: tuple[int, ...]) -> None:
    pet, mri = functional_phantom(shape)
    faithful = metrics.functional_fidelity(pet, pet, mri)
    assert faithful["corr_functional"] == pytest.approx(1.0)
    assert faithful["low_uptake_contrast_ratio"] == pytest.approx(1.0)
    assert faithful["low_uptake_fraction"] == pytest.approx(0.25, abs=0.01)

    rescaled = metrics.functional_fidelity(3.0 * pet + 7.0, pet, mri)  # own intensity scale: same scores
    assert rescaled["low_uptake_contrast_ratio"] == pytest.approx(1.0)

    mean = metrics.functional_fidelity((pet + mri) / 2, pet, mri)
    maximum = metrics.functional_fidelity(np.maximum(pet, mri), pet, mri)
    assert maximum["low_uptake_contrast_ratio"] < 0.2 < mean["low_uptake_contrast_ratio"] < 1.0
    assert maximum["corr_functional"] < mean["corr_functional"] < 1.0
    assert maximum["low_uptake_contrast_anatomical"] < 0  # the anatomy is brighter over the cold spots


def test_functional_fidelity_mask_and_surround_options() -> None:
    pet, mri = functional_phantom((64, 72))
    without_anatomy = metrics.functional_fidelity(pet, pet)
    assert math.isnan(without_anatomy["corr_anatomical"])
    # Cold spots fall below the default threshold of the PET alone; hole filling keeps them in the mask.
    assert without_anatomy["mask_fraction"] == pytest.approx(
        metrics.functional_fidelity(pet, pet, mri)["mask_fraction"]
    )

    head = pet > 0
    explicit = metrics.functional_fidelity(pet, pet, mask=head)
    assert explicit["mask_fraction"] == pytest.approx(head.mean())
    inner = metrics.functional_fidelity(pet, pet, mask=head & (np.arange(72) < 36))  # left half only
    assert inner["mask_fraction"] < explicit["mask_fraction"]

    # A local shell of 3 pixels as surround: the max-fusion still loses the cold spots.
    local = metrics.functional_fidelity(np.maximum(pet, mri), pet, mri, surround_width=3)
    assert local["low_uptake_contrast_ratio"] < 0.2
    assert local["low_uptake_contrast_functional"] != without_anatomy["low_uptake_contrast_functional"]

    with pytest.raises(ValueError, match="mask is empty"):
        metrics.functional_fidelity(pet, pet, mask=np.zeros(pet.shape, dtype=bool))
    with pytest.raises(ValueError, match="anatomical has shape"):
        metrics.functional_fidelity(pet, pet, mri[:-1])
    with pytest.raises(ValueError, match="low_percentile"):
        metrics.functional_fidelity(pet, pet, low_percentile=0)

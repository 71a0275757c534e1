"""Fusion metrics: cross-checks against independent implementations, properties, 2D and 3D."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.signal import convolve2d
from skimage.measure import shannon_entropy
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import mutual_info_score
from torchmetrics.image import VisualInformationFidelity

from core_helpers import metric_phantom as phantom
from napari_isfl.evaluation import metrics

SHAPE_2D = (96, 112)
SHAPE_3D = (45, 51, 41)  # odd sizes, every slice plane >= 41 (VIF's 4 scales fit)


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

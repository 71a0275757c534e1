"""The metric suite (napari_isfl.evaluation.scores): the standard metrics of one fusion in 2D and 3D (native,
per-slice and auto modes) and functional fidelity for PET/SPECT."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from core_helpers import metric_phantom as phantom
from napari_isfl.evaluation import metrics
from napari_isfl.evaluation import scores as scoring

SHAPE_2D = (96, 112)
SHAPE_3D = (45, 51, 41)  # odd sizes, every slice plane >= 41 (VIF's 4 scales fit)

PERFECT_QABF = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))


@pytest.mark.parametrize("n_sources", [2, 3])
@pytest.mark.parametrize("mode", ["auto", "native", "per_slice"])
def test_fusing_an_image_with_itself_scores_perfectly(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray], n_sources: int, mode: str
) -> None:
    image = triple[1]
    sources = [image] * n_sources
    scores = scoring.fusion_metrics(image, sources, mode=mode)
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
        sharp_scores = scoring.fusion_metrics(fused, [source_a, source_b], names=names, mode=mode)
        blurred_scores = scoring.fusion_metrics(blurred, [source_a, source_b], names=names, mode=mode)
        for key in names:  # VIF drops less: blurring the weighted mean keeps most of its coarse scales
            assert blurred_scores[key] < (0.9 if key == "VIF" else 0.8) * sharp_scores[key], (mode, key)


@pytest.mark.parametrize("mode", ["auto", "native", "per_slice"])
@pytest.mark.parametrize("shape", [SHAPE_3D, (17, 22, 13)])
def test_metrics_run_on_odd_sized_volumes(shape: tuple[int, int, int], mode: str) -> None:
    source_a, source_b = phantom(shape, 1), phantom(shape, 2)
    scores = scoring.fusion_metrics((source_a + source_b) / 2, [source_a, source_b], mode=mode)
    assert list(scores) == list(scoring.METRIC_KEYS)
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
    volume_scores = scoring.fusion_metrics(fused, [source_a, source_b], mode="per_slice", axis=axis)
    auto_scores = scoring.fusion_metrics(fused, [source_a, source_b], names=["VIF", "Qabf"], axis=axis)

    non_empty = [k for k in range(fused.shape[axis]) if np.take(source_a, k, axis).any()]
    assert len(non_empty) == fused.shape[axis] - 3
    slice_scores = [
        scoring.fusion_metrics(
            np.take(fused, k, axis), [np.take(source_a, k, axis), np.take(source_b, k, axis)]
        )
        for k in non_empty
    ]
    for key in scoring.METRIC_KEYS:
        expected = np.mean([scores[key] for scores in slice_scores])
        assert volume_scores[key] == pytest.approx(expected, rel=1e-9), key
    for key in ("VIF", "Qabf"):  # auto mode uses slices for the 2D-defined metrics
        assert auto_scores[key] == pytest.approx(volume_scores[key], rel=1e-9), key


def test_auto_mode_is_native_for_nd_metrics_and_2d_ignores_mode(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    fused, source_a, source_b = triple
    auto = scoring.fusion_metrics(fused, [source_a, source_b], mode="auto")
    native = scoring.fusion_metrics(fused, [source_a, source_b], mode="native")
    per_slice = scoring.fusion_metrics(fused, [source_a, source_b], mode="per_slice")
    for key in scoring.METRIC_KEYS:
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
    assert scoring.fusion_metrics(fused, np.stack([a, b])) == scoring.fusion_metrics(fused, [a, b])


def test_unit_range_inputs_warn_and_to_uint8_scale_maps_them() -> None:
    a, b = phantom(SHAPE_2D, 1) / 255, phantom(SHAPE_2D, 2) / 255
    with pytest.warns(UserWarning, match="to_uint8_scale"):
        scoring.fusion_metrics((a + b) / 2, [a, b], names=["EN"])
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
        scoring.fusion_metrics(fused, sources, **kwargs)


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
    faithful = scoring.functional_fidelity(pet, pet, mri)
    assert faithful["corr_functional"] == pytest.approx(1.0)
    assert faithful["low_uptake_contrast_ratio"] == pytest.approx(1.0)
    assert faithful["low_uptake_fraction"] == pytest.approx(0.25, abs=0.01)

    rescaled = scoring.functional_fidelity(3.0 * pet + 7.0, pet, mri)  # own intensity scale: same scores
    assert rescaled["low_uptake_contrast_ratio"] == pytest.approx(1.0)

    mean = scoring.functional_fidelity((pet + mri) / 2, pet, mri)
    maximum = scoring.functional_fidelity(np.maximum(pet, mri), pet, mri)
    assert maximum["low_uptake_contrast_ratio"] < 0.2 < mean["low_uptake_contrast_ratio"] < 1.0
    assert maximum["corr_functional"] < mean["corr_functional"] < 1.0
    assert maximum["low_uptake_contrast_anatomical"] < 0  # the anatomy is brighter over the cold spots


def test_functional_fidelity_mask_and_surround_options() -> None:
    pet, mri = functional_phantom((64, 72))
    without_anatomy = scoring.functional_fidelity(pet, pet)
    assert math.isnan(without_anatomy["corr_anatomical"])
    # Cold spots fall below the default threshold of the PET alone; hole filling keeps them in the mask.
    assert without_anatomy["mask_fraction"] == pytest.approx(
        scoring.functional_fidelity(pet, pet, mri)["mask_fraction"]
    )

    head = pet > 0
    explicit = scoring.functional_fidelity(pet, pet, mask=head)
    assert explicit["mask_fraction"] == pytest.approx(head.mean())
    inner = scoring.functional_fidelity(pet, pet, mask=head & (np.arange(72) < 36))  # left half only
    assert inner["mask_fraction"] < explicit["mask_fraction"]

    # A local shell of 3 pixels as surround: the max-fusion still loses the cold spots.
    local = scoring.functional_fidelity(np.maximum(pet, mri), pet, mri, surround_width=3)
    assert local["low_uptake_contrast_ratio"] < 0.2
    assert local["low_uptake_contrast_functional"] != without_anatomy["low_uptake_contrast_functional"]

    with pytest.raises(ValueError, match="mask is empty"):
        scoring.functional_fidelity(pet, pet, mask=np.zeros(pet.shape, dtype=bool))
    with pytest.raises(ValueError, match="anatomical has shape"):
        scoring.functional_fidelity(pet, pet, mri[:-1])
    with pytest.raises(ValueError, match="low_percentile"):
        scoring.functional_fidelity(pet, pet, low_percentile=0)

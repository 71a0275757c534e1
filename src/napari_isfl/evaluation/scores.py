"""The metric suite of the reports: the nine standard metrics (plus SSIM_mean, CC, PSNR) of one fusion, and
functional fidelity for PET/SPECT.

3D volumes:
    :func:`fusion_metrics` evaluates EN, SD, SF, AG, MI, SCD, CC, PSNR and SSIM natively in nD. VIF and
    Qabf are 2D definitions: they are averaged over 2D slices along ``axis`` by default (``mode="auto"``),
    or computed with their direct 3D generalisations (``mode="native"``); ``mode="per_slice"`` averages
    every metric over slices.

Functional fidelity:
    Grey-level metrics reward a fusion pulled toward ``max(sources)``, which hides dark hypo-uptake regions
    of PET/SPECT under bright MRI. :func:`functional_fidelity` measures that failure directly.

Examples:
    >>> import numpy as np
    >>> from napari_isfl.evaluation.metrics import to_uint8_scale
    >>> rng = np.random.default_rng(0)
    >>> mri, pet = rng.random((2, 64, 64))
    >>> fused = 0.5 * (mri + pet)
    >>> scores = fusion_metrics(to_uint8_scale(fused), [to_uint8_scale(mri), to_uint8_scale(pet)])
    >>> sorted(scores) == sorted(METRIC_KEYS)
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

from .metrics import (
    _as_image,
    _as_pair,
    _informative_slices,
    _mean_over_slices,
    _normalise_axis,
    average_gradient,
    correlation_coefficient,
    entropy,
    mutual_information,
    pearson,
    psnr,
    qabf,
    spatial_frequency,
    standard_deviation,
    structural_similarity,
    sum_of_correlations_of_differences,
    visual_information_fidelity,
)

__all__ = ["METRIC_KEYS", "functional_fidelity", "fusion_metrics"]

#: Keys of :func:`fusion_metrics`, in report order. "SSIM" is the sum over sources, "SSIM_mean" the mean.
METRIC_KEYS: tuple[str, ...] = (
    "EN",
    "SD",
    "SF",
    "AG",
    "MI",
    "SCD",
    "VIF",
    "Qabf",
    "SSIM",
    "SSIM_mean",
    "CC",
    "PSNR",
)

MetricMode = Literal["auto", "native", "per_slice"]
_MODES = ("auto", "native", "per_slice")

MetricMode = Literal["auto", "native", "per_slice"]
_MODES = ("auto", "native", "per_slice")


def _single_image(metric: Callable[[np.ndarray], float]) -> Callable[[np.ndarray, list[np.ndarray]], float]:
    return lambda fused, sources: metric(fused)


# key -> metric(fused, sources) evaluated natively in nD
_NATIVE_METRICS: dict[str, Callable[[np.ndarray, list[np.ndarray]], float]] = {
    "EN": _single_image(entropy),
    "SD": _single_image(standard_deviation),
    "SF": _single_image(spatial_frequency),
    "AG": _single_image(average_gradient),
    "MI": mutual_information,
    "SCD": sum_of_correlations_of_differences,
    "SSIM": lambda fused, sources: structural_similarity(fused, sources, reduction="sum"),
    "SSIM_mean": lambda fused, sources: structural_similarity(fused, sources, reduction="mean"),
    "CC": correlation_coefficient,
    "PSNR": psnr,
}


def fusion_metrics(
    fused: np.ndarray,
    sources: Sequence[np.ndarray] | np.ndarray,
    names: Sequence[str] | None = None,
    mode: MetricMode = "auto",
    axis: int = -1,
) -> dict[str, float]:
    """All standard fusion metrics of one fused image, keyed by :data:`METRIC_KEYS`.

    Inputs are on the 8-bit scale 0..255 (see the module docstring; a ``UserWarning`` is raised when every
    input lies within ``[0, 1]``, which almost always means :func:`to_uint8_scale` was forgotten). Each
    value follows the convention of its function: EN :func:`entropy`, SD :func:`standard_deviation`, SF
    :func:`spatial_frequency`, AG :func:`average_gradient`, MI :func:`mutual_information` (bits, summed),
    SCD :func:`sum_of_correlations_of_differences`, VIF :func:`visual_information_fidelity` (summed), Qabf
    :func:`qabf`, SSIM :func:`structural_similarity` (summed; "SSIM_mean" the mean), CC
    :func:`correlation_coefficient` (mean), PSNR :func:`psnr` (MSE averaged, peak 255).

    Args:
        fused: fused image, 2D or 3D.
        sources: N >= 2 co-registered source images of the same shape, or one array ``(N, *S)``.
        names: metric keys to compute (default: all of :data:`METRIC_KEYS`), e.g. ``["EN", "VIF"]``.
        mode: for 3D inputs (2D inputs are always evaluated as 2D images):
            ``"auto"``: native 3D for the metrics defined in nD, 2D slices along ``axis`` for VIF and Qabf
            (their definitions are 2D; comparable with the 2D literature);
            ``"native"``: native 3D for all, VIF and Qabf through their 3D generalisations;
            ``"per_slice"``: every metric is the mean of its 2D values over the slices along ``axis``.
            Slices where every source is constant (empty background) are skipped, and so are slices where
            a metric is undefined (NaN, e.g. CC of a constant slice).
        axis: slice axis of 3D inputs for the per-slice metrics.

    Returns:
        ``{key: value}`` in :data:`METRIC_KEYS` order (restricted to ``names``), plain floats.

    Raises:
        ValueError: on fewer than two sources, mismatched shapes, non-finite values, a 1D/4D input, an
            unknown metric name or mode, or an out-of-range axis.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> mri, pet = rng.integers(0, 256, (2, 48, 48)).astype(float)
        >>> scores = fusion_metrics((mri + pet) / 2, [mri, pet], names=["CC", "SSIM"])
        >>> list(scores)
        ['SSIM', 'CC']
    """
    fused_array, source_arrays = _as_pair(fused, sources, min_sources=2)
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    requested = METRIC_KEYS if names is None else tuple(names)
    unknown = [name for name in requested if name not in METRIC_KEYS]
    if unknown:
        raise ValueError(f"unknown metric name(s) {unknown}; valid names: {list(METRIC_KEYS)}")
    if max(float(fused_array.max()), *(float(source.max()) for source in source_arrays)) <= 1.0:
        warnings.warn(
            "all inputs lie within [0, 1], but the fusion metrics are defined on the 8-bit scale 0..255; "
            "convert with napari_isfl.metrics.to_uint8_scale first",
            UserWarning,
            stacklevel=2,
        )

    is_volume = fused_array.ndim == 3
    slice_axis = _normalise_axis(axis, 3) if is_volume else None
    per_slice = is_volume and mode == "per_slice"
    # VIF and Qabf: per slice unless 2D input or mode "native" (None selects the nD path).
    edge_axis = slice_axis if is_volume and mode != "native" else None

    results: dict[str, float] = {}
    slices: list[tuple[np.ndarray, list[np.ndarray]]] | None = None
    for key in (key for key in METRIC_KEYS if key in requested):
        if key == "VIF":
            results[key] = visual_information_fidelity(fused_array, source_arrays, slice_axis=edge_axis)
        elif key == "Qabf":
            results[key] = qabf(fused_array, source_arrays, slice_axis=edge_axis)
        elif per_slice:
            if slices is None:
                keep = np.flatnonzero(_informative_slices(source_arrays, slice_axis))
                slices = [
                    (
                        np.take(fused_array, index, slice_axis),
                        [np.take(s, index, slice_axis) for s in source_arrays],
                    )
                    for index in keep
                ]
            values = np.array(
                [_NATIVE_METRICS[key](fused_slice, source_slices) for fused_slice, source_slices in slices]
            )
            results[key] = _mean_over_slices(values, np.ones(len(values), dtype=bool))
        else:
            results[key] = float(_NATIVE_METRICS[key](fused_array, source_arrays))
    return results


def functional_fidelity(
    fused: np.ndarray,
    functional: np.ndarray,
    anatomical: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    *,
    low_percentile: float = 25.0,
    high_percentile: float = 95.0,
    mask_threshold: float = 0.05,
    surround_width: int | None = None,
) -> dict[str, float]:
    """How faithfully the fused image keeps the functional (PET/SPECT) image, hypo-uptake included.

    Grey-level metrics reward a fusion pulled toward ``max(sources)``, which hides dark (hypo-uptake)
    regions of the functional image under bright anatomy. This measures it, inside a head/body ``mask``:

    * ``corr_functional``: Pearson correlation of the fused with the functional image inside the mask
      (``corr_anatomical`` likewise when ``anatomical`` is given, else NaN).
    * Low-uptake contrast: the low region ``L`` = mask voxels where the functional image is at or below
      its ``low_percentile`` (25th) percentile inside the mask; its surround ``R`` = the rest of the mask
      (or, with ``surround_width=w``, the mask voxels within ``w`` voxels of ``L``, outside it). For each
      image ``X`` the contrast is ``C_X = (mean_R X - mean_L X) / (p99_X - p1_X)``, percentiles inside the
      mask, so it is invariant to each image's own intensity scale and offset.
      ``low_uptake_contrast_ratio = C_fused / C_functional``: 1 = the dark regions stay as dark relative
      to their surround as in the functional image, 0 = lost (a max-fusion over bright anatomy), negative
      = inverted (the anatomy shows through brighter). A plain mean of the sources keeps only part of the
      contrast: it is diluted by the other sources and partly cancelled where the anatomy is bright.
      ``L`` is "at or below" the percentile, so ties (a flat cold region) can make it a little larger.
    * High-uptake (hot spot) contrast: the voxels at or above the functional image's ``high_percentile``
      (95th) inside the mask against the rest of the mask, on the same scale-invariant contrast;
      ``high_uptake_contrast_ratio = fused / functional`` (1 = hot spots as conspicuous as in the PET).

    Args:
        fused: fused image (2D or 3D), any intensity scale.
        functional: the functional source image, same shape.
        anatomical: optional anatomical source image, same shape: included in the default mask and
            reported through ``corr_anatomical`` and ``low_uptake_contrast_anatomical``.
        mask: boolean mask of the same shape; default: voxels above ``mask_threshold`` of their own range
            (``min + 0.05 * (max - min)``) in the functional or anatomical image, holes filled (so cold
            regions enclosed by tissue stay inside).
        low_percentile: percentile (0-100) of the functional image inside the mask that defines ``L``.
        high_percentile: percentile (0-100) above which the functional image is a hot spot.
        mask_threshold: fraction of each image's range for the default mask.
        surround_width: None for the whole rest of the mask as surround, or a width in voxels for a local
            shell around ``L``.

    Returns:
        dict with ``corr_functional``, ``corr_anatomical``, ``low_uptake_contrast_ratio``,
        ``high_uptake_contrast_ratio``,
        ``low_uptake_contrast_fused``, ``low_uptake_contrast_functional``,
        ``low_uptake_contrast_anatomical``, ``low_uptake_fraction`` (of the mask) and ``mask_fraction``
        (of the image). Undefined values (e.g. a constant functional image) are NaN.

    Raises:
        ValueError: on mismatched shapes, non-finite values, an empty mask or bad parameters.

    Examples:
        >>> pet = np.zeros((32, 32)); pet[8:24, 8:24] = 2.0; pet[12:20, 12:20] = 0.5  # cold spot
        >>> mri = np.zeros((32, 32)); mri[8:24, 8:24] = 3.0; mri[8:24, 16:24] = 2.5   # bright tissue
        >>> functional_fidelity(np.maximum(pet, mri), pet, mri)["low_uptake_contrast_ratio"]  # lost
        0.0
        >>> functional_fidelity((pet + mri) / 2, pet, mri)["low_uptake_contrast_ratio"]
        0.75
    """
    fused_array = _as_image(fused)
    functional_array = _as_image(functional, "functional")
    anatomical_array = None if anatomical is None else _as_image(anatomical, "anatomical")
    for name, array in (("functional", functional_array), ("anatomical", anatomical_array)):
        if array is not None and array.shape != fused_array.shape:
            raise ValueError(
                f"{name} has shape {array.shape} but the fused image has shape {fused_array.shape}"
            )
    if not 0.0 < low_percentile < 100.0:
        raise ValueError(f"low_percentile must be in (0, 100), got {low_percentile}")
    if surround_width is not None and surround_width < 1:
        raise ValueError(f"surround_width must be None or >= 1, got {surround_width}")

    if mask is None:
        region = np.zeros(fused_array.shape, dtype=bool)
        for array in (functional_array, anatomical_array):
            if array is not None:
                low, high = float(array.min()), float(array.max())
                region |= array > low + mask_threshold * (high - low)
        region = ndimage.binary_fill_holes(region)
    else:
        region = np.asarray(mask, dtype=bool)
        if region.shape != fused_array.shape:
            raise ValueError(
                f"mask has shape {region.shape} but the fused image has shape {fused_array.shape}"
            )
    if not region.any():
        raise ValueError("the mask is empty: no voxel to evaluate")

    functional_inside = functional_array[region]
    low_region = region & (functional_array <= np.percentile(functional_inside, low_percentile))
    if surround_width is None:
        surround = region & ~low_region
    else:
        surround = ndimage.binary_dilation(low_region, iterations=surround_width) & region & ~low_region

    def contrast(image: np.ndarray) -> float:
        p1, p99 = np.percentile(image[region], [1.0, 99.0])
        if not surround.any() or p99 <= p1:
            return math.nan
        return float((image[surround].mean() - image[low_region].mean()) / (p99 - p1))

    contrast_functional = contrast(functional_array)
    contrast_fused = contrast(fused_array)
    ratio = contrast_fused / contrast_functional if contrast_functional != 0.0 else math.nan
    # hot spots: the brightest part of the functional image against the rest of the region, same scale
    hot = region & (functional_array >= np.percentile(functional_inside, high_percentile))
    rest = region & ~hot

    def hot_contrast(image: np.ndarray) -> float:
        p1, p99 = np.percentile(image[region], [1.0, 99.0])
        if not hot.any() or not rest.any() or p99 <= p1:
            return math.nan
        return float((image[hot].mean() - image[rest].mean()) / (p99 - p1))

    hot_functional = hot_contrast(functional_array)
    hot_ratio = hot_contrast(fused_array) / hot_functional if hot_functional else math.nan
    return {
        "high_uptake_contrast_ratio": float(hot_ratio),
        "corr_functional": pearson(fused_array[region], functional_inside),
        "corr_anatomical": math.nan
        if anatomical_array is None
        else pearson(fused_array[region], anatomical_array[region]),
        "low_uptake_contrast_ratio": float(ratio),
        "low_uptake_contrast_fused": contrast_fused,
        "low_uptake_contrast_functional": contrast_functional,
        "low_uptake_contrast_anatomical": math.nan
        if anatomical_array is None
        else contrast(anatomical_array),
        "low_uptake_fraction": float(low_region.sum() / region.sum()),
        "mask_fraction": float(region.mean()),
    }

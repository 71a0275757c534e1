"""Reference-free quality metrics for fused 2D images and 3D volumes, N >= 2 sources.

No reference (ground-truth fused) image exists, so every metric either describes the fused image alone
(EN, SD, SF, AG) or compares it with each source (MI, SCD, VIF, Qabf, SSIM, CC, PSNR). The definitions
follow the image-fusion literature (CDDFuse/EMMA evaluators, the MATLAB fusion toolboxes) so numbers can
be set beside published ones; each function's docstring names its convention (bits or nats, summed or
averaged over sources, data range, histogram bins).

Input convention:
    ``fused`` and every source are real arrays of the same shape, 2D ``(H, W)`` or 3D ``(D, H, W)``
    (any axis order; ``axis`` names the slice axis where slices are needed), converted to float64.
    Nothing is rescaled: the published numbers are computed on the **8-bit scale 0..255**, and the
    defaults here (histogram range, SSIM and PSNR data range, VIF noise variance, Qabf sigmoids) assume
    that scale. Map ``[0, 1]`` images with :func:`to_uint8_scale` first. ``sources`` is a sequence of
    arrays or one array ``(N, *S)``.

3D volumes:
    EN, SD, SF (one difference term per axis), AG (3D gradient), MI, SCD, CC, PSNR and SSIM (3D gaussian
    window) are defined natively in nD. VIF and Qabf are 2D definitions with direct 3D generalisations
    here; :func:`napari_isfl.evaluation.scores.fusion_metrics` averages them over 2D slices by default.

Examples:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> mri, pet = to_uint8_scale(rng.random((2, 64, 64)))
    >>> fused = 0.5 * (mri + pet)
    >>> round(correlation_coefficient(fused, [mri, pet]), 2)
    0.7
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

from ..metric_definitions import QABF_ORIENTATION, QABF_STRENGTH, SOBEL_FACTORS, vif_kernel

__all__ = [
    "average_gradient",
    "correlation_coefficient",
    "entropy",
    "mutual_information",
    "pearson",
    "psnr",
    "qabf",
    "spatial_frequency",
    "standard_deviation",
    "structural_similarity",
    "sum_of_correlations_of_differences",
    "to_uint8_scale",
    "visual_information_fidelity",
]

# Xydeas-Petrovic sigmoid constants, as in the MATLAB toolbox and the CDDFuse evaluator.
_QABF_TG, _QABF_KG, _QABF_DG = QABF_STRENGTH
_QABF_TA, _QABF_KA, _QABF_DA = QABF_ORIENTATION


# --------------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------------


def to_uint8_scale(image: np.ndarray, *, quantize: bool = True) -> np.ndarray:
    """Map a ``[0, 1]`` image to the 8-bit scale 0..255 on which fusion metrics are defined.

    Args:
        image: float array with values in ``[0, 1]``. Values slightly outside (within 0.5, e.g. resampling
            overshoot) are clipped; anything further out is an error, since it means the image is not a
            ``[0, 1]`` image (already 0..255, or raw CT/PET units) and scaling it would be silently wrong.
        quantize: round to integers, as when the published evaluations read fused images back from 8-bit
            PNG files. ``False`` keeps the fractional values.

    Returns:
        float64 array of the same shape with values in ``[0, 255]``.

    Raises:
        ValueError: if the image has non-finite values or values outside ``[-0.5, 1.5]``.

    Examples:
        >>> to_uint8_scale(np.array([0.0, 0.5, 1.0]))
        array([  0., 128., 255.])
    """
    values = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("to_uint8_scale: the image has NaN or infinite values")
    if values.size and (values.min() < -0.5 or values.max() > 1.5):
        raise ValueError(
            f"to_uint8_scale expects an image in [0, 1], got values in [{values.min():g}, {values.max():g}]; "
            "normalise it to [0, 1] first (or pass 0..255 data to the metrics directly)"
        )
    scaled = np.clip(values, 0.0, 1.0) * 255.0
    return np.round(scaled) if quantize else scaled


def _as_image(image: np.ndarray, name: str = "fused") -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D or 3D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} has NaN or infinite values")
    return array


def _as_pair(
    fused: np.ndarray, sources: Sequence[np.ndarray] | np.ndarray, min_sources: int = 1
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Validate ``fused`` and ``sources`` and return them as float64 arrays."""
    fused_array = _as_image(fused)
    if isinstance(sources, np.ndarray):
        if sources.ndim != fused_array.ndim + 1:
            raise ValueError(
                f"sources given as one array must have shape (N, *{fused_array.shape}), got {sources.shape}"
            )
        sources = list(sources)
    source_arrays = [_as_image(source, f"source {index}") for index, source in enumerate(sources)]
    if len(source_arrays) < min_sources:
        raise ValueError(f"need at least {min_sources} source image(s), got {len(source_arrays)}")
    for index, source in enumerate(source_arrays):
        if source.shape != fused_array.shape:
            raise ValueError(
                f"source {index} has shape {source.shape} but the fused image has shape {fused_array.shape}"
            )
    return fused_array, source_arrays


def pearson(first: np.ndarray, second: np.ndarray) -> float:
    """Pearson correlation of two arrays (flattened, in float64); NaN if either is constant or has fewer
    than two values.

    Examples:
        >>> pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0]))  # doctest: +ELLIPSIS
        0.993...
        >>> pearson(np.ones(3), np.arange(3.0))
        nan
    """
    a = np.asarray(first, dtype=np.float64).ravel()
    b = np.asarray(second, dtype=np.float64).ravel()
    if a.size < 2:
        return math.nan
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denominator if denominator > 0 else math.nan


def _bin_indices(image: np.ndarray, bins: int, value_range: tuple[float, float]) -> np.ndarray:
    """Histogram bin of every value: ``bins`` equal bins over ``value_range``, values outside it clipped.

    The edges are those of ``np.histogram(image, bins, value_range)``, so integer values 0..255 with the
    default 256 bins over (0, 255) fall one value per bin.
    """
    low, high = value_range
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    indices = np.floor((image.ravel() - low) * (bins / (high - low))).astype(np.int64)
    return np.clip(indices, 0, bins - 1)


def _entropy_of_counts(counts: np.ndarray, base: float) -> float:
    probabilities = counts[counts > 0] / counts.sum()
    return float(-np.sum(probabilities * np.log(probabilities)) / math.log(base))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator``, NaN where the denominator is 0 (metric undefined)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.full(denominator.shape, np.nan), where=denominator != 0)


def _normalise_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}D volume")
    return axis % ndim


def _informative_slices(sources: list[np.ndarray], slice_axis: int) -> np.ndarray:
    """Slices (along ``slice_axis``) where at least one source is not constant."""
    plane = tuple(axis for axis in range(sources[0].ndim) if axis != slice_axis)
    return np.any([np.ptp(source, axis=plane) > 0 for source in sources], axis=0)


def _mean_over_slices(values: np.ndarray, keep: np.ndarray) -> float:
    """Mean of the per-slice values over kept slices where the metric is defined (not NaN)."""
    kept = np.asarray(values, dtype=np.float64)[keep]
    kept = kept[~np.isnan(kept)]
    return float(kept.mean()) if kept.size else math.nan


# --------------------------------------------------------------------------------------------------------
# metrics of the fused image alone
# --------------------------------------------------------------------------------------------------------


def entropy(image: np.ndarray, *, bins: int = 256, value_range: tuple[float, float] = (0.0, 255.0)) -> float:
    """EN: Shannon entropy of the grey-level histogram, in **bits**.

    ``256`` equal bins over ``[0, 255]`` (the edges of ``np.histogram(image, 256, (0, 255))``, so integer
    8-bit values fall one per bin); values outside the range are clipped into the end bins. nD native (one
    histogram over all voxels).

    Examples:
        >>> entropy(np.array([[0, 0], [255, 255]]))
        1.0
    """
    indices = _bin_indices(_as_image(image, "image"), bins, value_range)
    return _entropy_of_counts(np.bincount(indices, minlength=bins), base=2.0)


def standard_deviation(image: np.ndarray) -> float:
    """SD: population standard deviation (``ddof=0``) of all pixels/voxels, in the image's units.

    Examples:
        >>> standard_deviation(np.array([[0.0, 2.0], [0.0, 2.0]]))
        1.0
    """
    return float(np.std(_as_image(image, "image")))


def spatial_frequency(image: np.ndarray) -> float:
    """SF: ``sqrt(sum over axes of mean(squared neighbour difference along that axis))``.

    In 2D this is ``sqrt(RF**2 + CF**2)`` (row and column frequency), each term the mean over the
    ``H*(W-1)`` (resp. ``(H-1)*W``) differences, as in the CDDFuse evaluator (the MATLAB toolbox divides by
    ``H*W`` instead, a relative difference of ``1/W``). In 3D the three axes contribute a term each.

    Examples:
        >>> spatial_frequency(np.array([[0.0, 1.0], [0.0, 1.0]]))
        1.0
    """
    array = _as_image(image, "image")
    return math.sqrt(sum(float(np.mean(np.diff(array, axis=axis) ** 2)) for axis in range(array.ndim)))


def average_gradient(image: np.ndarray) -> float:
    """AG: mean over pixels of ``sqrt(sum_k g_k**2 / ndim)``, ``g_k`` the gradient along axis ``k``.

    Gradients are ``np.gradient`` (central differences, one-sided at the borders, unit spacing), as in the
    CDDFuse evaluator; in 2D ``sqrt((gx**2 + gy**2) / 2)``, in 3D the three components over 3.

    Examples:
        >>> average_gradient(np.tile(np.arange(4.0), (4, 1)))  # slope 1 along one axis of two
        0.7071067811865476
    """
    array = _as_image(image, "image")
    gradients = np.gradient(array)
    squared = sum(gradient**2 for gradient in gradients)
    return float(np.mean(np.sqrt(squared / array.ndim)))


# --------------------------------------------------------------------------------------------------------
# metrics comparing the fused image with each source
# --------------------------------------------------------------------------------------------------------


def mutual_information(
    fused: np.ndarray,
    sources: Sequence[np.ndarray] | np.ndarray,
    *,
    bins: int = 256,
    value_range: tuple[float, float] = (0.0, 255.0),
    base: float = 2.0,
) -> float:
    """MI: mutual information of the fused image with each source, **summed** over sources.

    Joint histogram of ``bins x bins`` equal bins over ``value_range`` (256 bins over 0..255: one per 8-bit
    grey level; values outside clipped). Units: bits with ``base=2`` (the MATLAB toolboxes); ``base=math.e``
    gives nats, which is what the CDDFuse evaluator reports (``sklearn.metrics.mutual_info_score`` on the
    8-bit values), so convert before comparing with its tables. nD native.

    Examples:
        >>> image = np.array([[0.0, 255.0], [0.0, 255.0]])
        >>> mutual_information(image, [image, image])  # 1 bit shared with each source
        2.0
    """
    fused_array, source_arrays = _as_pair(fused, sources)
    fused_bins = _bin_indices(fused_array, bins, value_range)
    fused_entropy = _entropy_of_counts(np.bincount(fused_bins, minlength=bins), base)
    total = 0.0
    for source in source_arrays:
        source_bins = _bin_indices(source, bins, value_range)
        joint = np.bincount(fused_bins * bins + source_bins, minlength=bins * bins)
        source_entropy = _entropy_of_counts(np.bincount(source_bins, minlength=bins), base)
        # I(F; S) = H(F) + H(S) - H(F, S)
        total += fused_entropy + source_entropy - _entropy_of_counts(joint, base)
    return total


def sum_of_correlations_of_differences(
    fused: np.ndarray, sources: Sequence[np.ndarray] | np.ndarray
) -> float:
    """SCD (Aslantas & Bendes 2015): ``sum_i corr(fused - mean_{j != i} source_j, source_i)``.

    For two sources this is the original ``corr(F - B, A) + corr(F - A, B)``: the difference image
    ``F - B`` is the information the fusion took from ``A``. For N > 2 the "other" image is the mean of the
    other sources (a documented generalisation; it reduces to the original for N = 2). Range ``[-N, N]``;
    Pearson correlation over all pixels/voxels (nD native). A constant difference image gives NaN.

    Raises:
        ValueError: with fewer than two sources.

    Examples:
        >>> a, b = np.random.default_rng(0).random((2, 16, 16))
        >>> round(sum_of_correlations_of_differences(a + b, [a, b]), 6)  # F - B = A exactly
        2.0
    """
    fused_array, source_arrays = _as_pair(fused, sources, min_sources=2)
    total_sum = np.sum(source_arrays, axis=0)
    count = len(source_arrays)
    score = 0.0
    for source in source_arrays:
        others_mean = (total_sum - source) / (count - 1)
        score += pearson(fused_array - others_mean, source)
    return score


def correlation_coefficient(fused: np.ndarray, sources: Sequence[np.ndarray] | np.ndarray) -> float:
    """CC: Pearson correlation of the fused image with each source, **averaged** over sources.

    As the CDDFuse evaluator (``(r(A, F) + r(B, F)) / 2``); nD native; NaN if an image is constant.

    Examples:
        >>> image = np.arange(16.0).reshape(4, 4)
        >>> correlation_coefficient(2 * image + 1, [image, image])
        1.0
    """
    fused_array, source_arrays = _as_pair(fused, sources)
    return float(np.mean([pearson(fused_array, source) for source in source_arrays]))


def psnr(
    fused: np.ndarray, sources: Sequence[np.ndarray] | np.ndarray, *, data_range: float = 255.0
) -> float:
    """PSNR in dB, fusion-toolbox convention: ``10 log10(data_range**2 / mean_i MSE(fused, source_i))``.

    The MSE is averaged over sources **before** the logarithm (the MATLAB toolboxes), with peak
    ``data_range = 255`` for 8-bit-scale inputs. Papers quoting PSNR around 60-66 dB (e.g. ISFL's 66.02 on
    MSRS) ran that toolbox on images scaled to ``[0, 1]`` while keeping the peak 255, which adds
    ``20 log10(255) = 48.13`` dB to this value. ``inf`` when the fused image equals every source. nD native.

    Examples:
        >>> round(psnr(np.full((4, 4), 10.0), [np.zeros((4, 4)), np.zeros((4, 4))]), 4)  # MSE 100
        28.1308
    """
    fused_array, source_arrays = _as_pair(fused, sources)
    mean_squared_error = float(np.mean([np.mean((fused_array - source) ** 2) for source in source_arrays]))
    if mean_squared_error == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mean_squared_error)


def _ssim_pair(first: np.ndarray, second: np.ndarray, data_range: float, sigma: float) -> float:
    """Mean SSIM of Wang et al. 2004 with a gaussian window, matching ``skimage.metrics``.

    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``: gaussian filter truncated at 3.5
    sigma (11 taps), reflect borders, and the mean taken after cropping ``(win - 1) // 2`` from each border.
    """
    truncate = 3.5
    k1, k2 = 0.01, 0.03
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2

    def smooth(array: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(array, sigma=sigma, truncate=truncate, mode="reflect")

    mean_1, mean_2 = smooth(first), smooth(second)
    variance_1 = smooth(first * first) - mean_1 * mean_1
    variance_2 = smooth(second * second) - mean_2 * mean_2
    covariance = smooth(first * second) - mean_1 * mean_2
    ssim_map = ((2 * mean_1 * mean_2 + c1) * (2 * covariance + c2)) / (
        (mean_1**2 + mean_2**2 + c1) * (variance_1 + variance_2 + c2)
    )
    # skimage's crop; an axis too short for it keeps at least its central pixel.
    pad = int(truncate * sigma + 0.5)
    crop = tuple(
        slice(min(pad, (size - 1) // 2), size - min(pad, (size - 1) // 2)) for size in ssim_map.shape
    )
    return float(ssim_map[crop].mean())


def structural_similarity(
    fused: np.ndarray,
    sources: Sequence[np.ndarray] | np.ndarray,
    *,
    data_range: float = 255.0,
    sigma: float = 1.5,
    reduction: Literal["sum", "mean", "none"] = "sum",
) -> float | np.ndarray:
    """SSIM of the fused image with each source; **summed** over sources by default.

    The sum is the convention of the CDDFuse and EMMA papers (so two sources give at most 2; CDDFuse
    MRI-PET 1.49); ``reduction="mean"`` gives the mean, ``"none"`` the per-source values. Each pair is
    Wang et al.'s SSIM with an 11-tap gaussian window (``sigma=1.5``), ``K1=0.01, K2=0.03``, peak
    ``data_range=255``, population covariances, reflect borders, border ``(11 - 1) // 2`` cropped before
    averaging: ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)``. 3D uses a 3D gaussian window. (The CDDFuse code calls
    skimage with its defaults, a 7x7 uniform window, so its values differ slightly.)

    Examples:
        >>> image = np.random.default_rng(0).random((32, 32)) * 255
        >>> structural_similarity(image, [image, image])
        2.0
    """
    fused_array, source_arrays = _as_pair(fused, sources)
    values = np.array([_ssim_pair(fused_array, source, data_range, sigma) for source in source_arrays])
    if reduction == "sum":
        return float(values.sum())
    if reduction == "mean":
        return float(values.mean())
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")


# --------------------------------------------------------------------------------------------------------
# VIF (pixel-domain multi-scale VIFp)
# --------------------------------------------------------------------------------------------------------


def _filter_valid(array: np.ndarray, kernel: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Separable filtering keeping only the 'valid' part (no border effects) along ``axes``."""
    radius = len(kernel) // 2
    for axis in axes:
        array = ndimage.correlate1d(array, kernel, axis=axis, mode="nearest")
        index = [slice(None)] * array.ndim
        index[axis] = slice(radius, array.shape[axis] - radius)
        array = array[tuple(index)]
    return array


def _vifp_sums(
    reference: np.ndarray, distorted: np.ndarray, axes: tuple[int, ...], sigma_n_sq: float
) -> tuple[np.ndarray, np.ndarray]:
    """Numerator and denominator of VIFp (Sheikh & Bovik ``vifp_mscale.m``), summed over ``axes``.

    Axes not in ``axes`` are kept (one value per slice), so per-slice VIF of a volume is one vectorised
    pass. Four scales with gaussian windows of 17, 9, 5, 3 taps (sigma = taps / 5); before scales 2-4 the
    images are filtered with that scale's window ('valid') and subsampled by 2. A scale whose window no
    longer fits the image is skipped with all coarser ones (the MATLAB code needs images >= 41 pixels).
    """
    eps = 1e-10
    kept_shape = tuple(size for axis, size in enumerate(reference.shape) if axis not in axes)
    numerator = np.zeros(kept_shape)
    denominator = np.zeros(kept_shape)
    subsample = tuple(slice(None, None, 2) if axis in axes else slice(None) for axis in range(reference.ndim))
    for scale in range(4):
        taps = 2 ** (4 - scale) + 1
        kernel = vif_kernel(taps)
        if scale > 0:
            if any(reference.shape[axis] < taps for axis in axes):
                break
            reference = _filter_valid(reference, kernel, axes)[subsample]
            distorted = _filter_valid(distorted, kernel, axes)[subsample]
        if any(reference.shape[axis] < taps for axis in axes):
            break
        mean_ref = _filter_valid(reference, kernel, axes)
        mean_dist = _filter_valid(distorted, kernel, axes)
        var_ref = np.maximum(_filter_valid(reference * reference, kernel, axes) - mean_ref**2, 0.0)
        var_dist = np.maximum(_filter_valid(distorted * distorted, kernel, axes) - mean_dist**2, 0.0)
        covariance = _filter_valid(reference * distorted, kernel, axes) - mean_ref * mean_dist

        # Gain g and additive distortion variance sv_sq of the model dist = g * ref + v; the special cases
        # are those of vifp_mscale.m, in its order.
        gain = covariance / (var_ref + eps)
        noise_var = var_dist - gain * covariance
        flat_ref = var_ref < eps
        gain[flat_ref] = 0.0
        noise_var[flat_ref] = var_dist[flat_ref]
        var_ref[flat_ref] = 0.0
        flat_dist = var_dist < eps
        gain[flat_dist] = 0.0
        noise_var[flat_dist] = 0.0
        negative_gain = gain < 0
        noise_var[negative_gain] = var_dist[negative_gain]
        gain[negative_gain] = 0.0
        noise_var = np.maximum(noise_var, eps)

        numerator += np.sum(np.log10(1.0 + gain**2 * var_ref / (noise_var + sigma_n_sq)), axis=axes)
        denominator += np.sum(np.log10(1.0 + var_ref / sigma_n_sq), axis=axes)
    return numerator, denominator


def visual_information_fidelity(
    fused: np.ndarray,
    sources: Sequence[np.ndarray] | np.ndarray,
    *,
    sigma_n_sq: float = 2.0,
    slice_axis: int | None = -1,
) -> float:
    """VIF: pixel-domain multi-scale VIFp of the fused image against each source, **summed** over sources.

    Each term is ``vifp_mscale(source, fused)`` of Sheikh & Bovik (source = reference, fused = distorted),
    visual noise variance ``sigma_n_sq = 2`` on the 0..255 scale, log10 (the ratio has no unit); the same
    as the CDDFuse evaluator's ``VIFF`` and ``torchmetrics``' ``visual_information_fidelity``. A source that
    is constant has no information to preserve: its term (and so the sum) is NaN. Scales whose window does
    not fit the image are skipped (the full 4 scales need >= 41 pixels per axis); NaN when even the
    first, 17-tap window does not fit.

    3D volumes: averaged over the 2D slices along ``slice_axis`` (slices where every source is constant are
    skipped); ``slice_axis=None`` evaluates the direct 3D generalisation (3D gaussian windows, subsampling
    along all three axes).

    Examples:
        >>> image = np.random.default_rng(0).random((48, 48)) * 255
        >>> round(visual_information_fidelity(image, [image, image]), 6)
        2.0
    """
    fused_array, source_arrays = _as_pair(fused, sources)
    if fused_array.ndim == 2 or slice_axis is None:
        axes = tuple(range(fused_array.ndim))
        return float(
            sum(_ratio(*_vifp_sums(source, fused_array, axes, sigma_n_sq)) for source in source_arrays)
        )
    slice_axis = _normalise_axis(slice_axis, fused_array.ndim)
    plane_axes = tuple(axis for axis in range(3) if axis != slice_axis)
    per_slice = sum(
        _ratio(*_vifp_sums(source, fused_array, plane_axes, sigma_n_sq)) for source in source_arrays
    )
    return _mean_over_slices(per_slice, _informative_slices(source_arrays, slice_axis))


# --------------------------------------------------------------------------------------------------------
# Qabf (Xydeas-Petrovic)
# --------------------------------------------------------------------------------------------------------


def _sobel_2d(image: np.ndarray, row_axis: int, column_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sobel responses of the toolbox: ``conv2(image, h3, 'same')`` and ``conv2(image, h1, 'same')``.

    ``h3 = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` (horizontal derivative) and ``h1 = h3.T`` flipped
    (``[[1, 2, 1], [0, 0, 0], [-1, -2, -1]]``), true convolution with zero padding, done separably so that
    other axes of ``image`` are independent slices.
    """

    def separable(row_kernel: list[float], column_kernel: list[float]) -> np.ndarray:
        rows = ndimage.convolve1d(image, row_kernel, axis=row_axis, mode="constant")
        return ndimage.convolve1d(rows, column_kernel, axis=column_axis, mode="constant")

    horizontal = separable(*SOBEL_FACTORS["horizontal"])
    vertical = separable(*SOBEL_FACTORS["vertical"])
    return horizontal, vertical


def _strength_preservation(source_strength: np.ndarray, fused_strength: np.ndarray) -> np.ndarray:
    """``G = min(gA, gF) / max(gA, gF)``, 1 where both are equal (see :func:`qabf`), 0 where both are 0."""
    larger = np.maximum(source_strength, fused_strength)
    smaller = np.minimum(source_strength, fused_strength)
    return np.divide(smaller, larger, out=np.zeros_like(larger), where=larger > 0)


def _edge_preservation(strength: np.ndarray, orientation_agreement: np.ndarray) -> np.ndarray:
    """``Q = Qg * Qa`` with the Xydeas-Petrovic sigmoids."""
    strength_term = _QABF_TG / (1.0 + np.exp(_QABF_KG * (strength - _QABF_DG)))
    orientation_term = _QABF_TA / (1.0 + np.exp(_QABF_KA * (orientation_agreement - _QABF_DA)))
    return strength_term * orientation_term


def _qabf_sums_2d(
    fused: np.ndarray, sources: list[np.ndarray], row_axis: int, column_axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """Numerator ``sum_i sum Q_iF g_i`` and denominator ``sum_i sum g_i`` over the plane, per slice."""

    def strength_and_angle(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        horizontal, vertical = _sobel_2d(image, row_axis, column_axis)
        strength = np.hypot(horizontal, vertical)
        # The toolbox's atan(Sy / Sx) in (-pi/2, pi/2], pi/2 where Sx == 0.
        safe_horizontal = np.where(horizontal == 0, 1.0, horizontal)
        angle = np.where(horizontal == 0, math.pi / 2, np.arctan(vertical / safe_horizontal))
        return strength, angle

    plane = (row_axis, column_axis)
    fused_strength, fused_angle = strength_and_angle(fused)
    numerator: np.ndarray | float = 0.0
    denominator: np.ndarray | float = 0.0
    for source in sources:
        strength, angle = strength_and_angle(source)
        orientation = 1.0 - np.abs(angle - fused_angle) / (math.pi / 2)
        quality = _edge_preservation(_strength_preservation(strength, fused_strength), orientation)
        numerator = numerator + np.sum(quality * strength, axis=plane)
        denominator = denominator + np.sum(strength, axis=plane)
    return np.asarray(numerator), np.asarray(denominator)


def _qabf_native_3d(fused: np.ndarray, sources: list[np.ndarray]) -> float:
    """3D generalisation: 3D Sobel gradient vectors; orientation from the angle between gradient lines."""

    def gradient(image: np.ndarray) -> np.ndarray:
        components = []
        for derivative_axis in range(3):
            response = image
            for axis in range(3):
                kernel = [-1.0, 0.0, 1.0] if axis == derivative_axis else [1.0, 2.0, 1.0]
                response = ndimage.convolve1d(response, kernel, axis=axis, mode="constant")
            components.append(response)
        return np.stack(components)

    fused_gradient = gradient(fused)
    fused_strength = np.linalg.norm(fused_gradient, axis=0)
    numerator = denominator = 0.0
    for source in sources:
        source_gradient = gradient(source)
        strength = np.linalg.norm(source_gradient, axis=0)
        product = strength * fused_strength
        cosine = np.divide(
            np.abs(np.sum(source_gradient * fused_gradient, axis=0)),
            product,
            out=np.zeros_like(product),
            where=product > 0,
        )
        # Line angle in [0, pi/2] (orientation, sign ignored as atan does in 2D), agreement in [0, 1].
        orientation = 1.0 - np.arccos(np.clip(cosine, 0.0, 1.0)) / (math.pi / 2)
        quality = _edge_preservation(_strength_preservation(strength, fused_strength), orientation)
        numerator += float(np.sum(quality * strength))
        denominator += float(np.sum(strength))
    return _ratio(np.asarray(numerator), np.asarray(denominator)).item()


def qabf(
    fused: np.ndarray, sources: Sequence[np.ndarray] | np.ndarray, *, slice_axis: int | None = -1
) -> float:
    """Qabf (Xydeas & Petrovic 2000): edge information transferred from the sources, in ``[0, ~0.975]``.

    Toolbox definition: Sobel responses ``Sx, Sy`` (``conv2(., ., 'same')``, zero padding), strength
    ``g = hypot(Sx, Sy)``, orientation ``a = atan(Sy / Sx)``; per source ``G = min(g_i, g_F) / max(g_i,
    g_F)``, ``A = 1 - |a_i - a_F| / (pi / 2)``, ``Q_iF = Qg(G) * Qa(A)`` with the sigmoids ``Tg=0.9994,
    kg=-15, Dg=0.5, Ta=0.9879, ka=-22, Da=0.8``, and ``Qabf = sum_i sum Q_iF g_i / sum_i sum g_i`` (weights
    ``g_i**L``, ``L=1``). The sum over sources in numerator and denominator is the N-source generalisation
    (N = 2 gives the original). A perfect copy scores ``Qg(1) * Qa(1) ~= 0.9748``, not 1. Differs from the
    widely copied MATLAB/CDDFuse code in one quirk: where ``g_i == g_F`` that code sets ``G = g_F`` instead
    of 1, which only matters for gradients below ~1 on the 0..255 scale. NaN when no source has an edge.

    3D volumes: averaged over the 2D slices along ``slice_axis`` (slices where every source is constant are
    skipped). ``slice_axis=None`` uses a 3D generalisation: 3D Sobel gradient vectors (zero padding as in
    2D, so a volume that does not fade to 0 at its faces gets strong edges there), ``G`` from their
    magnitudes and ``A = 1 - theta / (pi / 2)`` with ``theta`` in ``[0, pi/2]`` the angle between the
    gradient lines (in 2D this equals the toolbox's ``A`` except where ``|a_i - a_F| > pi / 2``, which
    the toolbox scores negative).

    Examples:
        >>> image = np.random.default_rng(0).random((32, 32)) * 255
        >>> round(qabf(image, [image, image]), 4)
        0.9748
    """
    fused_array, source_arrays = _as_pair(fused, sources)
    if fused_array.ndim == 2:
        return _ratio(*_qabf_sums_2d(fused_array, source_arrays, 0, 1)).item()
    if slice_axis is None:
        return _qabf_native_3d(fused_array, source_arrays)
    slice_axis = _normalise_axis(slice_axis, 3)
    row_axis, column_axis = (axis for axis in range(3) if axis != slice_axis)
    per_slice = _ratio(*_qabf_sums_2d(fused_array, source_arrays, row_axis, column_axis))
    return _mean_over_slices(per_slice, _informative_slices(source_arrays, slice_axis))

"""Classical (non-learned) fusion baselines for 2D images and 3D volumes with N >= 2 sources.

Every method takes co-registered sources with values in ``[0, 1]`` (one array per modality, or one array
``(N, *S)``) and returns one float32 image of the same spatial shape, clipped to ``[0, 1]``:

* ``"mean"``: voxel-wise mean of the sources.
* ``"max"``: voxel-wise maximum.
* ``"lp"``: Laplacian pyramid (Burt & Adelson): low band averaged, each detail coefficient taken from the
  source with the largest absolute value. Any shape, 2D or 3D (gaussian smoothing, subsampling by 2,
  linear up-sampling to the exact finer shape).
* ``"dwt"``: discrete wavelet transform (PyWavelets ``wavedecn``/``waverecn``): approximation averaged,
  max-abs detail selection, cropped back to the input shape.
* ``"gff"``: guided filtering fusion (Li, Kang & Hu, IEEE TIP 2013): base/detail split with a mean filter,
  saliency from Laplacian + gaussian, max-saliency weight maps refined with a guided filter (box filters,
  so 2D and 3D alike).

Examples:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> mri, pet = rng.random((2, 37, 50))
    >>> fused = fuse_baseline("gff", [mri, pet])
    >>> fused.shape, fused.dtype
    ((37, 50), dtype('float32'))
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import numpy as np
import pywt
from scipy import ndimage

__all__ = [
    "BASELINES",
    "fuse_baseline",
    "fuse_dwt",
    "fuse_gff",
    "fuse_laplacian_pyramid",
    "fuse_max",
    "fuse_mean",
    "gff_refined_weights",
    "gff_selection",
    "guided_filter",
]

#: Names accepted by :func:`fuse_baseline`.
BASELINES: tuple[str, ...] = ("mean", "max", "lp", "dwt", "gff")

# Values this far outside [0, 1] are accepted (resampling overshoot) and clipped; further out is an error.
_RANGE_TOLERANCE = 1e-3


def _validate_sources(sources: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Check the sources and stack them as float64 ``(N, *S)``.

    Raises:
        ValueError: fewer than two sources, different shapes, not 2D/3D, non-finite values, or values
            outside ``[0, 1]``.
    """
    if isinstance(sources, np.ndarray):
        if sources.ndim not in (3, 4):
            raise ValueError(
                f"sources given as one array must have shape (N, H, W) or (N, D, H, W), got {sources.shape}"
            )
        arrays = list(sources)
    else:
        arrays = [np.asarray(source) for source in sources]
    if len(arrays) < 2:
        raise ValueError(f"fusion needs at least 2 sources, got {len(arrays)}")
    shapes = [array.shape for array in arrays]
    if len(set(shapes)) != 1:
        raise ValueError(f"all sources must have the same shape, got shapes {shapes}")
    if len(shapes[0]) not in (2, 3):
        raise ValueError(f"sources must be 2D or 3D images, got shape {shapes[0]}")
    stacked = np.stack(arrays).astype(np.float64)
    for index, array in enumerate(stacked):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"source {index} has NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
            raise ValueError(
                f"source {index} has values in [{low:g}, {high:g}]; the baselines expect each source "
                "normalised to [0, 1]"
            )
    return np.clip(stacked, 0.0, 1.0)


def _as_output(fused: np.ndarray) -> np.ndarray:
    return np.clip(fused, 0.0, 1.0).astype(np.float32)


def _max_abs_select(coefficients: np.ndarray) -> np.ndarray:
    """Per position, the coefficient (sign kept) of the source ``(axis 0)`` with the largest magnitude."""
    winner = np.argmax(np.abs(coefficients), axis=0)
    return np.take_along_axis(coefficients, winner[None], axis=0)[0]


# --------------------------------------------------------------------------------------------------------
# mean / max
# --------------------------------------------------------------------------------------------------------


def fuse_mean(sources: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Voxel-wise mean of the sources.

    Examples:
        >>> fuse_mean([np.zeros((2, 2)), np.ones((2, 2))]).tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """
    return _as_output(_validate_sources(sources).mean(axis=0))


def fuse_max(sources: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Voxel-wise maximum of the sources (hides dark functional regions under bright anatomy).

    Examples:
        >>> fuse_max([np.zeros((2, 2)), np.ones((2, 2))]).tolist()
        [[1.0, 1.0], [1.0, 1.0]]
    """
    return _as_output(_validate_sources(sources).max(axis=0))


# --------------------------------------------------------------------------------------------------------
# Laplacian pyramid
# --------------------------------------------------------------------------------------------------------


def _default_levels(shape: tuple[int, ...], coarsest_size: int, max_levels: int) -> int:
    """Decomposition levels that keep the coarsest band at least ``coarsest_size`` along every axis."""
    return max(1, min(max_levels, int(math.floor(math.log2(min(shape) / coarsest_size)))))


def _downsample(image: np.ndarray, sigma: float) -> np.ndarray:
    # Smooth before subsampling by 2 so the coarse band holds no aliased detail.
    return ndimage.gaussian_filter(image, sigma=sigma, mode="reflect")[(slice(None, None, 2),) * image.ndim]


def _upsample(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear interpolation to exactly ``shape`` (first and last samples aligned), any odd or even size."""
    factors = [target / size for target, size in zip(shape, image.shape, strict=True)]
    upsampled = ndimage.zoom(image, factors, order=1, mode="nearest")
    if upsampled.shape != tuple(shape):  # zoom rounds the output size; guard against an off-by-one
        raise RuntimeError(f"up-sampling gave {upsampled.shape}, expected {shape}")
    return upsampled


def _laplacian_pyramid(image: np.ndarray, levels: int, sigma: float) -> list[np.ndarray]:
    """``[detail_0 (finest), ..., detail_{levels-1}, low band]``; exact inverse by :func:`_collapse`."""
    pyramid = []
    current = image
    for _ in range(levels):
        coarser = _downsample(current, sigma)
        pyramid.append(current - _upsample(coarser, current.shape))
        current = coarser
    pyramid.append(current)
    return pyramid


def _collapse(pyramid: list[np.ndarray]) -> np.ndarray:
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = detail + _upsample(image, detail.shape)
    return image


def fuse_laplacian_pyramid(
    sources: Sequence[np.ndarray] | np.ndarray, levels: int | None = None, sigma: float = 1.0
) -> np.ndarray:
    """Laplacian pyramid fusion: average of the low band, max-abs selection of every detail band.

    Works for any 2D/3D shape, odd sizes included: each level is gaussian-smoothed (``sigma``) and
    subsampled by 2, and up-sampled back by linear interpolation to the exact finer shape; the pyramid
    is exactly invertible whatever the interpolation, so fusing identical sources returns them.

    Args:
        sources: N >= 2 images in ``[0, 1]``, or one array ``(N, *S)``.
        levels: detail levels; default from the size (coarsest band >= 8 voxels per axis, at most 4).
        sigma: gaussian smoothing before each subsampling, in voxels of that level.

    Returns:
        float32 fused image of shape ``S`` in ``[0, 1]``.

    Examples:
        >>> image = np.random.default_rng(0).random((17, 22, 13))
        >>> bool(np.allclose(fuse_laplacian_pyramid([image, image]), image, atol=1e-6))
        True
    """
    stacked = _validate_sources(sources)
    if levels is None:
        levels = _default_levels(stacked.shape[1:], coarsest_size=8, max_levels=4)
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    pyramids = [_laplacian_pyramid(source, levels, sigma) for source in stacked]
    fused = [_max_abs_select(np.stack([pyramid[level] for pyramid in pyramids])) for level in range(levels)]
    fused.append(np.mean([pyramid[-1] for pyramid in pyramids], axis=0))
    return _as_output(_collapse(fused))


# --------------------------------------------------------------------------------------------------------
# DWT
# --------------------------------------------------------------------------------------------------------


def fuse_dwt(
    sources: Sequence[np.ndarray] | np.ndarray,
    wavelet: str = "db2",
    levels: int | None = None,
    mode: str = "symmetric",
) -> np.ndarray:
    """Discrete wavelet fusion: average of the approximation band, max-abs selection of the detail bands.

    n-dimensional separable DWT (``pywt.wavedecn``; 2D: 3 detail bands per level, 3D: 7), reconstructed
    with ``pywt.waverecn`` and cropped to the input shape (odd sizes come back one voxel larger).

    Args:
        sources: N >= 2 images in ``[0, 1]``, or one array ``(N, *S)``.
        wavelet: PyWavelets wavelet name (default Daubechies-2, ``"haar"`` also common).
        levels: decomposition levels; default ``pywt.dwtn_max_level`` capped at 3, at least 1.
        mode: signal extension mode (``"symmetric"`` reconstructs exactly after cropping).

    Returns:
        float32 fused image of shape ``S`` in ``[0, 1]``.

    Examples:
        >>> image = np.random.default_rng(0).random((37, 50))
        >>> bool(np.allclose(fuse_dwt([image, image]), image, atol=1e-6))
        True
    """
    stacked = _validate_sources(sources)
    shape = stacked.shape[1:]
    if levels is None:
        levels = max(1, min(3, pywt.dwtn_max_level(shape, wavelet)))
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    decompositions = [pywt.wavedecn(source, wavelet, mode=mode, level=levels) for source in stacked]
    fused: list = [np.mean([decomposition[0] for decomposition in decompositions], axis=0)]
    for level in range(1, levels + 1):
        bands = decompositions[0][level].keys()
        fused.append(
            {band: _max_abs_select(np.stack([d[level][band] for d in decompositions])) for band in bands}
        )
    reconstructed = pywt.waverecn(fused, wavelet, mode=mode)
    return _as_output(reconstructed[tuple(slice(0, size) for size in shape)])


# --------------------------------------------------------------------------------------------------------
# guided filtering fusion
# --------------------------------------------------------------------------------------------------------


def guided_filter(guide: np.ndarray, image: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Guided filter of He, Sun & Tang (ECCV 2010) with box windows of side ``2 * radius + 1``, any nD.

    ``q = mean(a) * guide + mean(b)`` with ``a = cov(guide, image) / (var(guide) + eps)`` and
    ``b = mean(image) - a * mean(guide)`` over each window; box means by ``scipy.ndimage.uniform_filter``
    (reflect borders), so the cost does not depend on ``radius``.

    Examples:
        >>> guide = np.random.default_rng(0).random((20, 20))
        >>> bool(np.allclose(guided_filter(guide, guide, radius=2, eps=1e-8), guide, atol=1e-4))
        True
    """
    size = 2 * radius + 1

    def box(array: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(array, size=size, mode="reflect")

    mean_guide, mean_image = box(guide), box(image)
    variance_guide = box(guide * guide) - mean_guide * mean_guide
    covariance = box(guide * image) - mean_guide * mean_image
    slope = covariance / (variance_guide + eps)
    intercept = mean_image - slope * mean_guide
    return box(slope) * guide + box(intercept)


def gff_selection(stacked: np.ndarray, saliency_radius: int = 5, saliency_sigma: float = 5.0) -> np.ndarray:
    """GFF's binary weight maps ``P_n`` (steps 2-3 of :func:`fuse_gff`) for sources ``(N, *spatial)``:
    1 where source ``n``'s saliency (gaussian of ``|Laplacian|``) is the largest, ties to all tied."""
    spatial_dims = stacked.ndim - 1
    laplacian = np.stack([np.abs(ndimage.laplace(source, mode="reflect")) for source in stacked])
    truncate = saliency_radius / saliency_sigma  # gaussian_filter's radius is int(truncate * sigma + 0.5)
    saliency = ndimage.gaussian_filter(
        laplacian, sigma=(0.0, *([saliency_sigma] * spatial_dims)), truncate=truncate, mode="reflect"
    )
    return (saliency == saliency.max(axis=0, keepdims=True)).astype(np.float64)


def gff_refined_weights(stacked: np.ndarray, selected: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """GFF's step 4: ``selected`` (:func:`gff_selection`) refined by the guided filter guided by each
    source, clipped at 0 and normalised to sum to 1 per voxel (equal weights where all are 0)."""
    weights = np.stack(
        [guided_filter(source, mask, radius, eps) for source, mask in zip(stacked, selected, strict=True)]
    )
    weights = np.clip(weights, 0.0, None)
    total = weights.sum(axis=0, keepdims=True)
    equal = np.full_like(weights, 1.0 / len(stacked))
    return np.divide(weights, total, out=equal, where=total > 1e-12)


def fuse_gff(
    sources: Sequence[np.ndarray] | np.ndarray,
    base_size: int = 31,
    saliency_radius: int = 5,
    saliency_sigma: float = 5.0,
    base_radius: int = 45,
    base_eps: float = 0.3,
    detail_radius: int = 7,
    detail_eps: float = 1e-6,
) -> np.ndarray:
    """Guided filtering fusion (GFF) of Li, Kang & Hu (IEEE TIP 2013), for 2D and 3D.

    1. Two-scale split: base ``B_n`` = mean filter (side ``base_size``) of source ``I_n``, detail
       ``D_n = I_n - B_n``.
    2. Saliency ``S_n`` = gaussian (``saliency_sigma``, radius ``saliency_radius``) of ``|Laplacian(I_n)|``.
    3. Weight maps ``P_n = 1`` where ``S_n`` is the largest saliency (ties: all tied sources).
    4. Refinement with the guided filter guided by the source itself: ``W_n^B = GF(P_n, I_n; r1, eps1)``
       (smooth, for the base) and ``W_n^D = GF(P_n, I_n; r2, eps2)`` (sharp, for the detail); negative
       weights clipped to 0 (the guided filter can overshoot) and each set normalised to sum to 1 per
       voxel (equal weights where all are 0).
    5. ``F = sum_n W_n^B B_n + sum_n W_n^D D_n``.

    Defaults are the paper's (``r1=45, eps1=0.3, r2=7, eps2=1e-6``, 31x31 mean filter, 11x11 gaussian
    with sigma 5), for intensities in ``[0, 1]``; in 3D the same sizes apply per axis.

    Returns:
        float32 fused image of shape ``S`` in ``[0, 1]``.

    Examples:
        >>> image = np.random.default_rng(0).random((37, 50))
        >>> bool(np.allclose(fuse_gff([image, image]), image, atol=1e-6))
        True
    """
    stacked = _validate_sources(sources)
    spatial_dims = stacked.ndim - 1
    # Size 1 / sigma 0 along the source axis: every source is filtered on its own.
    base = ndimage.uniform_filter(stacked, size=(1, *([base_size] * spatial_dims)), mode="reflect")
    detail = stacked - base
    selected = gff_selection(stacked, saliency_radius, saliency_sigma)
    fused = np.sum(gff_refined_weights(stacked, selected, base_radius, base_eps) * base, axis=0) + np.sum(
        gff_refined_weights(stacked, selected, detail_radius, detail_eps) * detail, axis=0
    )
    return _as_output(fused)


# --------------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------------

_METHODS: dict[str, Callable[..., np.ndarray]] = {
    "mean": fuse_mean,
    "max": fuse_max,
    "lp": fuse_laplacian_pyramid,
    "dwt": fuse_dwt,
    "gff": fuse_gff,
}


def fuse_baseline(method: str, sources: Sequence[np.ndarray] | np.ndarray, **options: object) -> np.ndarray:
    """Fuse co-registered sources with a classical baseline.

    Args:
        method: one of :data:`BASELINES` (``"mean"``, ``"max"``, ``"lp"``, ``"dwt"``, ``"gff"``).
        sources: N >= 2 images (2D or 3D, same shape) with values in ``[0, 1]``, or one array ``(N, *S)``.
        **options: the method's own parameters, e.g. ``levels=3`` for ``"lp"``, ``wavelet="haar"`` for
            ``"dwt"``, ``base_radius=20`` for ``"gff"`` (see :func:`fuse_laplacian_pyramid`,
            :func:`fuse_dwt`, :func:`fuse_gff`).

    Returns:
        float32 fused image of shape ``S`` with values in ``[0, 1]``.

    Raises:
        ValueError: unknown method (the message lists the valid ones), or invalid sources (fewer than 2,
            different shapes, not 2D/3D, non-finite, outside ``[0, 1]``).
        TypeError: an option the method does not take (the message lists those it does).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> volumes = rng.random((3, 17, 22, 13))  # three modalities, one array
        >>> fuse_baseline("lp", volumes, levels=2).shape
        (17, 22, 13)
    """
    if method not in _METHODS:
        raise ValueError(f"unknown fusion baseline {method!r}; valid methods: {', '.join(BASELINES)}")
    function = _METHODS[method]
    accepted = [name for name in inspect.signature(function).parameters if name != "sources"]
    unexpected = sorted(set(options) - set(accepted))
    if unexpected:
        valid = ", ".join(accepted) or "no options"
        raise TypeError(f"baseline {method!r} got unexpected option(s) {unexpected}; it accepts: {valid}")
    return function(sources, **options)

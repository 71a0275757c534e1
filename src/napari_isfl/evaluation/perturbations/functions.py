"""The perturbation functions: one data shift each (noise, bias field, gamma, resolution, truncation,
dropout, misregistration, intensity scale) on a normalised image in [0, 1], seeded."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.polynomial import legendre
from scipy import ndimage

SeedLike = int | np.integer | np.random.Generator

# Inputs are checked against [0, 1] with this slack so float round-off of a normaliser is not an error.
_RANGE_TOL = 1e-6
# FWHM = factor voxels: the blur of an acquisition whose voxels are `factor` times larger.
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
DROPOUT_MODES = ("zeros", "mean", "noise")


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------
def _check_image(image: Any, *, copy: bool = False) -> np.ndarray:
    """Return ``image`` as a float32 2D/3D array after checking it is a normalised single modality."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"expected one modality as a 2D or 3D image, got an array of shape {arr.shape}; "
            "use apply_to_modality/apply_to_all for a (N, *spatial) stack"
        )
    if arr.size == 0:
        raise ValueError(f"image is empty (shape {arr.shape})")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"image must hold real numbers, got dtype {arr.dtype}")
    out = arr.astype(np.float32, copy=copy)
    if not np.isfinite(out).all():
        raise ValueError("image contains NaN or infinite values")
    low, high = float(out.min()), float(out.max())
    if low < -_RANGE_TOL or high > 1.0 + _RANGE_TOL:
        raise ValueError(
            f"image intensities must be normalised to [0, 1] (as the fusion pipeline does per modality), "
            f"got range [{low:.4g}, {high:.4g}]"
        )
    return out


def _as_generator(rng: Any) -> np.random.Generator:
    """A numpy Generator from a Generator or a non-negative int seed (None is refused: reproducibility)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"seed must be a non-negative integer, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng/seed must be a non-negative int or a numpy.random.Generator, got {type(rng).__name__}"
    )


def _clip01(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0, out=x).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------
# the perturbations, with explicit parameters (the registry below maps levels to these parameters)
# --------------------------------------------------------------------------------------------------
def gaussian_noise(image: np.ndarray, sigma: float, rng: SeedLike) -> np.ndarray:
    """Add white Gaussian noise of standard deviation ``sigma`` (in units of the [0, 1] range), then clip.

    Args:
        image: one modality, 2D or 3D, intensities in [0, 1].
        sigma: noise standard deviation, >= 0.
        rng: numpy Generator or integer seed.

    Returns:
        float32 array, same shape, values in [0, 1].
    """
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    x = _check_image(image)
    gen = _as_generator(rng)
    noise = gen.standard_normal(x.shape, dtype=np.float32)
    return _clip01(x + np.float32(sigma) * noise)


def rician_noise(image: np.ndarray, sigma: float, rng: SeedLike) -> np.ndarray:
    """Rician (MRI magnitude) noise: ``sqrt((x + sigma n1)^2 + (sigma n2)^2)``, clipped to [0, 1].

    Unlike Gaussian noise it is biased upward where the signal is low (the mean of pure background
    becomes ``sigma * sqrt(pi / 2)``), which is what magnitude MR images look like.

    Args:
        image: one modality, 2D or 3D, intensities in [0, 1].
        sigma: standard deviation of each of the two Gaussian channels, >= 0.
        rng: numpy Generator or integer seed.

    Returns:
        float32 array, same shape, values in [0, 1].
    """
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    x = _check_image(image)
    gen = _as_generator(rng)
    # Both channels drawn in one call so the stream consumption is the same for every sigma (nesting).
    noise = gen.standard_normal((2, *x.shape), dtype=np.float32) * np.float32(sigma)
    return _clip01(np.hypot(x + noise[0], noise[1]))


def random_bias_field(
    shape: Sequence[int], max_deviation: float, rng: SeedLike, degree: int = 3
) -> np.ndarray:
    """A smooth random multiplicative field ``(1 + max_deviation) ** p``, ``p`` a low-order polynomial.

    ``p`` is a random combination of Legendre products of total degree ``1..degree`` in coordinates
    normalised to [-1, 1] along each axis (voxel spacing is ignored), with mean 0 (so the field's
    geometric mean is 1 and it does not act as a global intensity change), scaled so that ``max p = 1``
    and ``min p >= -1``. Hence the field lies in ``[1 / (1 + d), 1 + d]`` and reaches ``1 + d`` exactly:
    its largest deviation from 1 is ``d`` = ``max_deviation``.

    Args:
        shape: spatial shape (2D or 3D).
        max_deviation: ``d``, in [0, 1).
        rng: numpy Generator or integer seed.
        degree: maximal total polynomial degree (low = smooth, like a receive-coil profile).

    Returns:
        float32 field of ``shape``.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be 2D or 3D with positive sizes, got {shape}")
    if not 0.0 <= max_deviation < 1.0:
        raise ValueError(f"max_deviation must lie in [0, 1), got {max_deviation}")
    if degree < 1:
        raise ValueError(f"degree must be >= 1, got {degree}")
    gen = _as_generator(rng)
    dims = len(shape)
    orders = np.indices((degree + 1,) * dims).reshape(dims, -1).sum(axis=0).reshape((degree + 1,) * dims)
    # Coefficients shrink with the order so the large-scale trend dominates, as in real bias fields.
    coeffs = gen.standard_normal(orders.shape) / np.maximum(orders, 1)
    coeffs[(orders == 0) | (orders > degree)] = 0.0
    axes = [np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1) for n in shape]
    grid = legendre.leggrid2d(*axes, coeffs) if dims == 2 else legendre.leggrid3d(*axes, coeffs)
    grid = grid - grid.mean()
    peak = max(float(grid.max()), float(-grid.min()))
    if peak <= 1e-12:  # a single voxel or a degenerate draw: no spatial variation possible
        return np.ones(shape, dtype=np.float32)
    if -grid.min() > grid.max():
        grid = -grid  # put the largest excursion on the bright side so the maximum is exactly 1 + d
    return np.exp(math.log1p(max_deviation) * grid / peak).astype(np.float32)


def bias_field(image: np.ndarray, max_deviation: float, rng: SeedLike) -> np.ndarray:
    """Multiply by :func:`random_bias_field` (drawn from ``rng`` for the image's shape) and clip to [0, 1].

    Args:
        image: one modality, 2D or 3D, intensities in [0, 1].
        max_deviation: largest relative deviation of the field from 1, in [0, 1).
        rng: numpy Generator or integer seed.

    Returns:
        float32 array, same shape, values in [0, 1] (bright voxels under a field > 1 saturate at 1).
    """
    x = _check_image(image)
    field = random_bias_field(x.shape, max_deviation, rng)
    return _clip01(x * field)


def gamma_shift(image: np.ndarray, gamma: float) -> np.ndarray:
    """Contrast shift ``x ** gamma`` on [0, 1]: a monotone map fixing 0 and 1.

    ``gamma > 1`` darkens mid-tones and compresses the low end (the registry's direction); ``gamma < 1``
    brightens them.

    Args:
        image: one modality, 2D or 3D, intensities in [0, 1].
        gamma: exponent, > 0.

    Returns:
        float32 array, same shape, values in [0, 1].
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    x = _check_image(image)
    # Clip first: inputs may sit a round-off below 0, and a negative base has no real power.
    return _clip01(np.power(np.clip(x, 0.0, 1.0), np.float32(gamma)))


def resolution_loss(image: np.ndarray, factor: float) -> np.ndarray:
    """Simulate an acquisition ``factor`` times coarser along every axis, resampled back to the same grid.

    Gaussian blur with FWHM = ``factor`` voxels (the coarse voxel's extent; also the anti-aliasing
    filter), linear downsampling to ``max(1, round(n / factor))`` voxels per axis, then linear upsampling
    (``scipy.ndimage.zoom``, order 1, voxel-edge aligned ``grid_mode``) back to exactly the input shape,
    odd sizes included. Deterministic.

    Args:
        image: one modality, 2D or 3D, intensities in [0, 1].
        factor: downsampling factor >= 1 (1 = identity).

    Returns:
        float32 array, same shape, values in [0, 1].
    """
    if not factor >= 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    x = _check_image(image, copy=True)
    if factor == 1:
        return x
    blurred = ndimage.gaussian_filter(x, sigma=factor * _FWHM_TO_SIGMA, mode="nearest")
    small_shape = tuple(max(1, int(math.floor(n / factor + 0.5))) for n in x.shape)
    small = ndimage.zoom(
        blurred,
        [s / n for s, n in zip(small_shape, x.shape, strict=True)],
        order=1,
        mode="nearest",
        grid_mode=True,
    )
    out = ndimage.zoom(
        small,
        [n / s for n, s in zip(x.shape, small.shape, strict=True)],
        order=1,
        mode="nearest",
        grid_mode=True,
    )
    if out.shape != x.shape:  # zoom rounds its output shape; guard the "same shape" promise regardless
        pad = [(0, max(0, n - m)) for n, m in zip(x.shape, out.shape, strict=True)]
        out = np.pad(out, pad, mode="edge")[tuple(slice(0, n) for n in x.shape)]
    return _clip01(out.astype(np.float32, copy=False))


def truncate(image: np.ndarray, fraction: float, axis: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Truncated field of view: zero a slab (3D) or band (2D) at one end of ``axis``.

    The slab is ``max(1, round(fraction * n))`` voxels thick (``n`` the extent along ``axis``; 0 voxels
    when ``fraction`` is 0) and starts at index 0 (``side="low"``) or ends at ``n - 1`` (``"high"``).

    Args:
        image: one modality, 2D or 3D, intensities in [0, 1].
        fraction: fraction of the extent removed, in [0, 1].
        axis: spatial axis (negative values count from the end).
        side: ``"low"`` or ``"high"``.

    Returns:
        ``(image, mask)``: the float32 image with the slab set to 0 and the boolean mask of the slab.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if side not in ("low", "high"):
        raise ValueError(f"side must be 'low' or 'high', got {side!r}")
    x = _check_image(image, copy=True)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be in [{-x.ndim}, {x.ndim - 1}] for a {x.ndim}D image, got {axis}")
    n = x.shape[axis]
    width = 0 if fraction == 0 else min(n, max(1, int(math.floor(fraction * n + 0.5))))
    mask = np.zeros(x.shape, dtype=bool)
    index: list[slice] = [slice(None)] * x.ndim
    index[axis] = slice(0, width) if side == "low" else slice(n - width, n)
    mask[tuple(index)] = True
    x[mask] = 0.0
    return x, mask


def modality_dropout(image: np.ndarray, mode: str, rng: SeedLike | None = None) -> np.ndarray:
    """Replace the whole modality by a stand-in that carries none of its spatial information.

    Modes, in the registry's order of severity (how far the stand-in is from the zero-filled missing
    modality the network saw in training):

    * ``"zeros"``: all zeros, exactly the training-time dropout intervention;
    * ``"mean"``: constant at the image mean: missing, but not flagged as missing by being zero;
    * ``"noise"``: the image's own voxels randomly permuted: spatially white noise with exactly the
      image's intensity histogram, i.e. something that looks like data but is not (needs ``rng``).

    Args:
        image: one modality, 2D or 3D, intensities in [0, 1].
        mode: one of ``"zeros"``, ``"mean"``, ``"noise"``.
        rng: numpy Generator or integer seed (only used by ``"noise"``).

    Returns:
        float32 array, same shape, values in [0, 1].
    """
    if mode not in DROPOUT_MODES:
        raise ValueError(f"dropout mode must be one of {DROPOUT_MODES}, got {mode!r}")
    x = _check_image(image)
    if mode == "zeros":
        return np.zeros_like(x)
    if mode == "mean":
        return np.full_like(x, np.float32(x.mean(dtype=np.float64)))
    if rng is None:
        raise ValueError("dropout mode 'noise' needs an rng/seed")
    gen = _as_generator(rng)
    return gen.permutation(x.ravel()).reshape(x.shape)


def misregister(image: np.ndarray, shift: Sequence[float], rotation_deg: float = 0.0) -> np.ndarray:
    """Misregistration: optional in-plane rotation about the centre, then a translation; 0 fill.

    The rotation acts in the plane of the last two axes (each slice along axis 0 of a volume),
    ``scipy.ndimage.rotate`` order 1, same shape. The translation is ``scipy.ndimage.shift`` order 1 with
    constant 0 fill, so an integer shift moves voxel values exactly (no interpolation blur).

    Args:
        image: one modality, 2D or 3D, intensities in [0, 1].
        shift: displacement in voxels per axis (``out[i] = image[i - shift]``).
        rotation_deg: in-plane rotation angle in degrees (0 = none).

    Returns:
        float32 array, same shape, values in [0, 1].
    """
    x = _check_image(image, copy=True)
    shift = tuple(float(s) for s in shift)
    if len(shift) != x.ndim or not all(math.isfinite(s) for s in shift):
        raise ValueError(f"shift must give one finite value per axis of a {x.ndim}D image, got {shift}")
    if not math.isfinite(rotation_deg):
        raise ValueError(f"rotation_deg must be finite, got {rotation_deg}")
    if rotation_deg != 0:
        x = ndimage.rotate(
            x, rotation_deg, axes=(x.ndim - 2, x.ndim - 1), reshape=False, order=1, mode="constant", cval=0.0
        )
    if any(shift):
        x = ndimage.shift(x, shift, order=1, mode="constant", cval=0.0)
    return _clip01(x.astype(np.float32, copy=False))


def intensity_scale(image: np.ndarray, factor: float) -> np.ndarray:
    """Global intensity-scale change ``x * factor``, clipped to [0, 1] (a no-op clip for factor <= 1).

    Simulates a calibration error of a quantitative modality after normalisation, e.g. a PET image whose
    SUV scaling (injected dose, uptake time, body weight) is off, so the modality arrives darker than
    the network saw in training; the image is deliberately *not* renormalised.

    Args:
        image: one modality, 2D or 3D, intensities in [0, 1].
        factor: multiplicative factor, >= 0.

    Returns:
        float32 array, same shape, values in [0, 1].
    """
    if not factor >= 0:
        raise ValueError(f"factor must be >= 0, got {factor}")
    x = _check_image(image)
    return _clip01(x * np.float32(factor))

"""Perturbation families for the robustness benchmark: controlled data shifts applied to ONE modality.

Every perturbation acts on a single modality image (a 2D or 3D array whose intensities are already
normalised to ``[0, 1]``, as the fusion pipeline does before the network) and returns a float32 array of
the same shape with values in ``[0, 1]``. Each family has severity levels ``1, 2, 3`` and level ``0``,
which is the exact identity (a float32 copy, equal to a float32 input). All randomness comes from the
``rng``/``seed`` argument, so a benchmark run is reproducible.

Within one family the random structure (noise realisation, bias-field shape, truncated side, shift
direction) is drawn independently of the level, so with one seed the levels are nested: level 3 is the
same perturbation as level 1, only stronger. That is what makes the severity curves of the benchmark
smooth instead of noisy.

=================== ======================= ===================================================
registry name       parameter per level 0-3 what it simulates
=================== ======================= ===================================================
``gaussian_noise``  sigma 0, .02, .05, .10  additive white Gaussian noise, clipped to [0, 1]
``rician_noise``    sigma 0, .02, .05, .10  MRI magnitude noise ``|x + n1 + i n2|``, clipped
``bias_field``      0, 10, 20, 35 % max     smooth multiplicative MRI bias field (exp of a cubic)
``gamma``           gamma 1, 1.25, 1.5, 2   contrast shift ``x ** gamma`` (darkens mid-tones)
``resolution``      factor 1, 2, 3, 4       blur + downsample + linear upsample to the same shape
``truncation``      0, 10, 20, 35 % extent  edge slab/band of the field of view set to 0
``dropout``         none/zeros/mean/noise   whole modality replaced by a stand-in
``misregistration`` shift 0, 1, 2, 3 voxels integer translation along one seeded axis, 0 fill
``intensity_scale`` factor 1, .7, .5, .3    global calibration error ``x * factor`` (PET-like)
=================== ======================= ===================================================

Affected masks (:func:`perturb_with_mask`) mark the voxels whose information the perturbation removed or
altered. Only ``truncation`` is *local* (the mask is the removed slab, so the benchmark can score
fidelity outside it and check whether another modality fills it); every other family is global and its
mask is all True at levels 1-3. At level 0 every mask is all False.

:func:`apply_to_all` perturbs every modality of a stack (with independent random streams) and is only
allowed where that is a meaningful shift of the whole acquisition: the noise families, ``resolution``,
``gamma`` and ``intensity_scale``. It is refused for ``bias_field`` (an MRI coil artefact: use
:func:`apply_to_modality` on each MRI channel), ``truncation`` (the question is whether another
modality fills the gap; the same gap everywhere is the shared-masking intervention), ``dropout``
(nothing would be left to fuse) and ``misregistration`` (a misregistration is relative: shifting every
modality leaves them registered).

Core code: numpy and scipy only, no napari/Qt/torch import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.polynomial import legendre
from scipy import ndimage

__all__ = [
    "PERTURBATIONS",
    "PerturbationFamily",
    "apply_to_all",
    "apply_to_modality",
    "bias_field",
    "gamma_shift",
    "gaussian_noise",
    "get_family",
    "intensity_scale",
    "misregister",
    "modality_dropout",
    "perturb",
    "perturb_with_mask",
    "random_bias_field",
    "resolution_loss",
    "rician_noise",
    "truncate",
]

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


# --------------------------------------------------------------------------------------------------
# families and registry
# --------------------------------------------------------------------------------------------------
# A family's implementation: (checked float32 image, level parameter, generator) -> (image, affected mask)
_Impl = Callable[[np.ndarray, Any, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class PerturbationFamily:
    """One perturbation family with its severity levels.

    Attributes:
        name: registry key.
        parameter: name of the per-level parameter (``"sigma"``, ``"factor"`` ...).
        description: one human-readable line.
        stochastic: whether the result depends on the seed (at some level).
        local: whether the affected mask is a region (True) or the whole image (False).
        all_modalities: whether :func:`apply_to_all` accepts this family.
    """

    def __init__(
        self,
        name: str,
        parameter: str,
        levels: Sequence[Any],
        description: str,
        impl: _Impl,
        *,
        stochastic: bool,
        local: bool = False,
        all_modalities: bool = False,
    ) -> None:
        if len(levels) < 4:
            raise ValueError(f"family {name!r} needs level 0 plus at least 3 severity levels")
        self.name = name
        self.parameter = parameter
        self._levels = tuple(levels)
        self.description = description
        self._impl = impl
        self.stochastic = stochastic
        self.local = local
        self.all_modalities = all_modalities

    @property
    def levels(self) -> list[Any]:
        """Parameter value of each level, level 0 (identity) first; a fresh list, so callers can't edit it."""
        return list(self._levels)

    @property
    def max_level(self) -> int:
        """Highest severity level."""
        return len(self._levels) - 1

    def check_level(self, level: Any) -> int:
        """Return ``level`` as an int after checking it is a valid level of this family."""
        if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)):
            raise TypeError(f"level must be an integer, got {level!r} ({type(level).__name__})")
        if not 0 <= level <= self.max_level:
            raise ValueError(
                f"level {level} is out of range for {self.name!r}: valid levels are 0..{self.max_level} "
                f"(0 = identity; {self.parameter} = {self._levels})"
            )
        return int(level)

    def apply_with_mask(self, image: np.ndarray, level: int, rng: SeedLike) -> tuple[np.ndarray, np.ndarray]:
        """Perturb ``image`` at ``level`` and return ``(image, affected_mask)``.

        Args:
            image: one modality, 2D or 3D, intensities in [0, 1].
            level: 0 (identity) .. :attr:`max_level`.
            rng: numpy Generator or integer seed.

        Returns:
            The float32 perturbed image (same shape) and a boolean mask of the voxels whose information
            was removed or altered (all False at level 0; all True for global families).
        """
        gen = _as_generator(rng)
        lvl = self.check_level(level)
        x = _check_image(image, copy=True)
        if lvl == 0:
            return x, np.zeros(x.shape, dtype=bool)
        out, mask = self._impl(x, self._levels[lvl], gen)
        return out.astype(np.float32, copy=False), mask

    def apply(self, image: np.ndarray, level: int, rng: SeedLike) -> np.ndarray:
        """Perturb ``image`` at ``level`` (see :meth:`apply_with_mask`); returns the float32 image."""
        return self.apply_with_mask(image, level, rng)[0]

    def __repr__(self) -> str:
        return f"PerturbationFamily({self.name!r}, {self.parameter}={self._levels})"


def _global(fn: Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]) -> _Impl:
    """Wrap a whole-image perturbation: its affected mask is every voxel."""

    def impl(x: np.ndarray, param: Any, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return fn(x, param, gen), np.ones(x.shape, dtype=bool)

    return impl


def _truncation_impl(
    x: np.ndarray, fraction: float, gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    # Axis and side drawn before (and independently of) the width, so levels are nested slabs.
    axis = int(gen.integers(x.ndim))
    side = ("low", "high")[int(gen.integers(2))]
    return truncate(x, fraction, axis, side)


def _misregistration_impl(x: np.ndarray, voxels: int, gen: np.random.Generator) -> np.ndarray:
    # One axis and a sign: a displacement of exactly `voxels` voxels, the same direction at every level.
    axis = int(gen.integers(x.ndim))
    sign = (-1, 1)[int(gen.integers(2))]
    shift = [0.0] * x.ndim
    shift[axis] = float(sign * voxels)
    return misregister(x, shift)


PERTURBATIONS: dict[str, PerturbationFamily] = {
    family.name: family
    for family in (
        PerturbationFamily(
            "gaussian_noise",
            "sigma",
            [0.0, 0.02, 0.05, 0.10],
            "Additive white Gaussian noise (sigma in units of the [0, 1] range), clipped to [0, 1].",
            _global(lambda x, s, g: gaussian_noise(x, s, g)),
            stochastic=True,
            all_modalities=True,
        ),
        PerturbationFamily(
            "rician_noise",
            "sigma",
            [0.0, 0.02, 0.05, 0.10],
            "Rician MRI magnitude noise sqrt((x+n1)^2+n2^2), n1, n2 ~ N(0, sigma^2); clipped to [0, 1].",
            _global(lambda x, s, g: rician_noise(x, s, g)),
            stochastic=True,
            all_modalities=True,
        ),
        PerturbationFamily(
            "bias_field",
            "max_deviation",
            [0.0, 0.10, 0.20, 0.35],
            "Smooth multiplicative MRI bias field (exp of a random cubic), max deviation 10/20/35 %.",
            _global(lambda x, d, g: bias_field(x, d, g)),
            stochastic=True,
        ),
        PerturbationFamily(
            "gamma",
            "gamma",
            [1.0, 1.25, 1.5, 2.0],
            "Contrast shift x**gamma with gamma > 1 (darker mid-tones, compressed low end).",
            _global(lambda x, gm, g: gamma_shift(x, gm)),
            stochastic=False,
            all_modalities=True,
        ),
        PerturbationFamily(
            "resolution",
            "factor",
            [1, 2, 3, 4],
            "Resolution loss: blur (FWHM = factor) + downsample by 2/3/4 on every axis + linear upsample.",
            _global(lambda x, f, g: resolution_loss(x, f)),
            stochastic=False,
            all_modalities=True,
        ),
        PerturbationFamily(
            "truncation",
            "fraction",
            [0.0, 0.10, 0.20, 0.35],
            "Truncated field of view: a 10/20/35 % slab at one (seeded) end of one (seeded) axis set to 0.",
            _truncation_impl,
            stochastic=True,
            local=True,
        ),
        PerturbationFamily(
            "dropout",
            "mode",
            ["none", "zeros", "mean", "noise"],
            "Modality dropout: replaced by zeros / its constant mean / its own voxels shuffled (noise).",
            _global(lambda x, m, g: modality_dropout(x, m, g)),
            stochastic=True,
        ),
        PerturbationFamily(
            "misregistration",
            "shift_voxels",
            [0, 1, 2, 3],
            "Misregistration: integer shift by 1/2/3 voxels along a seeded axis and sign, 0 fill.",
            _global(_misregistration_impl),
            stochastic=True,
        ),
        PerturbationFamily(
            "intensity_scale",
            "factor",
            [1.0, 0.7, 0.5, 0.3],
            "Global intensity-scale error x*factor (e.g. PET SUV calibration off), not renormalised.",
            _global(lambda x, f, g: intensity_scale(x, f)),
            stochastic=False,
            all_modalities=True,
        ),
    )
}


# --------------------------------------------------------------------------------------------------
# convenience API
# --------------------------------------------------------------------------------------------------
def get_family(family: str | PerturbationFamily) -> PerturbationFamily:
    """Look a family up by registry name (a :class:`PerturbationFamily` is returned as is).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        TypeError: neither a string nor a family.
    """
    if isinstance(family, PerturbationFamily):
        return family
    if not isinstance(family, str):
        raise TypeError(f"family must be a name or a PerturbationFamily, got {type(family).__name__}")
    try:
        return PERTURBATIONS[family]
    except KeyError:
        raise ValueError(
            f"unknown perturbation family {family!r}; valid families: {', '.join(PERTURBATIONS)}"
        ) from None


def perturb_with_mask(
    image: np.ndarray, family: str | PerturbationFamily, level: int, seed: SeedLike = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Perturb one modality image and return ``(image, affected_mask)``.

    Args:
        image: one modality, 2D or 3D, float, intensities in [0, 1].
        family: registry name or family object.
        level: 0 (identity) .. the family's ``max_level`` (3 for every registered family).
        seed: integer seed or numpy Generator.

    Returns:
        The float32 perturbed image and the boolean mask of affected voxels (the removed slab for
        ``truncation``; all True for global families; all False at level 0).
    """
    return get_family(family).apply_with_mask(image, level, seed)


def perturb(
    image: np.ndarray, family: str | PerturbationFamily, level: int, seed: SeedLike = 0
) -> np.ndarray:
    """Perturb one modality image (see :func:`perturb_with_mask`); returns the float32 image."""
    return perturb_with_mask(image, family, level, seed)[0]


def _check_stack(images: Any) -> np.ndarray:
    stack = np.asarray(images)
    if stack.ndim not in (3, 4) or stack.shape[0] < 1:
        raise ValueError(
            f"expected a modality stack of shape (N, *spatial) with 2D or 3D spatial, got {stack.shape}"
        )
    return stack


def apply_to_modality(
    images: np.ndarray,
    index: int,
    family: str | PerturbationFamily,
    level: int,
    seed: SeedLike = 0,
    *,
    return_mask: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Perturb modality ``index`` of a stack ``(N, *spatial)``, leaving the others untouched.

    The perturbed modality equals ``perturb(images[index], family, level, seed)``.

    Args:
        images: stack of N modality images, 2D or 3D spatial.
        index: modality to perturb, in ``[0, N)``.
        family: registry name or family object.
        level: severity level.
        seed: integer seed or numpy Generator.
        return_mask: also return the affected mask of that modality (spatial shape).

    Returns:
        A float32 copy of the stack (and the mask when ``return_mask``).
    """
    stack = _check_stack(images)
    fam = get_family(family)
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an integer, got {index!r}")
    if not 0 <= index < stack.shape[0]:
        raise ValueError(
            f"index {index} is out of range for a stack of {stack.shape[0]} modalities: "
            f"valid indices are 0..{stack.shape[0] - 1}"
        )
    image, mask = fam.apply_with_mask(stack[index], level, seed)
    out = stack.astype(np.float32, copy=True)
    out[index] = image
    return (out, mask) if return_mask else out


def apply_to_all(
    images: np.ndarray,
    family: str | PerturbationFamily,
    level: int,
    seed: SeedLike = 0,
    *,
    return_mask: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Perturb every modality of a stack, each with its own independent random stream.

    Only for families where that is a meaningful shift of the whole acquisition (``all_modalities``:
    the noise families, ``resolution``, ``gamma``, ``intensity_scale``); see the module docstring for
    why the others are refused. The per-modality streams are ``SeedSequence(seed).spawn(N)``; a
    Generator passed as ``seed`` is advanced by one draw that seeds them.

    Args:
        images: stack of N modality images, 2D or 3D spatial.
        family: registry name or family object.
        level: severity level.
        seed: integer seed or numpy Generator.
        return_mask: also return the ``(N, *spatial)`` affected masks.

    Returns:
        The float32 perturbed stack (and the masks when ``return_mask``).

    Raises:
        ValueError: the family is not meaningful for all modalities at once.
    """
    stack = _check_stack(images)
    fam = get_family(family)
    if not fam.all_modalities:
        allowed = [name for name, f in PERTURBATIONS.items() if f.all_modalities]
        raise ValueError(
            f"family {fam.name!r} is not meaningful for all modalities at once; perturb one with "
            f"apply_to_modality. apply_to_all accepts: {', '.join(allowed)}"
        )
    fam.check_level(level)
    gen = _as_generator(seed)  # validates the seed
    entropy = int(gen.integers(2**63)) if isinstance(seed, np.random.Generator) else int(seed)
    root = np.random.SeedSequence(entropy)
    streams = [np.random.default_rng(child) for child in root.spawn(stack.shape[0])]
    out = np.empty(stack.shape, dtype=np.float32)
    masks = np.empty(stack.shape, dtype=bool)
    for i, stream in enumerate(streams):
        out[i], masks[i] = fam.apply_with_mask(stack[i], level, stream)
    return (out, masks) if return_mask else out

"""Perturbation families: each shift with its three severity levels, and applying them to one modality or
to all of a case's modalities (what the robustness benchmark runs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .functions import (
    SeedLike,
    _as_generator,
    _check_image,
    bias_field,
    gamma_shift,
    gaussian_noise,
    intensity_scale,
    misregister,
    modality_dropout,
    resolution_loss,
    rician_noise,
    truncate,
)

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

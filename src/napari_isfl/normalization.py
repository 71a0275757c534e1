"""Per-modality intensity normalisation to [0, 1], the range the fusion network works in.

Defaults (overridable per input with :class:`IntensitySpec`):

* MRI: robust percentiles. ``low`` = 0.5th percentile of all voxels, ``high`` = 99.5th percentile of
  the voxels above ``low`` (the foreground), so a black background does not drag the range down.
* CT: a fixed window in Hounsfield units, -150..1350 HU by default (soft tissue to dense bone, the part
  of CT that fusion with MRI is for). Data that is not in HU (no value below -500: an 8-bit PNG, a
  template in other units) falls back to the MRI percentiles; pass an explicit window to override.
* PET / SPECT: ``low`` = 0, ``high`` = robust maximum (99.9th percentile of the positive voxels), so
  uptake stays proportional and a single hot voxel does not set the scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "DEFAULT_SPECS",
    "FUNCTIONAL_MODALITIES",
    "MODALITIES",
    "IntensitySpec",
    "guess_modality",
    "looks_like_hounsfield",
    "normalize_intensity",
    "robust_range",
]

#: the modality tags napari-isfl knows (networks, normalisation, CLI, widget). MRI contrasts (T1, T2,
#: FLAIR, PD, ...) all use "mri".
MODALITIES: tuple[str, ...] = ("mri", "ct", "pet", "spect")
#: modalities whose dark regions carry meaning (hypo-uptake), unlike the dark background of anatomy
FUNCTIONAL_MODALITIES = ("pet", "spect")

_METHODS = ("percentile", "window", "robust_max", "minmax", "none")
#: the largest magnitude normalisation accepts: differences of such values still fit in float32
FLOAT32_SAFE = 1e37


@dataclass(frozen=True)
class IntensitySpec:
    """How one modality's intensities map to [0, 1].

    Args:
        method: ``"percentile"`` (``low``/``high`` are percentiles), ``"window"`` (``low``/``high``
            are intensities), ``"robust_max"`` (0 to the ``high`` percentile of positive voxels),
            ``"minmax"`` or ``"none"`` (input already in [0, 1]).
        low, high: see ``method``.
    """

    method: str = "percentile"
    low: float = 0.5
    high: float = 99.5

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(
                f"unknown normalisation method {self.method!r}; use one of {', '.join(_METHODS)}"
            )
        if self.method in ("percentile", "window") and not self.low < self.high:
            raise ValueError(f"normalisation needs low < high, got {self.low} and {self.high}")
        if self.method in ("percentile", "robust_max") and not 0 <= self.high <= 100:
            raise ValueError(f"percentile must lie in 0..100, got {self.high}")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_SPECS: dict[str, IntensitySpec] = {
    "mri": IntensitySpec("percentile", 0.5, 99.5),
    "ct": IntensitySpec("window", -150.0, 1350.0),
    "pet": IntensitySpec("robust_max", 0.0, 99.9),
    "spect": IntensitySpec("robust_max", 0.0, 99.9),
}

_NAME_HINTS = (
    ("spect", ("spect", "hmpao", "datscan")),
    ("pet", ("pet", "fdg", "suv", "amyloid", "tau")),
    ("ct", ("ct", "scct", "cta")),
    ("mri", ("mri", "mr", "t1", "t2", "flair", "fla", "pd", "dwi", "adc", "swi", "t1c", "t1n", "t2w", "t2f")),
)


def guess_modality(name: str) -> str | None:
    """Guess a modality tag from a file or layer name (``"pet"`` for ``sub01_FDG-PET.nii.gz``).

    Matches whole tokens only (split at non-letters/digits), so ``"ct"`` is not found in ``"vector"``.
    Returns ``None`` when nothing matches.
    """
    import re

    tokens = {t for t in re.split(r"[^a-z0-9]+", name.lower()) if t}
    for modality, hints in _NAME_HINTS:
        if tokens & set(hints):
            return modality
    return None


def looks_like_hounsfield(image: np.ndarray) -> bool:
    """Whether a CT image is in Hounsfield units: some voxel below -500 (air is about -1000 HU)."""
    return float(np.min(image)) <= -500


def _sample(image: np.ndarray, max_samples: int) -> np.ndarray:
    # a strided sample keeps percentiles of large volumes cheap and deterministic
    flat = np.asarray(image).ravel()
    return flat[:: max(1, flat.size // max_samples)].astype(np.float32, copy=False)


def robust_range(
    image: np.ndarray, low: float = 0.5, high: float = 99.5, max_samples: int = 2_000_000
) -> tuple[float, float]:
    """The ``low`` percentile of all voxels and the ``high`` percentile of the voxels above it (the
    foreground, so a black background does not drag the range down), from a strided sample of at most
    about ``max_samples`` voxels. An image with nothing above ``low`` gives ``(low, low)``.

    Examples:
        >>> image = np.zeros((10, 10))
        >>> image[2:8, 2:8] = np.arange(36).reshape(6, 6)
        >>> robust_range(image, 0.0, 100.0)
        (0.0, 35.0)
    """
    sample = _sample(image, max_samples)
    low_value = float(np.percentile(sample, low))
    foreground = sample[sample > low_value]
    return low_value, float(np.percentile(foreground, high)) if foreground.size else low_value


def _robust_range(image: np.ndarray, spec: IntensitySpec) -> tuple[float, float]:
    if spec.method == "minmax":
        flat = np.asarray(image).ravel()
        return float(flat.min()), float(flat.max())
    if spec.method == "robust_max":
        sample = _sample(image, 2_000_000)
        positive = sample[sample > 0]
        return 0.0, float(np.percentile(positive, spec.high)) if positive.size else 0.0
    return robust_range(image, spec.low, spec.high)


def normalize_intensity(
    image: np.ndarray, modality: str = "mri", spec: IntensitySpec | None = None, name: str = "input"
) -> tuple[np.ndarray, dict]:
    """Map ``image`` to float32 in [0, 1] with the modality's rule.

    Args:
        image: any real array (2D or 3D).
        modality: ``"mri"``, ``"ct"``, ``"pet"`` or ``"spect"`` (selects the default rule).
        spec: overrides the default rule.
        name: the input's name, used in error messages.

    Returns:
        the normalised array and a dict with the rule and the intensity range used (for provenance).

    Raises:
        ValueError: the image holds NaN/Inf, or has no intensity range to normalise (constant).
    """
    data = np.asarray(image)
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ValueError(f"{name}: expected a real-valued image, got dtype {data.dtype}")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise ValueError(f"{name}: contains {bad} NaN/Inf voxels; replace them (e.g. numpy.nan_to_num) first")
    if data.size and np.issubdtype(data.dtype, np.floating) and data.dtype.itemsize > 4:
        largest = float(np.abs(data).max())
        if largest > FLOAT32_SAFE:  # normalisation runs in float32: its range would overflow
            raise ValueError(
                f"{name}: values up to {largest:.3g} are too large to normalise (the fusion works in "
                f"float32, up to about {FLOAT32_SAFE:.0e}); rescale the image (e.g. divide by a constant) "
                "first"
            )
    # a constant image has nothing to fuse, unless the caller vouches that it is already in [0, 1]
    # (method "none": e.g. a deliberately zeroed modality in the robustness benchmark)
    if data.size == 0 or (data.min() == data.max() and not (spec is not None and spec.method == "none")):
        value = float(data.ravel()[0]) if data.size else float("nan")
        raise ValueError(
            f"{name}: the image is constant (every voxel is {value:g}), so there is nothing to fuse; "
            "check that the right file or layer was chosen"
        )
    if spec is None:
        spec = DEFAULT_SPECS.get(modality, DEFAULT_SPECS["mri"])
        if modality == "ct" and not looks_like_hounsfield(data):
            spec = DEFAULT_SPECS["mri"]
    if spec.method == "none":
        low, high = 0.0, 1.0
    elif spec.method == "window":
        low, high = float(spec.low), float(spec.high)
    else:
        low, high = _robust_range(data, spec)
    if not high > low:
        raise ValueError(
            f"{name}: no intensity range left to normalise ({spec.method} rule gave {low:g}..{high:g}); "
            "pass an explicit window or another modality tag"
        )
    normalised = (data.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    np.clip(normalised, 0.0, 1.0, out=normalised)
    return normalised, {"method": spec.method, "low": low, "high": high, "modality": modality}

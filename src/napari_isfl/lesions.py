"""FLAIR hyperintensities (oedema, MS plaques) and how much of their contrast a fusion keeps.

A blend that follows the anatomy of a T1-weighted input can wash out what only the FLAIR shows. These
helpers find the hyperintensities without an expert mask (the brightest few percent of the FLAIR inside
the brain), measure their contrast against normal tissue, and give the share of the FLAIR a fusion's
coarsest blend weights need so that it keeps a given fraction of that contrast: the lesion guard of
:meth:`napari_isfl.inference.FusionEngine.fuse`, and the lesion measure of ``isfl evaluate``.

Examples:
    >>> import numpy as np
    >>> brain = np.ones((20, 20, 20), bool)
    >>> flair = np.full(brain.shape, 0.4); flair[8:12, 8:12, 8:12] = 0.9   # a bright lesion
    >>> lesion = hyperintensity_mask(flair, brain, top_percent=0.5)   # 64 of 8000 voxels: 0.8 %
    >>> int(lesion.sum())
    64
    >>> normal = normal_tissue(lesion, brain)
    >>> round(region_contrast(flair, lesion, normal), 2)
    0.5
    >>> round(guard_share(source=0.5, learned=0.3, floored=0.45, ratio=0.8), 3)   # 0.3 + s * 0.15 = 0.4
    0.667
    >>> guard_share(source=0.5, learned=0.45, floored=0.5, ratio=0.8)   # already kept: nothing to do
    0.0
    >>> is_flair_name("OtherEXampleFromTCIA_fla_bet.nii.gz"), is_flair_name("t1c")
    (True, False)
"""

from __future__ import annotations

import re

import numpy as np
from scipy import ndimage

__all__ = [
    "FLAIR_HINTS",
    "GUARD_MARGIN",
    "coverage_mask",
    "describe_lesion_guard",
    "guard_share",
    "hyperintensity_mask",
    "is_flair_name",
    "normal_tissue",
    "region_contrast",
]

#: name tokens that mark a FLAIR (``t2f``: BraTS 2023's name for it)
FLAIR_HINTS = ("flair", "fla", "t2f")


def is_flair_name(name: str) -> bool:
    """Whether a file or layer name says FLAIR (one of :data:`FLAIR_HINTS` as a token)."""
    tokens = {t for t in re.split(r"[^a-z0-9]+", str(name).lower()) if t}
    return bool(tokens & set(FLAIR_HINTS))


def coverage_mask(image: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Where a normalised input has data: its foreground (above ``threshold``) with enclosed holes filled
    (a FLAIR's dark ventricles count as covered; a slab it did not image, open to the background, does
    not)."""
    return ndimage.binary_fill_holes(np.asarray(image) > threshold)


def hyperintensity_mask(flair: np.ndarray, brain: np.ndarray, top_percent: float = 5.0) -> np.ndarray:
    """The brightest ``top_percent`` of a normalised FLAIR inside ``brain``: the oedema or the
    hyperintense lesions where no expert mask exists (empty when the brain is)."""
    brain = np.asarray(brain, bool)
    values = np.asarray(flair)[brain]
    if values.size == 0:
        return np.zeros_like(brain)
    return brain & (flair >= np.percentile(values, 100.0 - top_percent))


def normal_tissue(lesion: np.ndarray, brain: np.ndarray, margin: int = 2) -> np.ndarray:
    """The brain outside ``lesion`` grown by ``margin`` voxels (partial-volume voxels at the lesion's
    border count as neither). The growing runs on the lesion's bounding box only."""
    lesion = np.asarray(lesion, bool) & np.asarray(brain, bool)
    grown = lesion.copy()
    if lesion.any() and margin > 0:
        found = ndimage.find_objects(lesion.astype(np.uint8))[0]
        box = tuple(
            slice(max(s.start - margin, 0), min(s.stop + margin, n))
            for s, n in zip(found, lesion.shape, strict=True)
        )
        grown[box] = ndimage.binary_dilation(lesion[box], iterations=margin)
    return np.asarray(brain, bool) & ~grown


def region_contrast(image: np.ndarray, lesion: np.ndarray, normal: np.ndarray) -> float:
    """``mean(lesion) - mean(normal)`` of ``image`` (NaN when either region is empty)."""
    if not lesion.any() or not normal.any():
        return float("nan")
    image = np.asarray(image)
    return float(np.mean(image[lesion], dtype=np.float64) - np.mean(image[normal], dtype=np.float64))


#: the guard aims this fraction above the asked ratio, so float32 rounding cannot leave it just under
GUARD_MARGIN = 1e-4


def guard_share(source: float, learned: float, floored: float, ratio: float) -> float:
    """The least share ``s`` in [0, 1] of the guarded input at the coarsest blend level for which the
    fusion keeps ``ratio`` of that input's lesion contrast.

    The fusion with share ``s`` is ``(1 - s) * learned_fusion + s * floored_fusion`` (the blend is linear
    in its weights), so its contrast is linear in ``s`` between ``learned`` (the learned weights' fusion)
    and ``floored`` (the coarsest level all the guarded input's). ``source``: the input's own contrast.
    0 when the learned fusion keeps enough already, when the input shows no hyperintensity (``source`` not
    positive or NaN), or when the floor does not raise the contrast; 1 when even the full share falls short.
    """
    target = ratio * source * (1.0 + GUARD_MARGIN)
    if not np.isfinite(source) or source <= 0 or not np.isfinite(learned) or learned >= target:
        return 0.0
    if not np.isfinite(floored) or floored <= learned:
        return 0.0
    return float(min(1.0, (target - learned) / (floored - learned)))


def describe_lesion_guard(provenance: dict) -> str | None:
    """One line on what the lesion guard did (from a fusion's provenance), or ``None`` when it was off;
    ``isfl fuse``, ``isfl demo`` and the napari widget's status line show it."""
    report = provenance.get("parameters", {}).get("lesion_guard")
    if not report or report.get("kept") is None:
        return None
    kept, learned = report["kept"], report["kept_learned"]
    if report["coarse_share"] > 0:
        every = report.get("all_levels_share", 0.0)
        return (
            f"lesion guard: {report['input']}'s share of the coarsest blend level raised to "
            f"{report['coarse_share']:.2f}{f', of every level {every:.2f}' if every else ''}, keeping "
            f"{kept:.2f} of its lesion contrast (learned blend: {learned:.2f})"
        )
    return f"lesion guard: the learned blend keeps {kept:.2f} of {report['input']}'s lesion contrast"

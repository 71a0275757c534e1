"""Two things the nine metrics cannot see: window seams, and whether lesions stay visible.

* :func:`seam_ratio`: a fusion run in sliding windows must not show them. On the planes where windows
  start or end, the fused image's second difference across the plane is compared with the same on every
  other plane; that ratio is divided by the sources' own ratio on the same planes (anatomy may happen to
  run along a plane). 1.0: the windows left no trace; 2.0: twice the curvature on window borders.
* :func:`lesion_contrast`: a lesion's (MS plaque, tumour oedema) contrast against normal tissue,
  ``mean(lesion) - mean(normal)`` on the [0, 1] scale the fusion works on, in the fused image relative to
  the source that shows it best (FLAIR, usually). 1.0: as visible as in FLAIR; 0: gone.

Examples:
    >>> import numpy as np
    >>> smooth = np.fromfunction(lambda z, y, x: np.sin(z / 5) + np.cos(y / 7) + x / 30, (40, 30, 20))
    >>> edges = [[16, 24], [], []]                     # window borders on axis 0
    >>> round(seam_ratio(smooth, [smooth], edges)["seam_ratio"], 2)
    1.0
    >>> seamed = smooth.copy(); seamed[16:] += 0.5      # a step where a window starts
    >>> seam_ratio(seamed, [smooth], edges)["seam_ratio"] > 2
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..lesions import hyperintensity_mask as oedema_mask
from ..lesions import normal_tissue, region_contrast

__all__ = ["lesion_contrast", "oedema_mask", "seam_ratio"]


def _plane_means(image: np.ndarray, axis: int, mask: np.ndarray | None) -> np.ndarray:
    """Mean |second difference| across each plane ``1..n-2`` of ``axis`` (inside ``mask`` when given)."""
    image = np.asarray(image, dtype=np.float64)
    n = image.shape[axis]
    centre = np.take(image, range(1, n - 1), axis=axis)
    curvature = np.abs(
        np.take(image, range(2, n), axis=axis) - 2.0 * centre + np.take(image, range(0, n - 2), axis=axis)
    )
    other = tuple(a for a in range(image.ndim) if a != axis)
    if mask is None:
        return curvature.mean(axis=other)
    inside = np.take(mask, range(1, n - 1), axis=axis)
    counts = inside.sum(axis=other)
    sums = np.where(inside, curvature, 0.0).sum(axis=other)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _boundary_ratio(image: np.ndarray, edges: Sequence[Sequence[int]], mask: np.ndarray | None) -> float:
    """Mean curvature on window-border planes over the mean on the other planes, pooled over the axes."""
    on, off = [], []
    for axis, positions in enumerate(edges):
        n = image.shape[axis]
        if not positions or n < 3:
            continue
        means = _plane_means(image, axis, mask)  # index i is plane i + 1
        border = np.zeros(n - 2, bool)
        for p in positions:  # a window starting at p: its first plane and the plane before it
            for plane in (p - 1, p):
                if 1 <= plane <= n - 2:
                    border[plane - 1] = True
        values_on, values_off = means[border], means[~border]
        on += list(values_on[np.isfinite(values_on)])
        off += list(values_off[np.isfinite(values_off)])
    if not on or not off:
        return math.nan
    denominator = float(np.mean(off))
    return float(np.mean(on)) / denominator if denominator > 0 else math.nan


def seam_ratio(
    fused: np.ndarray,
    sources: Sequence[np.ndarray],
    edges: Sequence[Sequence[int]],
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """How much more the fused image curves on window borders than elsewhere, relative to its sources.

    Args:
        fused: the fused image, 2D or 3D.
        sources: the (normalised) inputs, same shape.
        edges: per axis, the positions where a window starts or ends (the first index inside it, or one
            past its end), in the image's coordinates; an empty list for an axis without borders.
        mask: where to measure (e.g. the foreground); default everywhere.

    Returns:
        ``seam_fused`` (border/elsewhere curvature of the fusion), ``seam_inputs`` (the mean of the
        sources' same ratio) and ``seam_ratio`` = their quotient (NaN without borders).
    """
    fused_ratio = _boundary_ratio(fused, edges, mask)
    input_ratios = [r for r in (_boundary_ratio(s, edges, mask) for s in sources) if math.isfinite(r)]
    inputs = float(np.mean(input_ratios)) if input_ratios else math.nan
    ratio = (
        fused_ratio / inputs if math.isfinite(fused_ratio) and inputs and math.isfinite(inputs) else math.nan
    )
    return {"seam_fused": fused_ratio, "seam_inputs": inputs, "seam_ratio": ratio}


def lesion_contrast(
    fused: np.ndarray,
    sources: Sequence[np.ndarray],
    lesion: np.ndarray,
    brain: np.ndarray,
    margin: int = 2,
) -> dict[str, float]:
    """Lesion contrast of the fusion relative to the source that shows the lesion best.

    Normal tissue is the brain outside the lesion grown by ``margin`` voxels (partial-volume voxels at the
    lesion's border count for neither). Images are on the [0, 1] scale (normalised sources, the fusion).

    Returns:
        ``lesion_contrast`` (fused), ``lesion_contrast_source`` (the best source's), the index of that
        source ``lesion_source``, and ``lesion_contrast_ratio`` = fused / source (NaN without a lesion).
    """
    lesion = np.asarray(lesion, bool) & np.asarray(brain, bool)
    normal = normal_tissue(lesion, brain, margin)
    if not lesion.any() or not normal.any():
        return {
            "lesion_contrast": math.nan,
            "lesion_contrast_source": math.nan,
            "lesion_source": -1,
            "lesion_contrast_ratio": math.nan,
        }

    def contrast(image: np.ndarray) -> float:
        return region_contrast(np.asarray(image, dtype=np.float64), lesion, normal)

    per_source = [contrast(np.asarray(s, dtype=np.float64)) for s in sources]
    best = int(np.argmax(per_source))
    fused_contrast = contrast(np.asarray(fused, dtype=np.float64))
    reference = per_source[best]
    return {
        "lesion_contrast": fused_contrast,
        "lesion_contrast_source": reference,
        "lesion_source": best,
        "lesion_contrast_ratio": fused_contrast / reference if reference > 0 else math.nan,
    }

"""Constants that define the fusion metrics, shared by their numpy implementation (``isfl evaluate``,
:mod:`napari_isfl.evaluation.metrics`) and their differentiable one (training losses,
:mod:`napari_isfl.model.metric_losses`), so the two cannot drift apart. numpy only.

Examples:
    >>> vif_kernel(5).round(4)
    array([0.0545, 0.2442, 0.4026, 0.2442, 0.0545])
    >>> [row for row, column in SOBEL_FACTORS.values()]
    [(1.0, 2.0, 1.0), (1.0, 0.0, -1.0)]
"""

from __future__ import annotations

import numpy as np

__all__ = ["QABF_ORIENTATION", "QABF_STRENGTH", "SOBEL_FACTORS", "vif_kernel"]

#: Xydeas-Petrovic sigmoid ``T / (1 + exp(k (x - D)))`` of edge-strength preservation: ``(T, k, D)``.
QABF_STRENGTH = (0.9994, -15.0, 0.5)
#: the same sigmoid for orientation preservation.
QABF_ORIENTATION = (0.9879, -22.0, 0.8)

#: The toolbox's Sobel responses as separable convolutions (row-axis factor, column-axis factor):
#: ``horizontal`` is ``conv2(image, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], 'same')``, ``vertical`` is
#: ``conv2(image, [[1, 2, 1], [0, 0, 0], [-1, -2, -1]], 'same')``.
SOBEL_FACTORS = {
    "horizontal": ((1.0, 2.0, 1.0), (-1.0, 0.0, 1.0)),
    "vertical": ((1.0, 0.0, -1.0), (1.0, 2.0, 1.0)),
}


def vif_kernel(size: int) -> np.ndarray:
    """1D factor of MATLAB's ``fspecial('gaussian', size, size / 5)`` (the 2D kernel is its outer product)."""
    sigma = size / 5.0
    coordinates = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-(coordinates**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()

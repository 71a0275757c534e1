"""Fixtures shared by the metric tests."""

from __future__ import annotations

import numpy as np
import pytest

from core_helpers import metric_phantom as phantom

SHAPE_2D = (96, 112)
SHAPE_3D = (45, 51, 41)  # odd sizes, every slice plane >= 41 (VIF's 4 scales fit)


@pytest.fixture(scope="module", params=["2d", "3d"])
def triple(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fused, source_a, source_b) of one dimensionality, fused a weighted mean of the two sources."""
    shape = SHAPE_2D if request.param == "2d" else SHAPE_3D
    source_a, source_b = phantom(shape, 1), phantom(shape, 2)
    return np.round(0.6 * source_a + 0.4 * source_b), source_a, source_b

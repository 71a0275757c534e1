"""The differentiable metrics equal the evaluation's, in 2D and 3D, and their loss terms train."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_isfl.evaluation.metrics import qabf as qabf_metric
from napari_isfl.evaluation.metrics import (
    structural_similarity,
    sum_of_correlations_of_differences,
    visual_information_fidelity,
)
from napari_isfl.model import metric_losses
from napari_isfl.model.losses import FidelityLoss, ISFLLossWeights


def _images(size: tuple, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two smooth-ish sources with shared and own structure, and a fusion of them, on 0..255."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(0, 3, n) for n in size], indexing="ij")
    first = 120 + 80 * np.sin(grid[0] * 2) * np.cos(grid[1]) + rng.normal(0, 8, size)
    second = 100 + 90 * np.cos(grid[1] * 3) + rng.normal(0, 8, size)
    fused = np.maximum(first, second) * 0.7 + 0.3 * first
    return fused, first, second


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(array, dtype=torch.float64)[None, None]


@pytest.mark.parametrize("size", [(48, 53), (45, 41, 7), (19, 23)])
def test_metrics_equal_the_evaluation(size: tuple) -> None:
    """VIF (every source), Qabf and SCD match ``evaluation.metrics`` on 2D images and, slice by slice
    along the last axis, on volumes; odd sizes and images too small for all VIF scales included."""
    fused, first, second = _images(size)
    tensors = [_tensor(a) for a in (fused, first, second)]
    vif_sum = sum(float(metric_losses.vif(tensors[0], source)[0]) for source in tensors[1:])
    assert vif_sum == pytest.approx(visual_information_fidelity(fused, [first, second]), rel=1e-6)
    assert float(metric_losses.qabf(tensors[0], tensors[1:])[0]) == pytest.approx(
        qabf_metric(fused, [first, second]), rel=1e-6
    )
    assert float(metric_losses.scd(tensors[0], tensors[1:])[0]) == pytest.approx(
        sum_of_correlations_of_differences(fused, [first, second]), rel=1e-6
    )


@pytest.mark.parametrize("size", [(48, 53), (23, 30)])
def test_ssim_equals_the_evaluation(size: tuple) -> None:
    """2D SSIM with the evaluation's window and border, summed over the sources as it reports it."""
    fused, first, second = _images(size, seed=3)
    total = sum(float(metric_losses.ssim(_tensor(fused), _tensor(s))[0]) for s in (first, second))
    assert total == pytest.approx(structural_similarity(fused, [first, second]), rel=1e-6)
    with pytest.raises(ValueError, match="2D images"):
        metric_losses.ssim(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))


def test_metrics_are_per_image_and_skip_empty_slices() -> None:
    """A batch gives one value per image; a volume's constant slices do not count (as in the evaluation)."""
    fused, first, second = _images((32, 32, 6))
    for array in (fused, first, second):
        array[..., :2] = 0.0
    expected = qabf_metric(fused, [first, second])
    batch = [torch.cat([_tensor(a), _tensor(a[::-1].copy())]) for a in (fused, first, second)]
    values = metric_losses.qabf(batch[0], batch[1:])
    assert values.shape == (2,)
    assert float(values[0]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dims, size", [(2, (40, 37)), (3, (24, 21, 5))])
def test_metric_terms_are_zero_for_a_perfect_copy_and_have_gradients(dims: int, size: tuple) -> None:
    """With equal sources the fusion that copies them has every metric term 0 (VIF 1 per source, SCD's
    differences aside); another fusion scores worse, and the terms pass finite gradients to it."""
    source = torch.rand(1, 1, *size)
    loss = FidelityLoss(dims, intensity=0, gradient=0, ssim=0, vif=1, qabf=1)
    copy = loss(source, torch.cat([source, source], dim=1))
    assert float(copy["vif"]) == pytest.approx(0.0, abs=1e-6)
    assert float(copy["qabf"]) == pytest.approx(1 - 0.9748, abs=1e-3)  # Qabf of a perfect copy
    fused = (source * 0.5 + 0.25).requires_grad_(True)
    other = loss(fused, torch.cat([source, source], dim=1))
    assert float(other["fidelity"].detach()) > float(copy["fidelity"])
    other["fidelity"].backward()
    assert fused.grad is not None and torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0


def test_scd_term_rewards_keeping_both_sources() -> None:
    """The sum of the sources (SCD 2) scores better than either source alone."""
    sources = torch.rand(2, 2, 24, 24) * 0.5
    loss = FidelityLoss(2, intensity=0, gradient=0, ssim=0, scd=1)
    both = loss(sources.sum(dim=1, keepdim=True), sources)["scd"]
    one = loss(sources[:, :1], sources)["scd"]
    assert float(both) == pytest.approx(0.0, abs=1e-5)
    assert float(one) > 0.4


def test_metric_terms_off_by_default_and_validated() -> None:
    """Weight 0 (the default) computes nothing; negative weights are refused by the loss and the config."""
    terms = FidelityLoss(2)(torch.rand(1, 1, 20, 20), torch.rand(1, 2, 20, 20))
    assert all(float(terms[k]) == 0.0 for k in ("vif", "qabf", "scd"))
    with pytest.raises(ValueError, match=">= 0"):
        FidelityLoss(2, qabf=-1.0)
    with pytest.raises(ValueError, match="loss weight vif must be >= 0"):
        ISFLLossWeights(vif=-0.5)
    with pytest.raises(ValueError, match="at least two sources"):
        metric_losses.scd(torch.rand(1, 1, 8, 8), [torch.rand(1, 1, 8, 8)])

"""Differentiable versions of the fusion metrics that ``isfl evaluate`` scores (VIF, Qabf, SCD, SSIM).

Each function equals its counterpart in :mod:`napari_isfl.evaluation.metrics` on one image (the tests
compare them), but takes batches of tensors and keeps the autograd graph, so a loss can ask for what the
quality bars measure: the information (VIF) and the edges (Qabf) of every source kept, and a fusion whose
difference from each source looks like the others (SCD). Images are on the metrics' 0..255 scale.

2D images are ``(B, 1, H, W)``; 3D volumes ``(B, 1, H, W, D)`` are scored as the evaluation scores them,
slice by slice along the last axis (VIF and Qabf; slices without any source signal are skipped) and
averaged. SCD and SSIM are nD native (SSIM in 2D here; the training loss keeps MONAI's SSIM).

Examples:
    >>> import torch
    >>> a, b = torch.rand(2, 2, 1, 48, 48) * 255                 # 2D: two batches of two sources
    >>> vif(a, a).shape, float(vif(a, a)[0])
    (torch.Size([2]), 1.0)
    >>> volume = torch.rand(1, 1, 24, 24, 8) * 255                  # 3D, scored slice by slice
    >>> round(float(qabf(volume, [volume, volume])[0]), 4)
    0.9748
    >>> float(scd(a + b, [a, b])[0])                                  # F - B = A exactly
    2.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..metric_definitions import QABF_ORIENTATION, QABF_STRENGTH, SOBEL_FACTORS, vif_kernel

__all__ = ["pearson", "qabf", "scd", "ssim", "vif"]

_EPS = 1e-10


def _slices(image: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W, D)`` -> ``(B * D, 1, H, W)`` (2D input unchanged)."""
    if image.ndim == 4:
        return image
    if image.ndim != 5 or image.shape[1] != 1:
        raise ValueError(f"expected (B, 1, H, W) or (B, 1, H, W, D), got {tuple(image.shape)}")
    return image.movedim(-1, 1).flatten(0, 1)


def _per_image(
    numerator: torch.Tensor, denominator: torch.Tensor, batch: int, informative: torch.Tensor
) -> torch.Tensor:
    """Per-slice ratios ``(B * D,)`` averaged over each image's informative slices -> ``(B,)``."""
    ratio = numerator / denominator.clamp_min(_EPS)
    keep = (informative & (denominator > 0)).view(batch, -1).float()
    return (ratio.view(batch, -1) * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


def _informative(sources: Sequence[torch.Tensor]) -> torch.Tensor:
    """Slices where some source is not constant (as ``metrics._informative_slices``)."""
    flat = [_slices(source).flatten(1) for source in sources]
    return torch.stack([(f.amax(dim=1) > f.amin(dim=1)) for f in flat]).any(dim=0)


def _filter_valid(image: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Separable 'valid' correlation of ``(B, 1, H, W)`` with ``kernel`` along both axes."""
    weights = torch.as_tensor(kernel, dtype=image.dtype, device=image.device)
    image = F.conv2d(image, weights.view(1, 1, -1, 1))
    return F.conv2d(image, weights.view(1, 1, 1, -1))


def _vifp_sums(reference: torch.Tensor, distorted: torch.Tensor, sigma_n_sq: float):
    """Numerator and denominator of VIFp per 2D image (``metrics._vifp_sums``, its special cases in
    its order)."""
    numerator = reference.new_zeros(reference.shape[0])
    denominator = reference.new_zeros(reference.shape[0])
    for scale in range(4):
        taps = 2 ** (4 - scale) + 1
        kernel = vif_kernel(taps)
        if scale > 0:
            if min(reference.shape[2:]) < taps:
                break
            reference = _filter_valid(reference, kernel)[..., ::2, ::2]
            distorted = _filter_valid(distorted, kernel)[..., ::2, ::2]
        if min(reference.shape[2:]) < taps:
            break
        mean_ref, mean_dist = _filter_valid(reference, kernel), _filter_valid(distorted, kernel)
        var_ref = (_filter_valid(reference * reference, kernel) - mean_ref**2).clamp_min(0.0)
        var_dist = (_filter_valid(distorted * distorted, kernel) - mean_dist**2).clamp_min(0.0)
        covariance = _filter_valid(reference * distorted, kernel) - mean_ref * mean_dist
        gain = covariance / (var_ref + _EPS)
        noise_var = var_dist - gain * covariance
        flat_ref, flat_dist = var_ref < _EPS, var_dist < _EPS
        noise_var = torch.where(flat_ref, var_dist, noise_var)
        var_ref = torch.where(flat_ref, 0.0, var_ref)
        noise_var = torch.where(flat_dist, 0.0, noise_var)
        gain = torch.where(flat_ref | flat_dist, 0.0, gain)
        noise_var = torch.where(gain < 0, var_dist, noise_var).clamp_min(_EPS)
        gain = gain.clamp_min(0.0)
        information = torch.log10(1 + gain**2 * var_ref / (noise_var + sigma_n_sq))
        numerator = numerator + information.flatten(1).sum(1)
        denominator = denominator + torch.log10(1 + var_ref / sigma_n_sq).flatten(1).sum(1)
    return numerator, denominator


def vif(fused: torch.Tensor, source: torch.Tensor, sigma_n_sq: float = 2.0) -> torch.Tensor:
    """VIF of ``fused`` against one ``source`` (pixel-domain multi-scale VIFp, the source as reference),
    per image ``(B,)``; :func:`~napari_isfl.evaluation.metrics.visual_information_fidelity` sums it over
    the sources. Images smaller than 17 pixels in-plane give 0."""
    batch = fused.shape[0]
    numerator, denominator = _vifp_sums(_slices(source), _slices(fused), sigma_n_sq)
    return _per_image(numerator, denominator, batch, _informative([source]))


def _sobel_kernels() -> list[torch.Tensor]:
    """The evaluation's two separable Sobel convolutions as ``conv2d`` kernels (``conv2d`` correlates, so
    the outer product of the factors is flipped)."""
    kernels = []
    for row, column in SOBEL_FACTORS.values():
        kernel = np.outer(row, column)[::-1, ::-1].copy()
        kernels.append(torch.as_tensor(kernel).view(1, 1, 3, 3))
    return kernels


_SOBEL = _sobel_kernels()


def _strength_angle(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel strength and the toolbox's ``atan(Sy / Sx)`` (``pi / 2`` where ``Sx == 0``)."""
    horizontal, vertical = (F.conv2d(image, k.to(image), padding=1) for k in _SOBEL)
    # the small constant keeps the square root's gradient finite on flat regions
    strength = torch.sqrt(horizontal**2 + vertical**2 + 1e-12)
    zero = horizontal == 0
    angle = torch.where(zero, math.pi / 2, torch.atan(vertical / torch.where(zero, 1.0, horizontal)))
    return strength, angle


def _sigmoid(values: torch.Tensor, constants: tuple[float, float, float]) -> torch.Tensor:
    scale, slope, centre = constants
    return scale / (1 + torch.exp(slope * (values - centre)))


def qabf(fused: torch.Tensor, sources: Sequence[torch.Tensor]) -> torch.Tensor:
    """Qabf (Xydeas-Petrovic) of ``fused`` against all ``sources``, per image ``(B,)``: the edge strength
    and orientation of every source kept, weighted by its strength (:func:`~napari_isfl.evaluation.
    metrics.qabf`)."""
    batch = fused.shape[0]
    fused_strength, fused_angle = _strength_angle(_slices(fused))
    numerator = denominator = 0.0
    for source in sources:
        strength, angle = _strength_angle(_slices(source))
        preserved = torch.minimum(strength, fused_strength) / torch.maximum(strength, fused_strength)
        orientation = 1 - (angle - fused_angle).abs() / (math.pi / 2)
        quality = _sigmoid(preserved, QABF_STRENGTH) * _sigmoid(orientation, QABF_ORIENTATION)
        numerator = numerator + (quality * strength).flatten(1).sum(1)
        denominator = denominator + strength.flatten(1).sum(1)
    return _per_image(numerator, denominator, batch, _informative(sources))


def pearson(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per image of ``(B, ...)`` tensors."""
    first = first.flatten(1) - first.flatten(1).mean(dim=1, keepdim=True)
    second = second.flatten(1) - second.flatten(1).mean(dim=1, keepdim=True)
    norm = (first.square().sum(1) * second.square().sum(1)).clamp_min(1e-12).sqrt()
    return (first * second).sum(1) / norm


def scd(fused: torch.Tensor, sources: Sequence[torch.Tensor]) -> torch.Tensor:
    """SCD ``sum_i corr(fused - mean_{j != i} source_j, source_i)`` per image ``(B,)``
    (:func:`~napari_isfl.evaluation.metrics.sum_of_correlations_of_differences`)."""
    if len(sources) < 2:
        raise ValueError(f"SCD needs at least two sources, got {len(sources)}")
    total = torch.stack(list(sources)).sum(dim=0)
    count = len(sources)
    return sum(pearson(fused - (total - source) / (count - 1), source) for source in sources)


def ssim(fused: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """SSIM of 2D ``fused`` with one ``source`` per image ``(B,)``: the evaluation's definition (11-tap
    gaussian window, sigma 1.5, peak 255, the border the window does not cover left out), which
    :func:`~napari_isfl.evaluation.metrics.structural_similarity` sums over the sources."""
    if fused.ndim != 4:
        raise ValueError(f"ssim takes 2D images (B, 1, H, W), got {tuple(fused.shape)}")
    coordinates = np.arange(11) - 5.0
    kernel = np.exp(-(coordinates**2) / (2 * 1.5**2))
    kernel /= kernel.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mean_1, mean_2 = _filter_valid(fused, kernel), _filter_valid(source, kernel)
    variance_1 = _filter_valid(fused * fused, kernel) - mean_1**2
    variance_2 = _filter_valid(source * source, kernel) - mean_2**2
    covariance = _filter_valid(fused * source, kernel) - mean_1 * mean_2
    ssim_map = ((2 * mean_1 * mean_2 + c1) * (2 * covariance + c2)) / (
        (mean_1**2 + mean_2**2 + c1) * (variance_1 + variance_2 + c2)
    )
    return ssim_map.flatten(1).mean(dim=1)

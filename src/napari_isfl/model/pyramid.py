"""Laplacian pyramids and the per-scale weighted blend that makes a fusion out of its sources only.

The fused image of the ``pyramid`` head is ``collapse(sum_i w_i^s * L_i^s)``: at every scale ``s`` the
band-pass detail ``L_i^s`` of each normalised source ``i`` (and, at the coarsest scale, its low-pass base)
is weighted per voxel by ``w_i^s`` (convex: ``w^s >= 0``, ``sum_i w_i^s = 1``). Nothing but the sources'
own structure can appear: with equal sources the blend returns them exactly, and the weights are exactly
what was done, which is what the contribution maps show.

The pyramid follows Burt and Adelson: blur with the binomial kernel ``[1, 4, 6, 4, 1] / 16`` along every
axis (reflect padding), keep every second voxel; a level's detail is the image minus the upsampled
(linear interpolation) coarser level. Collapsing adds the details back on the upsampled base, so any
weights that are the same for all sources reproduce the source exactly (up to float rounding).

Examples:
    >>> import torch
    >>> images = torch.rand(1, 2, 32, 28)                        # 2D: (B, N, H, W)
    >>> weights = [torch.full((1, 2, 32 // 2**s, 28 // 2**s), 0.5) for s in range(3)]
    >>> fused = blend(images, weights)
    >>> torch.allclose(fused, images.mean(dim=1, keepdim=True), atol=1e-5)
    True
    >>> volume = torch.rand(1, 3, 16, 16, 8)                     # 3D, three sources
    >>> one_hot = [torch.eye(3)[0].view(1, 3, 1, 1, 1).expand(1, 3, *(n // 2**s for n in (16, 16, 8)))
    ...            for s in range(3)]
    >>> torch.allclose(blend(volume, one_hot), volume[:, :1], atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "band_saliency",
    "bands_of",
    "blend",
    "collapse",
    "downsample",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "upsample",
]

_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def _blur(images: torch.Tensor) -> torch.Tensor:
    """Separable binomial blur of ``(B, C, *spatial)`` along every spatial axis (reflect padding; an axis
    shorter than the kernel is padded by replication). Weighted sums of shifted views: cheaper forward and
    backward on the CPU than depthwise convolutions."""
    spatial_dims = images.ndim - 2
    out = images
    for axis in range(spatial_dims):
        dim = 2 + axis
        length = out.shape[dim]
        pad = [0, 0] * spatial_dims
        pad[2 * (spatial_dims - 1 - axis)] = pad[2 * (spatial_dims - 1 - axis) + 1] = 2
        padded = F.pad(out, pad, mode="reflect" if length > 2 else "replicate")
        taps = [padded.narrow(dim, shift, length) for shift in range(len(_BINOMIAL))]
        out = (taps[0] + taps[4] + 4.0 * (taps[1] + taps[3]) + 6.0 * taps[2]) / 16.0
    return out


def downsample(images: torch.Tensor) -> torch.Tensor:
    """Blur, then every second voxel along every axis (the first one kept): ``ceil(n / 2)`` voxels."""
    blurred = _blur(images)
    return blurred[(slice(None), slice(None)) + (slice(None, None, 2),) * (images.ndim - 2)]


def upsample(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linear interpolation of ``(B, C, *spatial)`` to ``size`` (bilinear in 2D, trilinear in 3D)."""
    mode = "bilinear" if images.ndim == 4 else "trilinear"
    return F.interpolate(images, size=tuple(size), mode=mode, align_corners=False)


def gaussian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``levels`` images of ``(B, C, *spatial)``: the input, then each one :func:`downsample`-d."""
    if levels < 1:
        raise ValueError(f"a pyramid needs at least one level, got {levels}")
    out = [images]
    for _ in range(levels - 1):
        out.append(downsample(out[-1]))
    return out


def bands_of(gaussian: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The Laplacian bands of a :func:`gaussian_pyramid`: each level minus the upsampled next, and the
    coarsest level itself as the base."""
    details = [
        fine - upsample(coarse, fine.shape[2:])
        for fine, coarse in zip(gaussian[:-1], gaussian[1:], strict=True)
    ]
    return [*details, gaussian[-1]]


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``levels`` bands of ``(B, C, *spatial)``: details at full, 1/2, ... resolution, the last one the
    low-pass base. ``levels=1`` gives the image itself."""
    return bands_of(gaussian_pyramid(images, levels))


def collapse_levels(bands: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Every level image of the pyramid whose Laplacian bands are ``bands`` (coarsest band last),
    finest first: level ``s`` is band ``s`` plus the upsampled level ``s + 1``."""
    levels = [bands[-1]]
    for band in reversed(bands[:-1]):
        levels.insert(0, band + upsample(levels[0], band.shape[2:]))
    return levels


def collapse(bands: Sequence[torch.Tensor]) -> torch.Tensor:
    """The image whose :func:`laplacian_pyramid` is ``bands`` (coarsest band last)."""
    return collapse_levels(bands)[0]


def weighted_bands(bands: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The blended band ``(B, 1, *spatial_s)`` of every level: the sources' bands ``(B, N, *spatial_s)``
    weighted by that level's ``weights`` and summed over the sources."""
    return [(band * weight).sum(dim=1, keepdim=True) for band, weight in zip(bands, weights, strict=True)]


def band_saliency(images: torch.Tensor, levels: int, eps: float = 1e-6) -> list[torch.Tensor]:
    """Log local energy of every band of every source, ``log(blur(band ** 2) + eps)``, one
    ``(B, N, *spatial_s)`` map per level of :func:`laplacian_pyramid` (finest first).

    The coarsest band is the low-pass base, whose energy would be its brightness: there it is the energy
    of the base minus its blur (its local contrast). Where a source has the stronger detail at a scale,
    its saliency there is higher: the cue that classical rules (max-abs selection, GFF's saliency maps)
    choose by, offered to the pyramid head as one more input.
    """
    bands = laplacian_pyramid(images, levels)
    bands[-1] = bands[-1] - _blur(bands[-1])
    return [torch.log(_blur(band * band) + eps) for band in bands]


def blend(images: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-scale weighted blend of the sources ``images`` ``(B, N, *spatial)``.

    Args:
        images: the normalised sources.
        weights: one ``(B, N, *spatial_s)`` map per pyramid level, finest first, each at the resolution
            of that level (``ceil(n / 2**s)`` voxels per axis) and summing to 1 over ``N``.

    Returns:
        the fused image ``(B, 1, *spatial)``.
    """
    bands = laplacian_pyramid(images, len(weights))
    for band, weight in zip(bands, weights, strict=True):
        if band.shape != weight.shape:
            raise ValueError(
                f"weights of shape {tuple(weight.shape)} for a pyramid band of {tuple(band.shape)}"
            )
    return collapse(weighted_bands(bands, weights))

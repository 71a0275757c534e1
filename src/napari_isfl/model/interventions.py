"""The three input interventions of ISFL, as seedable MONAI-style randomizable transforms.

Every transform takes a channel-first array ``(N, *spatial)`` holding the N modalities of one sample
(2D or 3D, numpy or torch) and returns the same type and shape. Masks are 1 where a voxel is kept.

* :class:`RandComplementaryMask`: independent holes per modality, then every voxel hidden in all
  modalities is restored in one of them, so each voxel stays visible in at least one modality.
* :class:`RandSharedMask`: the same holes in every modality.
* :class:`RandModalityDropout`: one modality set to zero (:func:`drop_modality` does it for a given one).

Holes are squares/cubes (with probability ``box_prob``) or disks/balls, ``hole_size`` voxels across
(the paper: 1..6 holes, 16x16 squares with p=0.7, otherwise disks of radius 8, on 256x256 crops).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Randomizable, Transform

__all__ = [
    "RandComplementaryMask",
    "RandHoleMask",
    "RandModalityDropout",
    "RandSharedMask",
    "drop_modality",
]

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(img: ArrayLike) -> torch.Tensor:
    # ascontiguousarray: torch cannot wrap numpy views with negative strides (np.flip, reoriented NIfTI)
    return img if isinstance(img, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(img))


def _like(result: torch.Tensor, img: ArrayLike) -> ArrayLike:
    return result if isinstance(img, torch.Tensor) else result.numpy()


class RandHoleMask(Randomizable):
    """Draw binary keep-masks (1 = keep) with random square/cube or disk/ball holes.

    Args:
        num_holes: inclusive range ``(min, max)`` of holes per mask.
        hole_size: side of a square/cube and diameter of a disk/ball, in voxels; an int or a
            per-axis sequence.
        box_prob: probability that a hole is a square/cube rather than a disk/ball.

    Raises:
        ValueError: a negative or inverted hole count, a non-positive size, or a probability outside [0, 1].
    """

    def __init__(
        self, num_holes: tuple[int, int] = (1, 6), hole_size: int | Sequence[int] = 16, box_prob: float = 0.7
    ) -> None:
        low, high = (int(v) for v in num_holes)
        if low < 0 or high < low:
            raise ValueError(f"num_holes must be (min, max) with 0 <= min <= max, got {num_holes}")
        sizes = (hole_size,) if isinstance(hole_size, (int, np.integer)) else tuple(hole_size)
        if min(sizes) < 1:
            raise ValueError(f"hole_size must be >= 1 voxel, got {hole_size}")
        if not 0.0 <= box_prob <= 1.0:
            raise ValueError(f"box_prob must lie in [0, 1], got {box_prob}")
        self.num_holes = (low, high)
        self.hole_size = sizes
        self.box_prob = float(box_prob)

    def randomize(self, data: Sequence[int] | None = None) -> None:  # pragma: no cover - interface
        pass

    def draw(self, spatial_shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """One keep-mask of ``spatial_shape`` (float32, values 0/1)."""
        dims = len(spatial_shape)
        sizes = self.hole_size * dims if len(self.hole_size) == 1 else self.hole_size
        if len(sizes) != dims:
            raise ValueError(f"hole_size {self.hole_size} does not match a {dims}D image")
        mask = torch.ones(tuple(spatial_shape), dtype=torch.float32, device=device)
        grids = None
        for _ in range(self.R.randint(self.num_holes[0], self.num_holes[1] + 1)):
            centre = [self.R.uniform(0, s) for s in spatial_shape]
            if self.R.uniform() < self.box_prob:
                region = tuple(
                    slice(max(0, round(c - h / 2)), max(0, round(c - h / 2)) + h)
                    for c, h in zip(centre, sizes, strict=True)
                )
                mask[region] = 0.0
            else:
                if grids is None:
                    grids = torch.meshgrid(
                        *[torch.arange(s, dtype=torch.float32, device=device) for s in spatial_shape],
                        indexing="ij",
                    )
                dist = sum(((g - c) / (h / 2)) ** 2 for g, c, h in zip(grids, centre, sizes, strict=True))
                mask[dist <= 1.0] = 0.0
        return mask


class RandComplementaryMask(RandHoleMask, Transform):
    """Complementary masking: holes that never hide a voxel in every modality.

    Each modality gets its own random holes; a voxel hidden in all N modalities is then restored in
    one modality chosen at random (per voxel), so for two modalities the holes never overlap.

    Examples::

        >>> t = RandComplementaryMask(hole_size=8).set_random_state(0)
        >>> out = t(np.ones((2, 64, 64), np.float32))          # 2D, two modalities
        >>> bool((out.max(axis=0) > 0).all())
        True
        >>> out3 = t(torch.ones(3, 32, 40, 24))                # 3D, three modalities
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.masks: torch.Tensor | None = None

    def __call__(self, img: ArrayLike, randomize: bool = True) -> ArrayLike:
        data = _as_tensor(img)
        if data.shape[0] < 2:
            raise ValueError(f"complementary masking needs >= 2 modalities, got shape {tuple(data.shape)}")
        if randomize or self.masks is None:
            masks = torch.stack([self.draw(data.shape[1:], data.device) for _ in range(data.shape[0])])
            all_hidden = masks.sum(0) == 0
            if all_hidden.any():
                chosen = torch.as_tensor(
                    self.R.randint(0, data.shape[0], size=int(all_hidden.sum())), device=data.device
                )
                restore = masks.new_zeros(masks.shape)
                restore[:, all_hidden] = torch.nn.functional.one_hot(chosen, data.shape[0]).T.float()
                masks = masks + restore
            self.masks = masks
        return _like(data * self.masks.to(data.dtype), img)


class RandSharedMask(RandHoleMask, Transform):
    """Shared masking: identical holes in every modality.

    Examples::

        >>> t = RandSharedMask(num_holes=(3, 3)).set_random_state(1)
        >>> out = t(np.ones((2, 128, 128), np.float32))
        >>> bool((out[0] == out[1]).all())
        True
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mask: torch.Tensor | None = None

    def __call__(self, img: ArrayLike, randomize: bool = True) -> ArrayLike:
        data = _as_tensor(img)
        if randomize or self.mask is None:
            self.mask = self.draw(data.shape[1:], data.device)
        return _like(data * self.mask.to(data.dtype), img)


def drop_modality(img: ArrayLike, index: int, fill: float = 0.0) -> ArrayLike:
    """Return a copy of ``img`` ``(N, *spatial)`` whose modality ``index`` is set to ``fill``."""
    data = _as_tensor(img).clone()
    if not -data.shape[0] <= index < data.shape[0]:
        raise IndexError(f"modality index {index} out of range for {data.shape[0]} modalities")
    data[index] = fill
    return _like(data, img)


class RandModalityDropout(Randomizable, Transform):
    """With probability ``prob``, set one randomly chosen modality to ``fill``.

    Examples::

        >>> t = RandModalityDropout(prob=1.0).set_random_state(0)
        >>> out = t(np.ones((3, 16, 16, 16), np.float32))
        >>> int((out.reshape(3, -1).max(axis=1) == 0).sum())
        1
    """

    def __init__(self, prob: float = 1.0, fill: float = 0.0) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob}")
        self.prob = float(prob)
        self.fill = float(fill)
        self.index: int | None = None

    def randomize(self, num_modalities: int) -> None:
        self.index = int(self.R.randint(num_modalities)) if self.R.uniform() < self.prob else None

    def __call__(self, img: ArrayLike, randomize: bool = True) -> ArrayLike:
        data = _as_tensor(img)
        if data.shape[0] < 2:
            raise ValueError(f"modality dropout needs >= 2 modalities, got shape {tuple(data.shape)}")
        if randomize:
            self.randomize(data.shape[0])
        if self.index is None:
            return img
        return drop_modality(img, self.index, self.fill)

"""Training crops: deterministic random crops of loaded cases, batched for the training loop.

Every sample drawn for training is a pure function of ``(seed, index)``, so a run resumed from a
checkpoint sees exactly the batches it would have seen, with any number of loader workers or
distributed ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Compose, RandAxisFlip, RandRotate90
from torch.utils.data import Dataset

from ..cases import LoadedCase

__all__ = ["CropDataset", "collate_crops"]


class CropDataset(Dataset):
    """Deterministic random training crops: every item is a pure function of ``(seed, step, rank, position)``.

    Items of one batch (``i // batch_size``) share the number of inputs N, drawn from
    ``num_inputs``; each item picks a case that has at least N images, N of its images (anatomy
    first when present), a crop of ``crop_size`` centred on foreground with probability
    ``foreground_prob``, and MONAI's random axis flip and in-plane 90-degree rotation; with ``gamma_range``,
    each input also gets its own random gamma.

    A case with a ``target`` fusion gives the same crop of it (after flips and rotations, not gamma),
    when all its images are drawn.

    Returns:
        ``(images (N, *crop) float32, modality tags as a list of str, target (1, *crop) or None)``.
    """

    def __init__(
        self,
        cases: Sequence[LoadedCase],
        crop_size: Sequence[int],
        batch_size: int,
        num_steps: int,
        num_inputs: Sequence[int] = (2,),
        seed: int = 0,
        start_step: int = 0,
        world_size: int = 1,
        rank: int = 0,
        foreground_prob: float = 0.9,
        augment: bool = True,
        gamma_range: Sequence[float] | None = None,
    ) -> None:
        if not cases:
            raise ValueError("no training cases")
        self.cases = list(cases)
        self.crop_size = tuple(int(c) for c in crop_size)
        self.spatial_dims = self.cases[0].array.ndim - 1
        if len(self.crop_size) != self.spatial_dims:
            raise ValueError(f"crop_size {self.crop_size} does not fit {self.spatial_dims}D data")
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.start_step = start_step
        self.world_size = world_size
        self.rank = rank
        self.num_inputs = [int(n) for n in num_inputs]
        usable = [n for n in self.num_inputs if any(c.array.shape[0] >= n for c in self.cases)]
        if not usable:
            raise ValueError(f"no case has enough images for num_inputs={self.num_inputs}")
        self.num_inputs = usable
        self.seed = seed
        self.foreground_prob = foreground_prob
        self.augment = (
            Compose([RandAxisFlip(prob=0.5), RandRotate90(prob=0.5, spatial_axes=(0, 1))])
            if augment
            else None
        )
        if gamma_range is not None:
            low, high = (float(g) for g in gamma_range)
            if not 0.0 < low <= high:
                raise ValueError(f"gamma_range must be (low, high) with 0 < low <= high, got {gamma_range}")
            gamma_range = (low, high)
        self.gamma_range = gamma_range

    def __len__(self) -> int:
        return self.num_steps * self.batch_size

    def batch_key(self, step: int) -> int:
        """The number that seeds everything random in ``step`` on this rank."""
        return step * self.world_size + self.rank

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
        step, position = self.start_step + index // self.batch_size, index % self.batch_size
        key = self.batch_key(step)
        count = int(np.random.default_rng([self.seed, key]).choice(self.num_inputs))
        rng = np.random.default_rng([self.seed, key, position])
        candidates = [c for c in self.cases if c.array.shape[0] >= count]
        case = candidates[int(rng.integers(len(candidates)))]
        chosen = sorted(rng.choice(case.array.shape[0], size=count, replace=False).tolist())
        volume = case.array[chosen]
        # a target fusion is a fusion of all the case's images: it travels as one more channel
        with_target = case.target is not None and count == case.array.shape[0]
        if with_target:
            volume = np.concatenate([volume, case.target[None].astype(volume.dtype)])
        crop = self._crop(volume, rng)
        if self.augment is not None:
            self.augment.set_random_state(int(rng.integers(2**31)))
            crop = np.asarray(self.augment(crop))
        target = None
        if with_target:
            crop, target = crop[:-1], torch.from_numpy(np.ascontiguousarray(crop[-1:], dtype=np.float32))
        if self.gamma_range is not None:
            crop = self._gamma(crop, rng)
        images = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))
        return images, [case.modalities[i] for i in chosen], target

    def _gamma(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each input gets its own gamma, log-uniform in ``gamma_range`` (inputs are in [0, 1]): the contrast
        between and within modalities varies as it does between scanners and protocols, which a training
        set of a few patients does not show."""
        low, high = np.log(self.gamma_range)
        gammas = np.exp(rng.uniform(low, high, size=crop.shape[0]))
        shape = (-1,) + (1,) * (crop.ndim - 1)
        return np.clip(crop, 0.0, 1.0) ** gammas.reshape(shape).astype(np.float32)

    def _crop(self, volume: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        spatial = volume.shape[1:]
        pads = [(0, 0)] + [(0, max(0, c - s)) for c, s in zip(self.crop_size, spatial, strict=True)]
        if any(p[1] for p in pads):
            volume = np.pad(volume, pads)
            spatial = volume.shape[1:]
        if rng.uniform() < self.foreground_prob:
            coords = np.flatnonzero(volume.max(axis=0) > 0.05)
            if coords.size:
                centre = np.unravel_index(int(coords[rng.integers(coords.size)]), spatial)
                start = [
                    int(np.clip(c - k // 2, 0, s - k))
                    for c, k, s in zip(centre, self.crop_size, spatial, strict=True)
                ]
                region = tuple(slice(a, a + k) for a, k in zip(start, self.crop_size, strict=True))
                return volume[(slice(None),) + region]
        start = [int(rng.integers(0, s - k + 1)) for s, k in zip(spatial, self.crop_size, strict=True)]
        return volume[
            (slice(None),) + tuple(slice(a, a + k) for a, k in zip(start, self.crop_size, strict=True))
        ]


def collate_crops(
    batch: Sequence[tuple[torch.Tensor, list[str], torch.Tensor | None]],
) -> tuple[torch.Tensor, list[list[str]], tuple[torch.Tensor, torch.Tensor] | None]:
    """Stack crops (one N per batch by construction) and keep the per-sample tags; targets become
    ``(targets (B, 1, *crop), has_target (B,))`` (zeros where a sample has none), or None."""
    images = torch.stack([b[0] for b in batch])
    targets = None
    if any(b[2] is not None for b in batch):
        empty = torch.zeros((1, *images.shape[2:]), dtype=images.dtype)
        targets = (
            torch.stack([empty if b[2] is None else b[2] for b in batch]),
            torch.tensor([b[2] is not None for b in batch]),
        )
    return images, [b[1] for b in batch], targets

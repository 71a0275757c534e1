"""Training data: sets of co-registered images ("cases") and deterministic random crops of them.

A *case* is two or more co-registered images of one subject with their modality tags. Cases come from

* a folder of PNG pairs laid out like the Harvard benchmark: ``TASK/MODALITY/NAME.png``, the images of
  one case sharing ``NAME`` across the modality folders (``CT-MRI/CT/16003.png`` + ``CT-MRI/MRI/16003.png``);
* a CSV with one case per row: ``images`` (paths separated by ``;``) and ``modalities`` (tags
  separated by ``;``), optional ``name`` and ``resample`` (1 = resample onto the first image's grid);
  paths are relative to the source's ``root``.

Every sample drawn for training is a pure function of ``(seed, index)``, so a run resumed from a
checkpoint sees exactly the batches it would have seen, with any number of loader workers or
distributed ranks.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose, RandAxisFlip, RandRotate90
from torch.utils.data import Dataset

from .io import IMAGE_SUFFIXES, check_coregistration, image_suffix, read_image, resample_to_reference
from .normalization import IntensitySpec, guess_modality, normalize_intensity

__all__ = [
    "Case",
    "CropDataset",
    "LoadedCase",
    "cases_from_csv",
    "cases_from_folder",
    "cases_from_sources",
    "collate_crops",
    "data_hash",
    "load_case",
]


@dataclass
class Case:
    """Co-registered image files of one subject and their modality tags."""

    images: list[Path]
    modalities: list[str]
    name: str = ""
    resample: bool = False

    def __post_init__(self) -> None:
        if len(self.images) != len(self.modalities):
            raise ValueError(f"case {self.name}: {len(self.images)} images but {len(self.modalities)} tags")
        if len(self.images) < 2:
            raise ValueError(f"case {self.name}: a case needs at least two images")


@dataclass
class LoadedCase:
    """A case read, normalised to [0, 1] and cropped to its foreground box: ``array`` is ``(M, *S)``."""

    array: np.ndarray
    modalities: list[str]
    name: str
    normalization: list[dict] = field(default_factory=list)


def _modality_of_folder(folder: str) -> str:
    modality = guess_modality(folder)
    if modality is None:
        raise ValueError(f"cannot tell the modality of folder {folder!r}; name it MRI, CT, PET or SPECT")
    return modality


def cases_from_folder(root: str | Path) -> list[Case]:
    """Harvard-style ``TASK/MODALITY/NAME.ext`` folders (or ``MODALITY/NAME.ext`` directly in ``root``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    task_dirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    # a task folder holds modality folders of images; a root whose folders hold images is one task
    if any(image_suffix(p) in IMAGE_SUFFIXES for d in task_dirs for p in d.iterdir()):
        task_dirs = [root]
    cases = []
    for task in task_dirs:
        modality_dirs = [d for d in sorted(task.iterdir()) if d.is_dir()]
        if len(modality_dirs) < 2:
            continue
        files = [{p.name: p for p in d.iterdir() if image_suffix(p) in IMAGE_SUFFIXES} for d in modality_dirs]
        common = sorted(set.intersection(*(set(f) for f in files)))
        tags = [_modality_of_folder(d.name) for d in modality_dirs]
        # anatomy (MRI) first: it is the reference grid and the usual first input
        order = sorted(range(len(tags)), key=lambda i: tags[i] != "mri")
        for name in common:
            cases.append(
                Case([files[i][name] for i in order], [tags[i] for i in order], f"{task.name}/{name}")
            )
    if not cases:
        raise ValueError(f"no co-registered image sets found under {root} (expected TASK/MODALITY/NAME.png)")
    return cases


def cases_from_csv(path: str | Path, root: str | Path | None = None) -> list[Case]:
    """Cases from a CSV with ``images`` and ``modalities`` columns (``;``-separated)."""
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    cases = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(line for line in handle if not line.lstrip().startswith("#"))
        if reader.fieldnames is None or not {"images", "modalities"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs columns 'images' and 'modalities' (';'-separated)")
        for row_number, row in enumerate(reader, start=2):
            images = [base / p.strip() for p in row["images"].split(";") if p.strip()]
            tags = [t.strip().lower() for t in row["modalities"].split(";") if t.strip()]
            name = (row.get("name") or "").strip() or f"{path.name}:{row_number}"
            resample = str(row.get("resample") or "0").strip().lower() in ("1", "true", "yes")
            cases.append(Case(images, tags, name, resample))
    if not cases:
        raise ValueError(f"{path}: no cases")
    return cases


def cases_from_sources(sources: Sequence[dict], root: str | Path = ".") -> list[Case]:
    """Cases from config entries ``{type: folder|csv, path: ...}``.

    Relative folder paths, and the image paths inside a CSV, start at ``root``.
    """
    cases: list[Case] = []
    for source in sources:
        kind = source.get("type", "folder")
        path = Path(root) / source["path"]
        if kind == "folder":
            cases += cases_from_folder(path)
        elif kind == "csv":
            cases += cases_from_csv(path, root)
        else:
            raise ValueError(f"unknown data source type {kind!r}; use 'folder' or 'csv'")
    return cases


def load_case(
    case: Case, normalization: dict[str, IntensitySpec] | None = None, crop_foreground: bool = True
) -> LoadedCase:
    """Read, (optionally) resample, normalise and crop one case."""
    data = [read_image(p) for p in case.images]
    if case.resample:
        data = [data[0]] + [resample_to_reference(d, data[0]) for d in data[1:]]
    check_coregistration(data)
    arrays, infos = [], []
    for image, tag in zip(data, case.modalities, strict=True):
        spec = (normalization or {}).get(tag)
        array, info = normalize_intensity(image.array, tag, spec, str(image.path))
        arrays.append(array)
        infos.append(info)
    stack = np.stack(arrays)
    if crop_foreground:
        signal = (stack > 0).any(axis=0)
        if signal.any():
            hits = np.argwhere(signal)
            low, high = hits.min(0), hits.max(0) + 1
            stack = stack[(slice(None),) + tuple(slice(a, b) for a, b in zip(low, high, strict=True))]
    return LoadedCase(np.ascontiguousarray(stack), list(case.modalities), case.name, infos)


def data_hash(cases: Sequence[Case]) -> str:
    """SHA-256 over the training files' contents and the case definitions (first 16 hex digits)."""
    digest = hashlib.sha256()
    for case in cases:
        digest.update(f"{case.name}|{';'.join(case.modalities)}|{case.resample}".encode())
        for path in case.images:
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


class CropDataset(Dataset):
    """Deterministic random training crops: every item is a pure function of ``(seed, step, rank, position)``.

    Items of one batch (``i // batch_size``) share the number of inputs N, drawn from
    ``num_inputs``; each item picks a case that has at least N images, N of its images (anatomy
    first when present), a crop of ``crop_size`` centred on foreground with probability
    ``foreground_prob``, and MONAI's random axis flip and in-plane 90-degree rotation; with ``gamma_range``,
    each input also gets its own random gamma.

    Returns:
        ``(images (N, *crop) float32, modality tags as a list of str)``.
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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str]]:
        step, position = self.start_step + index // self.batch_size, index % self.batch_size
        key = self.batch_key(step)
        count = int(np.random.default_rng([self.seed, key]).choice(self.num_inputs))
        rng = np.random.default_rng([self.seed, key, position])
        candidates = [c for c in self.cases if c.array.shape[0] >= count]
        case = candidates[int(rng.integers(len(candidates)))]
        chosen = sorted(rng.choice(case.array.shape[0], size=count, replace=False).tolist())
        volume = case.array[chosen]
        crop = self._crop(volume, rng)
        if self.augment is not None:
            self.augment.set_random_state(int(rng.integers(2**31)))
            crop = np.asarray(self.augment(crop))
        if self.gamma_range is not None:
            crop = self._gamma(crop, rng)
        return torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)), [
            case.modalities[i] for i in chosen
        ]

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


def collate_crops(batch: Sequence[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, list[list[str]]]:
    """Stack crops (one N per batch by construction) and keep the per-sample tags."""
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]

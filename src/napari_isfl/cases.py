"""Sets of co-registered images ("cases"), as training, evaluation and benchmarks list and load them.

A *case* is two or more co-registered images of one subject with their modality tags. Cases come from

* a folder of PNG pairs laid out like the Harvard benchmark: ``TASK/MODALITY/NAME.png``, the images of
  one case sharing ``NAME`` across the modality folders (``CT-MRI/CT/16003.png`` + ``CT-MRI/MRI/16003.png``);
* a CSV with one case per row: ``images`` (paths separated by ``;``) and ``modalities`` (tags
  separated by ``;``), optional ``name`` and ``resample`` (1 = resample onto the first image's grid);
  paths are relative to the source's ``root``.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import IMAGE_SUFFIXES, image_suffix, read_image
from .normalization import IntensitySpec, guess_modality, normalize_intensity
from .spatial import check_coregistration, foreground_box, resample_to_reference

__all__ = [
    "Case",
    "LoadedCase",
    "cases_from_csv",
    "cases_from_folder",
    "cases_from_sources",
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
    #: an expert lesion mask on the first image's grid (evaluation of lesion contrast), or None
    lesion_mask: Path | None = None

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
    #: a target fusion ``(*S)`` on the same grid (training's ``loss.distill``), or None
    target: np.ndarray | None = None


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
    """Cases from a CSV with ``images`` and ``modalities`` columns (``;``-separated), and optionally
    ``name``, ``resample`` (1 = onto the first image's grid) and ``lesion_mask`` (a mask file)."""
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
            lesion = (row.get("lesion_mask") or "").strip()
            cases.append(Case(images, tags, name, resample, base / lesion if lesion else None))
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
    case: Case,
    normalization: dict[str, IntensitySpec] | None = None,
    crop_foreground: bool = True,
    target: np.ndarray | None = None,
) -> LoadedCase:
    """Read, (optionally) resample, normalise and crop one case; a ``target`` fusion on the first image's
    grid is cropped with it."""
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
    if target is not None:
        target = np.asarray(target, dtype=np.float32)
        if target.shape != stack.shape[1:]:
            raise ValueError(
                f"case {case.name}: target fusion of shape {target.shape} does not match its images "
                f"{stack.shape[1:]}; make the target on the first image's grid"
            )
    if crop_foreground:
        box = foreground_box(stack)
        stack = stack[(slice(None), *box)]
        target = None if target is None else target[box]
    return LoadedCase(
        np.ascontiguousarray(stack),
        list(case.modalities),
        case.name,
        infos,
        None if target is None else np.ascontiguousarray(target),
    )


def data_hash(cases: Sequence[Case]) -> str:
    """SHA-256 over the training files' contents and the case definitions (first 16 hex digits)."""
    digest = hashlib.sha256()
    for case in cases:
        digest.update(f"{case.name}|{';'.join(case.modalities)}|{case.resample}".encode())
        for path in case.images:
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]

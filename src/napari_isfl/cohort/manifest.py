"""Cohort manifests: which co-registered files make up each case of a cohort.

Two sources, both giving :class:`CohortCase` objects with absolute paths:

* a CSV manifest (:func:`read_manifest`): a header ``case`` then one column per input (``case,t1c,flair``
  or ``case,mri,pet``), one case per row, paths relative to the CSV's folder;
* a BIDS tree (:func:`bids_manifest`): one case per subject (or subject and session) that has every
  requested input, found by a small documented glob rule rather than pybids (see the function).

Structural problems (no ``case`` column, a duplicate or unsafe case name) raise at once with the file,
the line and the fix. A problem of one case (an empty cell, a BIDS input matched by several files)
does not stop the others: the case carries it in :attr:`CohortCase.problem` and is reported as failed.
Missing or unreadable files are found when the case runs, on the worker, and fail that case only.
This module needs neither torch nor Dask.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..io import NIFTI_SUFFIXES, RASTER_SUFFIXES, TIFF_SUFFIXES, image_suffix
from ..normalization import guess_modality

__all__ = [
    "BIDS_DATATYPES",
    "CohortCase",
    "Manifest",
    "bids_manifest",
    "check_case_name",
    "read_manifest",
]

#: a case name becomes a folder name: letters, digits, '.', '_', '-', starting with a letter or digit
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: names that would collide with the cohort's own files in the output folder
_RESERVED_NAMES = {"summary.csv"}
#: BIDS datatype folders searched for inputs (MRI contrasts in anat/, PET in pet/)
BIDS_DATATYPES = ("anat", "pet")
MODALITY_TAGS = ("mri", "ct", "pet", "spect")


@dataclass(frozen=True)
class CohortCase:
    """One case of a cohort: co-registered input files of one subject, the first being the reference.

    Attributes:
        name: the case's name, also its output folder's name.
        inputs: absolute paths of the input files.
        modalities: one tag per input (``mri``, ``ct``, ``pet``, ``spect``).
        source: where the case was defined (``cohort.csv:4``, ``sub-01/ses-1``), for messages.
        problem: why the case cannot run (reported as its failure), or ``""``.
    """

    name: str
    inputs: tuple[Path, ...]
    modalities: tuple[str, ...]
    source: str = ""
    problem: str = ""

    @property
    def output_suffix(self) -> str:
        """The outputs' file type, following the reference input: ``.nii.gz`` for NIfTI (and anything
        unknown, which fails at reading), ``.png`` for PNG/JPEG/BMP, ``.tif`` for TIFF."""
        suffix = image_suffix(self.inputs[0]) if self.inputs else ""
        if suffix in RASTER_SUFFIXES:
            return ".png"
        if suffix in TIFF_SUFFIXES:
            return ".tif"
        return ".nii.gz"


@dataclass
class Manifest:
    """The cases of a cohort, and notes on what a manifest left out (e.g. BIDS sessions lacking an input).

    Attributes:
        cases: the cases, in manifest order.
        source: the manifest file or BIDS root.
        columns: the input names (CSV columns or BIDS suffixes), in input order.
        modalities: the modality tag of each input column.
        notes: one line per thing left out, for the user to read.
    """

    cases: list[CohortCase]
    source: str
    columns: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_case_name(name: str, where: str) -> str:
    """Return ``name`` if it is a safe folder name, else raise ``ValueError`` naming ``where`` and the fix.

    Examples:
        >>> check_case_name("BraTS-001_ses-1", "cohort.csv:2")
        'BraTS-001_ses-1'
        >>> check_case_name("../etc", "cohort.csv:3")
        Traceback (most recent call last):
        ...
        ValueError: cohort.csv:3: case name '../etc' cannot be a folder name; use letters, digits, ...
    """
    if not _SAFE_NAME.match(name) or name.lower() in _RESERVED_NAMES:
        raise ValueError(
            f"{where}: case name {name!r} cannot be a folder name; use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (at most 200 characters, not 'summary.csv')"
        )
    return name


def _column_modalities(columns: Sequence[str], modalities: Sequence[str] | None, source: str) -> list[str]:
    """Tags per input column: ``modalities`` when given, else the modality a column's name names, else mri."""
    if modalities is not None:
        tags = [str(m).strip().lower() for m in modalities]
        if len(tags) != len(columns):
            raise ValueError(
                f"{source}: {len(tags)} modality tags for {len(columns)} inputs ({', '.join(columns)}); "
                "give one per input, e.g. --modality mri,pet"
            )
        unknown = [t for t in tags if t not in MODALITY_TAGS]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r}; use {', '.join(MODALITY_TAGS)}")
        return tags
    return [guess_modality(column) or "mri" for column in columns]


def read_manifest(path: str | os.PathLike, modalities: Sequence[str] | None = None) -> Manifest:
    """Read a CSV manifest: a header ``case`` then one column per input, one case per row.

    Input paths are relative to the CSV's folder (absolute paths are kept). Blank lines and lines
    starting with ``#`` are skipped. Each input column's modality is ``modalities`` (one tag per input
    column) when given, else the modality its name names (``ct``, ``pet``, ``spect``; ``t1c``, ``flair``,
    ``mri`` ... are MRI), else ``mri``.

    Args:
        path: the CSV file.
        modalities: tags per input column, overriding the column names.

    Returns:
        the :class:`Manifest`; a row with an empty cell gives a case whose :attr:`~CohortCase.problem`
        says so (it is reported as failed, the others run).

    Raises:
        FileNotFoundError: no such file.
        ValueError: no ``case`` column first, fewer than two input columns, a duplicate column, a row
            with another number of cells than the header, a duplicate or unsafe case name, no case.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "cohort.csv").write_text("case,t1c,pet\\np01,p01/t1c.nii.gz,p01/fdg.nii.gz\\n")
        >>> manifest = read_manifest(folder / "cohort.csv")
        >>> case = manifest.cases[0]
        >>> case.name, case.modalities, case.inputs[1].relative_to(folder).as_posix()
        ('p01', ('mri', 'pet'), 'p01/fdg.nii.gz')
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest file")
    base = path.resolve().parent
    with open(path, newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: spreadsheets add a BOM
        lines = [
            (number, row)
            for number, row in enumerate(csv.reader(handle), start=1)
            if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")
        ]
    if not lines:
        raise ValueError(f"{path}: empty manifest; the first line is the header 'case,<input>,<input>...'")
    header_line, header = lines[0]
    header = [c.strip() for c in header]
    if header[0].lower() != "case" or len(header) < 3:
        raise ValueError(
            f"{path}:{header_line}: the header must be 'case' then one column per input (at least two), "
            f"e.g. case,t1c,flair or case,mri,pet; got {','.join(header)!r}"
        )
    columns = header[1:]
    if any(not c for c in columns) or len({c.lower() for c in columns}) != len(columns):
        raise ValueError(f"{path}:{header_line}: input columns must have distinct, non-empty names")
    tags = _column_modalities(columns, modalities, str(path))
    cases, seen = [], {}
    for number, row in lines[1:]:
        where = f"{path.name}:{number}"
        cells = [c.strip() for c in row]
        if len(cells) != len(header):
            raise ValueError(
                f"{path}:{number}: {len(cells)} cells but the header has {len(header)} "
                f"({','.join(header)}); quote paths that contain commas"
            )
        name = check_case_name(cells[0], f"{path}:{number}")
        if name.lower() in seen:  # case-insensitive: the folders must differ on every file system
            raise ValueError(
                f"{path}:{number}: case {name!r} repeats line {seen[name.lower()]}; names must differ"
            )
        seen[name.lower()] = number
        empty = [column for column, cell in zip(columns, cells[1:], strict=True) if not cell]
        problem = f"no {empty[0]} file given in {where}" if empty else ""
        inputs = tuple(base / cell if cell else base for cell in cells[1:])
        cases.append(CohortCase(name, inputs, tuple(tags), where, problem))
    if not cases:
        raise ValueError(f"{path}: no cases below the header")
    return Manifest(cases, str(path), list(columns), tags)


def _bids_entities(file_name: str) -> tuple[dict[str, str], str] | None:
    """``sub-01_ses-2_acq-fast_T1w.nii.gz`` -> ``({"sub": "01", "ses": "2", "acq": "fast"}, "T1w")``;
    ``None`` for a file that is not a NIfTI image named by BIDS entities."""
    suffix = image_suffix(file_name)
    if suffix not in NIFTI_SUFFIXES:
        return None
    parts = file_name[: -len(suffix)].split("_")
    entities = {}
    for part in parts[:-1]:
        key, dash, value = part.partition("-")
        if not dash or not key or not value:
            return None
        entities[key] = value
    return entities, parts[-1]


def _parse_input_spec(spec: str) -> tuple[dict[str, str], str]:
    """``"T1w"`` -> ``({}, "T1w")``; ``"acq-mprage_T1w"`` -> ``({"acq": "mprage"}, "T1w")``."""
    parsed = _bids_entities(spec.strip() + ".nii.gz")
    if parsed is None or not parsed[1].isalnum():  # BIDS suffixes are alphanumeric
        raise ValueError(
            f"BIDS input {spec!r}: give a suffix (T1w, FLAIR, pet), optionally after entities that select "
            "one file, e.g. acq-mprage_T1w or ce-gadolinium_T1w"
        )
    return parsed


def bids_manifest(
    root: str | os.PathLike, inputs: Sequence[str], modalities: Sequence[str] | None = None
) -> Manifest:
    """One case per subject, or per subject and session, of a BIDS tree that has every input.

    The rule (a glob, not pybids): a case is ``ROOT/sub-<label>/`` or, where it has sessions,
    ``ROOT/sub-<label>/ses-<label>/``; its files are the NIfTI images (``.nii.gz`` or ``.nii``) in its
    ``anat/`` and ``pet/`` folders. An input ``T1w`` is the file whose BIDS suffix is ``T1w``; an input
    ``acq-mprage_T1w`` also requires the entity ``acq-mprage`` (use entities to choose between runs or
    acquisitions). The first input is the reference grid. Cases are named ``sub-<label>`` or
    ``sub-<label>_ses-<label>``. Sessions lacking an input are left out (listed in
    :attr:`Manifest.notes`); an input matched by several files makes the case fail with the file names
    and the fix. Modality tags: ``modalities`` when given, else guessed from the suffix (``pet`` -> PET,
    others MRI).

    Args:
        root: the BIDS dataset folder (the one holding ``sub-*``).
        inputs: two or more suffixes, optionally with entities (``["T1w", "FLAIR"]``).
        modalities: tags per input, overriding the guess.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: fewer than two inputs, a malformed input, no ``sub-*`` folder, or no session with
            every input.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such BIDS folder")
    root = root.resolve()
    specs = [s.strip() for s in inputs if s.strip()]
    if len(specs) < 2:
        raise ValueError(
            f"BIDS inputs {','.join(specs)!r}: give two or more suffixes, e.g. --inputs T1w,FLAIR"
        )
    if len({s for s in specs}) != len(specs):
        raise ValueError(f"BIDS inputs {','.join(specs)!r}: each input must be named once")
    parsed = [_parse_input_spec(s) for s in specs]
    tags = _column_modalities(specs, modalities, f"--inputs {','.join(specs)}")
    subjects = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not subjects:
        raise ValueError(f"{root}: no sub-* folders; point --bids at the dataset's root folder")
    cases, notes = [], []
    for subject in subjects:
        sessions = sorted(p for p in subject.glob("ses-*") if p.is_dir()) or [subject]
        for session in sessions:
            label = session.relative_to(root).as_posix()
            name = check_case_name(label.replace("/", "_"), f"{root}: {label}")
            files = [
                (path, entry)
                for datatype in BIDS_DATATYPES
                for path in sorted((session / datatype).glob("*"))
                if path.is_file() and (entry := _bids_entities(path.name)) is not None
            ]
            chosen, missing, problem = [], [], ""
            for spec, (wanted, suffix) in zip(specs, parsed, strict=True):
                matches = [
                    path
                    for path, (entities, file_suffix) in files
                    if file_suffix == suffix and all(entities.get(k) == v for k, v in wanted.items())
                ]
                if not matches:
                    missing.append(spec)
                elif len(matches) > 1 and not problem:
                    problem = (
                        f"{len(matches)} files match {spec} ({', '.join(p.name for p in matches)}); "
                        f"choose one with entities, e.g. --inputs {_example_spec(matches[0], suffix)}"
                    )
                chosen.append(matches[0] if matches else session)
            if missing:
                notes.append(f"{label}: no {', '.join(missing)}")
                continue
            cases.append(CohortCase(name, tuple(chosen), tuple(tags), label, problem))
    if not cases:
        raise ValueError(
            f"{root}: no subject or session has every input ({', '.join(specs)}) under "
            f"sub-*/[ses-*/]{{{','.join(BIDS_DATATYPES)}}}/; check the suffixes (case matters: FLAIR, T1w)"
        )
    return Manifest(cases, str(root), specs, tags, notes)


def _example_spec(path: Path, suffix: str) -> str:
    """An input spec that selects ``path``: its entities other than sub/ses, then the suffix."""
    entities, _ = _bids_entities(path.name) or ({}, suffix)
    extra = [f"{k}-{v}" for k, v in entities.items() if k not in ("sub", "ses")]
    return "_".join([*extra, suffix])

"""Resuming a cohort by content: what a case's outputs were made from, and whether that still holds.

Every finished case has ``DIR/<case>/provenance.json``, written (atomically) *after* its images were
renamed into place, so the file is the case's commit record. It holds the case's *request*: the
SHA-256 of every input file, the modality tags, the model's SHA-256 and the fusion parameters, plus
the SHA-256 of every output. A rerun skips a case when its recorded request equals the new one and
every recorded output is there with its checksum; anything else (an input replaced, another model or
parameter, an output missing, truncated or edited, no provenance) redoes the case. Paths and the
device are recorded but not compared: a moved dataset or an extra GPU does not redo finished cases.
This module needs neither torch nor Dask.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..io import atomic_write, file_sha256

__all__ = [
    "PROVENANCE_NAME",
    "REQUEST_FORMAT",
    "case_request",
    "outputs_match",
    "read_provenance",
    "remove_temporaries",
    "write_provenance",
]

PROVENANCE_NAME = "provenance.json"
#: bump when the meaning of a request changes, so older records are redone rather than trusted
REQUEST_FORMAT = 1
#: the cohort's own output names: only their temporary files are ever removed
OUTPUT_STEMS = ("fused", "stability", "provenance")


def case_request(
    input_sha256: Sequence[str], modalities: Sequence[str], model_sha256: str, parameters: Mapping
) -> dict:
    """The part of a case's provenance a rerun compares: inputs' content, tags, model and parameters.

    Examples:
        >>> request = case_request(["ab", "cd"], ["mri", "pet"], "ef", {"overlap": 0.25})
        >>> request == case_request(["ab", "cd"], ["mri", "pet"], "ef", {"overlap": 0.25})
        True
        >>> request == case_request(["ab", "cd"], ["mri", "pet"], "ef", {"overlap": 0.5})
        False
    """
    request = {
        "format": REQUEST_FORMAT,
        "input_sha256": list(input_sha256),
        "modalities": list(modalities),
        "model_sha256": model_sha256,
        "parameters": dict(parameters),
    }
    # a JSON round trip: tuples become lists, as they will be when read back from the file
    return json.loads(json.dumps(request, sort_keys=True))


def read_provenance(case_dir: str | os.PathLike) -> dict | None:
    """The case's provenance record, or ``None`` when it is absent or unreadable (the case is redone)."""
    path = Path(case_dir) / PROVENANCE_NAME
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def outputs_match(case_dir: str | os.PathLike, record: Mapping) -> bool:
    """Whether every output the record lists is in ``case_dir`` with its recorded size and SHA-256."""
    outputs = record.get("outputs")
    if not isinstance(outputs, Mapping) or "fused" not in outputs:
        return False
    for entry in outputs.values():
        try:
            path = Path(case_dir) / entry["file"]
            if Path(entry["file"]).name != entry["file"]:  # a record pointing elsewhere is not ours
                return False
            if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def write_provenance(case_dir: str | os.PathLike, record: Mapping) -> Path:
    """Write ``provenance.json`` atomically (the case's commit record: written last)."""
    text = json.dumps(record, indent=2, sort_keys=False, default=str)
    return atomic_write(Path(case_dir) / PROVENANCE_NAME, lambda tmp: Path(tmp).write_text(text + "\n"))


def remove_temporaries(case_dir: str | os.PathLike) -> list[Path]:
    """Remove what an interrupted write of the cohort's outputs can leave in ``case_dir``: the hidden
    staging files ``.fused*.part*``, ``.stability*.part*``, ``.provenance.json.*.part*``. Nothing else is
    touched. Returns the removed paths."""
    folder = Path(case_dir)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        name = path.name
        if name.startswith(tuple(f".{stem}" for stem in OUTPUT_STEMS)) and ".part" in name and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed

"""Resume by content, one case at a time: :func:`run_case` outside Dask (its local engine) on small real
crops with a tiny model. A case is skipped only when its inputs' content, model and parameters equal the
recorded ones and its outputs are intact; a failed case replaces nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from core_helpers import leftovers

pytest.importorskip("distributed")

from napari_isfl.cohort.manifest import CohortCase  # noqa: E402
from napari_isfl.cohort.resume import (  # noqa: E402
    case_request,
    outputs_match,
    read_provenance,
    remove_temporaries,
)
from napari_isfl.cohort.settings import CohortSettings  # noqa: E402
from napari_isfl.cohort.worker import error_line, run_case  # noqa: E402


@pytest.fixture
def case(tmp_path: Path, tcga_crop_files: dict[str, Path]) -> CohortCase:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("t1c", "flair"):
        shutil.copy(tcga_crop_files[name], folder / f"{name}.nii.gz")
    return CohortCase("p01", (folder / "t1c.nii.gz", folder / "flair.nii.gz"), ("mri", "mri"), "test")


def _settings(tmp_path: Path, model: Path, **changes) -> CohortSettings:
    return CohortSettings(output_dir=str(tmp_path / "out"), model=str(model), device="cpu", **changes)


def test_done_then_skipped_then_forced(tmp_path: Path, case: CohortCase, tiny_checkpoint_3d: Path) -> None:
    """The first run fuses and writes fused + stability + provenance (inputs' and outputs' checksums,
    model checksum, parameters); the rerun skips it without fusing; ``force`` fuses again."""
    settings = _settings(tmp_path, tiny_checkpoint_3d, stability=True, stability_passes=2)
    first = run_case(case, settings)
    assert first.status == "done", first.error
    folder = tmp_path / "out" / "p01"
    assert sorted(p.name for p in folder.iterdir()) == ["fused.nii.gz", "provenance.json", "stability.nii.gz"]
    assert first.outputs == {"fused": "p01/fused.nii.gz", "stability": "p01/stability.nii.gz"}
    assert first.device == "cpu" and first.model == tiny_checkpoint_3d.name and len(first.model_sha256) == 64
    record = read_provenance(folder)
    assert record["request"]["model_sha256"] == first.model_sha256
    assert record["request"]["parameters"]["stability_passes"] == 2
    assert [i["path"] for i in record["inputs"]] == [str(p) for p in case.inputs]
    assert record["fusion"]["inputs"] == ["t1c.nii.gz", "flair.nii.gz"] and record["spatial_dims"] == 3
    assert outputs_match(folder, record)
    fused = np.asarray(nib.load(folder / "fused.nii.gz").dataobj)
    assert fused.shape == nib.load(case.inputs[0]).shape and fused.dtype == np.float32

    mtime = (folder / "fused.nii.gz").stat().st_mtime_ns
    second = run_case(case, settings)
    assert second.status == "skipped" and second.model_sha256 == first.model_sha256
    assert second.outputs == first.outputs and second.device == "cpu"
    assert (folder / "fused.nii.gz").stat().st_mtime_ns == mtime

    forced = _settings(tmp_path, tiny_checkpoint_3d, stability=True, stability_passes=2, force=True)
    assert run_case(case, forced).status == "done"
    assert leftovers(folder) == []


def test_what_redoes_a_case(tmp_path: Path, case: CohortCase, tiny_checkpoint_3d: Path) -> None:
    """Another parameter, an edited output, an unreadable record or a changed input redo the case; the
    same inputs at another path (a moved dataset) do not."""
    settings = _settings(tmp_path, tiny_checkpoint_3d)
    assert run_case(case, settings).status == "done"
    folder = tmp_path / "out" / "p01"
    assert run_case(case, _settings(tmp_path, tiny_checkpoint_3d, overlap=0.5)).status == "done"
    assert run_case(case, settings).status == "done"  # back to 0.25: the record says 0.5
    assert run_case(case, settings).status == "skipped"

    with open(folder / "fused.nii.gz", "ab") as handle:
        handle.write(b"\0")
    assert run_case(case, settings).status == "done"
    (folder / "provenance.json").write_text("{not json")
    assert run_case(case, settings).status == "done"

    moved = tmp_path / "moved"
    shutil.copytree(case.inputs[0].parent, moved)
    moved_case = CohortCase("p01", tuple(moved / p.name for p in case.inputs), case.modalities)
    assert run_case(moved_case, settings).status == "skipped"

    image = nib.load(moved_case.inputs[1])
    changed = np.asarray(image.dataobj).copy()
    changed[0, 0, 0] += 1
    nib.save(nib.Nifti1Image(changed, image.affine, image.header), moved_case.inputs[1])
    assert run_case(moved_case, settings).status == "done"
    assert leftovers(folder) == []


def test_a_failed_case_replaces_nothing(tmp_path: Path, case: CohortCase, tiny_checkpoint_3d: Path) -> None:
    """A finished case whose input becomes unreadable fails in one line naming the file; its earlier
    outputs and record stay as they were, and no temporary file is left."""
    settings = _settings(tmp_path, tiny_checkpoint_3d)
    assert run_case(case, settings).status == "done"
    folder = tmp_path / "out" / "p01"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    case.inputs[1].write_bytes(b"this is not a NIfTI file")
    outcome = run_case(case, settings)
    assert outcome.status == "failed" and outcome.outputs == {}
    assert str(case.inputs[1]) in outcome.error and "\n" not in outcome.error
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    missing = CohortCase("p02", (case.inputs[0], tmp_path / "absent.nii.gz"), case.modalities)
    outcome = run_case(missing, settings)
    assert outcome.status == "failed" and outcome.error == f"{tmp_path / 'absent.nii.gz'}: no such file"
    assert not (tmp_path / "out" / "p02").exists()
    problem = CohortCase("p03", case.inputs, case.modalities, problem="no flair file given in c.csv:4")
    assert run_case(problem, settings).error == "no flair file given in c.csv:4"


def test_rerun_without_stability_removes_the_stale_map(
    tmp_path: Path, case: CohortCase, tiny_checkpoint_3d: Path
) -> None:
    with_map = _settings(tmp_path, tiny_checkpoint_3d, stability=True, stability_passes=2)
    assert run_case(case, with_map).status == "done"
    outcome = run_case(case, _settings(tmp_path, tiny_checkpoint_3d))
    assert outcome.status == "done" and "stability" not in outcome.outputs
    folder = tmp_path / "out" / "p01"
    assert sorted(p.name for p in folder.iterdir()) == ["fused.nii.gz", "provenance.json"]
    assert list(json.loads((folder / "provenance.json").read_text())["outputs"]) == ["fused"]


def test_requests_records_and_temporaries(tmp_path: Path) -> None:
    """Requests compare as JSON (tuples = lists); a record's outputs must be plain names in the folder
    with their size and checksum; only the cohort's own staging files are removed."""
    assert case_request(("a",), ("mri",), "m", {"roi_size": (8, 8)}) == case_request(
        ["a"], ["mri"], "m", {"roi_size": [8, 8]}
    )
    (tmp_path / "fused.nii.gz").write_bytes(b"abc")
    entry = {"file": "fused.nii.gz", "bytes": 3, "sha256": __import__("hashlib").sha256(b"abc").hexdigest()}
    assert outputs_match(tmp_path, {"outputs": {"fused": entry}})
    assert not outputs_match(tmp_path, {"outputs": {"fused": {**entry, "bytes": 4}}})
    assert not outputs_match(tmp_path, {"outputs": {"fused": {**entry, "file": "../fused.nii.gz"}}})
    assert not outputs_match(tmp_path, {"outputs": {}}) and not outputs_match(tmp_path, {})
    assert read_provenance(tmp_path) is None
    staged = [".fused.nii.gz.x.part.nii.gz", ".stability.nii.gz.y.part.nii.gz", ".provenance.json.z.part"]
    kept = [".other.part", "notes.part.txt", ".fused-notes"]
    for name in staged + kept:
        (tmp_path / name).write_bytes(b"")
    assert sorted(p.name for p in remove_temporaries(tmp_path)) == sorted(staged)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".", "notes"))) == sorted(kept)
    assert remove_temporaries(tmp_path / "absent") == []


def test_error_lines() -> None:
    assert error_line(ValueError("a.nii: bad\nmore")) == "a.nii: bad"
    assert error_line(KeyError("x")) == "KeyError: 'x'"
    assert error_line(RuntimeError()) == "RuntimeError"


def test_each_worker_picks_its_device(monkeypatch) -> None:
    """auto/cuda: local worker i on cuda:(i mod count) with several GPUs, the one visible GPU otherwise
    (a SLURM or Kubernetes worker named by a string), CPU for auto without CUDA; explicit names kept."""
    import torch

    from napari_isfl.cohort.run import _visible_gpus
    from napari_isfl.cohort.worker import worker_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [worker_device("auto", i) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert worker_device("cuda", "SLURMCluster-3") == "cuda" and worker_device("cuda:2", 0) == "cuda:2"
    assert worker_device("cpu", 1) == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_device("auto", 5) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert worker_device("auto", 0) == "cpu" and worker_device("cuda", 0) == "cuda"
    assert _visible_gpus("cpu") == 0 and _visible_gpus("cuda:1") == 1


def test_a_2d_case_of_png_images(tmp_path: Path, tiny_checkpoint_2d: Path) -> None:
    """PNG inputs give a PNG fused image (and stability map), then a skip on the rerun."""
    from PIL import Image

    from core_helpers import phantom

    paths = []
    for index in range(2):
        path = tmp_path / f"slice_{index}.png"
        Image.fromarray((255 * phantom((40, 48), seed=index)).astype(np.uint8)).save(path)
        paths.append(path)
    case = CohortCase("s01", tuple(paths), ("mri", "mri"))
    settings = _settings(tmp_path, tiny_checkpoint_2d, stability=True, stability_passes=2)
    outcome = run_case(case, settings)
    assert outcome.status == "done", outcome.error
    assert outcome.outputs == {"fused": "s01/fused.png", "stability": "s01/stability.png"}
    with Image.open(tmp_path / "out" / "s01" / "fused.png") as fused:
        assert fused.size == (48, 40)
    assert run_case(case, settings).status == "skipped"

"""Never lose a user's data: every class of bad input, aliased path and failed write, through ``isfl fuse``.

Each row of the table sets up one hostile case next to an existing output and asserts the contract: exit
status 1, one stderr line naming the offending file, every existing file byte for byte as it was, and no
temporary file left. Signals (SIGTERM, SIGINT) during compute and during the write run in subprocesses.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from core_helpers import OBLIQUE_AFFINE, default_sigint, leftovers, phantom_stack, save_tiny_checkpoint
from napari_isfl.cli import main

SHAPE = (17, 22, 13)


@pytest.fixture(scope="module")
def model3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny3d.pt", 3)


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray = OBLIQUE_AFFINE, **kwargs) -> Path:
    image = nib.Nifti1Image(array, affine, **kwargs)
    nib.save(image, path)
    return path


@pytest.fixture
def case(tmp_path: Path) -> dict[str, Path]:
    """Two co-registered int16 volumes, an existing output and an existing stability map."""
    t1, flair = (np.rint(a * 1000).astype(np.int16) for a in phantom_stack(SHAPE, 2, seed=3))
    files = {"t1": _nifti(tmp_path / "t1.nii.gz", t1), "flair": _nifti(tmp_path / "flair.nii.gz", flair)}
    files["out"] = tmp_path / "fused.nii.gz"
    files["out"].write_bytes(b"an earlier fusion")
    files["stability"] = tmp_path / "stability.nii.gz"
    files["stability"].write_bytes(b"an earlier stability map")
    return files


def _with_header(path: Path, edit: Callable[[nib.Nifti1Header], None]) -> Path:
    """The same volume with a hostile header: ``edit`` changes header fields that nibabel then writes as
    they are (no affine given, so nothing is recomputed)."""
    image = nib.load(path)
    header = image.header.copy()
    edit(header)
    out = path.with_name("hostile_" + path.name)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), None, header), out)
    return out


def _nan_affine(files: dict[str, Path], tmp: Path) -> Path:
    def edit(header):
        header["srow_x"] = [np.nan, 0, 0, 0]
        header["sform_code"] = 1

    return _with_header(files["flair"], edit)


def _zero_affine(files: dict[str, Path], tmp: Path) -> Path:
    def edit(header):
        for row in ("srow_x", "srow_y", "srow_z"):
            header[row] = [0, 0, 0, 0]
        header["sform_code"] = 1

    return _with_header(files["flair"], edit)


def _checkpoint(tmp: Path, model: Path, edit: Callable[[dict], None]) -> Path:
    payload = torch.load(model, weights_only=True)
    edit(payload)
    path = tmp / "edited.pt"
    torch.save(payload, path)
    return path


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@dataclass
class Row:
    """One hostile case: ``argv(files, tmp, model)`` -> (arguments, the path the message must name)."""

    name: str
    argv: Callable[[dict, Path, Path], tuple[list, Path]]
    message: str


def _edit_features(value):
    def edit(payload):
        payload["arch_args"]["features"] = value

    return edit


ROWS = [
    Row("output-is-input", lambda f, t, m: ([f["t1"], f["flair"], "-o", f["t1"]], f["t1"]), "is the input"),
    Row(
        "stability-is-input",
        lambda f, t, m: ([f["t1"], f["flair"], "-o", f["out"], "--stability", f["flair"]], f["flair"]),
        "is the input",
    ),
    Row(
        "provenance-is-output",
        lambda f, t, m: ([f["t1"], f["flair"], "-o", f["out"], "--provenance", f["out"]], f["out"]),
        "same file",
    ),
    Row(
        "stability-is-output-spelled-differently",
        lambda f, t, m: (
            [f["t1"], f["flair"], "-o", f["out"], "--stability", t / "." / ".." / t.name / f["out"].name],
            f["out"],
        ),
        "same file",
    ),
    Row(
        "provenance-folder-cannot-be-made",
        lambda f, t, m: (
            [f["t1"], f["flair"], "-o", f["out"], "--provenance", f["t1"] / "sub" / "p.json"],
            f["t1"],
        ),
        "cannot create the folder",
    ),
    Row(
        "output-is-a-folder",
        lambda f, t, m: ([f["t1"], f["flair"], "-o", t / "results"], t / "results"),
        "is a folder",
    ),
    Row(
        "input-is-a-folder",
        lambda f, t, m: ([t / "results", f["flair"], "-o", f["out"]], t / "results"),
        "is a folder",
    ),
    Row(
        "missing-input",
        lambda f, t, m: ([f["t1"], t / "nope.nii.gz", "-o", f["out"]], t / "nope.nii.gz"),
        "no such file",
    ),
    Row(
        "unsupported-output-type",
        lambda f, t, m: ([f["t1"], f["flair"], "-o", t / "fused.xyz"], t / "fused.xyz"),
        "unsupported output type",
    ),
    Row(
        "nan-affine",
        lambda f, t, m: ([f["t1"], _nan_affine(f, t), "-o", f["out"]], t / "hostile_flair.nii.gz"),
        "NaN or Inf",
    ),
    Row(
        "zero-affine-with-resample",
        lambda f, t, m: (
            [f["t1"], _zero_affine(f, t), "-o", f["out"], "--resample"],
            t / "hostile_flair.nii.gz",
        ),
        "singular",
    ),
    Row(
        "huge-float64-values",
        lambda f, t, m: (
            [f["t1"], _nifti(t / "huge.nii.gz", np.full(SHAPE, 1e300) * np.arange(2).sum()), "-o", f["out"]],
            t / "huge.nii.gz",
        ),
        "too large to normalise",
    ),
    Row(
        "rgb-nifti",
        lambda f, t, m: (
            [
                f["t1"],
                _nifti(
                    t / "rgb.nii.gz",
                    np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]),
                ),
                "-o",
                f["out"],
            ],
            t / "rgb.nii.gz",
        ),
        "RGB NIfTI",
    ),
    Row(
        "malicious-pickle-checkpoint",
        lambda f, t, m: (
            [f["t1"], f["flair"], "-o", f["out"], "--model", _malicious(t)],
            t / "evil.pt",
        ),
        "safe loading",
    ),
    Row(
        "checkpoint-unknown-normalisation-key",
        lambda f, t, m: (
            [f["t1"], f["flair"], "-o", f["out"], "--model", _checkpoint(t, m, _unknown_norm)],
            t / "edited.pt",
        ),
        "field normalization.mri",
    ),
    Row(
        "checkpoint-training-not-a-mapping",
        lambda f, t, m: (
            [f["t1"], f["flair"], "-o", f["out"], "--model", _checkpoint(t, m, _bad_training)],
            t / "edited.pt",
        ),
        "field training",
    ),
    Row(
        "checkpoint-fractional-features",
        lambda f, t, m: (
            [f["t1"], f["flair"], "-o", f["out"], "--model", _checkpoint(t, m, _edit_features([4.5, 8, 8]))],
            t / "edited.pt",
        ),
        "field arch_args.features",
    ),
    Row(
        "checkpoint-absurd-features",
        lambda f, t, m: (
            [
                f["t1"],
                f["flair"],
                "-o",
                f["out"],
                "--model",
                _checkpoint(t, m, _edit_features([100000, 8, 8])),
            ],
            t / "edited.pt",
        ),
        "field arch_args.features",
    ),
]


def _malicious(tmp: Path) -> Path:
    path = tmp / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump(
            {"format": "napari-isfl-checkpoint", "x": _Exploit(tmp / "pwned.txt")}, handle, protocol=2
        )
    return path


def _unknown_norm(payload: dict) -> None:
    payload["normalization"]["mri"] = {"method": "percentile", "low": 1, "high": 99, "gamma": 2}


def _bad_training(payload: dict) -> None:
    payload["training"] = ["not", "a", "mapping"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_bad_input_is_one_line_and_changes_nothing(row: Row, case, tmp_path, model3d, capsys) -> None:
    (tmp_path / "results").mkdir()
    args, named = row.argv(case, tmp_path, model3d)
    if "--model" not in map(str, args):
        args += ["--model", model3d]
    before = _snapshot(tmp_path)
    status = main(["fuse", *map(str, args), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1 and len(lines) == 1, err
    assert lines[0].startswith("isfl fuse: error: ") and row.message in lines[0], lines[0]
    assert str(named) in lines[0] or named.name in lines[0], lines[0]
    assert "weights_only=False" not in lines[0] and "np.float64" not in lines[0]
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing replaced
    assert leftovers(tmp_path) == [] and not (tmp_path / "pwned.txt").exists()


def test_full_disk_is_refused_before_any_compute(case, tmp_path, model3d, capsys, monkeypatch) -> None:
    import napari_isfl.outputs as outputs

    monkeypatch.setattr(outputs, "free_bytes", lambda path: 1000)
    started = time.perf_counter()
    status = main(["fuse", str(case["t1"]), str(case["flair"]), "-o", str(tmp_path / "new.nii.gz"),
                   "--model", str(model3d), "--device", "cpu", "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1 and "not enough disk space" in err and str(tmp_path) in err, err
    assert not (tmp_path / "new.nii.gz").exists() and leftovers(tmp_path) == []
    assert time.perf_counter() - started < 60  # sanity only: no fusion ran (a fusion here takes seconds)


def test_unwritable_folder_is_refused_before_any_compute(
    case, tmp_path, model3d, capsys, monkeypatch
) -> None:
    """(Simulated: the tests run as root, for whom every folder is writable.)"""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    status = main(["fuse", str(case["t1"]), str(case["flair"]), "-o", str(locked / "f.nii.gz"),
                   "--model", str(model3d), "--device", "cpu", "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1 and "not writable" in err and str(locked) in err, err
    assert list(locked.iterdir()) == []


def test_disk_full_while_writing_names_the_output_and_replaces_nothing(
    case, tmp_path, model3d, capsys, monkeypatch
) -> None:
    import napari_isfl.inference.files as files_module

    real_writer = files_module.image_writer

    def full_disk_writer(path, *args, **kwargs):
        write = real_writer(path, *args, **kwargs)

        def fail(tmp):
            write(tmp)
            raise OSError(28, "No space left on device")

        return fail

    monkeypatch.setattr(files_module, "image_writer", full_disk_writer)
    before = _snapshot(tmp_path)
    status = main(["fuse", str(case["t1"]), str(case["flair"]), "-o", str(case["out"]), "--stability",
                   str(case["stability"]), "--model", str(model3d), "--device", "cpu", "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1 and f"could not write {case['out']}: No space left on device" in err, err
    assert _snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_success_writes_every_output_together(case, tmp_path, model3d, capsys) -> None:
    provenance = tmp_path / "run" / "provenance.json"
    status = main(["fuse", str(case["t1"]), str(case["flair"]), "-o", str(case["out"]), "--stability",
                   str(case["stability"]), "--provenance", str(provenance), "--model", str(model3d),
                   "--device", "cpu", "-q"])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    assert nib.load(case["out"]).shape == SHAPE and nib.load(case["stability"]).shape == SHAPE
    import json

    record = json.loads(provenance.read_text())
    assert record["outputs"]["fused"] == str(case["out"]) and record["model_sha256"]
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------------------
# signals, in a subprocess
# ------------------------------------------------------------------------------------------------------

DRIVER = """
import sys, time
import napari_isfl.inference.files as files
from napari_isfl.cli import main

real = files.image_writer
def slow_writer(path, *args, **kwargs):
    write = real(path, *args, **kwargs)
    def staged(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"partial")
        print("WRITING", flush=True)
        time.sleep(60)
        write(tmp)
    return staged
if sys.argv[1] == "writing":
    files.image_writer = slow_writer
sys.exit(main(sys.argv[2:]))
"""


def _run_until(args: list[str], phase: str, sig: int, tmp: Path) -> tuple[int, str]:
    """Start the driver, wait for ``phase`` (COMPUTING: the first window batch; WRITING), send ``sig``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, phase.lower(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 240
    if phase == "WRITING":
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line or line.strip() == "WRITING":  # not line: the driver ended before writing
                break
    else:  # the progress line shows the first window batch is done: compute is under way
        seen = ""
        while "window batch 1/" not in seen and time.monotonic() < deadline:
            char = process.stderr.read(1)
            if not char:
                break
            seen += char
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["COMPUTING", "WRITING"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_leave_no_partial_file_and_replace_nothing(phase, sig, tmp_path, model3d) -> None:
    big = phantom_stack((96, 96, 64), 2, seed=4)
    inputs = [_nifti(tmp_path / f"in{i}.nii.gz", (a * 1000).astype(np.int16)) for i, a in enumerate(big)]
    out = tmp_path / "fused.nii.gz"
    out.write_bytes(b"an earlier fusion")
    args = ["fuse", str(inputs[0]), str(inputs[1]), "-o", str(out), "--stability", str(tmp_path / "s.nii.gz"),
            "--model", str(model3d), "--device", "cpu", "--patch-size", "16"]  # fmt: skip
    status, err = _run_until(args, phase, sig, tmp_path)
    expected = 143 if sig == signal.SIGTERM else 130
    assert status == expected, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("isfl: terminated" if sig == signal.SIGTERM else "isfl: cancelled"), err
    assert out.read_bytes() == b"an earlier fusion" and not (tmp_path / "s.nii.gz").exists()
    assert leftovers(tmp_path) == []


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    case, model3d, capsys, monkeypatch
) -> None:
    import napari_isfl.inference.files as files_module

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(files_module, "check_coregistration", broken)
    args = ["fuse", str(case["t1"]), str(case["flair"]), "-o", str(case["out"]) + ".new.nii.gz",
            "--model", str(model3d), "--device", "cpu", "-q"]  # fmt: skip
    assert main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["isfl fuse: error: KeyError: 'a bug' (isfl --debug ... shows the traceback)"]
    assert main(["--debug", *args]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "raise KeyError" in err

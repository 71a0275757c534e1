"""``isfl fuse`` and ``fuse_files``: outputs per file type, exit codes with one-line reasons, and no
half-written or replaced output when a run fails."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from core_helpers import OBLIQUE_AFFINE, leftovers, phantom, phantom_stack, save_tiny_checkpoint, write_nifti
from napari_isfl.cli import main
from napari_isfl.inference import fuse_files
from napari_isfl.spatial import CoregistrationError

SHAPE_PNG = (37, 50)
SHAPE_NII = (17, 22, 13)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {d: save_tiny_checkpoint(folder / f"tiny{d}d.pt", d) for d in (2, 3)}


@pytest.fixture
def pngs(tmp_path: Path) -> list[Path]:
    """A grey MRI and a grey CT slice (8-bit PNG)."""
    paths = []
    for name, image in zip(("mri.png", "ct.png"), phantom_stack(SHAPE_PNG, 2, seed=1), strict=True):
        Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


@pytest.fixture
def niftis(tmp_path: Path) -> list[Path]:
    """T1 and FLAIR volumes (int16) on one oblique grid, the first with distinct qform/sform codes."""
    paths = []
    for name, image in zip(("t1.nii.gz", "flair.nii.gz"), phantom_stack(SHAPE_NII, 2, seed=2), strict=True):
        nifti = nib.Nifti1Image(np.rint(image * 1200).astype(np.int16), OBLIQUE_AFFINE)
        nifti.header.set_qform(OBLIQUE_AFFINE, code=1)
        nifti.header.set_sform(OBLIQUE_AFFINE, code=2)
        nib.save(nifti, tmp_path / name)
        paths.append(tmp_path / name)
    return paths


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str]:
    """``isfl fuse ARGS`` in-process; returns the exit status and stderr."""
    status = main(["fuse", *map(str, args), "--device", "cpu"])
    return status, capsys.readouterr().err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    """Exit status 1 and, apart from progress updates, exactly one stderr line: the reason."""
    assert status == 1, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line and not line.startswith("fusing:")]
    assert len(lines) == 1 and lines[0].startswith("isfl fuse: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_png_in_8bit_png_out(capsys, tmp_path: Path, pngs: list[Path], models) -> None:
    """PNG inputs give an 8-bit grey PNG of the same size; exit 0 and a summary line on stderr."""
    status, err = run_cli(capsys, *pngs, "-o", tmp_path / "fused.png", "--model", models[2])
    assert status == 0, err
    assert "wrote" in err and "fused.png" in err
    with Image.open(tmp_path / "fused.png") as image:
        assert image.mode == "L" and image.size == (SHAPE_PNG[1], SHAPE_PNG[0])
        assert np.ptp(np.asarray(image)) > 0
    assert leftovers(tmp_path) == []


def test_nifti_in_float32_nifti_out(capsys, tmp_path: Path, niftis: list[Path], models) -> None:
    """NIfTI inputs give float32 NIfTI in [0, 1] with the first input's affine and s/qform codes;
    ``--provenance`` records the run."""
    out = tmp_path / "fused.nii.gz"
    status, err = run_cli(capsys, *niftis, "-o", out, "--model", models[3], "-q",
                          "--provenance", tmp_path / "run.json")  # fmt: skip
    assert status == 0 and err == ""
    image = nib.load(out)
    data = np.asarray(image.dataobj)
    assert image.shape == SHAPE_NII and data.dtype == np.float32
    assert data.min() >= 0 and data.max() <= 1 and np.isfinite(data).all()
    np.testing.assert_allclose(image.affine, OBLIQUE_AFFINE, atol=1e-5)
    assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 2
    provenance = json.loads((tmp_path / "run.json").read_text())
    assert provenance["inputs"] == ["t1.nii.gz", "flair.nii.gz"] and provenance["modalities"] == [
        "mri",
        "mri",
    ]


def test_stability_output(capsys, tmp_path: Path, niftis: list[Path], pngs: list[Path], models) -> None:
    """``--stability`` writes a second file: NIfTI with the raw (non-negative) map, PNG scaled to 8 bits."""
    status, err = run_cli(capsys, *niftis, "-o", tmp_path / "f.nii.gz", "--stability", tmp_path / "s.nii.gz",
                          "--model", models[3])  # fmt: skip
    assert status == 0, err and "s.nii.gz" in err
    stability = nib.load(tmp_path / "s.nii.gz")
    assert stability.shape == SHAPE_NII and np.asarray(stability.dataobj).min() >= 0
    np.testing.assert_allclose(stability.affine, OBLIQUE_AFFINE, atol=1e-5)
    (tmp_path / "plain").write_bytes(b"")  # staged files end with the permissions open() gives
    for written in ("f.nii.gz", "s.nii.gz"):
        assert (tmp_path / written).stat().st_mode == (tmp_path / "plain").stat().st_mode
    status, err = run_cli(capsys, *pngs, "-o", tmp_path / "f.png", "--stability", tmp_path / "s.png",
                          "--model", models[2])  # fmt: skip
    assert status == 0, err
    with Image.open(tmp_path / "s.png") as image:
        assert image.mode == "L" and np.asarray(image).max() == 255  # scaled to its peak


def test_colour_input_gives_colour_output(capsys, tmp_path: Path, pngs: list[Path], models) -> None:
    """A pseudo-colour (RGB) input: the fused luminance gets its colour back (RGB PNG); --grey gives L."""
    from matplotlib import colormaps

    rgb = (colormaps["hot"](phantom(SHAPE_PNG, 3))[..., :3] * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "spect.png")
    status, err = run_cli(
        capsys, pngs[0], tmp_path / "spect.png", "-o", tmp_path / "c.png", "--model", models[2]
    )
    assert status == 0, err
    with Image.open(tmp_path / "c.png") as image:
        assert image.mode == "RGB"
    status, err = run_cli(capsys, pngs[0], tmp_path / "spect.png", "-o", tmp_path / "g.png", "--grey",
                          "--model", models[2])  # fmt: skip
    assert status == 0, err
    with Image.open(tmp_path / "g.png") as image:
        assert image.mode == "L"


def test_modality_count_mismatch(capsys, tmp_path: Path, pngs: list[Path], models) -> None:
    """``--modality`` must give one tag per input."""
    status, err = run_cli(capsys, *pngs, "-o", tmp_path / "o.png", "--model", models[2], "--modality", "mri")
    assert_one_line_error(status, err, "--modality lists 1 tags for 2 inputs", "mri,pet")
    assert not (tmp_path / "o.png").exists()


def _shifted_copy(path: Path, folder: Path) -> Path:
    """The same volume on a grid shifted by 3 mm (not co-registered with the original grid)."""
    image = nib.load(path)
    affine = image.affine.copy()
    affine[:3, 3] += 3.0
    return write_nifti(folder / "shifted_flair.nii.gz", np.asarray(image.dataobj), affine)


def test_different_grids_need_resample(capsys, tmp_path: Path, niftis: list[Path], models) -> None:
    """Inputs on different grids are refused (CLI and fuse_files) naming the file and ``--resample``;
    with ``--resample`` they are fused on the first input's grid."""
    moved = _shifted_copy(niftis[1], tmp_path)
    out = tmp_path / "o.nii.gz"
    status, err = run_cli(capsys, niftis[0], moved, "-o", out, "--model", models[3])
    assert_one_line_error(
        status, err, "shifted_flair.nii.gz is not on the voxel grid of t1.nii.gz (origin", "--resample"
    )
    assert not out.exists()
    with pytest.raises(CoregistrationError, match=r"shifted_flair\.nii\.gz .*resample"):
        fuse_files([niftis[0], moved], out, model=models[3], device="cpu")
    status, err = run_cli(capsys, niftis[0], moved, "-o", out, "--model", models[3], "--resample")
    assert status == 0, err
    np.testing.assert_allclose(nib.load(out).affine, OBLIQUE_AFFINE, atol=1e-5)
    result = fuse_files(
        [niftis[0], moved], tmp_path / "api.nii.gz", model=models[3], device="cpu", resample=True
    )
    assert result.provenance["resampled"] is True and result.fused.shape == SHAPE_NII


def test_bad_inputs_one_line_errors(
    capsys, tmp_path: Path, pngs: list[Path], niftis: list[Path], models
) -> None:
    """Each bad input exits 1 with one line naming the input and the fix, and writes nothing."""
    out = tmp_path / "o.png"
    four_d = write_nifti(tmp_path / "dwi.nii.gz", np.ones((17, 22, 13, 3), np.int16), OBLIQUE_AFFINE)
    nan = phantom(SHAPE_PNG, 5)
    nan[3, 4] = np.nan
    import tifffile

    tifffile.imwrite(tmp_path / "nan.tif", nan)
    tifffile.imwrite(tmp_path / "flat.tif", np.full(SHAPE_PNG, 3.0, np.float32))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    cases = [
        ((pngs[0],), ("at least two inputs, got 1",)),
        ((pngs[0], tmp_path / "missing.png"), ("missing.png: no such file",)),
        ((pngs[0], tmp_path / "junk.png"), ("junk.png: could not be read as .png",)),
        ((niftis[0], four_d), ("dwi.nii.gz: 4D volume", "extract one")),
        ((pngs[0], tmp_path / "nan.tif"), ("nan.tif: contains 1 NaN/Inf voxels", "nan_to_num")),
        ((pngs[0], tmp_path / "flat.tif"), ("flat.tif: the image is constant",)),
    ]
    for inputs, fragments in cases:
        model = models[3] if inputs[0] == niftis[0] else models[2]
        status, err = run_cli(capsys, *inputs, "-o", out, "--model", model)
        assert_one_line_error(status, err, *fragments)
    assert not out.exists() and leftovers(tmp_path) == []


def test_bad_checkpoints(capsys, tmp_path: Path, pngs: list[Path], models) -> None:
    """Corrupt, foreign and wrong-architecture checkpoints exit 1 with one line naming the file."""
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(models[2].read_bytes()[:2000])
    text = tmp_path / "readme.pt"
    text.write_text("not weights")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.ones(2), tensor)
    unet = tmp_path / "unet.pt"
    payload = torch.load(models[2], weights_only=True)
    torch.save({**payload, "architecture": "UNet"}, unet)
    cases = {
        truncated: "not a readable napari-isfl checkpoint",
        text: "not a readable napari-isfl checkpoint",
        tensor: "not a napari-isfl checkpoint",
        unet: "holds architecture 'UNet'",
        models[3]: "is a 3D model but the input is 2D",
        tmp_path / "absent.pt": "absent.pt: no such file",
    }
    for checkpoint, fragment in cases.items():
        status, err = run_cli(capsys, *pngs, "-o", tmp_path / "o.png", "--model", checkpoint)
        assert_one_line_error(status, err, fragment, checkpoint.name)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--stability", "{dir}/s.xyz"], "unsupported output type '.xyz'"),
        (["--stability", "{dir}/s.png"], "a 3D result cannot be written as .png"),
        (["--patch-size", "big"], "patch size must be 'auto'"),
        (["--modality", "mri,xray"], "modality 'xray' is not supported"),
        (["--overlap", "1.5"], "overlap must lie in [0, 1)"),
    ],
    ids=["stability-suffix", "stability-3d-png", "patch-size", "unknown-tag", "overlap"],
)
def test_failed_run_keeps_existing_output(
    capsys, tmp_path: Path, niftis: list[Path], models, extra: list[str], fragment: str
) -> None:
    """A run that fails, at any stage, leaves an existing output (and stability file) byte for byte and
    no temporary file in the folder."""
    out, previous = tmp_path / "fused.nii.gz", b"the previous result"
    out.write_bytes(previous)
    extra = [e.format(dir=tmp_path) for e in extra]
    status, err = run_cli(capsys, *niftis, "-o", out, "--model", models[3], *extra)
    assert_one_line_error(status, err, fragment)
    assert out.read_bytes() == previous
    assert leftovers(tmp_path) == []
    assert not any(p.name.startswith("s.") for p in tmp_path.iterdir())


def test_no_overwrite(capsys, tmp_path: Path, pngs: list[Path], models) -> None:
    """``--no-overwrite`` refuses an existing output before any work."""
    out = tmp_path / "o.png"
    out.write_bytes(b"keep me")
    status, err = run_cli(capsys, *pngs, "-o", out, "--model", models[2], "--no-overwrite")
    assert_one_line_error(status, err, "o.png exists")
    assert out.read_bytes() == b"keep me"


def test_failed_stability_write_replaces_neither_file(
    monkeypatch, tmp_path: Path, pngs: list[Path], models
) -> None:
    """The fused image and the stability map are renamed into place together: a failure while writing
    the second leaves both old files as they were and no staged file behind."""
    import napari_isfl.inference.files as io_module  # where fuse_files looks the writer up

    out, stability = tmp_path / "o.png", tmp_path / "s.png"
    out.write_bytes(b"old fused")
    stability.write_bytes(b"old stability")
    real_writer, calls = io_module.image_writer, []

    def failing_second_writer(path, *args, **kwargs):
        calls.append(path)
        write = real_writer(path, *args, **kwargs)
        if len(calls) < 2:
            return write

        def fail(tmp):
            write(tmp)  # the staged file exists, partly written
            raise OSError("disk full")

        return fail

    monkeypatch.setattr(io_module, "image_writer", failing_second_writer)
    with pytest.raises(OSError, match="disk full"):
        fuse_files(pngs, out, stability_output=stability, model=models[2], device="cpu")
    assert out.read_bytes() == b"old fused" and stability.read_bytes() == b"old stability"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name, stability.name, *(p.name for p in pngs)]
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_absent(capsys, tmp_path: Path, pngs: list[Path], models) -> None:
    """``--device cuda`` without CUDA is a one-line error naming the fix."""
    status = main(["fuse", *map(str, pngs), "-o", str(tmp_path / "o.png"), "--model", str(models[2]),
                   "--device", "cuda"])  # fmt: skip
    assert_one_line_error(status, capsys.readouterr().err, "CUDA is not available", "--device cpu")


def test_usage_errors_exit_2(capsys) -> None:
    """Missing arguments are argparse usage errors (exit 2)."""
    with pytest.raises(SystemExit) as info:
        main(["fuse", "a.png", "b.png"])
    assert info.value.code == 2
    assert "-o/--output" in capsys.readouterr().err


@pytest.mark.slow
def test_end_to_end_subprocess(tmp_path: Path, pngs: list[Path], models) -> None:
    """The installed ``isfl`` entry point, as a user runs it: exit 0 and a PNG; a bad run exits 1 with a
    one-line reason and no traceback."""
    command = [sys.executable, "-c", "import sys; from napari_isfl.cli import main; sys.exit(main())"]
    ok = subprocess.run(
        [*command, "fuse", *map(str, pngs), "-o", str(tmp_path / "o.png"), "--model", str(models[2]),
         "--device", "cpu", "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o.png").is_file()
    bad = subprocess.run(
        [*command, "fuse", str(pngs[0]), str(tmp_path / "nope.png"), "-o", str(tmp_path / "x.png"),
         "--model", str(models[2])],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == f"isfl fuse: error: {tmp_path / 'nope.png'}: no such file"


def test_evaluate_writes_tables_and_honours_the_window(capsys, tmp_path: Path, models) -> None:
    """``isfl evaluate`` on a Harvard-layout folder: CSV and Markdown tables for every method; a
    sliding-window size changes ISFL's numbers only."""
    for index in range(2):
        for modality, image in zip(("MRI", "CT"), phantom_stack(SHAPE_PNG, 2, seed=index), strict=True):
            folder = tmp_path / "data" / "CT-MRI" / modality
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(folder / f"{index}.png")
    tables = {}
    for name, window in (("whole", []), ("windowed", ["--patch-size", "16", "--overlap", "0.5"])):
        out = tmp_path / name
        args = ["evaluate", str(tmp_path / "data"), "--method", "isfl,dwt", "--model", str(models[2])]
        assert main(args + ["--output", str(out), "-q", *window]) == 0
        capsys.readouterr()
        assert (out / "metrics.csv").exists() and (out / "summary.md").exists()
        with open(out / "summary.csv") as handle:
            tables[name] = {(r["task"], r["method"]): r for r in csv.DictReader(handle)}
    assert "16 windows" in (tmp_path / "windowed" / "summary.md").read_text()
    whole, windowed = tables["whole"], tables["windowed"]
    assert whole[("CT-MRI", "isfl")]["cases"] == "2"
    assert whole[("CT-MRI", "dwt")]["SSIM"] == windowed[("CT-MRI", "dwt")]["SSIM"]
    assert whole[("CT-MRI", "isfl")]["SSIM"] != windowed[("CT-MRI", "isfl")]["SSIM"]
    assert main(["evaluate", str(tmp_path / "data"), "--patch-size", "big", "-q"]) != 0

"""The robustness benchmark (napari_isfl.evaluation.robustness): end to end in 2D and 3D on tiny
synthetic data, level-0 rows against the clean rows, the regions of the truncation and dropout
measures, and the command line's argument checks."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from core_helpers import phantom_stack, save_tiny_checkpoint
from napari_isfl.cases import Case
from napari_isfl.cli import main
from napari_isfl.evaluation.evaluate import STANDARD_METRICS
from napari_isfl.evaluation.metrics import psnr, structural_similarity, to_uint8_scale
from napari_isfl.evaluation.perturbations import PERTURBATIONS, perturb_with_mask
from napari_isfl.evaluation.robustness.options import (
    DEFAULT_CASES,
    DEFAULT_CROP_3D,
    QUICK_FAMILIES,
    RobustnessOptions,
    add_arguments,
    options_from_args,
)
from napari_isfl.evaluation.robustness.report import (
    pooled_psnr,
    report_from_csv,
    summarize_robustness,
    write_outputs,
)
from napari_isfl.evaluation.robustness.run import (
    crop_stack,
    run_robustness,
    score_fusion,
    select_cases,
    slab_boxes,
)
from napari_isfl.evaluation.scores import fusion_metrics

SHAPE_2D = (40, 36)
SHAPE_3D = (20, 18, 16)
#: the per-row measures that are compared between level-0 rows and clean rows
SCORED = (*STANDARD_METRICS, "fid_ssim", "fid_psnr")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread: on a busy two-core machine two OpenMP threads spin-wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny calibrated checkpoints: two different 2D ones (isfl, isfl-noiv) and one 3D."""
    folder = tmp_path_factory.mktemp("robustness_models")
    return {
        "2d": save_tiny_checkpoint(folder / "a2d.pt", 2, seed=0),
        "2d_twin": save_tiny_checkpoint(folder / "b2d.pt", 2, seed=1),
        "3d": save_tiny_checkpoint(folder / "a3d.pt", 3, seed=0),
    }


@pytest.fixture(scope="module")
def harvard_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Harvard-style folder: two tasks (CT-MRI, SPECT-MRI), three 8-bit pairs each, dark border."""
    root = tmp_path_factory.mktemp("harvard_like")
    for t, (task, other) in enumerate((("CT-MRI", "CT"), ("SPECT-MRI", "SPECT"))):
        for k in range(3):
            images = phantom_stack(SHAPE_2D, 2, seed=10 * t + k, border=3)
            for folder, image in zip(("MRI", other), images, strict=True):
                (root / task / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(root / task / folder / f"{k}.png")
    return root


@pytest.fixture(scope="module")
def volume_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of one MRI+MRI case of small NIfTI phantoms (int16, zero border)."""
    root = tmp_path_factory.mktemp("volumes")
    names = []
    for i, image in enumerate(phantom_stack(SHAPE_3D, 2, seed=5, border=2)):
        nib.save(nib.Nifti1Image(np.rint(image * 1000).astype(np.int16), np.eye(4)), root / f"v{i}.nii.gz")
        names.append(f"v{i}.nii.gz")
    path = root / "cases.csv"
    path.write_text(f"name,images,modalities\nphantom,{';'.join(names)},mri;mri\n")
    return path


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_end_to_end_2d_cli(capsys, tmp_path: Path, harvard_like: Path, models) -> None:
    out = tmp_path / "out"
    status = main(
        [
            "benchmark",
            "robustness",
            str(harvard_like),
            "--model",
            str(models["2d"]),
            "--baseline-model",
            str(models["2d_twin"]),
            "--methods",
            "isfl,isfl-noiv,lp,mean",
            "--families",
            "gaussian_noise,truncation,dropout",
            "--levels",
            "0,3",
            "--cases",
            "2",
            "--output",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0, capsys.readouterr().err
    rows = read_rows(out / "robustness.csv")
    # one case per task; targets: noise 2 + all, truncation 2, dropout 2 -> 7 targets x 2 levels + clean
    assert sorted({r["case"] for r in rows}) == ["CT-MRI/1.png", "SPECT-MRI/1.png"]
    assert len(rows) == 2 * 4 * (7 * 2 + 1)
    assert {r["target"] for r in rows} == {"clean", "one", "all"}
    # every metric of the perturbed fusions is scored against the clean sources and with its change
    severe = [r for r in rows if r["family"] == "gaussian_noise" and r["level"] == "3"]
    assert all(float(r["fid_ssim"]) < 1.0 for r in severe)
    for r in severe:
        clean = next(
            c for c in rows if c["family"] == "clean" and (c["case"], c["method"]) == (r["case"], r["method"])
        )
        for key in STANDARD_METRICS:
            assert float(r[f"delta_{key}"]) == pytest.approx(float(r[key]) - float(clean[key]), abs=2e-6)
    truncated = [r for r in rows if r["family"] == "truncation" and r["level"] == "3"]
    assert all(0.0 <= float(r["out_ssim"]) <= 1.0 and -1.0 <= float(r["fill_corr"]) <= 1.0 for r in truncated)
    dropped = [r for r in rows if r["family"] == "dropout" and r["level"] == "3"]
    assert all(-1.0 <= float(r["rest_corr"]) <= 1.0 for r in dropped)
    # outputs: tables, summary, provenance, plots and one montage per family
    markdown = (out / "summary.md").read_text()
    assert "## truncation" in markdown and "isfl better than isfl-noiv" in markdown
    info = json.loads((out / "run.json").read_text())
    assert {m["path"] for m in info["models"].values()} == {str(models["2d"]), str(models["2d_twin"])}
    for name in ("gaussian_noise", "truncation", "dropout", "grid"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    for name in ("gaussian_noise", "truncation", "dropout"):
        assert (out / "montages" / f"{name}.png").stat().st_size > 1000
    # the report can be rewritten from the CSV alone, identically
    report_from_csv(out)
    assert (out / "summary.md").read_text() == markdown
    summary = read_rows(out / "summary.csv")
    assert {(r["family"], r["level"]) for r in summary} >= {("clean", "0"), ("dropout", "3")}


def test_level_zero_rows_equal_clean_rows(tmp_path: Path, harvard_like: Path, models) -> None:
    """Level 0 goes through the whole perturbation path and must reproduce the clean fusion exactly."""
    from napari_isfl.evaluation.evaluate import load_cases

    options = RobustnessOptions(
        methods=["isfl", "gff", "dwt"],
        families=["rician_noise", "truncation", "dropout", "misregistration"],
        levels=[0, 1],
        model=str(models["2d"]),
        montages=False,
    )
    cases = select_cases(load_cases(harvard_like), 1)
    rows, montages = run_robustness(cases, options)
    assert montages == []
    clean = {r["method"]: r for r in rows if r["family"] == "clean"}
    zero = [r for r in rows if r["level"] == 0 and r["family"] != "clean"]
    assert len(zero) == 3 * (3 + 2 + 2 + 2)
    for row in zero:
        for key in SCORED:
            assert row[key] == clean[row["method"]][key], (row["family"], row["method"], key)
        assert row["fid_ssim"] == 1.0 and math.isinf(row["fid_psnr"])
        assert all(row[f"delta_{k}"] == 0.0 for k in STANDARD_METRICS)
    # a real perturbation changes the fusion; ISFL fuses a zeroed (constant) modality too
    assert any(r["fid_ssim"] < 1.0 for r in rows if r["level"] == 1)
    zeroed = [r for r in rows if (r["family"], r["level"], r["method"]) == ("dropout", 1, "isfl")]
    assert len(zeroed) == 2 and all(math.isfinite(r["fid_ssim"]) and r["fid_ssim"] < 1.0 for r in zeroed)


@pytest.mark.slow
def test_end_to_end_3d(tmp_path: Path, volume_csv: Path, models) -> None:
    from napari_isfl.evaluation.evaluate import load_cases

    options = RobustnessOptions(
        methods=["isfl", "lp"],
        families=["bias_field", "truncation", "intensity_scale"],
        levels=[2],
        model=str(models["3d"]),
        crop_3d=16,
    )
    rows, montages = run_robustness(load_cases(volume_csv), options)
    # targets: bias 2, truncation 2, intensity scale 2 + all -> 7; one level; plus clean
    assert len(rows) == 2 * (7 + 1)
    assert [m.family for m in montages] == ["bias_field", "truncation", "intensity_scale"]
    assert all(m.labels == ["MRI v0", "MRI v1"] for m in montages)  # tags repeat: file names tell them apart
    assert all(m.clean.shape[1:] == (16, 14, 12) for m in montages)  # the foreground box, within the crop
    written = write_outputs(rows, tmp_path / "out3d", {"data": str(volume_csv)}, montages)
    assert read_rows(written["csv"])[0]["case"] == "phantom"
    assert "| 2 (0.2) | one | isfl |" in written["markdown"].read_text()
    assert written["grid"].stat().st_size > 1000
    assert written["montage:truncation"].stat().st_size > 1000


def test_crop_stack_centres_on_foreground() -> None:
    stack = np.zeros((2, 60, 50, 40), np.float32)
    stack[0, 10:50, 5:45, 8:30] = 0.5
    cropped, box = crop_stack(stack, 24)
    assert cropped.shape == (2, 24, 24, 22)
    assert [(s.start, s.stop) for s in box] == [(18, 42), (12, 36), (8, 30)]
    flat, box2d = crop_stack(stack[:, :, :, 10], 24)  # 2D: foreground box only
    assert flat.shape == (2, 40, 40) and box2d == (slice(10, 50), slice(5, 45))


@pytest.mark.parametrize("shape", [(37, 50), (17, 22, 13)])
def test_slab_boxes_match_truncation_mask(shape) -> None:
    image = phantom_stack(shape, 1, seed=3)[0]
    for seed in range(8):
        _, mask = perturb_with_mask(image, "truncation", 3, seed)
        inside, outside = slab_boxes(mask)
        assert mask[inside].all() and not mask[outside].any()
        assert mask[inside].size + mask[outside].size == mask.size
    with pytest.raises(ValueError, match="slab"):
        slab_boxes(np.pad(np.ones((3, 3), bool), 2))  # a hole in the middle is not a truncation


def truncation_case(seed: int = 4) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
    """A clean 2D stack (modality 1 truncated at level 3) and the slab's inside/outside boxes."""
    stack = np.stack(phantom_stack((40, 36), 2, seed=seed))
    _, mask = perturb_with_mask(stack[1], "truncation", 3, 0)
    inside, outside = slab_boxes(mask)
    return stack, mask, inside, outside


def clean_scores(fused: np.ndarray, stack: np.ndarray) -> dict[str, float]:
    return fusion_metrics(to_uint8_scale(fused), [to_uint8_scale(s) for s in stack], names=STANDARD_METRICS)


def test_truncation_scores_use_the_right_regions() -> None:
    stack, mask, inside, outside = truncation_case()
    clean = stack.mean(axis=0)
    scores = clean_scores(clean, stack)
    # a fusion that changed only inside the slab is perfect outside it, and not inside
    changed_inside = clean.copy()
    changed_inside[inside] = 1.0 - changed_inside[inside]
    inside_only = score_fusion(changed_inside, clean, stack, scores, family="truncation", target=1, mask=mask)
    assert inside_only["out_ssim"] == pytest.approx(1.0) and math.isinf(inside_only["out_psnr"])
    assert inside_only["in_psnr"] < 30 and inside_only["fid_ssim"] < 1.0
    # ... and one that changed only outside it is perfect inside
    changed_outside = clean.copy()
    changed_outside[outside] = 1.0 - changed_outside[outside]
    outside_only = score_fusion(
        changed_outside, clean, stack, scores, family="truncation", target=1, mask=mask
    )
    assert math.isinf(outside_only["in_psnr"]) and outside_only["out_psnr"] < 30
    # filling the slab from the other modality correlates perfectly with it there
    filled = clean.copy()
    filled[inside] = stack[0][inside]
    fill = score_fusion(filled, clean, stack, scores, family="truncation", target=1, mask=mask)
    assert fill["fill_corr"] == pytest.approx(1.0)
    assert fill["fill_corr_clean"] < 0.999
    # the other modality is the perturbed one's complement: target 0 compares with modality 1
    other = score_fusion(filled, clean, stack, scores, family="truncation", target=0, mask=mask)
    assert other["fill_corr"] < 0.999


def test_dropout_scores_compare_with_the_remaining_modality() -> None:
    stack = np.stack(phantom_stack((40, 36), 3, seed=8))
    clean = stack.mean(axis=0)
    scores = clean_scores(clean, stack)
    mask = np.ones(stack.shape[1:], bool)
    rest = stack[[0, 2]].mean(axis=0)
    result = score_fusion(rest, clean, stack, scores, family="dropout", target=1, mask=mask)
    assert result["rest_corr"] > 0.5 and result["rest_ssim"] > result["rest_ssim_clean"] - 0.5
    only_first = score_fusion(stack[0], clean, stack, scores, family="dropout", target=2, mask=mask)
    # SSIM averaged over the remaining modalities 0 and 1: 1 for modality 0 itself, less for modality 1
    s0, s1 = (to_uint8_scale(s) for s in stack[:2])
    expected = 0.5 * (1.0 + structural_similarity(s0, [s1]))
    assert only_first["rest_ssim"] == pytest.approx(expected) and expected < 1.0
    assert only_first["rest_psnr"] == pytest.approx(psnr(s0, [s0, s1]))
    no_family = score_fusion(rest, clean, stack, scores)
    assert "rest_ssim" not in no_family and "out_ssim" not in no_family


def test_select_cases_spreads_over_tasks() -> None:
    cases = [Case([Path("a"), Path("b")], ["mri", "ct"], f"CT-MRI/{i}.png") for i in range(10)]
    cases += [Case([Path("a"), Path("b")], ["mri", "spect"], f"SPECT-MRI/{i}.png") for i in range(4)]
    picked = [c.name for c in select_cases(cases, 3)]
    assert picked == ["CT-MRI/2.png", "CT-MRI/7.png", "SPECT-MRI/2.png"]
    assert [c.name for c in select_cases(cases, 1)] == ["CT-MRI/5.png"]
    assert len(select_cases(cases, None)) == 14 and len(select_cases(cases, 99)) == 14
    csv_cases = [
        Case([Path("a"), Path("b")], tags, f"row{i}")
        for i, tags in enumerate([["mri", "mri"]] * 2 + [["mri", "pet"]])
    ]
    assert [c.name for c in select_cases(csv_cases, 2)] == ["row1", "row2"]  # one per modality pairing
    with pytest.raises(ValueError, match=">= 1"):
        select_cases(cases, 0)


def test_summary_pools_psnr_and_counts_rows() -> None:
    assert pooled_psnr([math.inf, math.inf]) == math.inf
    assert pooled_psnr([math.inf, 20.0]) == pytest.approx(20.0 + 10 * math.log10(2))
    rows = [
        {
            "task": "t",
            "case": c,
            "method": "lp",
            "family": "gamma",
            "level": 1,
            "parameter": 1.25,
            "target": "one",
            "fid_ssim": s,
            "fid_psnr": p,
        }
        for c, s, p in (("a", 0.9, 30.0), ("b", 0.7, math.inf))
    ]
    (entry,) = summarize_robustness(rows)
    assert entry["n"] == 2 and entry["fid_ssim"] == pytest.approx(0.8)
    assert entry["fid_psnr"] == pytest.approx(30.0 + 10 * math.log10(2))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--families", "snow"], "unknown perturbation family 'snow'; valid families: gaussian_noise"),
        (["--levels", "1,4"], "level 4 is out of range for 'gaussian_noise': valid levels are 0..3"),
        (["--levels", "1,x"], "--levels takes comma-separated integers 0..3, got 'x'"),
        (["--levels", "1,1"], "levels listed twice"),
        (["--levels", ""], "no severity level given"),
        (["--methods", "isfl,wavelets"], "unknown method 'wavelets'; valid methods: isfl, isfl-noiv, mean"),
        (["--methods", "isfl-noiv,lp"], "method isfl-noiv needs --baseline-model"),
        (["--methods", ","], "no method given"),
        (["--cases", "-1"], "--cases must be >= 0"),
        (["--crop-3d", "8"], "--crop-3d must be 0 (no crop) or >= 16 voxels"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--montage-case", "5", "--cases", "2"], "--montage-case 5 is out of range: 2 case(s) selected"),
    ],
)
def test_cli_validates_arguments(capsys, tmp_path: Path, harvard_like: Path, models, extra, message) -> None:
    status = main(
        [
            "benchmark",
            "robustness",
            str(harvard_like),
            "--model",
            str(models["2d"]),
            "--output",
            str(tmp_path / "o"),
            "--quiet",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("isfl benchmark: error: ") and message in err, err
    assert not (tmp_path / "o").exists()


def test_cli_usage_errors_and_missing_data(capsys, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["benchmark", "robustness", str(tmp_path), "--cases", "two"])
    assert excinfo.value.code == 2
    assert "invalid int value: 'two'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as excinfo:
        main(["benchmark"])
    assert excinfo.value.code == 2
    status = main(["benchmark", "robustness", str(tmp_path / "nowhere"), "--quiet"])
    assert status == 1
    assert "data folder" in capsys.readouterr().err


def test_default_and_quick_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    default = options_from_args(parser.parse_args(["data"]))
    assert default.families == list(PERTURBATIONS) and default.levels == [1, 2, 3]
    assert default.methods == ["isfl", "lp", "dwt", "gff"]
    assert default.cases == DEFAULT_CASES and default.crop_3d == DEFAULT_CROP_3D
    assert default.lesion_guard == "auto"
    assert options_from_args(parser.parse_args(["data", "--lesion-guard", "off"])).lesion_guard == "off"
    quick = options_from_args(parser.parse_args(["data", "--quick", "--baseline-model", "m.pt"]))
    assert quick.families == list(QUICK_FAMILIES) and quick.levels == [1, 3] and quick.cases == 2
    assert quick.methods == ["isfl", "isfl-noiv", "lp", "dwt", "gff"]
    explicit = options_from_args(parser.parse_args(["data", "--quick", "--levels", "2", "--cases", "0"]))
    assert explicit.levels == [2] and explicit.cases is None


@pytest.mark.parametrize("guard", ["auto", "off"])
def test_isfl_gets_the_file_names_and_the_guard_choice(monkeypatch, tmp_path: Path, models, guard) -> None:
    """ISFL fuses every clean and perturbed stack as ``isfl fuse`` would: with the inputs' file names
    (its lesion guard finds the FLAIR by name) and the benchmark's ``--lesion-guard`` choice."""
    from napari_isfl.evaluation.evaluate import load_cases
    from napari_isfl.inference import FusionEngine

    for name, image in zip(("t1", "flair"), phantom_stack(SHAPE_3D, 2, seed=3, border=2), strict=True):
        volume = nib.Nifti1Image(np.rint(image * 1000).astype(np.int16), np.eye(4))
        nib.save(volume, tmp_path / f"{name}.nii.gz")
    (tmp_path / "cases.csv").write_text("name,images,modalities\np,t1.nii.gz;flair.nii.gz,mri;mri\n")
    calls = []
    original = FusionEngine.fuse

    def recording(self, images, modalities=None, **kwargs):
        calls.append((kwargs.get("names"), kwargs.get("lesion_guard")))
        return original(self, images, modalities, **kwargs)

    monkeypatch.setattr(FusionEngine, "fuse", recording)
    options = RobustnessOptions(
        methods=["isfl", "lp"],
        families=["bias_field"],
        levels=[1],
        model=str(models["3d"]),
        crop_3d=16,
        lesion_guard=guard,
    )
    rows, _ = run_robustness(load_cases(tmp_path / "cases.csv"), options)
    assert len(rows) == 2 * (1 + 2)  # clean + bias field on each input, two methods
    assert calls == [(["t1.nii.gz", "flair.nii.gz"], guard)] * 3  # ISFL only: clean + two targets
    with pytest.raises(ValueError, match="--lesion-guard must be auto or off"):
        RobustnessOptions(methods=["isfl"], families=["bias_field"], levels=[1], lesion_guard="on")

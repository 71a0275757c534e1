"""Window seams and lesion visibility (napari_isfl.evaluation.fidelity), the 2.5D mode, and their columns in
``isfl evaluate``."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch

from core_helpers import phantom_stack, tiny_net
from napari_isfl.evaluation.evaluate import evaluate
from napari_isfl.evaluation.fidelity import lesion_contrast, oedema_mask, seam_ratio
from napari_isfl.inference import FusionEngine
from napari_isfl.inference.slicewise import fuse_slicewise
from napari_isfl.model.checkpoint import save_checkpoint


def _smooth(shape) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij")
    return np.sin(grids[0]) * np.cos(grids[1]) + 0.3 * grids[-1]


@pytest.mark.parametrize("shape", [(60, 47), (40, 33, 29)])
def test_seam_ratio_is_one_without_seams_and_large_with_them(shape) -> None:
    image = _smooth(shape)
    edges = [[17, 25, 41], [20], []][: len(shape)]
    assert seam_ratio(image, [image, 2 * image], edges)["seam_ratio"] == pytest.approx(1.0, abs=0.05)
    seamed = image.copy()
    seamed[17:] += 0.2  # a step where a window starts, as a naive window stitch leaves
    assert seam_ratio(seamed, [image], edges)["seam_ratio"] > 3
    assert np.isnan(seam_ratio(image, [image], [[] for _ in shape])["seam_ratio"])


@pytest.mark.parametrize("dims", [2, 3])
def test_windowed_pyramid_fusion_leaves_no_seam(dims, tmp_path) -> None:
    """The pyramid head in many small windows, with weights that vary strongly from place to place (a
    random selector): the seam ratio stays within 10 % of the inputs'. This fails on a visible seam."""
    net = tiny_net(dims, head="pyramid")
    with torch.no_grad():
        for selector in net.selectors:
            selector.conv.weight.normal_(0, 2.0)
    path = save_checkpoint(tmp_path / "p.pt", net)
    shape = (96, 80) if dims == 2 else (48, 40, 36)
    images = phantom_stack(shape, 2, seed=5)
    result = FusionEngine(str(path), "cpu").fuse(images, ["mri", "ct"], roi_size=16, overlap=0.25)
    edges = result.provenance["window_edges"]
    assert any(edges) and result.provenance["windows"] > 8
    assert seam_ratio(result.fused, images, edges)["seam_ratio"] < 1.1


def _brain_with_lesion(shape=(40, 44, 36)):
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = sum(g**2 for g in grids) < 0.8
    lesion = sum((g - 0.2) ** 2 for g in grids) < 0.04
    t1 = np.where(brain, 0.6, 0.0) - 0.2 * lesion
    flair = np.where(brain, 0.4, 0.0) + 0.5 * lesion
    return t1, flair, lesion, brain


def test_lesion_contrast_is_relative_to_the_best_source() -> None:
    t1, flair, lesion, brain = _brain_with_lesion()
    same = lesion_contrast(flair, [t1, flair], lesion, brain)
    assert same["lesion_source"] == 1 and same["lesion_contrast_ratio"] == pytest.approx(1.0)
    assert lesion_contrast((t1 + flair) / 2, [t1, flair], lesion, brain)["lesion_contrast_ratio"] == (
        pytest.approx(0.15 / 0.5, abs=1e-6)
    )
    assert lesion_contrast(np.where(brain, 0.5, 0.0), [t1, flair], lesion, brain)[
        "lesion_contrast_ratio"
    ] == (pytest.approx(0.0))
    found = oedema_mask(flair, brain, top_percent=(lesion.sum() / brain.sum()) * 100)
    assert (found == lesion).mean() > 0.99
    assert np.isnan(
        lesion_contrast(flair, [t1, flair], np.zeros_like(lesion), brain)["lesion_contrast_ratio"]
    )


def test_slicewise_fusion_with_a_2d_model(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "tiny2d.pt", tiny_net(2))
    volumes = phantom_stack((19, 22, 13), 2, seed=6)
    engine = FusionEngine(str(path), "cpu")
    calls = []
    result = engine.fuse_slicewise(
        volumes, ["mri", "ct"], contributions=True, progress=lambda d, t: calls.append(d)
    )
    assert result.fused.shape == (19, 22, 13) and result.stability is None
    assert result.fused.min() >= 0 and result.fused.max() <= 1
    np.testing.assert_allclose(result.contributions.sum(axis=0), 1.0, atol=1e-5)
    assert result.provenance["parameters"]["mode"] == "2.5d" and calls[-1] == calls[0] + len(calls) - 1
    one_axis = fuse_slicewise(engine, volumes, ["mri", "ct"], axes=[2])
    assert not np.allclose(one_axis.fused, result.fused)
    with pytest.raises(ValueError, match="3D volumes"):
        engine.fuse_slicewise([v[:, :, 0] for v in volumes], ["mri", "ct"])
    with pytest.raises(ValueError, match="axes"):
        fuse_slicewise(engine, volumes, ["mri", "ct"], axes=[0, 0])


def test_evaluate_reports_lesion_contrast_and_seams(tmp_path, tiny_checkpoint_3d) -> None:
    t1, flair, lesion, _ = _brain_with_lesion((56, 48, 40))
    rng = np.random.default_rng(0)
    files = {}
    for name, array in (("t1", t1), ("flair", flair), ("lesions", lesion.astype(np.uint8))):
        noisy = array + (0.01 * rng.random(array.shape) if name != "lesions" else 0)
        files[name] = tmp_path / f"case_{name}.nii.gz"
        nib.save(
            nib.Nifti1Image(np.asarray(noisy, np.float32 if name != "lesions" else np.uint8), np.eye(4)),
            files[name],
        )
    table = tmp_path / "cases.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "images", "modalities", "lesion_mask"])
        writer.writerow(
            ["masked", f"{files['t1'].name};{files['flair'].name}", "mri;mri", files["lesions"].name]
        )
        writer.writerow(["flair-only", f"{files['t1'].name};{files['flair'].name}", "mri;mri", ""])
    from napari_isfl.cases import cases_from_csv

    rows = evaluate(
        cases_from_csv(table), ["isfl", "mean"], str(tiny_checkpoint_3d), progress=False, roi_size=16
    )
    by = {(r["case"], r["method"]): r for r in rows}
    assert set(by) == {(c, m) for c in ("masked", "flair-only") for m in ("isfl", "mean")}
    assert all(np.isfinite(r["lesion_contrast_ratio"]) for r in rows)
    # the mean dilutes the FLAIR lesion with the T1's darker one: visible, but well below the FLAIR's
    assert 0.1 < by["masked", "mean"]["lesion_contrast_ratio"] < 0.6
    assert "seam_ratio" in by["masked", "isfl"] and "seam_ratio" not in by["masked", "mean"]


def test_evaluate_scores_isfl_with_its_lesion_guard(tmp_path) -> None:
    """``isfl evaluate`` fuses as ``isfl fuse`` does: the lesion guard finds the FLAIR by its file name
    (``lesion_guard=None`` scores the learned blend alone)."""
    from core_helpers import save_tiny_checkpoint

    model = save_tiny_checkpoint(tmp_path / "pyramid3d.pt", 3, head="pyramid")
    shape = (41, 46, 37)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = sum(g**2 for g in grids) < 0.8
    oedema = sum((g - 0.15) ** 2 for g in grids) < 0.15  # large, as an oedema: the coarse level sees it
    t1c = np.where(brain, 0.6, 0.0) - 0.2 * oedema
    flair = np.where(brain, 0.3, 0.0) + 0.5 * oedema
    for name, array in (("t1c", t1c), ("flair", flair)):
        nib.save(nib.Nifti1Image(np.asarray(array, np.float32), np.eye(4)), tmp_path / f"{name}.nii.gz")
    table = tmp_path / "cases.csv"
    table.write_text("name,images,modalities\npatient,t1c.nii.gz;flair.nii.gz,mri;mri\n")
    from napari_isfl.cases import cases_from_csv

    ratio = {
        guard: evaluate(cases_from_csv(table), ["isfl"], str(model), progress=False, lesion_guard=guard)[0][
            "lesion_contrast_ratio"
        ]
        for guard in ("auto", None)
    }
    assert ratio[None] < 0.8 <= ratio["auto"]

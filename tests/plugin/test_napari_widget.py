"""The "Fuse modalities" widget in a real napari viewer (pytest-qt; run headless under ``xvfb-run -a``).

The widget is opened through the plugin manifest, as a user would. Runs are synchronous
(``NAPARI_ISFL_SYNC=1``) where only the result matters, and threaded where progress, cancelling and
error reporting from the worker are the point.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_isfl.plugin.layers import METADATA_KEY, layer_world_affine  # noqa: E402
from napari_isfl.plugin.session import SYNC_ENV  # noqa: E402
from napari_isfl.plugin.widget import CHECKPOINT_CHOICE, FusionWidget  # noqa: E402

pytestmark = pytest.mark.napari

WIDGET_NAME = "Fuse modalities"
SCREENSHOT_SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "scripts" / "napari_screenshot.py"
RUN_TIMEOUT_MS = 60_000


def _open_widget(viewer) -> FusionWidget:
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-isfl", WIDGET_NAME)
    assert isinstance(widget, FusionWidget)
    return widget


def _open_crops(viewer, files, *contrasts):
    return [viewer.open(str(files[c]), plugin="napari-isfl")[0] for c in contrasts]


def _use_checkpoint(widget: FusionWidget, path: Path, **controls) -> None:
    widget.model.value = CHECKPOINT_CHOICE
    widget.checkpoint.value = path
    widget.device.value = "cpu"
    for name, value in controls.items():
        getattr(widget, name).value = value


def _new_notifications(before: int, severity: str) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records[before:] if str(n.severity) == severity]


def _notification_count() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def test_widget_fuses_through_the_manifest(
    make_napari_viewer, monkeypatch, tcga_crop_files, tiny_checkpoint_3d
):
    monkeypatch.setenv(SYNC_ENV, "1")
    viewer = make_napari_viewer()
    t1c, t2, flair = _open_crops(viewer, tcga_crop_files, "t1c", "t2", "flair")
    widget = _open_widget(viewer)
    assert widget.session.synchronous
    # the rows default to distinct layers; pick FLAIR first (the reference), then T1c and T2
    assert [row.layer.value for row in widget.rows] == [t1c, t2]
    widget.set_inputs([flair, t1c, t2])
    _use_checkpoint(widget, tiny_checkpoint_3d, stability=True, output_name="fused")

    widget.run()

    assert [layer.name for layer in viewer.layers] == [
        t1c.name,
        t2.name,
        flair.name,
        "fused",
        "fused stability",
    ]
    fused = viewer.layers["fused"]
    assert fused.data.shape == flair.data.shape and fused.data.dtype == np.float32
    assert fused.data.min() >= 0.0 and fused.data.max() <= 1.0
    np.testing.assert_allclose(layer_world_affine(fused), layer_world_affine(flair))
    assert fused.units == flair.units and fused.axis_labels == flair.axis_labels
    provenance = fused.metadata[METADATA_KEY]
    assert provenance["inputs"] == [flair.name, t1c.name, t2.name] and provenance["device"] == "cpu"
    assert provenance["model"] == tiny_checkpoint_3d.name
    assert viewer.layers["fused stability"].colormap.name == "viridis"
    assert not viewer.layers["fused stability"].visible  # shown on demand: it never hides the fusion
    assert widget.status.value.startswith("Fused")
    assert widget.run_button.enabled and not widget.cancel_button.enabled

    widget.run()  # again: the outputs are updated, not duplicated
    assert len(viewer.layers) == 5
    # the lesion guard is on by default (the FLAIR found by its layer name); a synthesis model has none
    assert widget.options()["lesion_guard"] == "auto"
    assert provenance["parameters"]["lesion_guard"] is None
    widget.lesion_guard.value = False
    assert widget.options()["lesion_guard"] is None


def test_status_says_what_the_lesion_guard_did(make_napari_viewer, monkeypatch, tcga_crop_files, tmp_path):
    """With a pyramid-head model the guard finds the FLAIR layer by name, and the status line and the
    fused layer's provenance say what it did; with the box unticked neither mentions it."""
    from core_helpers import save_tiny_checkpoint

    monkeypatch.setenv(SYNC_ENV, "1")
    viewer = make_napari_viewer()
    t1c, flair = _open_crops(viewer, tcga_crop_files, "t1c", "flair")
    widget = _open_widget(viewer)
    widget.set_inputs([t1c, flair])
    checkpoint = save_tiny_checkpoint(tmp_path / "pyramid3d.pt", 3, head="pyramid")
    _use_checkpoint(widget, checkpoint, output_name="fused")

    widget.run()
    report = viewer.layers["fused"].metadata[METADATA_KEY]["parameters"]
    assert report["lesion_guard"]["input"] == flair.name
    assert widget.status.value.startswith("Fused") and ". Lesion guard: " in widget.status.value
    assert f"{report['lesion_guard']['kept']:.2f}" in widget.status.value

    widget.lesion_guard.value = False
    widget.run()
    assert widget.status.value.startswith("Fused") and "guard" not in widget.status.value.lower()


def test_widget_runs_in_a_worker_with_progress(
    make_napari_viewer, qtbot, tcga_crop_files, tiny_checkpoint_3d
):
    viewer = make_napari_viewer()
    t1c, flair = _open_crops(viewer, tcga_crop_files, "t1c", "flair")
    widget = _open_widget(viewer)
    assert not widget.session.synchronous
    _use_checkpoint(widget, tiny_checkpoint_3d, patch_size="16", overlap=0.25)
    reports = []
    original = widget.session._on_progress

    def record(done, total):  # runs on the GUI thread (marshalled from the worker)
        reports.append((done, total))
        original(done, total)

    widget.session._on_progress = record
    widget.run()
    assert widget.session.running and not widget.run_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: not widget.session.running, timeout=RUN_TIMEOUT_MS)

    assert widget.session.last_outcome.status == "done"
    total = reports[-1][1]
    assert total > 1 and reports[0] == (0, total) and reports[-1] == (total, total)
    fused = viewer.layers[f"{t1c.name} + {flair.name} fused"]
    assert fused.data.shape == t1c.data.shape
    np.testing.assert_allclose(layer_world_affine(fused), layer_world_affine(t1c))
    assert fused.metadata[METADATA_KEY]["parameters"]["roi_size"] == [16, 16, 16]
    assert widget.run_button.enabled, (widget.status.value, reports)
    assert not widget.cancel_button.enabled, (widget.status.value, reports)


def test_cancel_mid_run_leaves_the_viewer_unchanged(
    make_napari_viewer, qtbot, tcga_crop_files, tiny_checkpoint_3d
):
    viewer = make_napari_viewer()
    _open_crops(viewer, tcga_crop_files, "t1c", "flair")
    names_before = [layer.name for layer in viewer.layers]
    widget = _open_widget(viewer)
    _use_checkpoint(widget, tiny_checkpoint_3d, patch_size="8", overlap=0.5, stability=True)
    original = widget.session._on_progress

    def cancel_after_first_batch(done, total):
        original(done, total)
        if done >= 1:
            widget.cancel_button.native.click()  # as the user would

    widget.session._on_progress = cancel_after_first_batch
    widget.run()
    qtbot.waitUntil(lambda: not widget.session.running, timeout=RUN_TIMEOUT_MS)

    assert widget.session.last_outcome.status == "cancelled"
    assert 1 <= widget.session.windows_done < 30  # stopped long before the last of ~120 batches
    assert [layer.name for layer in viewer.layers] == names_before
    assert "cancelled" in widget.status.value and widget.run_button.enabled


def test_mismatched_layers_are_refused_then_resampled(
    make_napari_viewer, monkeypatch, tcga_crop_files, tiny_checkpoint_3d
):
    monkeypatch.setenv(SYNC_ENV, "1")
    viewer = make_napari_viewer()
    t1c, flair = _open_crops(viewer, tcga_crop_files, "t1c", "flair")
    flair.translate = (2.0, 0.0, 0.0)  # 2 mm off the T1c grid
    widget = _open_widget(viewer)
    widget.set_inputs([t1c, flair])
    _use_checkpoint(widget, tiny_checkpoint_3d)
    before = _notification_count()

    widget.run()

    errors = _new_notifications(before, "error")
    assert len(errors) == 1 and "not on the voxel grid" in errors[0] and flair.name in errors[0]
    assert len(viewer.layers) == 2  # nothing added
    assert not widget.resample_button.native.isHidden()
    assert t1c.name in widget.resample_button.text

    widget.resample_button.native.click()  # the one-click fix

    fused = viewer.layers[-1]
    assert fused.metadata[METADATA_KEY]["resampled_layers"] == [flair.name]
    np.testing.assert_allclose(layer_world_affine(fused), layer_world_affine(t1c))
    assert widget.resample_button.native.isHidden()


def test_errors_from_the_worker_are_notified(make_napari_viewer, qtbot, tcga_crop_files, tiny_checkpoint_2d):
    viewer = make_napari_viewer()
    _open_crops(viewer, tcga_crop_files, "t1c", "flair")
    widget = _open_widget(viewer)
    _use_checkpoint(widget, tiny_checkpoint_2d)  # a 2D model for 3D inputs: fails inside the worker
    before = _notification_count()

    widget.run()
    qtbot.waitUntil(lambda: not widget.session.running, timeout=RUN_TIMEOUT_MS)

    errors = _new_notifications(before, "error")
    assert any("Fusion failed" in e and "2D model" in e for e in errors), errors
    assert len(viewer.layers) == 2
    assert widget.status.value.startswith("Fusion failed") and widget.run_button.enabled


def test_input_rows_follow_the_layer_list(make_napari_viewer, monkeypatch):
    monkeypatch.setenv(SYNC_ENV, "1")
    viewer = make_napari_viewer()
    widget = _open_widget(viewer)
    assert [row.layer.value for row in widget.rows] == [None, None]
    before = _notification_count()
    widget.run()  # nothing chosen: refused with a message
    assert _new_notifications(before, "error") and "every input" in widget.status.value

    mri = viewer.add_image(np.random.default_rng(0).random((16, 16)), name="T1 MRI")
    pet = viewer.add_image(np.random.default_rng(1).random((16, 16)), name="FDG-PET")
    ct = viewer.add_image(np.random.default_rng(2).random((16, 16)), name="CT")
    viewer.add_labels(np.zeros((16, 16), np.uint8), name="mask")
    assert [row.layer.value for row in widget.rows] == [mri, pet]
    assert [row.modality.value for row in widget.rows] == ["mri", "pet"]
    row = widget.add_input()
    assert row.layer.value is ct and row.modality.value == "ct"
    assert [name for name, _ in widget._image_layers()] == ["T1 MRI", "FDG-PET", "CT"]  # no labels
    row.remove.native.click()
    assert len(widget.rows) == 2
    widget.rows[0].remove.native.click()  # fusion needs two: the row stays
    assert len(widget.rows) == 2
    widget.model.value = CHECKPOINT_CHOICE
    assert not widget.checkpoint.native.isHidden()
    before = _notification_count()
    widget.run()  # no checkpoint file chosen
    assert any("checkpoint file" in e for e in _new_notifications(before, "error"))


@pytest.mark.slow
def test_screenshot_script_runs(make_napari_viewer, tiny_checkpoint_3d, tmp_path):
    spec = importlib.util.spec_from_file_location("napari_screenshot", SCREENSHOT_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    viewer = make_napari_viewer()
    output = tmp_path / "shot.png"

    script.main(["--model", str(tiny_checkpoint_3d), "--output", str(output), "--crop", "48"], viewer=viewer)

    assert output.is_file() and output.stat().st_size > 10_000
    assert viewer.canvas.grid.enabled
    assert [layer.name for layer in viewer.layers] == ["T1c", "FLAIR", "T1c + FLAIR fused"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("SimpleITK") is None, reason="needs the clinical extra")
def test_clinical_screenshot_script_runs(make_napari_viewer, tiny_checkpoint_3d, tmp_path, monkeypatch):
    monkeypatch.setenv(SYNC_ENV, "1")
    spec = importlib.util.spec_from_file_location("napari_screenshot", SCREENSHOT_SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    viewer = make_napari_viewer()
    output = tmp_path / "clinical.png"

    script.main(
        ["--case", "clinical", "--model", str(tiny_checkpoint_3d), "--output", str(output)], viewer=viewer
    )

    assert output.is_file() and output.stat().st_size > 10_000
    names = [layer.name for layer in viewer.layers]
    assert names[:3] == ["head CT", "FLAIR_day2", "FLAIR_day2 registered"] and names[3].endswith("fused")


@pytest.mark.skipif(importlib.util.find_spec("SimpleITK") is None, reason="needs the clinical extra")
def test_register_onto_the_reference_then_fuse(make_napari_viewer, qtbot, tmp_path, tiny_checkpoint_3d):
    """A FLAIR that moved (8 degrees, 11 mm) beside the CT: refused, then one click registers it in the
    worker (progress reported), adds it on the CT's grid with the transform in its metadata, selects it,
    and Run fuses it; a second registration can be cancelled and changes nothing."""
    import nibabel as nib

    from napari_isfl.samples import sample_files

    ct_path, flair_path = sample_files("mni_ct_flair")
    flair = nib.load(flair_path)
    angle = np.deg2rad(8.0)
    move = np.eye(4)
    move[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    move[:3, 3] = (6.0, -9.0, 3.0)
    viewer = make_napari_viewer()
    moved_path = tmp_path / "flair_moved.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(flair.dataobj), move @ flair.affine), moved_path)
    ct = viewer.open(str(ct_path), plugin="napari-isfl")[0]
    moved = viewer.open(str(moved_path), plugin="napari-isfl")[0]
    widget = _open_widget(viewer)
    widget.set_inputs([ct, moved])
    _use_checkpoint(widget, tiny_checkpoint_3d)

    widget.run()  # not on one grid: refused, with both fixes offered
    assert len(viewer.layers) == 2 and not widget.register_button.native.isHidden()

    widget.register_button.native.click()
    qtbot.waitUntil(lambda: not widget.session.running, timeout=RUN_TIMEOUT_MS)
    registered = viewer.layers["flair_moved registered"]
    assert registered.data.shape == ct.data.shape
    np.testing.assert_allclose(layer_world_affine(registered), layer_world_affine(ct))
    record = registered.metadata[METADATA_KEY]
    assert record["role"] == "registered" and record["registration"]["transform_type"] == "rigid"
    assert widget.session.windows_done > 0 and "Press Run" in widget.status.value
    assert [row.layer.value for row in widget.rows] == [ct, registered]

    widget.run()
    qtbot.waitUntil(lambda: not widget.session.running, timeout=RUN_TIMEOUT_MS)
    assert viewer.layers[-1].name == f"{ct.name} + {registered.name} fused"

    widget.set_inputs([ct, moved])
    widget.register()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.session.running, timeout=RUN_TIMEOUT_MS)
    assert widget.session.last_outcome.status == "cancelled"
    assert len([layer for layer in viewer.layers if layer.name.endswith("registered")]) == 1

"""Screenshots of the napari plugin, in napari's default (axial, radiological) view.

* ``sample`` (default): the bundled TCGA-DU-7294 T1c and FLAIR and their fusion, side by side: opens the
  sample through the plugin's sample-data contribution and fuses T1c + FLAIR with
  :func:`napari_isfl.fuse_layers`.
* ``clinical``: a DICOM CT series and a FLAIR NIfTI that moved (8 degrees, 11 mm), registered and fused
  with the widget's two buttons. The CT is the bundled MNI CT template written as a DICOM series (BSD-2,
  Rorden et al. 2012), the FLAIR the bundled MNI FLAIR template moved by a known transform.

Run it headless with::

    xvfb-run -a python docs/scripts/napari_screenshot.py                       # shipped models
    xvfb-run -a python docs/scripts/napari_screenshot.py --case clinical
    xvfb-run -a python docs/scripts/napari_screenshot.py --model my.pt --output /tmp/shot.png

Only commit a screenshot made with a trained model (the default); a checkpoint with random weights
(as the tests use) gives a meaningless fused image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
DEFAULT_OUTPUTS = {"sample": IMAGES / "napari_fusion.png", "clinical": IMAGES / "napari_clinical.png"}
SOURCES = ("T1c", "FLAIR")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="'default' (shipped 3D model) or a checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--case", choices=sorted(DEFAULT_OUTPUTS), default="sample", help="default sample")
    parser.add_argument("--output", type=Path, help="PNG to write (default docs/images/napari_<case>.png)")
    parser.add_argument("--size", default="1800x720", help="window size WIDTHxHEIGHT in pixels")
    parser.add_argument(
        "--crop", type=int, default=0, help="fuse only a central cube of this many voxels (quick checks)"
    )
    return parser.parse_args(argv)


def _crop_centre(layer, side: int) -> None:
    """Keep a central cube of ``side`` voxels, moving ``translate`` so the crop stays in place."""
    import numpy as np

    start = [max(0, (s - side) // 2) for s in layer.data.shape]
    box = tuple(slice(b, b + side) for b in start)
    translate = np.asarray(layer.translate) + np.asarray(start) * np.asarray(layer.scale)
    layer.data = np.ascontiguousarray(layer.data[box])
    layer.translate = translate


def _process_events() -> None:
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()


def _show_widget(viewer, model: str) -> None:
    """Dock the "Fuse modalities" widget with the choices this screenshot used."""
    from napari_isfl.plugin.widget import CHECKPOINT_CHOICE

    _dock, widget = viewer.window.add_plugin_dock_widget("napari-isfl", "Fuse modalities")
    widget.set_inputs([viewer.layers[name] for name in SOURCES])
    if model in widget.model.choices:
        widget.model.value = model
    else:
        widget.model.value = CHECKPOINT_CHOICE
        widget.checkpoint.value = model
    widget.status.value = "Fused T1c + FLAIR (shown at the middle axial slice)"


def _clinical_layers(viewer, folder: Path, model: str) -> None:
    """A DICOM CT series and a moved FLAIR, registered with the widget and fused with it."""
    import os

    import nibabel as nib
    import numpy as np

    from napari_isfl.dicom import write_dicom_series
    from napari_isfl.io import read_image
    from napari_isfl.registration import rigid_matrix
    from napari_isfl.samples import sample_files

    ct_path, flair_path = sample_files("mni_ct_flair")
    write_dicom_series(read_image(ct_path), folder / "CT", modality="CT", series_description="head CT")
    move = rigid_matrix(8.0, (0, 0, 1), (6.0, -9.0, 3.0), (0.0, 0.0, 0.0))  # about the world origin
    flair = nib.load(flair_path)
    nib.save(nib.Nifti1Image(np.asarray(flair.dataobj), move @ flair.affine), folder / "FLAIR_day2.nii.gz")
    ct = viewer.open(str(folder / "CT"), plugin="napari-isfl")[0]
    moved = viewer.open(str(folder / "FLAIR_day2.nii.gz"), plugin="napari-isfl")[0]
    os.environ["NAPARI_ISFL_SYNC"] = "1"  # the widget runs in this thread: the screenshot waits for it
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-isfl", "Fuse modalities")
    widget.set_inputs([ct, moved])
    if model != "default":
        from napari_isfl.plugin.widget import CHECKPOINT_CHOICE

        widget.model.value = CHECKPOINT_CHOICE
        widget.checkpoint.value = model
    # (pressing Run first would be refused, not on one grid, and offer the register button; its error
    # toast would stay in the picture, so the script registers directly)
    widget.register()
    widget.run()
    widget.status.value = "Registered FLAIR_day2 onto the DICOM CT (rigid, mutual information), then fused"


def main(argv: list[str] | None = None, viewer=None) -> Path:
    """Make the screenshot; ``viewer`` (e.g. from a test fixture) is used instead of a new one."""
    import tempfile

    args = parse_args(argv)
    import napari

    import napari_isfl

    output = args.output or DEFAULT_OUTPUTS[args.case]
    own_viewer = viewer is None
    if own_viewer:
        viewer = napari.Viewer(title=f"napari-isfl: {args.case}")
    width, height = (int(v) for v in args.size.lower().split("x"))
    viewer.window.resize(width, height)

    with tempfile.TemporaryDirectory() as folder:
        if args.case == "clinical":
            _clinical_layers(viewer, Path(folder), args.model)
        else:
            viewer.open_sample("napari-isfl", "tcga_du_7294")
            for layer in list(viewer.layers):
                if layer.name not in SOURCES:
                    viewer.layers.remove(layer)
                elif args.crop:
                    _crop_centre(layer, args.crop)
            napari_isfl.fuse_layers(*SOURCES, viewer=viewer, model=args.model, device=args.device)
            _show_widget(viewer, args.model)
        fused = viewer.layers[-1]

        # napari's default view of the plugin's layers is axial (world axes S, P, L): the middle slice
        viewer.dims.set_point(0, float(fused.extent.world[:, 0].mean()))
        grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # napari >= 0.9 / older
        grid.stride = 1  # inputs, then the fusion, left to right
        grid.shape = (1, len([layer for layer in viewer.layers if layer.visible]))
        grid.enabled = True
        _process_events()  # let the window take its size before the camera is fitted to it
        viewer.reset_view()
        _process_events()

        output.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(path=str(output), canvas_only=False, flash=False)
    print(f"wrote {output} (model {fused.metadata['napari_isfl']['model']})")
    if own_viewer:
        viewer.close()
    return output


if __name__ == "__main__":
    main(sys.argv[1:])

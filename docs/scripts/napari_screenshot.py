"""Screenshot of the napari plugin: the bundled TCGA-DU-7294 T1c and FLAIR and their fusion, side by side.

Opens the sample through the plugin's sample-data contribution, fuses T1c + FLAIR with
:func:`napari_isfl.fuse_layers`, shows the three layers in grid mode at the middle axial slice
(anterior up, the subject's left on the left) and saves a window screenshot. Run it headless with::

    xvfb-run -a python docs/scripts/napari_screenshot.py                       # shipped 3D model
    xvfb-run -a python docs/scripts/napari_screenshot.py --model my.pt --output /tmp/shot.png

Only commit a screenshot made with a trained model (the default); a checkpoint with random weights
(as the tests use) gives a meaningless fused image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "images" / "napari_fusion.png"
SOURCES = ("T1c", "FLAIR")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="'default' (shipped 3D model) or a checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="PNG to write")
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


def main(argv: list[str] | None = None, viewer=None) -> Path:
    """Make the screenshot; ``viewer`` (e.g. from a test fixture) is used instead of a new one."""
    args = parse_args(argv)
    import napari

    import napari_isfl

    own_viewer = viewer is None
    if own_viewer:
        viewer = napari.Viewer(title="napari-isfl: T1c + FLAIR fusion")
    width, height = (int(v) for v in args.size.lower().split("x"))
    viewer.window.resize(width, height)

    viewer.open_sample("napari-isfl", "tcga_du_7294")
    for layer in list(viewer.layers):
        if layer.name not in SOURCES:
            viewer.layers.remove(layer)
        elif args.crop:
            _crop_centre(layer, args.crop)
    fused, *_ = napari_isfl.fuse_layers(*SOURCES, viewer=viewer, model=args.model, device=args.device)
    _show_widget(viewer, args.model)

    # axial view: world axes are (x, y, z) in mm; show y vertically (anterior up) and x horizontally
    viewer.dims.order = (2, 1, 0)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9 / older
    camera.orientation2d = ("up", "right")
    z_range = fused.extent.world[:, 2]
    viewer.dims.set_point(2, float(z_range.mean()))
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # napari >= 0.9 / older
    grid.stride = 1  # T1c | FLAIR | fused, left to right
    grid.shape = (1, len(viewer.layers))
    grid.enabled = True
    _process_events()  # let the window take its size before the camera is fitted to it
    viewer.reset_view()
    _process_events()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(path=str(args.output), canvas_only=False, flash=False)
    print(f"wrote {args.output} (model {fused.metadata['napari_isfl']['model']})")
    if own_viewer:
        viewer.close()
    return args.output


if __name__ == "__main__":
    main(sys.argv[1:])

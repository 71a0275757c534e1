"""The "Fuse modalities" dock widget: layout and controls.

The widget collects the choices (input layers in order, modality tags, model, device, patch size,
overlap, output options), validates them on the GUI thread with
:func:`napari_isfl._layers.prepare_fusion`, and hands the run to a
:class:`~napari_isfl._widget_session.FusionSession` (worker thread, progress, cancel, results). It holds
no fusion logic of its own; the same computation is :func:`napari_isfl.fuse_layers` for scripts.

Inputs on different voxel grids are refused with a message (status line and a notification) and a
one-click "Resample onto <reference> and run" button; the first input is the reference grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
)

from ..normalization import FUNCTIONAL_MODALITIES
from .session import FusionSession

__all__ = ["FusionWidget"]

MODALITIES = ("mri", "ct", "pet", "spect")
CHECKPOINT_CHOICE = "checkpoint file…"
MIN_INPUTS = 2


def _device_choices() -> list[str]:
    import torch

    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        choices += ["cuda"] + ([f"cuda:{i}" for i in range(count)] if count > 1 else [])
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        choices.append("mps")
    return choices


class _InputRow(Container):
    """One input: an image layer and its modality tag, with a button that removes the row."""

    def __init__(self, layer_choices, on_remove) -> None:
        self.layer = ComboBox(choices=layer_choices, nullable=True, tooltip="image layer to fuse")
        self.modality = ComboBox(
            choices=list(MODALITIES),
            value="mri",
            tooltip="modality tag (set from the layer's name when it says, e.g. 'PET', 'CT')",
        )
        self.remove = PushButton(text="✕", tooltip="remove this input")
        super().__init__(widgets=[self.layer, self.modality, self.remove], layout="horizontal", labels=False)
        self.margins = (0, 0, 0, 0)
        self.layer.changed.connect(self._guess_modality)
        self.remove.changed.connect(lambda: on_remove(self))
        self._guess_modality(self.layer.value)

    def _guess_modality(self, layer: Any) -> None:
        from .layers import _layer_modality

        if layer is not None:
            self.modality.value = _layer_modality(layer)


class FusionWidget(Container):
    """Fuse two or more co-registered image layers into one (plus optional stability/contribution maps).

    Args:
        viewer: the napari viewer (injected by napari when the widget opens from the Plugins menu).

    Attributes:
        session: the :class:`FusionSession` running the fusions (``session.synchronous = True`` or
            ``NAPARI_ISFL_SYNC=1`` runs them on the GUI thread, for tests).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from ..model.checkpoint import available_models

        self._viewer = viewer
        self.inputs = Container(labels=False, label="Inputs", tooltip="layers to fuse, in order")
        self.inputs.margins = (0, 0, 0, 0)
        self.add_input_button = PushButton(text="Add input", tooltip="fuse one more layer")
        self.model = ComboBox(
            label="Model",
            choices=["default", *available_models(), CHECKPOINT_CHOICE],
            value="default",
            tooltip="'default': the shipped model for 2D or 3D inputs; or a checkpoint file",
        )
        self.checkpoint = FileEdit(label="Checkpoint", mode="r", filter="Checkpoints (*.pt *.pth *.ckpt)")
        self.device = ComboBox(
            label="Device", choices=_device_choices(), value="auto", tooltip="auto: CUDA when present"
        )
        self.patch_size = LineEdit(
            label="Patch size",
            value="auto",
            tooltip="sliding-window size: 'auto' (the model's training crop size for images more than "
            "twice as large, else the whole image when it fits), 'training' (always the training "
            "crop size), "
            "one size (96) or one per axis (128,128,96)",
        )
        self.overlap = FloatSpinBox(
            label="Overlap", value=0.25, min=0.0, max=0.9, step=0.05, tooltip="window overlap fraction"
        )
        self.stability = CheckBox(
            text="Stability map",
            tooltip="how much the fused value changes when regions of single modalities are masked (slower)",
        )
        self.contributions = CheckBox(
            text="Contribution maps", tooltip="each input's share of the fused image (added hidden)"
        )
        self.lesion_guard = CheckBox(
            text="Keep FLAIR lesions visible",
            value=True,
            tooltip="the input whose layer name says FLAIR keeps at least 80 % of its hyperintensity "
            "(oedema, MS plaque) contrast in the fusion: its share of the coarsest blend level is raised "
            "where the learned blend keeps less (blend models; the provenance says what was done)",
        )
        self.overlay = CheckBox(
            text="Colour overlay for PET/SPECT",
            value=True,
            tooltip="show PET/SPECT inputs in colour over the fused grey image",
        )
        self.resample = CheckBox(
            text="Resample onto the first input",
            tooltip="resample inputs on other grids onto the first input's grid instead of refusing them",
        )
        self.output_name = LineEdit(label="Output name", value="", tooltip="empty: '<inputs> fused'")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False)
        buttons.margins = (0, 0, 0, 0)
        self.resample_button = PushButton(text="Resample onto the reference and run")
        self.register_button = PushButton(
            text="Register onto the reference",
            tooltip="scans that moved between acquisitions: rigid registration by mutual information "
            "(adds a registered layer per input and selects it; then Run fuses)",
        )
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.inputs,
                Label(value="The first input is the reference grid."),
                self.add_input_button,
                self.model,
                self.checkpoint,
                self.device,
                self.patch_size,
                self.overlap,
                self.stability,
                self.contributions,
                self.lesion_guard,
                self.overlay,
                self.resample,
                self.output_name,
                buttons,
                self.resample_button,
                self.register_button,
                self.status,
            ]
        )
        self.status.native.setWordWrap(True)
        self.checkpoint.hide()
        self.resample_button.hide()
        self.register_button.hide()

        self.session = FusionSession(viewer, on_state=self._on_session_state)
        for _ in range(MIN_INPUTS):
            self.add_input()
        self._fill_duplicate_rows()

        self.add_input_button.changed.connect(self.add_input)
        self.model.changed.connect(self._on_model_changed)
        self.run_button.changed.connect(lambda: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self.resample_button.changed.connect(lambda: self.run(resample=True))
        self.register_button.changed.connect(lambda: self.register())
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)

    # -- inputs ----------------------------------------------------------------------------------

    @property
    def rows(self) -> list[_InputRow]:
        return list(self.inputs)

    def _image_layers(self, _widget: Any = None) -> list[tuple[str, napari.layers.Image]]:
        image_layers = [layer for layer in self._viewer.layers if isinstance(layer, napari.layers.Image)]
        return [(layer.name, layer) for layer in image_layers]

    def add_input(self) -> _InputRow:
        """Add an input row (defaults to an image layer not chosen yet)."""
        row = _InputRow(self._image_layers, self._remove_input)
        self.inputs.append(row)
        self._fill_duplicate_rows()
        return row

    def _remove_input(self, row: _InputRow) -> None:
        if len(self.inputs) <= MIN_INPUTS:
            self.status.value = f"Fusion needs at least {MIN_INPUTS} inputs."
            return
        self.inputs.remove(row)

    def set_inputs(
        self, layers: Sequence[napari.layers.Image], modalities: Sequence[str] | None = None
    ) -> None:
        """Choose the input layers (and optionally their modality tags), in order, for scripts and tests."""
        while len(self.inputs) < len(layers):
            self.add_input()
        while len(self.inputs) > max(len(layers), MIN_INPUTS):
            self.inputs.remove(self.rows[-1])
        for index, (row, layer) in enumerate(zip(self.rows, layers, strict=False)):
            row.layer.value = layer
            if modalities is not None:
                row.modality.value = modalities[index]

    def _fill_duplicate_rows(self) -> None:
        """Give rows that are empty or repeat an earlier row's layer a layer not chosen yet."""
        self.inputs.reset_choices()
        chosen: list[Any] = []
        for row in self.rows:
            layer = row.layer.value
            if layer is None or any(layer is c for c in chosen):
                unused = [lyr for _, lyr in self._image_layers() if not any(lyr is c for c in chosen)]
                if unused:
                    row.layer.value = unused[0]
                    layer = unused[0]
            chosen.append(layer)

    def _on_layers_changed(self, event: Any = None) -> None:
        self._fill_duplicate_rows()

    def _on_model_changed(self, value: str) -> None:
        self.checkpoint.visible = value == CHECKPOINT_CHOICE

    # -- run -------------------------------------------------------------------------------------

    def _model_argument(self) -> str:
        if self.model.value != CHECKPOINT_CHOICE:
            return str(self.model.value)
        path = self.checkpoint.value
        if path is None or str(path) in ("", "."):
            raise ValueError("choose a checkpoint file, or pick the 'default' model")
        return str(Path(path).expanduser())

    def options(self) -> dict[str, Any]:
        """The :func:`~napari_isfl._layers.compute_fusion` options the controls describe.

        Raises:
            ValueError: an unreadable patch size or a missing checkpoint file.
        """
        from ..inference.windows import parse_patch_size  # torch loads when the first fusion is asked for

        return {
            "model": self._model_argument(),
            "device": str(self.device.value),
            "roi_size": parse_patch_size(self.patch_size.value),
            "overlap": float(self.overlap.value),
            "stability": bool(self.stability.value),
            "contributions": bool(self.contributions.value),
            "overlay": bool(self.overlay.value),
            "lesion_guard": "auto" if self.lesion_guard.value else None,
        }

    def run(self, resample: bool | None = None) -> None:
        """Check the inputs and start a fusion (``resample`` overrides the checkbox)."""
        from napari.utils.notifications import show_error

        from ..spatial import CoregistrationError
        from .layers import prepare_fusion

        if self.session.running:
            return
        self.resample_button.hide()
        layers = self._chosen_layers()
        if layers is None:
            return
        try:
            options = self.options()
            request = prepare_fusion(
                layers,
                [row.modality.value for row in self.rows],
                resample=self.resample.value if resample is None else resample,
                name=self.output_name.value.strip() or None,
            )
        except CoregistrationError as error:
            self._offer_resampling(str(error), layers[0].name)
            return
        except (ValueError, TypeError) as error:
            self._refuse(str(error))
            return
        except Exception as error:  # never a silent failure
            show_error(f"Fusion could not start: {type(error).__name__}: {error}")
            raise
        # the overlay box means "when there is PET/SPECT": no warning for an all-MRI run
        options["overlay"] = options["overlay"] and any(
            m in FUNCTIONAL_MODALITIES for m in request.modalities
        )
        self.session.start(request, options)

    def register(self, transform: str = "rigid") -> None:
        """Register the inputs that are off the reference grid onto it (in the worker, with progress and
        cancel); the registered layers are added on the reference grid and chosen in their rows."""
        from napari.utils.notifications import show_error

        from .layers import prepare_fusion

        if self.session.running:
            return
        layers = self._chosen_layers()
        if layers is None:
            return
        try:
            request = prepare_fusion(layers, [row.modality.value for row in self.rows], resample=True)
        except (ValueError, TypeError) as error:
            self._refuse(str(error))
            return
        except Exception as error:  # never a silent failure
            show_error(f"Registration could not start: {type(error).__name__}: {error}")
            raise
        self.resample_button.hide()
        self.register_button.hide()
        self.session.start(request, {"transform": transform}, job="register")

    def _use_registered_layers(self) -> None:
        """After a registration: each row whose input was registered now names the registered layer."""
        for layer in self.session.last_layers:
            source = f"{layer.name[: -len(' registered')]}" if layer.name.endswith(" registered") else None
            for row in self.rows:
                row.layer.reset_choices()  # the new layers become choices
                if source is not None and row.layer.value is not None and row.layer.value.name == source:
                    row.layer.value = layer

    def cancel(self) -> None:
        """Stop the running fusion before its next window batch; the viewer is left unchanged."""
        self.session.cancel()

    def _chosen_layers(self) -> list | None:
        """The layers of the input rows, or ``None`` (and a message) when a row has none."""
        layers = [row.layer.value for row in self.rows]
        if any(layer is None for layer in layers):
            self._refuse("Choose an image layer for every input (or remove the empty row).")
            return None
        return layers

    def _refuse(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.value = message
        show_error(message)

    def _offer_resampling(self, message: str, reference: str) -> None:
        from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

        self.status.value = message
        self.resample_button.text = f"Resample onto '{reference}' and run"
        self.resample_button.show()
        self.register_button.text = f"Register onto '{reference}'"
        self.register_button.show()
        # the toast carries the same one-click action as the button
        notification_manager.dispatch(
            Notification(
                message,
                severity=NotificationSeverity.ERROR,
                actions=[("Resample and run", lambda: self.run(resample=True))],
            )
        )

    def _on_session_state(self, state: str, message: str) -> None:
        running = state in ("running", "progress", "cancelling")
        if state == "done" and self.session.job == "register":
            self._use_registered_layers()
            message += ". Press Run to fuse."
        try:
            self.run_button.enabled = not running
            self.resample_button.enabled = not running
            self.register_button.enabled = not running
            self.cancel_button.enabled = running and state != "cancelling"
            self.status.value = message
        except RuntimeError:  # the dock was closed while a run went on: its result still arrives
            pass

"""Fusion of napari layers: the console/script API and the pieces the widget runs.

Nothing here imports Qt, and napari only inside functions, so ``import napari_isfl`` stays cheap. The
work is split in three steps so that the widget can run the middle one on a worker thread:

1. :func:`prepare_fusion` (main thread): validate the chosen layers, check that they share the
   reference layer's voxel grid, and take a :class:`FusionRequest` snapshot (arrays, names,
   modalities, the reference's spatial metadata). Raises :class:`~napari_isfl.io.CoregistrationError`
   for layers on different grids unless ``resample`` is set.
2. :func:`compute_fusion` (any thread; touches no layer, viewer or widget): resample when asked, run
   :func:`napari_isfl.inference.fuse`, and build napari LayerDataTuples ``(data, kwargs, "image")``.
3. :func:`add_or_update_layers` (main thread): put them on a viewer, updating earlier outputs of the
   same name instead of adding copies.

:func:`fuse_layers` chains the three for the console and scripts::

    import napari_isfl
    napari_isfl.fuse_layers(viewer.layers["MRI"], viewer.layers["PET"], viewer=viewer)

Spatial metadata: every output gets the reference (first) layer's ``scale``, ``translate``,
``rotate``, ``shear``, ``affine``, ``units``, ``axis_labels`` and a copy of its ``metadata``; the
``metadata["napari_isfl"]`` namespace is replaced by the provenance of the run (and keeps the
reference's NIfTI affine and header, so that the NIfTI writer restores them).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io import split_colour
from ..normalization import guess_modality, robust_range
from ..spatial import CoregistrationError, grid_difference, is_orthogonal, resample_to_grid

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import napari.layers

    from ..inference import FusionEngine

__all__ = [
    "METADATA_KEY",
    "FusionRequest",
    "add_or_update_layers",
    "compute_fusion",
    "compute_registration",
    "fuse_layers",
    "layer_world_affine",
    "prepare_fusion",
    "world_affine",
]

#: namespace of everything napari-isfl keeps in a layer's ``metadata``
METADATA_KEY = "napari_isfl"
#: output roles written to ``metadata[METADATA_KEY]["role"]``; layers with one are ours to update
OUTPUT_ROLES = ("fused", "stability", "contribution", "overlay", "registered")
#: colour maps of the per-modality contribution maps (share 0..1), in input order: perceptually uniform
CONTRIBUTION_COLORMAPS = ("viridis", "cividis", "plasma", "inferno", "magma", "turbo")
#: the stability map's colour map, and the opacity of the maps when the user shows them
MAP_COLORMAP = "viridis"
MAP_OPACITY = 0.6
#: output roles whose layers carry a colour bar (their values are read, not just seen)
COLORBAR_ROLES = ("stability", "contribution")
#: colour overlay of a functional input (fused grey underneath, additive blending on top)
OVERLAY_COLORMAPS = {"pet": "inferno", "spect": "hot"}
OVERLAY_OPACITY = 0.6

LayerDataTuple = tuple[Any, dict, str]


# ----------------------------------------------------------------------------------------------
# spatial helpers
# ----------------------------------------------------------------------------------------------


def world_affine(
    scale: Sequence[float],
    translate: Sequence[float] | None = None,
    rotate: Any = None,
    shear: Any = None,
    affine: Any = None,
) -> np.ndarray:
    """The ``(D+1, D+1)`` data-to-world matrix of a layer from its transform attributes.

    napari maps data to world as ``affine @ (translate + rotate @ shear @ scale)``; this composes the
    same chain with napari's own :class:`~napari.utils.transforms.Affine`, so a layer's state dict
    (as a writer receives it) gives the matrix without a layer object.
    """
    from napari.utils.transforms import Affine

    ndim = len(scale)
    data_to_physical = Affine(
        scale=scale,
        translate=translate if translate is not None else (0.0,) * ndim,
        rotate=rotate,
        shear=shear,
        ndim=ndim,
    )
    if affine is None:
        physical_to_world = np.eye(ndim + 1)
    elif isinstance(affine, Affine):
        physical_to_world = affine.affine_matrix
    else:
        physical_to_world = np.asarray(affine, dtype=float)
        if physical_to_world.shape == (ndim, ndim):  # a linear part only
            physical_to_world = np.block(
                [[physical_to_world, np.zeros((ndim, 1))], [np.zeros((1, ndim)), np.ones((1, 1))]]
            )
    return physical_to_world @ data_to_physical.affine_matrix


def layer_world_affine(layer: napari.layers.Layer) -> np.ndarray:
    """The ``(D+1, D+1)`` data-to-world matrix of a napari layer (public attributes only)."""
    return world_affine(layer.scale, layer.translate, layer.rotate, layer.shear, layer.affine)


def _spatial_kwargs(layer: napari.layers.Layer) -> dict:
    """The reference layer's placement in the world, as layer keyword arguments."""
    return {
        "scale": tuple(float(v) for v in layer.scale),
        "translate": tuple(float(v) for v in layer.translate),
        "rotate": np.array(layer.rotate, dtype=float),
        "shear": np.array(layer.shear, dtype=float),
        "affine": np.array(layer.affine.affine_matrix, dtype=float),
        "units": tuple(str(u) for u in layer.units),
        "axis_labels": tuple(layer.axis_labels),
    }


# ----------------------------------------------------------------------------------------------
# step 1: validate and snapshot (main thread)
# ----------------------------------------------------------------------------------------------


@dataclass
class FusionRequest:
    """A snapshot of what to fuse, safe to hand to a worker thread (it holds no layer objects).

    Attributes:
        sources: each input's array-like data (full resolution level of a multiscale layer).
        names: the input layers' names.
        modalities: one tag per input (``"mri"``, ``"ct"``, ``"pet"``, ``"spect"``).
        rgb: whether each input is an RGB layer (fused as its luminance).
        world_affines: each input's data-to-world matrix.
        needs_resample: which inputs lie off the reference grid (resampled in :func:`compute_fusion`).
        reference_shape: the reference layer's data shape: the outputs' shape.
        spatial: the reference's ``scale``, ``translate``, ``rotate``, ``shear``, ``affine``, ``units``
            and ``axis_labels``.
        reference_metadata: a shallow copy of the reference layer's ``metadata``.
        source_metadata: a shallow copy of every input layer's ``metadata`` (registration needs each
            input's own geometry).
        output_name: name of the fused layer; the other outputs are named after it.
    """

    sources: list[Any]
    names: list[str]
    modalities: list[str]
    rgb: list[bool]
    world_affines: list[np.ndarray]
    needs_resample: list[bool]
    reference_shape: tuple[int, ...]
    spatial: dict
    reference_metadata: dict = field(default_factory=dict)
    output_name: str = ""
    source_metadata: list[dict] = field(default_factory=list)


def _layer_modality(layer: napari.layers.Layer) -> str:
    tagged = (layer.metadata.get(METADATA_KEY) or {}).get("modality")
    return str(tagged or guess_modality(layer.name) or "mri").lower()


def prepare_fusion(
    layers: Sequence[napari.layers.Image],
    modalities: Sequence[str | None] | None = None,
    *,
    resample: bool = False,
    name: str | None = None,
) -> FusionRequest:
    """Validate image layers for fusion and snapshot them; the first layer is the reference grid.

    Args:
        layers: two or more image layers, 2D or 3D, in the order given to the network.
        modalities: one tag per layer; ``None`` (or a ``None`` entry) takes the layer's
            ``metadata["napari_isfl"]["modality"]`` (set by the reader), else guesses from its name,
            else ``"mri"``.
        resample: allow layers off the reference grid (they are resampled in :func:`compute_fusion`).
        name: name of the fused output (default ``"<first> + <second> ... fused"``).

    Raises:
        TypeError: a layer that is not an image layer.
        ValueError: fewer than two layers, a layer chosen twice, a layer that is not 2D/3D, a wrong
            number of modality tags.
        CoregistrationError: layers of different dimensionality, or on different grids without
            ``resample``.
    """
    from napari.layers import Image

    layers = list(layers)
    if len(layers) < 2:
        raise ValueError(f"fusion needs at least two image layers, got {len(layers)}")
    for layer in layers:
        if not isinstance(layer, Image):
            raise TypeError(f"layer {layer.name!r} is a {type(layer).__name__} layer; choose image layers")
    seen: set[int] = set()
    for layer in layers:
        if id(layer) in seen:
            raise ValueError(f"layer {layer.name!r} is chosen twice; choose different layers")
        seen.add(id(layer))
    if modalities is None:
        modalities = [None] * len(layers)
    if len(modalities) != len(layers):
        raise ValueError(f"got {len(modalities)} modality tags for {len(layers)} layers")
    tags = [
        str(tag).lower() if tag else _layer_modality(layer)
        for tag, layer in zip(modalities, layers, strict=True)
    ]

    sources, shapes = [], []
    for layer in layers:
        data = layer.data[0] if layer.multiscale else layer.data
        shape = tuple(data.shape[:-1] if layer.rgb else data.shape)
        if len(shape) not in (2, 3):
            raise ValueError(
                f"layer {layer.name!r} has {len(shape)} dimensions {shape}; fusion takes 2D images or 3D "
                "volumes (for a time series, add one time point as its own layer first)"
            )
        sources.append(data)
        shapes.append(shape)

    reference = layers[0]
    ref_matrix = layer_world_affine(reference)
    matrices = [layer_world_affine(layer) for layer in layers]
    needs_resample = [False]
    for layer, shape, matrix in zip(layers[1:], shapes[1:], matrices[1:], strict=True):
        if len(shape) != len(shapes[0]):
            raise CoregistrationError(
                f"layer {layer.name!r} is {len(shape)}D but the reference {reference.name!r} is "
                f"{len(shapes[0])}D; fuse layers of the same dimensionality"
            )
        difference = grid_difference(shape, matrix, shapes[0], ref_matrix)
        if difference is not None and not resample:
            raise CoregistrationError(
                f"layer {layer.name!r} is not on the voxel grid of the reference layer {reference.name!r} "
                f"({difference}). Resample it onto {reference.name!r} (widget: 'Resample onto reference'; "
                "console: resample=True) or co-register the images first."
            )
        needs_resample.append(difference is not None)
    if not is_orthogonal(ref_matrix):
        warnings.warn(
            f"layer {reference.name!r} has a sheared (non-orthogonal) data-to-world transform; the fused "
            "layers copy it, and napari shows 2D slices of such layers only approximately",
            UserWarning,
            stacklevel=2,
        )
    names = [layer.name for layer in layers]
    return FusionRequest(
        sources=sources,
        names=names,
        modalities=tags,
        rgb=[bool(layer.rgb) for layer in layers],
        world_affines=matrices,
        needs_resample=needs_resample,
        reference_shape=shapes[0],
        spatial=_spatial_kwargs(reference),
        reference_metadata=dict(reference.metadata),
        output_name=name or f"{' + '.join(names)} fused",
        source_metadata=[dict(layer.metadata) for layer in layers],
    )


# ----------------------------------------------------------------------------------------------
# step 2: compute (worker thread: no layers, no viewer, no Qt)
# ----------------------------------------------------------------------------------------------


def _as_grey(data: Any, rgb: bool) -> np.ndarray:
    """An RGB layer's luminance (as napari_isfl.io does for colour files), other layers as they are."""
    return split_colour(data)[0] if rgb else np.asarray(data)


def compute_fusion(
    request: FusionRequest,
    *,
    stability: bool = False,
    contributions: bool = False,
    overlay: bool = False,
    engine: FusionEngine | None = None,
    **fuse_options: Any,
) -> list[LayerDataTuple]:
    """Resample (when the request asks), fuse, and describe the output layers.

    Safe on a worker thread: it reads only the request's arrays and touches no layer, viewer or widget.

    Args:
        request: from :func:`prepare_fusion`.
        stability: add the stability map (``magma``, additive, contrast 0 to the 99.5th percentile of
            the non-zero values).
        contributions: add one contribution map per input (distinct colour maps, additive, hidden at
            first so the fused image stays readable).
        overlay: add each PET/SPECT input on the reference grid as a colour overlay (``inferno`` for
            PET, ``hot`` for SPECT; additive blending, reduced opacity) above the fused grey image.
        engine: the :class:`~napari_isfl.inference.FusionEngine` to fuse with (the widget keeps one);
            without it ``fuse_options`` may name ``model`` and ``device``.
        **fuse_options: passed to :meth:`~napari_isfl.inference.FusionEngine.fuse` (``roi_size``,
            ``overlap``, ``progress``, ``cancel``, ...).

    Returns:
        LayerDataTuples ``(data, kwargs, "image")``: fused first, then overlays, stability and
        contributions.

    Raises:
        FusionCancelled: the ``cancel`` callback asked to stop (nothing is returned).
        ValueError, CheckpointError: from :func:`~napari_isfl.inference.fuse`.
    """
    from nibabel.orientations import apply_orientation

    from ..inference import FusionEngine
    from .reader import stored_and_displayed

    if engine is None:
        engine = FusionEngine(fuse_options.pop("model", "default"), fuse_options.pop("device", "auto"))
    arrays = []
    for data, rgb, matrix, resample in zip(
        request.sources, request.rgb, request.world_affines, request.needs_resample, strict=True
    ):
        grey = _as_grey(data, rgb)
        if resample:
            grey = resample_to_grid(grey, matrix, request.reference_shape, request.world_affines[0])
        arrays.append(grey)
    # a volume the reader shows axial is fused in its file's axis order, so the napari fusion is the
    # fusion `isfl fuse` makes of the same files, voxel for voxel; the outputs are shown like the inputs
    orientation = stored_and_displayed((request.reference_metadata.get(METADATA_KEY) or {}).get("nifti"))
    shown = arrays  # the inputs as displayed (overlays are drawn from these)
    if orientation is not None:
        arrays = [apply_orientation(a, orientation[1]) for a in arrays]
    result = engine.fuse(
        arrays,
        request.modalities,
        names=request.names,
        stability=stability,
        contributions=contributions,
        **fuse_options,
    )
    if orientation is not None:
        result.fused = np.ascontiguousarray(apply_orientation(result.fused, orientation[0]))
        if result.stability is not None:
            result.stability = np.ascontiguousarray(apply_orientation(result.stability, orientation[0]))
        if result.contributions is not None:
            result.contributions = np.stack(
                [np.ascontiguousarray(apply_orientation(c, orientation[0])) for c in result.contributions]
            )

    reference_ns = request.reference_metadata.get(METADATA_KEY) or {}
    base_ns = {
        **copy.deepcopy(result.provenance),
        "reference_layer": request.names[0],
        "resampled_layers": [n for n, r in zip(request.names, request.needs_resample, strict=True) if r],
    }
    if "nifti" in reference_ns:  # the outputs lie on the reference grid: keep its NIfTI geometry
        base_ns["nifti"] = reference_ns["nifti"]

    def layer_kwargs(name: str, role: str, extra_ns: dict | None = None, **display: Any) -> dict:
        metadata = {k: v for k, v in request.reference_metadata.items() if k != METADATA_KEY}
        metadata[METADATA_KEY] = {"role": role, **base_ns, **(extra_ns or {})}
        return {"name": name, **copy.deepcopy(request.spatial), "metadata": metadata, **display}

    fused_name = request.output_name
    outputs: list[LayerDataTuple] = [
        (
            result.fused,
            layer_kwargs(fused_name, "fused", colormap="gray", contrast_limits=(0.0, 1.0)),
            "image",
        )
    ]
    if overlay:
        for index, modality in enumerate(result.modalities):
            if modality not in OVERLAY_COLORMAPS:
                continue
            norm = result.provenance["normalization"][index]
            low, high = float(norm["low"]), float(norm["high"])
            outputs.append(
                (
                    shown[index],
                    layer_kwargs(
                        f"{fused_name} overlay {request.names[index]}",
                        "overlay",
                        {"overlay_of": request.names[index]},
                        colormap=OVERLAY_COLORMAPS[modality],
                        blending="additive",
                        opacity=OVERLAY_OPACITY,
                        contrast_limits=(low, high if high > low else low + 1.0),
                    ),
                    "image",
                )
            )
        if len(outputs) == 1:
            warnings.warn(
                "colour overlay asked for but no input is tagged PET or SPECT; no overlay added",
                UserWarning,
                stacklevel=2,
            )
    if result.stability is not None:
        outputs.append(
            (
                result.stability,
                layer_kwargs(
                    f"{fused_name} stability",
                    "stability",
                    # hidden, translucent and perceptually uniform: shown on demand over the fusion,
                    # with a colour bar giving its scale (the std of the fused value, same units)
                    colormap=MAP_COLORMAP,
                    blending="translucent",
                    opacity=MAP_OPACITY,
                    visible=False,
                    contrast_limits=(0.0, robust_range(result.stability, 0.0, 99.5)[1] or 1e-6),
                ),
                "image",
            )
        )
    if result.contributions is not None:
        for index, input_name in enumerate(request.names):
            outputs.append(
                (
                    result.contributions[index],
                    layer_kwargs(
                        f"{fused_name} contribution {input_name}",
                        "contribution",
                        {"contribution_of": input_name},
                        colormap=CONTRIBUTION_COLORMAPS[index % len(CONTRIBUTION_COLORMAPS)],
                        blending="translucent",
                        opacity=MAP_OPACITY,
                        contrast_limits=(0.0, 1.0),
                        visible=False,
                    ),
                    "image",
                )
            )
    return outputs


def _as_image_data(request: FusionRequest, index: int):
    """One input of a request as :class:`~napari_isfl.io.ImageData` in the file's own orientation and
    RAS+ affine when the reader made it (so registration sees what the CLI sees), else in napari's
    world coordinates."""
    from nibabel.orientations import apply_orientation

    from ..io import ImageData
    from .reader import stored_and_displayed

    nifti = (request.source_metadata[index].get(METADATA_KEY) or {}).get("nifti")
    grey = _as_grey(request.sources[index], request.rgb[index])
    orientation = stored_and_displayed(nifti)
    if orientation is not None:
        stored = np.ascontiguousarray(apply_orientation(grey, orientation[1]))
        return ImageData(
            stored, None, "array", np.asarray(nifti["affine"], dtype=float), stored_shape=stored.shape
        )
    matrix = request.world_affines[index]
    if grey.ndim == 3:
        return ImageData(np.asarray(grey), None, "array", matrix, stored_shape=grey.shape)
    return ImageData(np.asarray(grey), None, "array", None, stored_shape=grey.shape)


def compute_registration(
    request: FusionRequest,
    transform: str = "rigid",
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[LayerDataTuple]:
    """Register every input that is off the reference grid onto the reference (mutual information,
    :func:`napari_isfl.registration.register`) and describe the registered layers: on the reference's
    grid and placement, in the input's own units, the transform in ``metadata["napari_isfl"]``.

    Safe on a worker thread (it touches no layer). Raises ``RegistrationCancelled`` when ``cancel`` asks.
    """
    from nibabel.orientations import apply_orientation

    from ..registration import register
    from .reader import stored_and_displayed

    moving = [i for i, off in enumerate(request.needs_resample) if off]
    if not moving:
        raise ValueError("every input already lies on the reference grid: nothing to register")
    reference = _as_image_data(request, 0)
    orientation = stored_and_displayed((request.reference_metadata.get(METADATA_KEY) or {}).get("nifti"))
    outputs = []
    for count, index in enumerate(moving):

        def report(step, count: int = count) -> None:
            if progress is not None:  # all registrations on one bar
                progress(count * step.total + step.done, len(moving) * step.total)

        result = register(
            _as_image_data(request, index), reference, transform, progress=report, cancel=cancel
        )
        array = result.image.array
        if orientation is not None:  # shown like the reference
            array = np.ascontiguousarray(apply_orientation(array, orientation[0]))
        metadata = {k: v for k, v in request.source_metadata[index].items() if k != METADATA_KEY}
        namespace = {
            "role": "registered",
            "modality": request.modalities[index],
            "registered_onto": request.names[0],
            "registration": result.provenance(),
        }
        reference_ns = request.reference_metadata.get(METADATA_KEY) or {}
        if "nifti" in reference_ns:  # on the reference grid: its NIfTI geometry, for saving
            namespace["nifti"] = reference_ns["nifti"]
        metadata[METADATA_KEY] = namespace
        low, high = robust_range(array, 0.5, 99.5)
        outputs.append(
            (
                array,
                {
                    "name": f"{request.names[index]} registered",
                    **copy.deepcopy(request.spatial),
                    "metadata": metadata,
                    "colormap": "gray",
                    "contrast_limits": (low, high if high > low else low + 1.0),
                },
                "image",
            )
        )
    return outputs


# ----------------------------------------------------------------------------------------------
# step 3: put the outputs on a viewer (main thread)
# ----------------------------------------------------------------------------------------------

# attributes refreshed on an existing output layer; display choices the user may have changed since
# (colour map, opacity, blending, visibility) are kept
_UPDATED = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels", "metadata")


def add_or_update_layers(
    viewer: napari.components.ViewerModel, outputs: Sequence[LayerDataTuple]
) -> list[napari.layers.Image]:
    """Add output LayerDataTuples to ``viewer``, updating earlier napari-isfl outputs of the same name.

    A layer of the same name that napari-isfl did not make is left alone (the new layer gets a fresh
    name from napari instead), so a user's own layer is never overwritten.
    """
    from napari.layers import Image

    layers = []
    for data, kwargs, _layer_type in outputs:
        name = kwargs["name"]
        existing = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401 (LayerList.get is no dict.get)
        ours = (
            isinstance(existing, Image)
            and not existing.rgb
            and (existing.metadata.get(METADATA_KEY) or {}).get("role") in OUTPUT_ROLES
        )
        if existing is not None and ours and existing.ndim == np.ndim(data):
            existing.data = data
            for key in _UPDATED:
                setattr(existing, key, kwargs[key])
            existing.contrast_limits = kwargs["contrast_limits"]
            layers.append(existing)
        elif existing is not None and ours:  # other dimensionality: replace it in place
            index = viewer.layers.index(existing)
            viewer.layers.remove(existing)
            layer = Image(data, **kwargs)
            viewer.layers.insert(index, layer)
            layers.append(layer)
        else:
            layers.append(viewer.add_image(data, **kwargs))
        role = (kwargs["metadata"].get(METADATA_KEY) or {}).get("role")
        if role in COLORBAR_ROLES and hasattr(layers[-1], "colorbar"):  # napari >= 0.5
            layers[-1].colorbar.visible = True  # drawn while the layer is shown
    return layers


# ----------------------------------------------------------------------------------------------
# console and script API
# ----------------------------------------------------------------------------------------------


def fuse_layers(
    *layers: napari.layers.Image | str | Sequence[napari.layers.Image | str],
    modalities: Sequence[str | None] | None = None,
    viewer: napari.components.ViewerModel | None = None,
    model: str = "default",
    device: str = "auto",
    stability: bool = False,
    contributions: bool = False,
    overlay: bool = False,
    resample: bool = False,
    name: str | None = None,
    **fuse_options: Any,
) -> list[LayerDataTuple] | list[napari.layers.Image]:
    """Fuse two or more co-registered napari image layers (the first one is the reference grid).

    Args:
        *layers: image layers (or, with ``viewer``, layer names), 2D or 3D; a single list also works.
        modalities: one tag per layer (``"mri"``, ``"ct"``, ``"pet"``, ``"spect"``); default: the tag the
            NIfTI reader stored, else guessed from the layer name, else ``"mri"``.
        viewer: when given, the outputs are added to it (earlier outputs of the same name are
            updated, not duplicated) and the layers are returned.
        model: ``"default"``, a shipped model name, or a checkpoint file.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        stability: add the stability map.
        contributions: add per-modality contribution maps.
        overlay: add PET/SPECT inputs as colour overlays above the fused grey image.
        resample: resample layers that are off the reference grid onto it (through world
            coordinates) instead of refusing them.
        name: name of the fused layer (default ``"<first> + <second> fused"``); the other outputs are
            named after it (``"<name> stability"``, ``"<name> contribution <input>"``).
        **fuse_options: more :func:`napari_isfl.inference.fuse` options: ``roi_size``, ``overlap``,
            ``sw_batch_size``, ``stability_passes``, ``seed``, ``progress``, ``cancel``, ...

    Returns:
        without ``viewer``: LayerDataTuples ``(data, kwargs, "image")`` (a plugin can return them;
        ``viewer.add_layer(napari.layers.Layer.create(*t))`` adds one); with ``viewer``: the added
        or updated layers.

    Raises:
        CoregistrationError: layers on different grids and ``resample`` is False.
        ValueError, TypeError, CheckpointError: invalid layers or options, a missing model.

    Examples::

        >>> import napari_isfl
        >>> napari_isfl.fuse_layers(viewer.layers["T1c"], viewer.layers["FLAIR"], viewer=viewer)
        >>> napari_isfl.fuse_layers("MRI", "PET", viewer=viewer, overlay=True, stability=True)
        >>> data, kwargs, kind = napari_isfl.fuse_layers(ct_slice, mri_slice, device="cpu")[0]  # 2D
    """
    if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
        layers = tuple(layers[0])
    resolved = []
    for layer in layers:
        if isinstance(layer, str):
            if viewer is None:
                raise TypeError(f"layer given by name ({layer!r}) needs viewer=")
            resolved.append(viewer.layers[layer])
        else:
            resolved.append(layer)
    request = prepare_fusion(resolved, modalities, resample=resample, name=name)
    outputs = compute_fusion(
        request,
        stability=stability,
        contributions=contributions,
        overlay=overlay,
        model=model,
        device=device,
        **fuse_options,
    )
    if viewer is None:
        return outputs
    return add_or_update_layers(viewer, outputs)

"""Whole-image fusion: normalisation, sliding-window inference, stability and contribution maps.

A :class:`FusionEngine` holds a model (loaded once per dimensionality) on a device and fuses numpy arrays
(2D or 3D, N >= 2 modalities); the widget session, the cohort workers and the evaluation keep one for
many fusions. :func:`fuse` is the one-call form the console API documents. The predictor given to
MONAI's :class:`~monai.inferers.SlidingWindowInferer` is wrapped so that every window batch reports
progress and checks for cancellation.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from .. import __version__
from ..device import fast_cpu_layout, select_device
from ..io import split_colour, ycbcr_to_rgb
from ..lesions import (
    coverage_mask,
    guard_share,
    hyperintensity_mask,
    is_flair_name,
    normal_tissue,
    region_contrast,
)
from ..model import pyramid
from ..model.checkpoint import LoadedModel, load_model
from ..normalization import IntensitySpec, guess_modality, looks_like_hounsfield, normalize_intensity
from ..spatial import foreground_box
from .windows import count_windows, run_windows, window_edges, window_plan

__all__ = [
    "FusionCancelled",
    "FusionEngine",
    "FusionResult",
    "LesionGuard",
    "block_masks",
    "fuse",
    "fuse_tensor",
    "normalise_inputs",
]

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]

#: a voxel is brain (or body) when some normalised input exceeds this (as ``isfl evaluate`` measures)
BRAIN_THRESHOLD = 0.02


@dataclass(frozen=True)
class LesionGuard:
    """Keep at least ``ratio`` of input ``source``'s hyperintensity contrast in the fusion.

    The hyperintensities are the brightest ``top_percent`` of that input (a FLAIR) inside the brain
    (:func:`napari_isfl.lesions.hyperintensity_mask`); their contrast is measured against normal tissue 2
    voxels away. When the learned blend keeps less, the input's share of the coarsest pyramid level is
    raised to the least value that keeps ``ratio`` (the blend stays convex, finer levels stay as learned),
    and if that is not enough (a lesion of a few voxels), its share of every level: the T1-weighted anatomy
    the model prefers cannot wash out an oedema or an MS plaque.

    Both the measurement and the raised share stay inside the input's own coverage (its foreground with
    the holes filled, :func:`~napari_isfl.lesions.coverage_mask`): where a FLAIR has no data (a slab it
    did not cover), the other inputs fill the fusion as the learned blend has them, instead of the
    FLAIR's zeros being pulled in.
    """

    source: int
    ratio: float = 0.8
    top_percent: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0 or not 0.0 < self.top_percent < 100.0:
            raise ValueError(
                f"a lesion guard needs 0 < ratio <= 1 and 0 < top_percent < 100, got {self.ratio} and "
                f"{self.top_percent}"
            )

    def apply(
        self,
        net: torch.nn.Module,
        batch: torch.Tensor,
        weights: list[torch.Tensor],
        residual: torch.Tensor | None,
        fused: torch.Tensor,
    ) -> tuple[torch.Tensor, list[torch.Tensor], dict]:
        """The guarded fusion, its weights, and a report of what was done, for a pyramid head's blend
        ``fused = net.compose(batch, weights, residual)`` of the normalised ``batch`` ``(1, N, *S)``.

        Two stages, each taken only as far as needed: the input's share of the coarsest level (where an
        oedema's brightness lives), then, for lesions too small for that level to hold (a few voxels), its
        share of every level, up to the input itself. The blend is linear in its weights, so each stage is
        a mixture of two fusions with a closed-form share (:func:`~napari_isfl.lesions.guard_share`).
        """
        images = batch[0].float().cpu().numpy()
        covered = coverage_mask(images[self.source], BRAIN_THRESHOLD)
        brain = (images > BRAIN_THRESHOLD).any(axis=0) & covered
        lesion = hyperintensity_mask(images[self.source], brain, self.top_percent)
        normal = normal_tissue(lesion, brain)

        def contrast(image: torch.Tensor) -> float:
            return region_contrast(image[0, 0].float().cpu().numpy(), lesion, normal)

        source = region_contrast(images[self.source], lesion, normal)
        learned = kept = contrast(fused)
        reach: list[torch.Tensor] = []  # the coverage at every pyramid level, made when a stage acts

        def own_weights(level: int) -> torch.Tensor:
            """Level ``level``'s weights with the input's share at 1 where it has data (its coverage,
            blurred where it ends, at that level) and the learned weights elsewhere."""
            if not reach:
                mask = torch.from_numpy(covered[None, None].astype(np.float32)).to(weights[0].device)
                reach.extend(pyramid.gaussian_pyramid(mask, len(weights)))
            onehot = torch.zeros_like(weights[level])
            onehot[:, self.source] = 1.0
            return reach[level] * onehot + (1.0 - reach[level]) * weights[level]

        shares = {"coarse_share": 0.0, "all_levels_share": 0.0}
        # stage 1: the coarsest level the input's own; stage 2: every level (the input itself)
        for key, first in (("coarse_share", len(weights) - 1), ("all_levels_share", 0)):
            if not (source > 0 and kept < self.ratio * source):  # kept enough (False for NaN: no lesion)
                break
            own = [own_weights(level) for level in range(first, len(weights))]
            floored = net.compose(batch, weights[:first] + own, residual)
            share = guard_share(source, kept, contrast(floored), self.ratio)
            if share == 0:
                break
            # the blend is linear in its weights: the fusion at share s is the mixture of the two fusions
            fused = ((1.0 - share) * fused + share * floored).clamp(0.0, 1.0)
            mixed = [share * o + (1.0 - share) * w for o, w in zip(own, weights[first:], strict=True)]
            weights = weights[:first] + mixed
            shares[key] = round(share, 4)
            kept = contrast(fused)
        report = {"input": self.source, "ratio": self.ratio, **shares}
        report["kept_learned"] = round(learned / source, 4) if source > 0 else None
        report["kept"] = round(kept / source, 4) if source > 0 else None
        return fused, weights, report


class FusionCancelled(RuntimeError):
    """Raised when the ``cancel`` callback asked to stop; no partial result is returned."""


@dataclass
class FusionResult:
    """The outputs of :func:`fuse`, all with the inputs' spatial shape.

    Attributes:
        fused: float32 in [0, 1].
        stability: per-voxel standard deviation of the fused value under test-time interventions
            (0 = unaffected by masking any modality's region; larger = less stable), or ``None``.
        contributions: ``(N, *shape)`` per-modality share of the finest-scale CFI mix (sums to 1),
            or ``None``.
        modalities: the modality tag of each input.
        provenance: model, checksum, device, parameters, normalisation, timings, version.
        fused_rgb: with colour inputs (``rgb=True``), ``(H, W, 3)`` float32 in [0, 1]: the fused
            luminance with the first colour input's chroma re-attached; else ``None``.
    """

    fused: np.ndarray
    stability: np.ndarray | None = None
    contributions: np.ndarray | None = None
    modalities: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    fused_rgb: np.ndarray | None = None


class FusionEngine:
    """A fusion session: one model (loaded once per input dimensionality) on one device.

    Keep one engine for many fusions (the napari widget, cohort workers, evaluation loops): the
    checkpoint is read and the network built only on the first fusion of each dimensionality.

    Args:
        model: ``"default"`` (the shipped model of the inputs' dimensionality), a shipped model name, a
            checkpoint path, or a :class:`~napari_isfl.model.checkpoint.LoadedModel`.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.

    Raises:
        ValueError: a device that is not there.

    Examples::

        engine = FusionEngine("isfl-3d", device="cpu")
        for t1c, flair in cases:
            fused = engine.fuse([t1c, flair], ["mri", "mri"]).fused
    """

    def __init__(
        self, model: str | os.PathLike | LoadedModel = "default", device: str | torch.device = "auto"
    ):
        self.model = model
        self.device = select_device(device)
        self._loaded: dict[int, LoadedModel] = {}

    def fuse_slicewise(
        self, volumes: Sequence[np.ndarray], modalities: Sequence[str] | None = None, **options
    ):
        """2.5D fusion with the engine's 2D model, slice by slice along the three axes, averaged (see
        :func:`napari_isfl.inference.slicewise.fuse_slicewise` for the options)."""
        from .slicewise import fuse_slicewise

        return fuse_slicewise(self, volumes, modalities, **options)

    def loaded_model(self, spatial_dims: int) -> LoadedModel:
        """The model for ``spatial_dims``-D inputs, on the engine's device (loaded on first use).

        Raises:
            ValueError: a given :class:`LoadedModel` of the other dimensionality.
            CheckpointError, FileNotFoundError: from :func:`~napari_isfl.model.checkpoint.load_model`.
        """
        if isinstance(self.model, LoadedModel):
            if self.model.spatial_dims != spatial_dims:
                raise ValueError(
                    f"model {self.model.name} is {self.model.spatial_dims}D but the inputs are "
                    f"{spatial_dims}D"
                )
            self.model.network.to(self.device).eval()
            fast_cpu_layout(self.model.network, self.device, spatial_dims)
            return self.model
        if spatial_dims not in self._loaded:
            loaded = load_model(str(self.model), spatial_dims, self.device)
            fast_cpu_layout(loaded.network, self.device, spatial_dims)
            self._loaded[spatial_dims] = loaded
        return self._loaded[spatial_dims]

    def fuse(
        self,
        images: Sequence[np.ndarray],
        modalities: Sequence[str] | None = None,
        *,
        roi_size: Sequence[int] | int | str | None = None,
        overlap: float = 0.25,
        sw_batch_size: int | None = None,
        amp: bool = True,
        normalization: Sequence[IntensitySpec | None] | None = None,
        stability: bool = False,
        stability_passes: int = 8,
        stability_smoothing: float | None = None,
        contributions: bool = False,
        crop_foreground: bool = True,
        seed: int = 0,
        names: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
        rgb: bool | Sequence[bool] | None = None,
        lesion_guard: int | str | None = "auto",
        lesion_guard_ratio: float = 0.8,
    ) -> FusionResult:
        """Fuse co-registered images of two or more modalities.

        Args:
            images: N arrays of one shape, 2D ``(H, W)`` or 3D ``(X, Y, Z)``, any real dtype.
            modalities: N tags (``"mri"``, ``"ct"``, ``"pet"``, ``"spect"``); ``None`` guesses from
                ``names`` and falls back to ``"mri"``.
            roi_size: sliding-window size; ``None`` = auto (see :func:`resolve_roi_size`: the training crop
                size for images more than twice that size, else the whole image when it fits); ``"training"``:
                the model's training crop size, so the cross-modal attention pools over regions of the size
                it was trained on (its grid is fixed, so its cells grow with the window).
            overlap: window overlap fraction in [0, 1).
            sw_batch_size: windows per network call; ``None``: as many as fit the one-window voxel budget
                (:data:`MAX_WINDOW_VOXELS`), at most :data:`MAX_WINDOW_BATCH` (small windows batched cut the
                per-call overhead: 32^3 windows of a brain on 2 CPU threads run about 1.6x faster by 4).
            amp: bfloat16 autocast on CUDA (ignored on CPU).
            normalization: per-input :class:`IntensitySpec` overriding the modality default (``None``
                entries keep the default).
            stability: also compute the stability map from ``stability_passes`` test-time interventions
                (alternating complementary and shared block masking; ``stability_passes`` extra passes):
                the per-voxel standard deviation of the fused value, smoothed at the hole size.
            stability_smoothing: Gaussian sigma (voxels) of that smoothing; ``None``: half the model's
                training hole size; 0: the raw standard deviation.
            contributions: also return per-modality contribution maps.
            crop_foreground: run the network only on the bounding box of voxels that are foreground in
                some modality (plus a margin); voxels that are background (0 after normalisation) in
                every modality are 0 in the fusion, inside the box and out.
            seed: seed of the test-time interventions.
            names: input names for messages and provenance.
            progress: called as ``progress(done, total)`` after each window batch.
            cancel: polled before each window batch; returning ``True`` raises :class:`FusionCancelled`.
            rgb: whether inputs of shape ``(H, W, 3|4)`` are colour images (``True``: their luminance is
                fused and the first one's colour re-attached in ``result.fused_rgb``) or volumes
                (``False``); one flag or one per input. ``None`` refuses such an input rather than guess.
            lesion_guard: the input (index) whose hyperintensities must stay visible: the fusion keeps at
                least ``lesion_guard_ratio`` of their contrast against normal tissue (:class:`LesionGuard`;
                pyramid-head models). ``"auto"``: the first MRI input whose name says FLAIR (``flair``,
                ``fla``, ``t2f``), if any; ``None`` or ``"off"``: the learned blend as it is. What was done
                is in ``provenance["parameters"]["lesion_guard"]``.
            lesion_guard_ratio: that least share of the input's lesion contrast, in (0, 1].

        Returns:
            a :class:`FusionResult` of the inputs' shape.

        Raises:
            ValueError: fewer than two inputs, shapes that differ, 4D/1D inputs, NaN/Inf, a constant
                image, an unknown modality.
            FusionCancelled: ``cancel`` returned ``True``.

        Examples::

            engine = FusionEngine("default", device="auto")
            result = engine.fuse([t1c, flair], ["mri", "mri"])                      # 3D
            result = engine.fuse([mri_slice, pet_y], ["mri", "pet"], stability=True)  # 2D
        """
        started = time.perf_counter()
        count = len(images)
        names = list(names) if names is not None else [f"input {i + 1}" for i in range(count)]
        if len(names) != count:
            raise ValueError(f"got {len(names)} names for {count} inputs")
        arrays, chroma = _validate(images, names, rgb)
        if modalities is None:
            modalities = [guess_modality(n) or "mri" for n in names]
        modalities = [str(m).lower() for m in modalities]
        if len(modalities) != len(arrays):
            raise ValueError(f"got {len(modalities)} modality tags for {len(arrays)} inputs")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
        if (sw_batch_size is not None and sw_batch_size < 1) or stability_passes < 2:
            raise ValueError("sw_batch_size must be >= 1 and stability_passes >= 2")
        spatial_dims = arrays[0].ndim
        torch_device = self.device
        loaded = self.loaded_model(spatial_dims)
        unknown = [m for m in modalities if m not in loaded.modalities]
        if unknown:
            raise ValueError(
                f"modality {unknown[0]!r} is not supported by model {loaded.name} (supports "
                f"{', '.join(loaded.modalities)}); MRI contrasts are tagged 'mri'"
            )
        stack, norm_info = normalise_inputs(arrays, modalities, loaded, normalization, names)

        net = loaded.network
        guard = resolve_lesion_guard(
            lesion_guard, lesion_guard_ratio, names, modalities, net.head_mode == "pyramid"
        )
        multiple = int(getattr(net, "size_multiple", 1))
        crop = loaded.training_crop_size  # "training" windows, and auto's reference
        if isinstance(roi_size, str):
            if roi_size != "training":
                raise ValueError(f"roi_size {roi_size!r}: use None, 'training' or sizes in voxels")
            if crop is None:
                raise ValueError(
                    f"model {loaded.name} does not record its training crop size; give the patch size "
                    "in voxels"
                )
            roi_size = crop
        box = (
            foreground_box(stack, margin=4)
            if crop_foreground
            else tuple(slice(0, s) for s in stack.shape[1:])
        )
        # start the box on the network's pooling grid, so cropping does not shift the max-pool phase
        box = tuple(slice(s.start - s.start % multiple, s.stop) for s in box)
        cropped = stack[(slice(None),) + box]
        # pad to the pooling grid as the network itself would (zeros at the far end), then keep every
        # window on that grid: window sizes and steps multiples of it
        grid_pad = [(0, 0)] + [(0, (-n) % multiple) for n in cropped.shape[1:]]
        cropped = np.ascontiguousarray(np.pad(cropped, grid_pad) if any(p for _, p in grid_pad) else cropped)
        roi, overlaps, sw_batch_size = window_plan(
            cropped.shape[1:], roi_size, overlap, multiple, crop, sw_batch_size
        )
        windows = count_windows(cropped.shape[1:], roi, overlaps)
        total = math.ceil(windows / sw_batch_size)
        modality_index = torch.tensor([loaded.modalities.index(m) for m in modalities], device=torch_device)
        use_amp = amp and torch_device.type == "cuda"
        hole = int(loaded.meta.get("training", {}).get("interventions", {}).get("hole_size", 16))
        rng = np.random.default_rng(seed)
        done = 0

        pyramid_head = net.head_mode == "pyramid"

        def stability_spread(window: torch.Tensor) -> dict[str, torch.Tensor]:
            """Per-voxel std of the fused window under test-time block masking (alternately
            complementary and shared)."""
            passes = []
            for k in range(stability_passes):
                masks = torch.stack(
                    [
                        block_masks(window.shape[2:], count, hole, 0.3, rng, k % 2 == 0, window.device)
                        for _ in range(window.shape[0])
                    ]
                )
                passes.append(net(window * masks.to(window.dtype), modality_index).float())
            return {"stability": torch.stack(passes).std(dim=0)}

        def before_batch() -> None:
            # runs once per window batch: the place for progress and cancellation
            nonlocal done
            if progress is not None and done:  # the previous batch is finished
                progress(done, total)
            if cancel is not None and cancel():
                raise FusionCancelled("fusion cancelled")
            done += 1

        if progress is not None:
            progress(0, total)
        with torch.inference_mode():
            batch = torch.from_numpy(cropped)[None].to(torch_device)
            output = fuse_tensor(
                net,
                batch,
                modality_index,
                roi,
                overlaps,
                sw_batch_size,
                amp=use_amp,
                contributions=contributions,
                extra=stability_spread if stability else None,
                before_batch=before_batch,
                lesion_guard=guard,
            )
        if progress is not None:
            progress(total, total)
        guard_report = output.pop("lesion_guard", None)
        if guard_report is not None:
            guard_report["input"] = names[guard_report["input"]]
        output = {k: v[0].numpy() for k, v in output.items()}

        shape = stack.shape[1:]
        inside = tuple(slice(0, s.stop - s.start) for s in box)  # the box within the padded crop
        fused = np.zeros(shape, np.float32)
        fused[box] = np.clip(output["fused"][0][inside], 0.0, 1.0)
        background = (stack <= 0).all(axis=0) if crop_foreground else None
        if background is not None:
            # background in every modality stays background: without this the network's small response
            # to all-zero input would draw the crop box's outline on black backgrounds
            fused[background] = 0.0
        stability_map = contribution_maps = None
        if stability:
            stability_map = np.zeros(shape, np.float32)
            # the estimate's resolution is the hole size: smooth at that scale instead of showing the
            # random blocks' edges (with few passes, the raw std is a patchwork of block outlines)
            sigma = hole / 2 if stability_smoothing is None else float(stability_smoothing)
            spread = output["stability"][0][inside]
            stability_map[box] = (
                ndimage.gaussian_filter(spread, sigma, mode="nearest") if sigma > 0 else spread
            )
            if background is not None:
                stability_map[background] = 0.0
        if contributions:
            contribution_maps = np.full((count, *shape), 1.0 / count, np.float32)
            contribution_maps[(slice(None),) + box] = output["contributions"][(slice(None), *inside)]
        provenance = {
            "package": "napari-isfl",
            "version": __version__,
            "model": loaded.name,
            "model_sha256": loaded.sha256,
            "device": str(torch_device),
            "inputs": names,
            "modalities": modalities,
            "normalization": norm_info,
            "parameters": {
                "head": "pyramid" if pyramid_head else "synthesis",
                "roi_size": list(roi),
                "overlap": overlap,
                "sw_batch_size": sw_batch_size,
                "amp": use_amp,
                "crop_foreground": crop_foreground,
                "foreground_box": [[int(s.start), int(s.stop)] for s in box],
                "stability": stability,
                "stability_passes": stability_passes if stability else 0,
                "contributions": contributions,
                "seed": seed,
                "lesion_guard": guard_report,
            },
            "windows": windows,
            # where windows start or end, in the input's coordinates: the planes a seam would show on
            "window_edges": [
                sorted({min(s.start + p, n) for p in axis_edges} - {n})
                for s, n, axis_edges in zip(
                    box, shape, window_edges(cropped.shape[1:], roi, overlaps), strict=True
                )
            ],
            "seconds": round(time.perf_counter() - started, 3),
        }
        fused_rgb = None
        if chroma is not None:
            fused_rgb = ycbcr_to_rgb(np.concatenate([fused[None] * 255.0, chroma])).astype(np.float32) / 255.0
        return FusionResult(fused, stability_map, contribution_maps, modalities, provenance, fused_rgb)


def resolve_lesion_guard(
    choice: int | str | None,
    ratio: float,
    names: Sequence[str],
    modalities: Sequence[str],
    pyramid_head: bool,
) -> LesionGuard | None:
    """The :class:`LesionGuard` that ``FusionEngine.fuse(lesion_guard=choice)`` asks for (see there), or
    ``None``. An explicit input index is refused for a model whose fusion is not a blend."""
    LesionGuard(0, ratio)  # validates the ratio whatever the choice
    if choice is None or choice == "off":
        return None
    if choice == "auto":
        pairs = zip(names, modalities, strict=True)
        flair = [i for i, (name, modality) in enumerate(pairs) if modality == "mri" and is_flair_name(name)]
        return LesionGuard(flair[0], ratio) if flair and pyramid_head else None
    if isinstance(choice, bool) or not isinstance(choice, int | np.integer):
        raise ValueError(f"lesion_guard must be an input index, 'auto', 'off' or None, got {choice!r}")
    if not 0 <= choice < len(names):
        raise ValueError(
            f"lesion_guard={choice} names no input: give the index (0 to {len(names) - 1}) of the FLAIR"
        )
    if not pyramid_head:
        raise ValueError(
            "lesion_guard needs a pyramid-head model (its fusion is a blend of the inputs); use "
            "lesion_guard=None (isfl fuse --lesion-guard off) with this model"
        )
    return LesionGuard(int(choice), ratio)


def normalise_inputs(
    arrays: Sequence[np.ndarray],
    modalities: Sequence[str],
    loaded: LoadedModel,
    normalization: Sequence[IntensitySpec | None] | None,
    names: Sequence[str],
) -> tuple[np.ndarray, list[dict]]:
    """The inputs mapped to [0, 1] with the model's rule per modality (or the given overrides), stacked
    ``(N, *S)``, and the rule and range used for each (provenance)."""
    specs = list(normalization) if normalization is not None else [None] * len(arrays)
    if len(specs) != len(arrays):
        raise ValueError(f"got {len(specs)} normalisation specs for {len(arrays)} inputs")
    normalised, infos = [], []
    for array, modality, spec, name in zip(arrays, modalities, specs, names, strict=True):
        if spec is None:  # no override: the model's rule for this modality
            spec = loaded.normalization.get(modality)
            if (
                modality == "ct"
                and spec is not None
                and spec.method == "window"
                and not looks_like_hounsfield(array)
            ):
                # a Hounsfield window on CT that is not in HU (an 8-bit PNG) would squash it into a
                # sliver of [0, 1]; use the same fallback as training (normalize_intensity's default)
                spec = None
        data, info = normalize_intensity(array, modality, spec, name)
        normalised.append(data)
        infos.append(info)
    return np.stack(normalised), infos


def fuse_tensor(
    net: torch.nn.Module,
    batch: torch.Tensor,
    modality_index: torch.Tensor,
    roi: Sequence[int],
    overlaps: Sequence[float],
    sw_batch_size: int,
    *,
    amp: bool = False,
    contributions: bool = False,
    extra: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
    before_batch: Callable[[], None] | None = None,
    lesion_guard: LesionGuard | None = None,
) -> dict:
    """Fuse a normalised ``(1, N, *S)`` tensor (sizes multiples of the network's ``size_multiple``) in
    sliding windows: ``{"fused": (1, 1, *S)}`` on the CPU, plus ``contributions`` and whatever ``extra``
    returns per window batch (stitched the same way), and with ``lesion_guard`` (pyramid head only) its
    report under ``"lesion_guard"``.

    The synthesis head's windows are Gaussian-blended fused values. The pyramid head's windows return
    their blend *weights* (and residual), which are Gaussian-blended and then applied once to the whole
    image, so the blend is continuous across window borders. ``before_batch`` is called before every
    window batch (progress, cancellation). Used by :meth:`FusionEngine.fuse` and by the trainer's
    validation in windows.
    """
    device = batch.device
    pyramid_head = net.head_mode == "pyramid"

    def predictor(window: torch.Tensor) -> dict[str, torch.Tensor]:
        if before_batch is not None:
            before_batch()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            if pyramid_head:
                maps = net.blend_maps(window, modality_index)
                outputs = {f"weights{level}": w.float() for level, w in enumerate(maps["weights"])}
                if maps["residual"] is not None:
                    outputs["residual"] = maps["residual"].float()
            else:
                out = net(window, modality_index, return_maps=contributions)
                outputs = {"fused": (out["fused"] if contributions else out).float()}
                if contributions:
                    outputs["contributions"] = out["contributions"].float()
            if extra is not None:
                outputs |= extra(window)
        return outputs

    if lesion_guard is not None and not pyramid_head:
        raise ValueError("a lesion guard needs a pyramid-head model (its fusion is a blend of the inputs)")
    output = run_windows(predictor, batch, roi, overlaps, sw_batch_size, device)
    if pyramid_head:
        weights = [output.pop(f"weights{level}").to(device) for level in range(len(net.features))]
        residual = output.pop("residual").to(device) if "residual" in output else None
        fused = net.compose(batch, weights, residual)
        if lesion_guard is not None:
            fused, weights, output["lesion_guard"] = lesion_guard.apply(net, batch, weights, residual, fused)
        output["fused"] = fused.cpu()
        if contributions:
            output["contributions"] = net.mean_weights(weights).cpu()
    return output


def block_masks(
    shape: Sequence[int],
    num_modalities: int,
    block: int,
    hide: float,
    rng: np.random.Generator,
    complementary: bool,
    device: torch.device,
) -> torch.Tensor:
    """Keep-masks ``(N, *shape)`` hiding random blocks of side ``block`` with probability ``hide``.

    ``complementary``: independent per modality, and a block hidden in every modality is restored in
    one of them; otherwise one mask shared by all modalities. Cheap enough for test time on volumes.
    """
    offset = [int(rng.integers(0, block)) for _ in shape]
    grid = [math.ceil((s + o) / block) for s, o in zip(shape, offset, strict=True)]
    count = num_modalities if complementary else 1
    hidden = rng.random((count, *grid)) < hide
    if complementary and count > 1:
        all_hidden = hidden.all(axis=0)
        restore = rng.integers(0, count, size=all_hidden.shape)
        for m in range(count):
            hidden[m] &= ~(all_hidden & (restore == m))
    keep = torch.from_numpy(~hidden).to(device=device, dtype=torch.float32)
    for axis in range(len(shape)):
        keep = keep.repeat_interleave(block, dim=axis + 1)
    keep = keep[(slice(None),) + tuple(slice(o, o + s) for o, s in zip(offset, shape, strict=True))]
    return keep.expand(num_modalities, *shape) if not complementary else keep


def _looks_coloured(array: np.ndarray) -> bool:
    return array.ndim == 3 and array.shape[-1] in (3, 4)


def _validate(
    images: Sequence[np.ndarray], names: Sequence[str], rgb: bool | Sequence[bool] | None
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The inputs as arrays (colour ones as their luminance) and the chroma of the first colour input.

    A ``(H, W, 3|4)`` array is a colour image or a volume of 3 or 4 slices: never guessed, ``rgb`` says.
    """
    if isinstance(images, np.ndarray) and images.ndim >= 3 and images.shape[0] <= 8 and images.ndim in (3, 4):
        images = list(images)
    arrays = [np.asarray(im) for im in images]
    if len(arrays) < 2:
        raise ValueError(f"fusion needs at least two co-registered inputs, got {len(arrays)}")
    flags = [rgb] * len(arrays) if rgb is None or isinstance(rgb, bool) else [bool(f) for f in rgb]
    if len(flags) != len(arrays):
        raise ValueError(f"rgb lists {len(flags)} flags for {len(arrays)} inputs")
    chroma = None
    for index, (array, name, flag) in enumerate(zip(arrays, names, flags, strict=True)):
        if flag is None and _looks_coloured(array):
            raise ValueError(
                f"{name} has shape {array.shape}: a colour image or a volume of {array.shape[-1]} slices? "
                "Pass rgb=True to fuse its luminance (the colour comes back as result.fused_rgb), or "
                "rgb=False to fuse it as a volume"
            )
        if flag and not _looks_coloured(array):
            raise ValueError(
                f"{name} has shape {array.shape}, not a colour image (H, W, 3 or 4); pass rgb=False"
            )
        if flag:
            arrays[index], colour = split_colour(array)
            chroma = colour if chroma is None else chroma
    for array, name in zip(arrays, names, strict=True):
        if array.ndim not in (2, 3):
            raise ValueError(
                f"{name}: expected a 2D image or 3D volume, got {array.ndim} dimensions {array.shape}"
                + ("; pass one 3D volume of a 4D series" if array.ndim == 4 else "")
            )
    first = arrays[0]
    for array, name in zip(arrays[1:], names[1:], strict=True):
        if array.shape != first.shape:
            raise ValueError(
                f"{name} has shape {array.shape} but {names[0]} has {first.shape}: inputs must be "
                "co-registered on one grid (resample first, e.g. 'isfl fuse --resample')"
            )
    return arrays, chroma


def fuse(
    images: Sequence[np.ndarray],
    modalities: Sequence[str] | None = None,
    *,
    model: str | os.PathLike | LoadedModel = "default",
    device: str | torch.device = "auto",
    **options,
) -> FusionResult:
    """Fuse co-registered images of two or more modalities in one call:
    ``FusionEngine(model, device).fuse(images, modalities, **options)`` (see :meth:`FusionEngine.fuse`
    for every option). Keep a :class:`FusionEngine` to fuse many inputs with one model.

    Args:
        images: N arrays of one shape, 2D ``(H, W)`` or 3D ``(X, Y, Z)``, any real dtype.
        modalities: N tags (``"mri"``, ``"ct"``, ``"pet"``, ``"spect"``); ``None`` guesses from
            ``names`` and falls back to ``"mri"``.
        model: ``"default"`` (shipped model of the inputs' dimensionality), a shipped model name, a
            checkpoint path, or a :class:`~napari_isfl.model.checkpoint.LoadedModel`.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        **options: ``roi_size``, ``overlap``, ``stability``, ``contributions``, ``progress``, ``cancel``...

    Examples::

        result = fuse([t1c, flair], ["mri", "mri"])                    # 3D
        result = fuse([mri_slice, pet_y], ["mri", "pet"], stability=True)  # 2D
    """
    return FusionEngine(model, device).fuse(images, modalities, **options)

"""Finding the transform: :func:`register` (the rigid and affine stages, the start, the rotation search).

See the package docstring (:mod:`napari_isfl.registration`) for what it does and its conventions.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..spatial import resample_to_grid

if TYPE_CHECKING:  # pragma: no cover
    from ..io import ImageData


from .geometry import (
    _flip,
    _foreground_centre,
    _mask_image,
    _prepared,
    _sitk,
    _to_sitk,
    _world_affine,
    apply_transform,
    foreground_mask,
    transform_matrix,
)

#: transform models :func:`register` fits
TRANSFORMS = ("rigid", "affine")
#: how the rigid stage starts (see :func:`register`)
INITIALIZATIONS = ("auto", "world", "moments", "geometry")
#: "auto" trusts the images' world coordinates when their centres of mass are closer than this (mm)
SHARED_WORLD_MM = 20.0
#: rotations tried before the rigid stage when the images do not share world coordinates (degrees,
#: each axis), and the step of that search
ROTATION_SEARCH_DEG = 30.0
ROTATION_STEP_DEG = 15.0
#: best grid rotations refined by gradient descent before the pyramid starts from the best of them
SEARCH_CANDIDATES = 4
#: a searched rotation replaces the start only when its refined metric is better by this fraction
SEARCH_MARGIN = 0.02
#: first step (mm) of the affine stage: it refines an aligned image, and 2 mm steps in the matrix
#: entries let the scaling run away on an MSLUB T1W (metric worse than the rigid result's)
AFFINE_LEARNING_RATE = 1.0
#: RAS <-> LPS (ITK's physical space); its own inverse


class RegistrationCancelled(RuntimeError):
    """Raised when the ``cancel`` callback asked to stop; no partial result is returned."""


@dataclass(frozen=True)
class RegistrationProgress:
    """Where a registration is, passed to the ``progress`` callback after every optimiser iteration.

    Attributes:
        stage: ``"rigid"`` or ``"affine"``.
        level: pyramid level, 0 (coarsest) to ``levels - 1`` (full resolution).
        levels: number of pyramid levels of the stage.
        iteration: optimiser iteration within the level (0-based).
        metric: current metric value (negative mutual information: lower is better).
        done: iterations spent so far, counting a level that converged early as complete.
        total: the iteration budget of the whole registration (``done / total`` is the fraction).
    """

    stage: str
    level: int
    levels: int
    iteration: int
    metric: float
    done: int
    total: int

    def __str__(self) -> str:
        return (
            f"{self.stage} level {self.level + 1}/{self.levels}, iteration {self.iteration + 1}: "
            f"metric {self.metric:.4f}"
        )


@dataclass
class RegistrationResult:
    """What :func:`register` returns.

    Attributes:
        image: the moving image resampled onto the reference grid (the reference's shape, affine,
            header, kind and stored shape; float32; outside the moving field of view: its minimum).
        reference_to_moving: 4x4 RAS world matrix (reference world point -> moving world point).
        transform: the same as a SimpleITK transform (ITK convention, LPS, fixed -> moving).
        transform_type: ``"rigid"`` or ``"affine"``.
        metric: final Mattes mutual information metric at full resolution (negative: lower is better).
        iterations: optimiser iterations, all stages and levels together.
        stages: per stage: its name, iterations per level, final metric and the optimiser's stop reason;
            the affine stage also says whether it was ``kept`` (not when it ended worse than the rigid
            result, which is then returned).
        initialization: how the rigid stage started (``"world"``, ``"moments"`` or ``"geometry"``).
        seconds: wall time of the registration (resampling included).
        moving_affine: the moving image's own voxel-to-world matrix (before registration).
        search: what the rotation search found (empty when there was none).
        parameters: the settings used (for provenance).
    """

    image: ImageData
    reference_to_moving: np.ndarray
    transform: Any
    transform_type: str
    metric: float
    iterations: int
    stages: list[dict[str, Any]]
    initialization: str
    seconds: float
    moving_affine: np.ndarray
    search: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def moving_to_reference(self) -> np.ndarray:
        """4x4 RAS world matrix taking the moving image's anatomy onto the reference's."""
        return np.linalg.inv(self.reference_to_moving)

    @property
    def aligned_affine(self) -> np.ndarray:
        """The moving image's voxel-to-world matrix after registration: the unresampled moving array
        placed with it lies on the reference anatomy (a napari layer's affine, or a NIfTI header)."""
        return self.moving_to_reference @ self.moving_affine

    def save_transform(self, path: str | os.PathLike) -> Path:
        """Write :attr:`transform` as an ITK transform file (``.tfm``, ``.txt``, ``.h5``, ``.mat``);
        :func:`read_transform` reads it back as :attr:`reference_to_moving`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _sitk().WriteTransform(self.transform, str(path))
        return path

    def provenance(self) -> dict[str, Any]:
        """Plain values only (JSON-ready): what was done and how well it converged."""
        return {
            "method": "SimpleITK Mattes mutual information",
            "transform_type": self.transform_type,
            "reference_to_moving_ras": np.round(self.reference_to_moving, 8).tolist(),
            "metric": self.metric,
            "iterations": self.iterations,
            "initialization": self.initialization,
            "search": self.search,
            "stages": self.stages,
            "seconds": round(self.seconds, 3),
            "parameters": self.parameters,
        }


# ------------------------------------------------------------------------------------------- register
class _Setup:
    """The images, masks and metric settings every stage shares; builds configured methods."""

    def __init__(
        self,
        fixed: Any,
        moving: Any,
        masks: tuple[Any, Any],
        bins: int,
        samples: int,
        seed: int,
        threads: int | None,
    ) -> None:
        self.fixed, self.moving, self.masks = fixed, moving, masks
        self.bins, self.samples, self.seed, self.threads = int(bins), int(samples), int(seed), threads

    def method(self, shrinks: Sequence[int], sigmas: Sequence[float]) -> Any:
        """An ImageRegistrationMethod with Mattes MI (seeded random samples), the masks, linear
        interpolation and the pyramid set; the caller sets the optimiser and initial transform."""
        sitk = _sitk()
        method = sitk.ImageRegistrationMethod()
        if self.threads is not None:
            method.SetNumberOfThreads(int(self.threads))
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=self.bins)
        # image gradients by central differences where the samples fall, not from ITK's Gaussian
        # gradient images: those biased thick-slice MRI (0.9 x 0.9 x 3 mm) by 1.5 mm on MSLUB
        method.MetricUseFixedImageGradientFilterOff()
        method.MetricUseMovingImageGradientFilterOff()
        method.SetMetricSamplingStrategy(method.RANDOM)
        # SimpleITK reads a seed of 0 as "seed from the wall clock": shift by one so every seed repeats
        method.SetMetricSamplingPercentagePerLevel(self.fractions(shrinks), self.seed + 1)
        if self.masks[0] is not None:
            method.SetMetricFixedMask(self.masks[0])
        if self.masks[1] is not None:
            method.SetMetricMovingMask(self.masks[1])
        method.SetInterpolator(sitk.sitkLinear)
        method.SetShrinkFactorsPerLevel([int(s) for s in shrinks])
        method.SetSmoothingSigmasPerLevel([float(s) for s in sigmas])
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        return method

    def fractions(self, shrinks: Sequence[int]) -> list[float]:
        """Per level, the fraction of the shrunk reference voxels that gives about ``samples`` samples
        inside the reference mask (ITK draws over the whole grid and drops samples outside the mask)."""
        voxels = float(np.prod(self.fixed.GetSize()))
        if self.masks[0] is not None:
            voxels *= max(float(_sitk().GetArrayViewFromImage(self.masks[0]).mean()), 1e-3)
        dimension = self.fixed.GetDimension()
        return [float(min(1.0, self.samples / max(1.0, voxels / s**dimension))) for s in shrinks]


class _Tracker:
    """Progress over the whole run (rotation search, stages, levels) and the cancel flag."""

    def __init__(self, total: int, progress: Callable | None, cancel: Callable | None, what: str) -> None:
        self.total, self.progress, self.cancel, self.what = total, progress, cancel, what
        self.done, self.cancelled = 0, False
        self._start = self._span = 0

    def watch(self, method: Any, stage: str, levels: int, budget: int) -> list[int]:
        """Report ``method``'s iterations (``budget`` per level at most) and stop it when cancelled;
        returns the iterations per level, filled as it runs."""
        sitk = _sitk()
        self._start, self._span = self.done, levels * budget
        per_level: list[int] = []

        def on_level() -> None:
            per_level.append(0)

        def on_iteration() -> None:
            iteration = int(method.GetOptimizerIteration())
            if not per_level:
                per_level.append(0)
            per_level[-1] = iteration + 1
            # a level that converged early counts as complete
            self.done = min(self.total, self._start + (len(per_level) - 1) * budget + iteration + 1)
            if self.progress is not None:
                metric = float(method.GetMetricValue())
                self.progress(
                    RegistrationProgress(
                        stage, len(per_level) - 1, levels, iteration, metric, self.done, self.total
                    )
                )
            if not self.cancelled and self.cancel is not None and self.cancel():
                self.cancelled = True
            if self.cancelled:
                method.StopRegistration()

        method.AddCommand(sitk.sitkMultiResolutionIterationEvent, on_level)
        method.AddCommand(sitk.sitkIterationEvent, on_iteration)
        return per_level

    def close(self) -> None:
        """After a method ran: count its whole budget as done; raise if the run was cancelled."""
        self.done = min(self.total, self._start + self._span)
        if self.cancelled or (self.cancel is not None and self.cancel()):
            raise RegistrationCancelled(f"registration of {self.what} cancelled")


@contextlib.contextmanager
def _itk_threads(threads: int | None) -> Iterator[None]:
    """Run ITK with ``threads`` threads (its global default, restored afterwards); ``None``: unchanged."""
    if threads is None:
        yield
        return
    process = _sitk().ProcessObject
    previous = process.GetGlobalDefaultNumberOfThreads()
    process.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        process.SetGlobalDefaultNumberOfThreads(previous)


def _gradient_descent(method: Any, iterations: int, learning_rate: float = 2.0) -> None:
    """Regular-step gradient descent, steps scaled so one unit moves a voxel by about 1 mm.

    The first step moves the image by up to ``learning_rate`` mm; the step shrinks by 0.7 each time the
    gradient turns back, down to 1e-4 mm. A faster shrink (0.5) or a larger floor (1e-3) stopped
    sub-millimetre refinement early in the synthetic tests (median errors up to 2 mm instead of 0.5 mm).
    """
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=float(learning_rate),
        minStep=1e-4,
        numberOfIterations=int(iterations),
        relaxationFactor=0.7,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()


def _execute(method: Any, setup: _Setup, what: str) -> Any:
    try:
        return method.Execute(setup.fixed, setup.moving)
    except RuntimeError as error:
        raise ValueError(
            f"registering {what} failed ({str(error).strip().splitlines()[-1]}); check that the images "
            "overlap (initialization='moments' aligns their centres first)"
        ) from error


def register(
    moving: ImageData,
    reference: ImageData,
    transform: str = "rigid",
    *,
    initialization: str = "auto",
    shrink_factors: Sequence[int] = (4, 2, 1),
    smoothing_sigmas: Sequence[float] = (2.0, 1.0, 0.0),
    samples: int = 50_000,
    iterations: int = 100,
    histogram_bins: int = 50,
    reference_mask: np.ndarray | str | None = "auto",
    moving_mask: np.ndarray | None = None,
    rotation_search_deg: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    order: int = 1,
    progress: Callable[[RegistrationProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> RegistrationResult:
    """Register ``moving`` onto ``reference`` (rigid, or rigid then affine) by mutual information.

    Args:
        moving: the image to align (3D with an affine, or a plain 2D image).
        reference: the image it is aligned onto; the result lies on its grid.
        transform: ``"rigid"`` (rotation + translation) or ``"affine"`` (rigid stage, then an affine
            stage started from it: adds scaling and shear, e.g. for scanner calibration differences).
        initialization: start of the rigid stage: ``"world"`` (trust the world coordinates: one
            scanner session, one frame of reference), ``"moments"`` (align the centres of mass, then
            search rotations: different sessions or scanners), ``"geometry"`` (align the grid
            centres, then search rotations), ``"auto"`` (``"world"`` when the centres of mass are
            within 20 mm, else ``"moments"``).
        shrink_factors, smoothing_sigmas: the pyramid, coarse to fine (sigmas in mm).
        samples: mutual-information samples drawn at random per level (at most every voxel).
        iterations: optimiser iterations at most per level and stage.
        histogram_bins: bins of the Mattes joint histogram.
        reference_mask: boolean array on the reference grid: only those voxels count; ``"auto"``:
            :func:`foreground_mask` of the reference (its background out, e.g. around a
            skull-stripped brain); ``None``: every voxel.
        moving_mask: boolean array on the moving grid, or ``None`` (every voxel).
        rotation_search_deg: before the rigid stage, try rotations every 15 degrees up to this
            angle about each axis at the coarsest level and refine the best few (``None``: 30 unless
            the start is ``"world"``; 0: off).
        seed: the sampling seed: the same seed gives the same result, bit for bit on one thread, to
            about 0.05 mm on several (ITK's threads add partial sums in a varying order).
        threads: threads ITK uses (its global default during the call, restored afterwards; ``None``:
            ITK's default, all cores).
        order: interpolation order of the final resampling (1: linear, 0: nearest for labels).
        progress: called with a :class:`RegistrationProgress` after every optimiser iteration.
        cancel: polled after every iteration; returning ``True`` stops and raises
            :class:`RegistrationCancelled`.

    Returns:
        A :class:`RegistrationResult` (the resampled image, the world and ITK transforms, the metric,
        the iterations).

    Raises:
        ValueError: an unknown option, images that are not 2D/3D or differ in dimensionality, colour
            images, a slice with a volume's affine, masks that do not fit, images that do not overlap.
        RegistrationCancelled: ``cancel`` returned ``True``.
        MissingDependencyError: SimpleITK is not installed (the ``clinical`` extra).

    Examples:
        >>> from napari_isfl.io import read_image  # doctest: +SKIP
        >>> result = register(read_image("pet.nii.gz"), read_image("t1.nii.gz"), "rigid")  # doctest: +SKIP
        >>> result.image.array.shape == read_image("t1.nii.gz").array.shape  # doctest: +SKIP
        True
        >>> result.save_transform("pet_to_t1.tfm")  # doctest: +SKIP
    """
    sitk = _sitk()
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; use one of {', '.join(TRANSFORMS)}")
    if initialization not in INITIALIZATIONS:
        raise ValueError(
            f"unknown initialization {initialization!r}; use one of {', '.join(INITIALIZATIONS)}"
        )
    if len(shrink_factors) != len(smoothing_sigmas) or not shrink_factors:
        raise ValueError("shrink_factors and smoothing_sigmas need one value per pyramid level each")
    if moving.array.ndim != reference.array.ndim:
        raise ValueError(
            f"{moving.name} is {moving.array.ndim}D but {reference.name} is {reference.array.ndim}D; "
            "register images of the same dimensionality"
        )
    with _itk_threads(threads):  # ITK's filters and metric use the global count, not the method's
        started = time.perf_counter()
        what = f"{moving.name} onto {reference.name}"
        moving_array, moving_affine = _prepared(moving, "moving image")
        reference_array, reference_affine = _prepared(reference, "reference")
        dimension = reference_array.ndim
        fixed_image = _to_sitk(reference_array, reference_affine)
        moving_image = _to_sitk(moving_array, moving_affine)
        if isinstance(reference_mask, str):
            if reference_mask != "auto":
                raise ValueError(f"reference_mask {reference_mask!r}: pass 'auto', None or a boolean array")
            reference_mask = foreground_mask(reference_array)
        elif reference_mask is not None:
            reference_mask = _on_prepared_grid(reference_mask, reference, reference_array, reference_affine)
        if moving_mask is not None:
            moving_mask = _on_prepared_grid(moving_mask, moving, moving_array, moving_affine)
        setup = _Setup(
            fixed_image,
            moving_image,
            (
                _mask_image(reference_mask, fixed_image, reference_array.shape, "reference"),
                _mask_image(moving_mask, moving_image, moving_array.shape, "moving"),
            ),
            histogram_bins,
            samples,
            seed,
            threads,
        )

        # rigid start: rotations about the reference's centre of mass (well conditioned), and a
        # translation that trusts the world coordinates, or aligns the centres of mass / grid centres
        flip = _flip(dimension)[:dimension, :dimension]
        reference_centre = _foreground_centre(reference_array, reference_affine, reference_mask)
        moving_centre = _foreground_centre(moving_array, moving_affine, moving_mask)
        chosen = initialization
        if chosen == "auto":
            close = np.linalg.norm(moving_centre - reference_centre) <= SHARED_WORLD_MM
            chosen = "world" if close else "moments"
        rigid = sitk.Euler3DTransform() if dimension == 3 else sitk.Euler2DTransform()
        rigid.SetCenter((flip @ reference_centre).tolist())
        if chosen == "moments":
            rigid.SetTranslation((flip @ (moving_centre - reference_centre)).tolist())
        elif chosen == "geometry":
            shift = _grid_centre(moving_array, moving_affine) - _grid_centre(
                reference_array, reference_affine
            )
            rigid.SetTranslation((flip @ shift).tolist())
        if rotation_search_deg is None:
            rotation_search_deg = 0.0 if chosen == "world" else ROTATION_SEARCH_DEG
        steps = int(float(rotation_search_deg) // ROTATION_STEP_DEG)
        grid = (2 * steps + 1) ** (3 if dimension == 3 else 1) if steps > 0 else 0

        levels = [("rigid", list(shrink_factors), list(smoothing_sigmas))]
        if transform == "affine":  # refines an aligned image: the coarsest level is not needed again
            finer = 1 if len(shrink_factors) > 1 else 0
            levels.append(("affine", list(shrink_factors[finer:]), list(smoothing_sigmas[finer:])))
        search_budget = grid + (SEARCH_CANDIDATES + 1) * iterations if grid else 0
        tracker = _Tracker(
            search_budget + sum(len(s) for _, s, _ in levels) * iterations, progress, cancel, what
        )
        search: dict[str, Any] = {}
        if grid:
            search = _search_start(
                rigid, setup, steps, shrink_factors[0], smoothing_sigmas[0], iterations, tracker, what
            )

        reports: list[dict[str, Any]] = []
        current: Any = rigid
        metric = float("nan")
        for stage, shrinks, sigmas in levels:
            rigid_result, rigid_metric = current, metric
            if stage == "affine":  # from the rigid result: same centre, matrix and translation
                current = sitk.AffineTransform(dimension)
                current.SetCenter(rigid_result.GetCenter())
                current.SetMatrix(rigid_result.GetMatrix())
                current.SetTranslation(rigid_result.GetTranslation())
            method = setup.method(shrinks, sigmas)
            _gradient_descent(method, iterations, 2.0 if stage == "rigid" else AFFINE_LEARNING_RATE)
            method.SetInitialTransform(current, inPlace=True)
            per_level = tracker.watch(method, stage, len(shrinks), iterations)
            _execute(method, setup, what)
            tracker.close()
            metric = float(method.GetMetricValue())
            report = {
                "stage": stage,
                "iterations_per_level": list(per_level),
                "metric": metric,
                "stop": method.GetOptimizerStopConditionDescription(),
            }
            if stage == "affine":
                # the same samples at full resolution: an affine stage that ended worse than the rigid
                # result diverged (scaling away from the anatomy); keep the rigid result then
                report["kept"] = metric <= rigid_metric
                if not report["kept"]:
                    current, metric = rigid_result, rigid_metric
            reports.append(report)

        reference_to_moving = transform_matrix(current, dimension)
        image = apply_transform(moving, reference, reference_to_moving, order=order)
        return RegistrationResult(
            image=image,
            reference_to_moving=reference_to_moving,
            transform=current,
            transform_type=transform,
            metric=metric,
            iterations=sum(sum(r["iterations_per_level"]) for r in reports),
            stages=reports,
            initialization=chosen,
            seconds=time.perf_counter() - started,
            moving_affine=_world_affine(moving),
            search=search,
            parameters={
                "shrink_factors": [int(s) for s in shrink_factors],
                "smoothing_sigmas_mm": [float(s) for s in smoothing_sigmas],
                "samples": int(samples),
                "iterations": int(iterations),
                "histogram_bins": int(histogram_bins),
                "reference_mask": "none" if reference_mask is None else "given or auto",
                "moving_mask": moving_mask is not None,
                "rotation_search_deg": float(rotation_search_deg),
                "seed": int(seed),
                "threads": threads,
            },
        )


def _grid_centre(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return (affine @ np.r_[(np.array(array.shape) - 1) / 2.0, 1.0])[:-1]


def _on_prepared_grid(
    mask: np.ndarray, image: ImageData, array: np.ndarray, affine: np.ndarray
) -> np.ndarray:
    """A mask given on an image's own grid, moved onto the grid it is registered on (the same grid
    unless the image was sheared)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != np.asarray(image.array).shape:
        raise ValueError(
            f"mask of shape {mask.shape} does not match {image.name} {np.asarray(image.array).shape}"
        )
    own = _world_affine(image)
    if np.array_equal(own, affine):
        return mask
    return resample_to_grid(mask.astype(np.float32), own, array.shape, affine, order=0) > 0.5


def _search_start(
    rigid: Any,
    setup: _Setup,
    steps: int,
    shrink: int,
    sigma: float,
    iterations: int,
    tracker: _Tracker,
    what: str,
) -> dict[str, Any]:
    """Move ``rigid`` to the best start found by a rotation search at the coarsest level, refined.

    Gradient descent finds the nearest optimum; a head turned 15-20 degrees between two sessions can
    start it in the wrong basin. So the metric is evaluated on a grid of rotations (every 15 degrees,
    ``steps`` steps each way about each axis, at the start's shift; SimpleITK's exhaustive optimiser),
    the best few and the start itself are refined by gradient descent at that level, and the best of
    them is kept (so the search never ends worse, by the metric, than no search); the start is kept
    unless another is better by :data:`SEARCH_MARGIN`.
    """
    sitk = _sitk()
    parameters = len(rigid.GetParameters())
    rotations = 3 if parameters == 6 else 1
    copy = sitk.Euler3DTransform if rotations == 3 else sitk.Euler2DTransform
    method = setup.method([shrink], [sigma])
    method.SetOptimizerAsExhaustive(
        numberOfSteps=[steps] * rotations + [0] * (parameters - rotations),
        stepLength=float(np.radians(ROTATION_STEP_DEG)),
    )
    method.SetOptimizerScales([1.0] * parameters)
    method.SetInitialTransform(copy(rigid), inPlace=True)
    visited: list[tuple[float, tuple[float, ...]]] = []

    def on_iteration() -> None:
        visited.append((float(method.GetMetricValue()), tuple(method.GetOptimizerPosition())))

    method.AddCommand(sitk.sitkIterationEvent, on_iteration)
    tracker.watch(method, "search", 1, (2 * steps + 1) ** rotations)
    _execute(method, setup, what)
    tracker.close()
    start_position = tuple(rigid.GetParameters())
    candidates = [position for _, position in sorted(visited)[:SEARCH_CANDIDATES]]
    if start_position not in candidates:
        candidates.append(start_position)
    refined = []
    for position in candidates:
        trial = copy(rigid)
        trial.SetParameters(position)
        method = setup.method([shrink], [sigma])
        _gradient_descent(method, iterations)
        method.SetInitialTransform(trial, inPlace=True)
        tracker.watch(method, "search", 1, iterations)
        _execute(method, setup, what)
        tracker.close()
        refined.append((float(method.GetMetricValue()), tuple(trial.GetParameters())))
    best_metric, best = min(refined)
    from_start = refined[candidates.index(start_position)]
    if from_start[0] <= best_metric + SEARCH_MARGIN * abs(best_metric):
        # a flat coarse landscape (a round head at 8 mm) ranks rotations by noise: keep the start
        # unless another rotation is clearly better
        best_metric, best = from_start
    rigid.SetParameters(best)
    return {
        "rotations_tried": len(visited),
        "refined": len(refined),
        "best_metric": best_metric,
        "best_rotation_deg": [round(float(np.degrees(a)), 2) for a in best[:rotations]],
    }

"""Perturbation families for the robustness benchmark: controlled data shifts applied to ONE modality.

Every perturbation acts on a single modality image (a 2D or 3D array whose intensities are already
normalised to ``[0, 1]``, as the fusion pipeline does before the network) and returns a float32 array of
the same shape with values in ``[0, 1]``. Each family has severity levels ``1, 2, 3`` and level ``0``,
which is the exact identity (a float32 copy, equal to a float32 input). All randomness comes from the
``rng``/``seed`` argument, so a benchmark run is reproducible.

Within one family the random structure (noise realisation, bias-field shape, truncated side, shift
direction) is drawn independently of the level, so with one seed the levels are nested: level 3 is the
same perturbation as level 1, only stronger. That is what makes the severity curves of the benchmark
smooth instead of noisy.

=================== ======================= ===================================================
registry name       parameter per level 0-3 what it simulates
=================== ======================= ===================================================
``gaussian_noise``  sigma 0, .02, .05, .10  additive white Gaussian noise, clipped to [0, 1]
``rician_noise``    sigma 0, .02, .05, .10  MRI magnitude noise ``|x + n1 + i n2|``, clipped
``bias_field``      0, 10, 20, 35 % max     smooth multiplicative MRI bias field (exp of a cubic)
``gamma``           gamma 1, 1.25, 1.5, 2   contrast shift ``x ** gamma`` (darkens mid-tones)
``resolution``      factor 1, 2, 3, 4       blur + downsample + linear upsample to the same shape
``truncation``      0, 10, 20, 35 % extent  edge slab/band of the field of view set to 0
``dropout``         none/zeros/mean/noise   whole modality replaced by a stand-in
``misregistration`` shift 0, 1, 2, 3 voxels integer translation along one seeded axis, 0 fill
``intensity_scale`` factor 1, .7, .5, .3    global calibration error ``x * factor`` (PET-like)
=================== ======================= ===================================================

Affected masks (:func:`perturb_with_mask`) mark the voxels whose information the perturbation removed or
altered. Only ``truncation`` is *local* (the mask is the removed slab, so the benchmark can score
fidelity outside it and check whether another modality fills it); every other family is global and its
mask is all True at levels 1-3. At level 0 every mask is all False.

:func:`apply_to_all` perturbs every modality of a stack (with independent random streams) and is only
allowed where that is a meaningful shift of the whole acquisition: the noise families, ``resolution``,
``gamma`` and ``intensity_scale``. It is refused for ``bias_field`` (an MRI coil artefact: use
:func:`apply_to_modality` on each MRI channel), ``truncation`` (the question is whether another
modality fills the gap; the same gap everywhere is the shared-masking intervention), ``dropout``
(nothing would be left to fuse) and ``misregistration`` (a misregistration is relative: shifting every
modality leaves them registered).

Core code: numpy and scipy only, no napari/Qt/torch import.
"""

from __future__ import annotations

from .families import (
    PERTURBATIONS,
    PerturbationFamily,
    apply_to_all,
    apply_to_modality,
    get_family,
    perturb,
    perturb_with_mask,
)
from .functions import (
    bias_field,
    gamma_shift,
    gaussian_noise,
    intensity_scale,
    misregister,
    modality_dropout,
    random_bias_field,
    resolution_loss,
    rician_noise,
    truncate,
)

__all__ = [
    "PERTURBATIONS",
    "PerturbationFamily",
    "apply_to_all",
    "apply_to_modality",
    "bias_field",
    "gamma_shift",
    "gaussian_noise",
    "get_family",
    "intensity_scale",
    "misregister",
    "modality_dropout",
    "perturb",
    "perturb_with_mask",
    "random_bias_field",
    "resolution_loss",
    "rician_noise",
    "truncate",
]

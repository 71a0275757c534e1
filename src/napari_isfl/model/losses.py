"""ISFL losses: fidelity, invariance and necessity (../shared/docs/METHOD.md), for 2D and 3D.

``L = w_f * L_f + w_inv * L_inv + w_nec * L_nec`` with the paper's weights 1, 0.1, 0.05 by default.

Necessity has two opposite readings of the paper, both available through ``necessity_mode``:

* ``"reward"`` (the paper's text): each modality must matter, so an output that does *not* change when
  a modality is dropped is penalised: ``mean_i relu(margin - |y_drop_i - y|)``;
* ``"penalize"`` (the authors' released code): robustness to a missing modality, so the change is
  penalised: ``mean_i |y_drop_i - y|``;
* ``"off"``: no necessity term.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from monai.networks.layers import GaussianFilter
from torch import nn

from . import metric_losses, pyramid
from .pyramid import downsample

__all__ = [
    "FidelityLoss",
    "ISFLLoss",
    "ISFLLossWeights",
    "functional_correlation_loss",
    "detail_l1",
    "invariance_loss",
    "laplacian",
    "necessity_loss",
    "regional_contrast_loss",
]

NECESSITY_MODES = ("reward", "penalize", "off")
INTENSITY_TARGETS = ("mean", "max_anatomical", "max")
CONTRAST_TARGETS = ("magnitude", "bright")
#: pyramid levels of the ``distill_detail`` term (as many as the shipped pyramid heads blend)
DISTILL_LEVELS = 3


def _check_intensity_target(target: str) -> None:
    if target not in INTENSITY_TARGETS:
        raise ValueError(f"intensity_target must be one of {', '.join(INTENSITY_TARGETS)}, got {target!r}")


def _check_contrast_target(target: str) -> None:
    if target not in CONTRAST_TARGETS:
        raise ValueError(f"contrast_target must be one of {', '.join(CONTRAST_TARGETS)}, got {target!r}")


def _check_level(name: str, value: int) -> None:
    """A pyramid level count or index: an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def laplacian(image: torch.Tensor) -> torch.Tensor:
    """Discrete Laplacian (4-neighbour in 2D, 6-neighbour in 3D) of ``(B, C, *spatial)``, replicate pad."""
    spatial_dims = image.ndim - 2
    padded = F.pad(image, (1, 1) * spatial_dims, mode="replicate")
    centre = tuple(slice(1, -1) for _ in range(spatial_dims))
    result = -2.0 * spatial_dims * padded[(slice(None), slice(None)) + centre]
    for axis in range(spatial_dims):
        for shift in (slice(0, -2), slice(2, None)):
            index = list(centre)
            index[axis] = shift
            result = result + padded[(slice(None), slice(None)) + tuple(index)]
    return result


class FidelityLoss(nn.Module):
    """Fidelity of the fused image ``(B, 1, *S)`` to its sources ``(B, N, *S)``.

    ``intensity * L_int + gradient * L1(|lap y|, max_i |lap x_i|) + ssim * mean_i (1 - SSIM(y, x_i))
    + functional * L_func``; the gradient term keeps the strongest edge of any modality. With
    ``gradient_levels=k > 1`` it is averaged over the first ``k`` levels of a Gaussian pyramid (the
    binomial blur and stride 2 of :mod:`~napari_isfl.model.pyramid`): at the coarser levels the "edges" are
    the borders of regions a few voxels across (an oedema, a lesion), so the fusion keeps the strongest
    source's regional contrast there too, not only its fine edges. ``L_func`` is
    ``1 - corr(y, f)`` inside the foreground for each functional source ``f`` (PET, SPECT): the Pearson
    correlation that ``isfl evaluate`` reports as ``corr_functional``. Without it a weight-map fusion
    learns to take the bright anatomy wherever it is brighter, which hides hypo-uptake (ABLATION.md,
    "2D output head"). ``contrast * L_con`` (off by default) asks for regional contrast at level
    ``contrast_level`` of the Gaussian pyramid: every source's deviation from its own normal tissue (the
    median of the crop's foreground interior), per voxel the most salient one (``contrast_target``), is
    the target of the fusion's deviation from its own (:func:`regional_contrast_loss`). A lesion that one
    source shows and the other does not (FLAIR oedema where T1c is dark) is then asked to stand out from
    the fusion's normal tissue as far as it does in that source. ``vif``, ``qabf`` and ``scd`` (off by
    default) ask for the quality metrics themselves, through their differentiable versions in
    :mod:`.metric_losses`: ``1 - VIF / N`` (VIF summed over the N sources), ``1 - Qabf`` and
    ``1 - SCD / N``, near 0 for a fusion that keeps everything (the sum of the sources has SCD N), so the
    fusion keeps each source's information and edges as ``isfl evaluate`` measures them (ABLATION.md,
    "Metric terms (2D)"). ``L_int`` depends on ``intensity_target``:

    * ``"mean"`` (METHOD.md): ``mean_i L1(y, x_i)``, which pulls toward the sources' mean.
    * ``"max_anatomical"``: the anatomical sources (MRI, CT) are merged by their voxel-wise maximum
      first, ``mean(L1(y, max_anat), L1(y, f_1), ..., L1(y, f_K))`` over that and each functional
      source (PET, SPECT). Between anatomical images a dark voxel is usually background or a tissue
      the other contrast shows (bone in CT, fluid in T2), so the maximum keeps both, as the max-intensity
      losses of CDDFuse/SwinFusion do; a functional image's dark regions are hypo-uptake, so it keeps its
      own L1 term and is never hidden under bright anatomy. Without functional inputs flagged this is
      ``L1(y, max_i x_i)``.
    * ``"max"``: ``L1(y, max_i x_i)`` over every source, functional ones included (the flags are
      ignored). On the Harvard SPECT-MRI dev pairs the voxel-wise maximum loses little functional
      fidelity (correlation 0.767, hypo-uptake contrast 0.667; LP 0.730 / 0.641), and a selection of the
      brighter source keeps more of each source's information (VIF) than any fixed per-scale blend
      (ABLATION.md, "Which blends could meet the 2D bars").

    Args:
        spatial_dims: 2 or 3.
        intensity, gradient, ssim, functional: term weights (>= 0).
        functional_sigma: smoothing of the functional term (see :func:`functional_correlation_loss`).
        gradient_levels: pyramid levels of the gradient term (1: full resolution only).
        contrast: weight of the regional-contrast term (>= 0; 0 switches it off).
        contrast_level: the pyramid level it works at (>= 1; level k has 1/2**k the resolution).
        contrast_target: ``"magnitude"`` or ``"bright"`` (:func:`regional_contrast_loss`).
        vif, qabf, scd: weights of the metric terms (>= 0; 0 switches a term off).
        ssim_window: SSIM window size (MONAI's gaussian kernel).
        intensity_target: ``"mean"``, ``"max_anatomical"`` or ``"max"`` (see above).

    Example:
        >>> loss = FidelityLoss(2, intensity_target="max_anatomical")
        >>> sources = torch.rand(2, 2, 32, 32)                    # 2D: (B, N, H, W)
        >>> functional = torch.tensor([[False, True], [False, False]])  # MRI+PET, MRI+CT
        >>> terms = loss(sources.mean(1, keepdim=True), sources, functional)
        >>> FidelityLoss(3)(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 3, 16, 16, 16))["fidelity"].ndim
        0
    """

    def __init__(
        self,
        spatial_dims: int,
        intensity: float = 1.0,
        gradient: float = 1.0,
        ssim: float = 1.0,
        ssim_window: int = 7,
        intensity_target: str = "mean",
        functional: float = 0.0,
        functional_sigma: float = 0.0,
        gradient_levels: int = 1,
        contrast: float = 0.0,
        contrast_level: int = 2,
        contrast_target: str = "magnitude",
        vif: float = 0.0,
        qabf: float = 0.0,
        scd: float = 0.0,
    ) -> None:
        super().__init__()
        if min(intensity, gradient, ssim, functional, functional_sigma, contrast, vif, qabf, scd) < 0:
            raise ValueError("fidelity term weights must be >= 0")
        _check_level("gradient_levels", gradient_levels)
        _check_level("contrast_level", contrast_level)
        _check_contrast_target(contrast_target)
        self.contrast_level = contrast_level
        self.contrast_target = contrast_target
        _check_intensity_target(intensity_target)
        self.intensity_target = intensity_target
        self.functional_sigma = functional_sigma
        self.gradient_levels = gradient_levels
        self.weights = {
            "intensity": intensity,
            "gradient": gradient,
            "ssim": ssim,
            "functional": functional,
            "contrast": contrast,
            "vif": vif,
            "qabf": qabf,
            "scd": scd,
        }
        self.ssim = SSIMLoss(spatial_dims, data_range=1.0, win_size=ssim_window, kernel_sigma=1.5)

    def forward(
        self, fused: torch.Tensor, sources: torch.Tensor, functional: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Fidelity terms and their weighted sum ``fidelity``.

        Args:
            fused: ``(B, 1, *S)``.
            sources: ``(B, N, *S)``.
            functional: ``(B, N)`` booleans, True for PET/SPECT inputs (``None``: none are);
                used by ``intensity_target="max_anatomical"`` only.
        """
        batch, num_mod = sources.shape[:2]
        terms = {"intensity": self._intensity(fused, sources, functional)}
        terms["gradient"] = self._gradient(fused, sources)
        if self.weights["ssim"] > 0:
            fused_rep = fused.expand(-1, num_mod, *fused.shape[2:]).reshape(
                batch * num_mod, 1, *fused.shape[2:]
            )
            terms["ssim"] = self.ssim(
                fused_rep.float(), sources.reshape(batch * num_mod, 1, *sources.shape[2:]).float()
            )
        else:
            terms["ssim"] = fused.new_zeros(())
        terms["functional"] = functional_correlation_loss(
            fused, sources, functional, sigma=self.functional_sigma
        )
        terms["contrast"] = (
            regional_contrast_loss(fused, sources, self.contrast_level, target=self.contrast_target)
            if self.weights["contrast"] > 0
            else fused.new_zeros(())
        )
        terms.update(self._metric_terms(fused, sources))
        terms["fidelity"] = sum(self.weights[k] * terms[k] for k in self.weights)
        return terms

    def _metric_terms(self, fused: torch.Tensor, sources: torch.Tensor) -> dict[str, torch.Tensor]:
        """``1 - VIF / N``, ``1 - Qabf`` and ``1 - SCD / N`` on the metrics' 0..255 scale; zero (and not
        computed) when weighted 0."""
        terms = dict.fromkeys(("vif", "qabf", "scd"), fused.new_zeros(()))
        if not any(self.weights[k] > 0 for k in terms):
            return terms
        fused = fused.float() * 255.0
        separate = [source.unsqueeze(1).float() * 255.0 for source in sources.unbind(dim=1)]
        count = len(separate)
        if self.weights["vif"] > 0:
            terms["vif"] = 1.0 - sum(metric_losses.vif(fused, source) for source in separate).mean() / count
        if self.weights["qabf"] > 0:
            terms["qabf"] = 1.0 - metric_losses.qabf(fused, separate).mean()
        if self.weights["scd"] > 0 and count > 1:
            terms["scd"] = 1.0 - metric_losses.scd(fused, separate).mean() / count
        return terms

    def _gradient(self, fused: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """Mean over the pyramid levels of ``L1(|lap y|, max_i |lap x_i|)``; a level is only used while
        every axis still has at least 3 voxels (a Laplacian needs neighbours)."""
        per_level = []
        for level in range(self.gradient_levels):
            if level > 0:
                if min(fused.shape[2:]) < 6:
                    break
                fused, sources = downsample(fused), downsample(sources)
            edges = laplacian(sources).abs().amax(dim=1, keepdim=True)
            per_level.append((laplacian(fused).abs() - edges).abs().mean())
        return torch.stack(per_level).mean() if len(per_level) > 1 else per_level[0]

    def _intensity(
        self, fused: torch.Tensor, sources: torch.Tensor, functional: torch.Tensor | None
    ) -> torch.Tensor:
        if self.intensity_target == "mean":
            return (fused - sources).abs().mean()
        if self.intensity_target == "max":
            return (fused - sources.amax(dim=1, keepdim=True)).abs().mean()
        batch, num_mod = sources.shape[:2]
        if functional is None:
            functional = torch.zeros(batch, num_mod, dtype=torch.bool, device=sources.device)
        functional = functional.to(sources.device, torch.bool)
        extra = (1,) * (sources.ndim - 2)
        anatomical = ~functional
        # max over anatomical sources only (functional ones set below any intensity)
        anat_max = sources.masked_fill(~anatomical.view(batch, num_mod, *extra), float("-inf"))
        anat_max = anat_max.amax(dim=1, keepdim=True)
        has_anat = anatomical.any(dim=1)
        per_voxel = torch.cat([fused - anat_max.nan_to_num(neginf=0.0), fused - sources], dim=1).abs()
        per_term = per_voxel.flatten(2).mean(dim=2)  # (B, 1 + N)
        # terms used: the anatomical maximum (where any) and each functional source
        used = torch.cat([has_anat[:, None], functional], dim=1).float()
        return ((per_term * used).sum(dim=1) / used.sum(dim=1).clamp(min=1.0)).mean()


def regional_contrast_loss(
    fused: torch.Tensor,
    sources: torch.Tensor,
    level: int = 2,
    foreground_threshold: float = 0.05,
    target: str = "magnitude",
) -> torch.Tensor:
    """L1 between the fusion's regional deviations and the most salient source's, at a pyramid level.

    At level ``level`` of the Gaussian pyramid (fewer levels while an axis would fall below 2 voxels),
    each image's deviation from its own median over the interior of the crop's foreground (voxels where
    any source exceeds ``foreground_threshold``, as in :func:`functional_correlation_loss`, and whose
    pyramid blur reaches no background) is taken; the target per voxel is the source deviation of
    largest magnitude (``target="magnitude"``) or the largest one (``"bright"``: the brightest anomaly
    of any source, so a lesion bright on FLAIR and dark on T1 is kept bright). A blend can only meet it
    by giving that source the weight there *and* keeping the rest of the fusion as dark or bright as
    that source's normal tissue, which is what a lesion's visible contrast needs.

    Args:
        fused: ``(B, 1, *S)``.
        sources: ``(B, N, *S)`` on the [0, 1] scale.
        level: pyramid level (>= 1).
        foreground_threshold: foreground threshold on the sources.
        target: ``"magnitude"`` or ``"bright"`` (see above).

    Example:
        >>> images = torch.zeros(1, 2, 32, 32, 32)
        >>> images[:, :, 2:30, 2:30, 2:30] = 0.5
        >>> images[:, 1, 10:20, 10:20, 10:20] = 1.0               # a lesion in the second source only
        >>> with_lesion = regional_contrast_loss(images[:, 1:], images)
        >>> bool(with_lesion < regional_contrast_loss(images[:, :1], images))
        True
    """
    _check_level("contrast_level", level)
    _check_contrast_target(target)
    # the foreground's interior: voxels whose blur footprint at every level lies inside the foreground,
    # so the brain's edge (where the brighter source falls off furthest) is not taken for a lesion
    foreground = (sources > foreground_threshold).any(dim=1, keepdim=True).to(sources.dtype)
    for _ in range(level):
        if min(fused.shape[2:]) < 4:
            break
        fused, sources = downsample(fused), downsample(sources)
        foreground = (downsample(foreground) > 0.999).to(sources.dtype)
    dims = tuple(range(2, sources.ndim))
    count = foreground.sum(dim=dims, keepdim=True).clamp(min=1.0)
    inside = foreground[:, 0] > 0

    def deviation(images: torch.Tensor) -> torch.Tensor:
        # from the median of the foreground's interior: the normal tissue, which a lesion does not move
        reference = torch.stack(
            [
                image[:, mask].median(dim=1).values if mask.any() else image.new_zeros(image.shape[0])
                for image, mask in zip(images, inside, strict=True)
            ]
        )
        return (images - reference.view(*reference.shape, *[1] * len(dims))) * foreground

    source_dev = deviation(sources)
    salience = source_dev.abs() if target == "magnitude" else source_dev
    wanted = source_dev.gather(1, salience.argmax(dim=1, keepdim=True))
    error = (deviation(fused) - wanted).abs()
    return (error.sum(dim=dims) / count.flatten(1)).mean()


def functional_correlation_loss(
    fused: torch.Tensor,
    sources: torch.Tensor,
    functional: torch.Tensor | None,
    foreground_threshold: float = 0.05,
    sigma: float = 0.0,
) -> torch.Tensor:
    """``1 - Pearson(fused, f)`` inside the foreground, averaged over every functional source ``f``.

    The foreground is where any source exceeds ``foreground_threshold`` (sources on [0, 1]), as in
    :func:`~napari_isfl.evaluation.scores.functional_fidelity`'s default mask, so the background's many
    zeros do not inflate the correlation. 0 when no source is functional.

    Args:
        fused: ``(B, 1, *S)``.
        sources: ``(B, N, *S)`` on [0, 1].
        functional: ``(B, N)`` booleans, True for PET/SPECT inputs, or ``None`` (none are).
        foreground_threshold: the foreground's threshold on the [0, 1] sources.
        sigma: when > 0, both images are Gaussian-smoothed (sigma in pixels/voxels) first, so only the
            uptake pattern at the functional image's own resolution is asked for and the anatomy may add
            its finer detail.

    Example:
        >>> pet = torch.rand(1, 1, 16, 16) + 0.1
        >>> sources = torch.cat([torch.rand(1, 1, 16, 16), pet], dim=1)
        >>> flags = torch.tensor([[False, True]])
        >>> float(functional_correlation_loss(pet, sources, flags)) < 1e-5   # the PET itself: corr 1
        True
    """
    if functional is None or not bool(functional.any()):
        return fused.new_zeros(())
    functional = functional.to(sources.device, torch.bool)
    foreground = sources
    if sigma > 0:
        smooth = GaussianFilter(sources.ndim - 2, sigma).to(sources.device)
        fused = smooth(fused)
        sources = smooth(sources.flatten(0, 1).unsqueeze(1)).view_as(sources)
    weights = (foreground > foreground_threshold).any(dim=1, keepdim=True).flatten(2).float()  # (B, 1, V)
    count = weights.sum(dim=2, keepdim=True).clamp(min=1.0)

    def centred(values: torch.Tensor) -> torch.Tensor:  # (B, C, V), mean-free inside the foreground
        return (values - (values * weights).sum(dim=2, keepdim=True) / count) * weights

    fused_centred, sources_centred = centred(fused.flatten(2)), centred(sources.flatten(2))
    covariance = (fused_centred * sources_centred).sum(dim=2)  # (B, N)
    norm = (fused_centred.square().sum(dim=2) * sources_centred.square().sum(dim=2)).clamp(min=1e-12).sqrt()
    return (1.0 - covariance / norm)[functional].mean()


def detail_l1(difference: torch.Tensor, levels: int = DISTILL_LEVELS) -> torch.Tensor:
    """Sum over the detail bands of a ``levels``-level Laplacian pyramid of ``difference`` (the base left
    out) of the mean absolute band: an L1 that sees edges, not brightness."""
    return sum(band.abs().mean() for band in pyramid.laplacian_pyramid(difference, levels)[:-1])


def invariance_loss(
    fused_intervened: torch.Tensor,
    gate_intervened: torch.Tensor,
    fused_clean: torch.Tensor,
    gates: list[torch.Tensor],
    gate_target: float = 0.3,
    entropy_weight: float = 0.1,
) -> dict[str, torch.Tensor]:
    """Gate-weighted consistency of masked passes with the clean pass, plus a gate regulariser.

    Args:
        fused_intervened: ``(P, B, 1, *S)`` outputs of the P masking passes.
        gate_intervened: ``(P, B, 1, *S)`` finest-scale gates of those passes.
        fused_clean: ``(B, 1, *S)`` clean output (used as a fixed target).
        gates: every gate map of every pass (any scale), for the regulariser.
    """
    consistency = (gate_intervened * (fused_intervened - fused_clean.detach().unsqueeze(0)).abs()).mean()
    gate_mean = torch.stack([g.float().mean() for g in gates]).mean()
    eps = 1e-6
    entropy = torch.stack(
        [(-(g * (g + eps).log() + (1 - g) * (1 - g + eps).log())).float().mean() for g in gates]
    ).mean()
    regulariser = (gate_mean - gate_target) ** 2 + entropy_weight * entropy
    return {
        "consistency": consistency,
        "gate_reg": regulariser,
        "gate_mean": gate_mean.detach(),
        "invariance": consistency + regulariser,
    }


def necessity_loss(
    fused_dropped: torch.Tensor, fused_clean: torch.Tensor, mode: str = "penalize", margin: float = 0.1
) -> torch.Tensor:
    """Necessity from the modality-dropout passes ``(N, B, 1, *S)`` against the clean output.

    See the module docstring for ``mode``; ``margin`` bounds the reward of ``"reward"``.
    """
    if mode not in NECESSITY_MODES:
        raise ValueError(f"necessity mode must be one of {NECESSITY_MODES}, got {mode!r}")
    if mode == "off":
        return fused_clean.new_zeros(())
    change = (fused_dropped - fused_clean.detach().unsqueeze(0)).abs().flatten(2).mean(dim=2)  # (N, B)
    if mode == "penalize":
        return change.mean()
    return F.relu(margin - change).mean()


@dataclass
class ISFLLossWeights:
    """Term weights of :class:`ISFLLoss` (paper defaults for the three top-level terms)."""

    fidelity: float = 1.0
    invariance: float = 0.1
    necessity: float = 0.05
    intensity: float = 1.0
    gradient: float = 1.0
    ssim: float = 1.0
    gate_target: float = 0.3
    gate_entropy: float = 0.1
    necessity_mode: str = "penalize"
    necessity_margin: float = 0.1
    intensity_target: str = "mean"
    functional: float = 0.0
    functional_sigma: float = 0.0
    gradient_levels: int = 1
    contrast: float = 0.0
    contrast_level: int = 2
    contrast_target: str = "magnitude"
    vif: float = 0.0
    qabf: float = 0.0
    scd: float = 0.0
    #: L1 of the clean fusion to a per-case target fusion (``data.targets``), where a sample has one
    distill: float = 0.0
    #: the same on the detail bands: the sum over the finer levels of a 3-level Laplacian pyramid of the
    #: difference of the mean absolute band (where edge-based metrics such as Qabf are decided)
    distill_detail: float = 0.0

    def __post_init__(self) -> None:
        if self.necessity_mode not in NECESSITY_MODES:
            raise ValueError(f"necessity_mode must be one of {NECESSITY_MODES}, got {self.necessity_mode!r}")
        _check_intensity_target(self.intensity_target)
        _check_level("gradient_levels", self.gradient_levels)
        _check_level("contrast_level", self.contrast_level)
        _check_contrast_target(self.contrast_target)
        for name, value in asdict(self).items():
            if name not in ("necessity_mode", "intensity_target", "contrast_target") and value < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {value}")

    def to_dict(self) -> dict:
        return asdict(self)


def _as_float(maps: dict | None) -> dict | None:
    if maps is None:
        return None
    return {k: [g.float() for g in v] if isinstance(v, list) else v.float() for k, v in maps.items()}


class ISFLLoss(nn.Module):
    """The full ISFL objective over the outputs of one training step (see :func:`training_step`)."""

    def __init__(self, spatial_dims: int, weights: ISFLLossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or ISFLLossWeights()
        # every weight the fidelity loss takes, by name: a new fidelity option needs no copy here
        taken = inspect.signature(FidelityLoss).parameters.keys()
        options = taken & {field.name for field in fields(ISFLLossWeights)}
        self.fidelity = FidelityLoss(spatial_dims, **{name: getattr(self.weights, name) for name in options})

    def forward(
        self,
        sources: torch.Tensor,
        clean: dict,
        masked: dict | None = None,
        dropped: dict | None = None,
        functional: torch.Tensor | None = None,
        targets: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Args:
            sources: ``(B, N, *S)`` clean inputs.
            clean: network maps of the clean pass (``fused``, ``gates``).
            masked: maps of the masking passes, each tensor stacked ``(P, B, ...)``; gates a list.
            dropped: ``fused`` of the dropout passes stacked ``(N, B, 1, *S)``.
            functional: ``(B, N)`` booleans, True for PET/SPECT inputs (see :class:`FidelityLoss`).
            targets: ``(target fusions (B, 1, *S), has_target (B,))`` for the ``distill`` term, or None.

        Returns:
            every term (``loss`` is the weighted total, the others detached for logging).
        """
        # losses in float32 even under autocast: SSIM's variances (E[x^2] - mu^2) and Laplacian
        # differences cancel catastrophically in bfloat16, which made GPU training diverge
        with torch.autocast(sources.device.type, enabled=False):
            return self._forward(
                sources.float(), _as_float(clean), _as_float(masked), _as_float(dropped), functional, targets
            )

    def _forward(
        self,
        sources: torch.Tensor,
        clean: dict,
        masked: dict | None,
        dropped: dict | None,
        functional: torch.Tensor | None,
        targets: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict:
        w = self.weights
        terms = self.fidelity(clean["fused"], sources, functional)
        total = w.fidelity * terms["fidelity"]
        if targets is not None and (w.distill > 0 or w.distill_detail > 0) and bool(targets[1].any()):
            has_target = targets[1]
            difference = clean["fused"][has_target] - targets[0].float()[has_target]
            if w.distill > 0:
                terms["distill"] = difference.abs().mean()
                total = total + w.distill * terms["distill"]
            if w.distill_detail > 0:
                terms["distill_detail"] = detail_l1(difference)
                total = total + w.distill_detail * terms["distill_detail"]
        if masked is not None and w.invariance > 0:
            inv = invariance_loss(
                masked["fused"],
                masked["gates"][0],
                clean["fused"],
                list(clean["gates"]) + list(masked["gates"]),
                w.gate_target,
                w.gate_entropy,
            )
            terms.update(inv)
            total = total + w.invariance * inv["invariance"]
        if dropped is not None and w.necessity_mode != "off" and w.necessity > 0:
            terms["necessity"] = necessity_loss(
                dropped["fused"], clean["fused"], w.necessity_mode, w.necessity_margin
            )
            total = total + w.necessity * terms["necessity"]
        out = {k: v.detach() for k, v in terms.items()}
        out["loss"] = total
        return out

"""ISFL losses: each term is zero or minimal where it should be, has the documented sign, and the
weights are validated."""

from __future__ import annotations

import math

import pytest
import torch

from napari_isfl.model.losses import (
    FidelityLoss,
    ISFLLoss,
    ISFLLossWeights,
    functional_correlation_loss,
    invariance_loss,
    laplacian,
    necessity_loss,
    regional_contrast_loss,
)

SHAPES = {2: (19, 23), 3: (11, 13, 9)}


def _ramp(shape: tuple[int, ...], slopes: tuple[float, ...]) -> torch.Tensor:
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    return sum(s * c for s, c in zip(slopes, coords, strict=False))[None, None]


@pytest.mark.parametrize("dims", [2, 3])
def test_laplacian_of_linear_ramp_is_zero_inside(dims: int) -> None:
    """The Laplacian of a linear ramp vanishes away from the border (replicate padding bends it only
    on the outermost voxels), and of a constant image everywhere."""
    shape = SHAPES[dims]
    ramp = _ramp(shape, (0.3, -0.7, 0.2)[:dims])
    lap = laplacian(ramp)
    assert lap.shape == ramp.shape
    inner = (slice(None), slice(None)) + (slice(1, -1),) * dims
    assert lap[inner].abs().max() < 1e-12
    assert lap.abs().max() > 0.1  # the border does see the padding
    # float32 constant: zero up to the rounding of summing 2 * dims + 1 terms
    flat = laplacian(torch.full((1, 1, *shape), 0.4))
    assert flat.abs().max() <= 4 * dims * 0.4 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("dims", [2, 3])
def test_laplacian_of_quadratic(dims: int) -> None:
    """x0^2 + x1^2 (+ x2^2) has a discrete Laplacian of 2 per axis, i.e. 2 * dims inside."""
    shape = SHAPES[dims]
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    image = sum(c**2 for c in coords)[None, None]
    inner = (slice(None), slice(None)) + (slice(1, -1),) * dims
    torch.testing.assert_close(laplacian(image)[inner], torch.full_like(image[inner], 2.0 * dims))


@pytest.mark.parametrize("dims", [2, 3])
def test_fidelity_zero_when_fused_equals_single_source(dims: int) -> None:
    """With one source and the fused image equal to it, every fidelity term is zero."""
    torch.manual_seed(0)
    source = torch.rand(2, 1, *SHAPES[dims])
    terms = FidelityLoss(dims)(source.clone(), source)
    assert terms["intensity"] == 0
    assert terms["gradient"] == 0
    assert terms["ssim"].abs() < 1e-5
    assert terms["fidelity"].abs() < 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_fidelity_terms_follow_their_definition(dims: int) -> None:
    """Intensity is the mean L1 to the sources; gradient compares |lap y| with the max |lap x_i|; the
    fused image that equals one source is penalised for the other."""
    torch.manual_seed(1)
    sources = torch.rand(1, 2, *SHAPES[dims])
    fused = sources[:, :1].clone()
    terms = FidelityLoss(dims, ssim=0.0)(fused, sources)
    expected_l1 = (sources[:, 0] - sources[:, 1]).abs().mean() / 2
    torch.testing.assert_close(terms["intensity"], expected_l1)
    edges = torch.maximum(laplacian(sources[:, :1]).abs(), laplacian(sources[:, 1:]).abs())
    torch.testing.assert_close(terms["gradient"], (laplacian(fused).abs() - edges).abs().mean())
    assert terms["ssim"] == 0  # disabled
    torch.testing.assert_close(terms["fidelity"], terms["intensity"] + terms["gradient"])
    # moving the output toward the other source lowers the intensity term only through the mean
    mid = sources.mean(dim=1, keepdim=True)
    mid_terms = FidelityLoss(dims, ssim=0.0)(mid, sources)
    assert mid_terms["intensity"] <= terms["intensity"]


@pytest.mark.parametrize("dims", [2, 3])
def test_max_anatomical_target_keeps_functional_terms(dims: int) -> None:
    """``max_anatomical``: anatomical sources merge by their voxel-wise maximum, each functional source
    keeps its own L1 term; with only functional inputs it is the plain mean of the L1 terms."""
    torch.manual_seed(2)
    sources = torch.rand(3, 3, *SHAPES[dims])
    fused = torch.rand(3, 1, *SHAPES[dims])
    functional = torch.tensor([[False, False, False], [False, False, True], [True, True, True]])
    loss = FidelityLoss(dims, ssim=0.0, intensity_target="max_anatomical")
    got = loss(fused, sources, functional)["intensity"]

    def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().mean()

    anatomy_only = l1(fused[0], sources[0].amax(dim=0, keepdim=True))
    with_pet = (l1(fused[1], sources[1, :2].amax(dim=0, keepdim=True)) + l1(fused[1], sources[1, 2:])) / 2
    functional_only = sum(l1(fused[2], sources[2, i : i + 1]) for i in range(3)) / 3
    torch.testing.assert_close(got, (anatomy_only + with_pet + functional_only) / 3)
    # no flags: every input anatomical
    torch.testing.assert_close(loss(fused[:1], sources[:1])["intensity"], anatomy_only)


def test_max_anatomical_does_not_hide_hypo_uptake() -> None:
    """Over bright MRI, hiding a dark PET region under the MRI's brightness costs the PET's L1 term;
    between two anatomical images the maximum costs nothing."""
    mri = torch.full((1, 1, 8, 8), 0.9)
    pet = torch.full((1, 1, 8, 8), 0.1)
    sources = torch.cat([mri, pet], dim=1)
    loss = FidelityLoss(2, gradient=0.0, ssim=0.0, intensity_target="max_anatomical")
    hidden = mri.clone()  # the PET's dark region replaced by the MRI
    assert loss(hidden, sources, torch.tensor([[False, True]]))["intensity"] == pytest.approx(0.4)
    assert loss(hidden, sources)["intensity"] == 0  # both anatomical: the maximum is the target
    assert loss(pet.clone(), sources)["intensity"] == pytest.approx(0.8)


@pytest.mark.parametrize("dims", [2, 3])
def test_max_target_is_the_voxelwise_maximum_of_all_sources(dims: int) -> None:
    torch.manual_seed(3)
    sources, fused = torch.rand(2, 3, *SHAPES[dims]), torch.rand(2, 1, *SHAPES[dims])
    loss = FidelityLoss(dims, ssim=0.0, intensity_target="max")
    expected = (fused - sources.amax(dim=1, keepdim=True)).abs().mean()
    torch.testing.assert_close(loss(fused, sources)["intensity"], expected)
    flagged = torch.tensor([[False, True, False], [True, True, True]])
    torch.testing.assert_close(loss(fused, sources, flagged)["intensity"], expected)  # flags ignored
    assert loss(sources.amax(dim=1, keepdim=True), sources)["intensity"] == 0


def test_intensity_target_validated() -> None:
    """An unknown intensity target is refused, by the loss and by the weights."""
    with pytest.raises(ValueError, match="intensity_target must be one of"):
        FidelityLoss(2, intensity_target="median")
    with pytest.raises(ValueError, match="intensity_target must be one of"):
        ISFLLossWeights(intensity_target="median")


def test_fidelity_weights_validated() -> None:
    """Negative fidelity weights are refused."""
    with pytest.raises(ValueError, match=">= 0"):
        FidelityLoss(2, gradient=-1.0)


@pytest.mark.parametrize("dims", [2, 3])
def test_invariance_consistency_zero_for_identical_passes(dims: int) -> None:
    """Masked passes identical to the clean pass give zero consistency, whatever the gate."""
    torch.manual_seed(2)
    clean = torch.rand(2, 1, *SHAPES[dims])
    gate = torch.rand(2, 2, 1, *SHAPES[dims])
    terms = invariance_loss(clean.expand(2, *clean.shape), gate, clean, [gate])
    assert terms["consistency"] == 0


@pytest.mark.parametrize("dims", [2, 3])
def test_invariance_consistency_is_gate_weighted(dims: int) -> None:
    """Consistency is ``mean(G * |y_do - y|)``: zero with a closed gate, the plain mean change with an
    open one; gradients reach the intervened output but not the clean target."""
    shape = SHAPES[dims]
    torch.manual_seed(3)
    clean = torch.rand(1, 1, *shape, requires_grad=True)
    masked = torch.rand(2, 1, 1, *shape, requires_grad=True)
    closed = invariance_loss(masked, torch.zeros(2, 1, 1, *shape), clean, [torch.zeros(1, 1, *shape)])
    assert closed["consistency"] == 0
    opened = invariance_loss(masked, torch.ones(2, 1, 1, *shape), clean, [torch.ones(1, 1, *shape)])
    torch.testing.assert_close(opened["consistency"], (masked - clean).abs().mean())
    opened["consistency"].backward()
    assert masked.grad is not None and masked.grad.abs().sum() > 0
    assert clean.grad is None  # the clean output is a fixed target


def test_gate_regulariser_minimum_at_target() -> None:
    """The gate regulariser is ``(mean G - target)^2 + w * H(G)``: at G == target only the binary
    entropy H(target) remains, and a gate mean away from the target costs more."""
    target, weight = 0.3, 0.1
    shape = (1, 1, 8, 9)
    at_target = invariance_loss(
        torch.zeros(1, *shape), torch.full((1, *shape), target), torch.zeros(shape),
        [torch.full(shape, target)], gate_target=target, entropy_weight=weight,
    )  # fmt: skip
    entropy = -(target * math.log(target) + (1 - target) * math.log(1 - target))
    assert at_target["gate_reg"].item() == pytest.approx(weight * entropy, rel=1e-4)
    assert at_target["gate_mean"].item() == pytest.approx(target)
    away = invariance_loss(
        torch.zeros(1, *shape), torch.full((1, *shape), 0.7), torch.zeros(shape),
        [torch.full(shape, 0.7)], gate_target=target, entropy_weight=weight,
    )  # fmt: skip
    # H(0.7) == H(0.3), so the difference is exactly the squared distance of the mean to the target
    assert away["gate_reg"].item() == pytest.approx(weight * entropy + 0.4**2, rel=1e-4)


@pytest.mark.parametrize("dims", [2, 3])
def test_necessity_modes_have_documented_signs(dims: int) -> None:
    """penalize == the mean change (grows with it), reward == relu(margin - change) (shrinks with it
    up to the margin, then zero), off == 0."""
    shape = SHAPES[dims]
    clean = torch.full((2, 1, *shape), 0.5)
    margin = 0.1
    previous_penalty, previous_reward = -1.0, math.inf
    for change in (0.0, 0.02, 0.05, 0.1, 0.2, 0.3):
        dropped = (clean + change).expand(3, *clean.shape)  # three modalities dropped in turn
        penalty = necessity_loss(dropped, clean, "penalize").item()
        reward = necessity_loss(dropped, clean, "reward", margin).item()
        assert penalty == pytest.approx(change, abs=1e-6)
        assert reward == pytest.approx(max(margin - change, 0.0), abs=1e-6)
        assert penalty > previous_penalty
        assert reward < previous_reward or reward == 0
        previous_penalty, previous_reward = penalty, reward
        assert necessity_loss(dropped, clean, "off").item() == 0


def test_necessity_gradients_point_opposite_ways() -> None:
    """Gradient descent on "penalize" pulls a dropped output toward the clean one, on "reward" away."""
    clean = torch.full((1, 1, 6, 7), 0.5)
    grads = {}
    for mode in ("penalize", "reward"):
        dropped = (clean + 0.03).expand(2, *clean.shape).clone().requires_grad_(True)
        necessity_loss(dropped, clean, mode, margin=0.1).backward()
        grads[mode] = dropped.grad
    assert (grads["penalize"] > 0).all()  # descent lowers y_drop toward y
    assert (grads["reward"] < 0).all()  # descent raises y_drop away from y
    with pytest.raises(ValueError, match="necessity mode must be one of"):
        necessity_loss(clean[None], clean, "maximize")


@pytest.mark.parametrize(
    "kwargs",
    [{"fidelity": -1.0}, {"invariance": -0.1}, {"gate_target": -0.3}, {"necessity_margin": -1.0}],
)
def test_loss_weights_validation(kwargs: dict) -> None:
    """Negative weights are refused with the weight's name."""
    with pytest.raises(ValueError, match=f"loss weight {next(iter(kwargs))} must be >= 0"):
        ISFLLossWeights(**kwargs)


def test_loss_weights_mode_and_dict() -> None:
    """An unknown necessity mode is refused; ``to_dict`` round-trips."""
    with pytest.raises(ValueError, match="necessity_mode must be one of"):
        ISFLLossWeights(necessity_mode="both")
    weights = ISFLLossWeights(necessity_mode="reward", invariance=0.2)
    assert ISFLLossWeights(**weights.to_dict()) == weights


def _maps(shape: tuple[int, ...], passes: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    lead = (passes,) if passes else ()
    fused = torch.rand((*lead, 1, 1, *shape), generator=generator, requires_grad=True)
    gates = [
        torch.rand((*lead, 1, 1, *[math.ceil(s / 2**k) for s in shape]), generator=generator)
        for k in range(3)
    ]
    return {"fused": fused, "gates": gates}


@pytest.mark.parametrize("mode", ["penalize", "reward", "off"])
def test_total_is_the_weighted_sum(mode: str) -> None:
    """``loss`` is ``w_f * fidelity + w_inv * invariance + w_nec * necessity`` of the reported terms,
    and the terms of a disabled part are absent."""
    shape = (15, 17)
    sources = torch.rand(1, 2, *shape, generator=torch.Generator().manual_seed(5))
    clean, masked, dropped = _maps(shape, 0, 6), _maps(shape, 2, 7), _maps(shape, 2, 8)
    weights = ISFLLossWeights(necessity_mode=mode)
    out = ISFLLoss(2, weights)(sources, clean, masked, {"fused": dropped["fused"]})
    expected = weights.fidelity * out["fidelity"] + weights.invariance * out["invariance"]
    if mode != "off":
        expected = expected + weights.necessity * out["necessity"]
    else:
        assert "necessity" not in out
    torch.testing.assert_close(out["loss"].detach(), expected)
    assert out["loss"].requires_grad and not out["fidelity"].requires_grad
    without = ISFLLoss(2, ISFLLossWeights(invariance=0.0))(sources, clean, masked, None)
    assert "consistency" not in without and "necessity" not in without
    torch.testing.assert_close(without["loss"].detach(), without["fidelity"])


@pytest.mark.parametrize("dims", [2, 3])
def test_losses_are_float32_under_bfloat16_autocast(dims: int) -> None:
    """Regression: SSIM computed in bfloat16 (E[x^2] - mu^2 cancels) made GPU training diverge. Under
    autocast, with bfloat16 network outputs, every term must equal the float32 computation."""
    generator = torch.Generator().manual_seed(3)
    shape = (2, 2, *SHAPES[dims])
    sources = torch.rand(shape, generator=generator) * 0.2 + 0.6  # bright, low-variance: worst case
    fused = sources.mean(1, keepdim=True) + 0.01 * torch.rand((2, 1, *SHAPES[dims]), generator=generator)
    gates = [torch.rand((2, 1, *SHAPES[dims]), generator=generator)]
    loss = ISFLLoss(dims, ISFLLossWeights(invariance=0.0, necessity=0.0))
    reference = loss(sources, {"fused": fused, "gates": gates})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(sources.bfloat16(), {"fused": fused.bfloat16(), "gates": [g.bfloat16() for g in gates]})
    for key in ("intensity", "gradient", "ssim", "loss"):
        assert low[key].dtype == torch.float32
        # the only difference left is the inputs' rounding to bfloat16, not the loss arithmetic
        torch.testing.assert_close(low[key], reference[key], rtol=0.05, atol=0.01)


@pytest.mark.parametrize("dims, size", [(2, (17, 23)), (3, (9, 11, 7))])
def test_functional_correlation_term(dims: int, size: tuple) -> None:
    """``functional``: 1 - Pearson(fused, PET/SPECT) in the foreground; 0 for the PET itself, about 2 for
    its negative, 0 (and no term) without a functional source; gradients reach the fused image."""
    torch.manual_seed(0)
    pet = torch.rand(2, 1, *size) * 0.8 + 0.1
    mri = torch.rand(2, 1, *size)
    sources = torch.cat([mri, pet], dim=1)
    flags = torch.tensor([[False, True], [False, True]])
    assert float(functional_correlation_loss(pet, sources, flags)) == pytest.approx(0.0, abs=1e-5)
    assert float(functional_correlation_loss(1.0 - pet, sources, flags)) == pytest.approx(2.0, abs=1e-5)
    assert float(functional_correlation_loss(pet, sources, torch.zeros(2, 2, dtype=torch.bool))) == 0.0
    assert float(functional_correlation_loss(pet, sources, None)) == 0.0
    # the background (every source below 0.05) does not count: a fused image equal to the PET inside
    # the foreground and anything outside it still correlates perfectly
    background = torch.zeros(2, 2, *size, dtype=torch.bool)
    background[(slice(None), slice(None)) + (slice(0, 3),) * dims] = True
    masked_sources = sources.masked_fill(background, 0.0)
    fused = masked_sources[:, 1:].clone()
    fused[background[:, 1:]] = 5.0
    assert float(functional_correlation_loss(fused, masked_sources, flags)) == pytest.approx(0.0, abs=1e-5)
    fused = torch.rand(2, 1, *size, requires_grad=True)
    loss = FidelityLoss(dims, functional=1.0)
    terms = loss(fused, sources, flags)
    terms["fidelity"].backward()
    assert fused.grad is not None and fused.grad.abs().sum() > 0
    no_term = FidelityLoss(dims)(fused.detach(), sources, flags)
    assert float(terms["fidelity"].detach() - no_term["fidelity"]) == pytest.approx(
        float(terms["functional"].detach()), rel=1e-4
    )


@pytest.mark.parametrize("dims, size", [(2, (21, 18)), (3, (12, 10, 9))])
def test_functional_term_smoothed_ignores_fine_detail(dims: int, size: tuple) -> None:
    """With ``sigma``, fine anatomical detail added to the PET costs (almost) nothing; without, it does."""
    torch.manual_seed(1)
    coords = torch.meshgrid(*[torch.linspace(0, 1, n) for n in size], indexing="ij")
    pet = (0.3 + 0.5 * sum(coords) / dims)[None, None]  # smooth uptake
    detail = torch.zeros_like(pet)
    detail[(slice(None), slice(None)) + (slice(None, None, 2),) * dims] = 0.15  # a 2-pixel checkerboard
    sources = torch.cat([torch.rand_like(pet), pet], dim=1)
    flags = torch.tensor([[False, True]])
    sharp = float(functional_correlation_loss(pet + detail, sources, flags))
    smoothed = float(functional_correlation_loss(pet + detail, sources, flags, sigma=2.0))
    assert smoothed < 0.2 * sharp
    with pytest.raises(ValueError, match=">= 0"):
        ISFLLossWeights(functional_sigma=-1.0)


@pytest.mark.parametrize("dims, size", [(2, (37, 29)), (3, (21, 17, 19))])
def test_gradient_levels_one_is_the_full_resolution_term(dims: int, size: tuple) -> None:
    torch.manual_seed(0)
    sources, fused = torch.rand(2, 2, *size), torch.rand(2, 1, *size)
    terms = FidelityLoss(dims, gradient_levels=1)(fused, sources)
    edges = laplacian(sources).abs().amax(dim=1, keepdim=True)
    assert torch.allclose(terms["gradient"], (laplacian(fused).abs() - edges).abs().mean())


@pytest.mark.parametrize("dims, size", [(2, (37, 29)), (3, (21, 17, 19))])
def test_coarse_gradient_levels_see_a_faded_region(dims: int, size: tuple) -> None:
    """A smooth bright region of one source (an oedema on FLAIR) hardly has fine edges, so the
    full-resolution term barely notices when a blend halves it; the coarse levels do."""
    coords = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in size], indexing="ij")
    blob = torch.exp(-sum(c**2 for c in coords) / 0.1)
    sources = torch.stack([blob, torch.zeros_like(blob)])[None]
    kept, faded = blob[None, None], 0.5 * blob[None, None]

    def extra_penalty(levels: int) -> float:
        loss = FidelityLoss(dims, gradient_levels=levels)
        return float(loss(faded, sources)["gradient"] - loss(kept, sources)["gradient"])

    assert float(FidelityLoss(dims, gradient_levels=3)(kept, sources)["gradient"]) == pytest.approx(
        0, abs=1e-6
    )
    assert extra_penalty(3) > 1.5 * extra_penalty(1) > 0


@pytest.mark.parametrize("dims, size", [(2, (9, 7)), (3, (7, 9, 8))])
def test_gradient_levels_stop_before_the_image_is_too_small(dims: int, size: tuple) -> None:
    sources = torch.rand(1, 2, *size, requires_grad=True)
    fused = sources.mean(dim=1, keepdim=True)
    value = FidelityLoss(dims, gradient_levels=5)(fused, sources)["gradient"]
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(sources.grad).all()


@pytest.mark.parametrize("option", ["gradient_levels", "contrast_level"])
@pytest.mark.parametrize("level", [0, -1, 1.5, True])
def test_pyramid_level_options_validated(option: str, level: object) -> None:
    with pytest.raises(ValueError, match=option):
        FidelityLoss(2, **{option: level})
    with pytest.raises(ValueError, match=option):
        ISFLLossWeights(**{option: level})


def _lesion_pair(size: tuple) -> torch.Tensor:
    """Two sources on one brain-like box: normal tissue 0.6 in the first (T1c-like, brighter), 0.45 in the
    second (FLAIR-like), and a lesion only the second shows (0.9 there, 0.55 in the first)."""
    sources = torch.zeros(1, 2, *size)
    brain = (slice(None), slice(None)) + tuple(slice(2, n - 2) for n in size)
    lesion = tuple(slice(n // 3, n // 3 + max(3, n // 3)) for n in size)
    sources[brain] = torch.tensor([0.6, 0.45]).view(1, 2, *[1] * len(size))
    sources[(0, 0) + lesion] = 0.55
    sources[(0, 1) + lesion] = 0.9
    return sources


@pytest.mark.parametrize("dims, size", [(2, (37, 29)), (3, (21, 17, 19))])
def test_regional_contrast_prefers_the_blend_that_keeps_the_lesion_visible(dims: int, size: tuple) -> None:
    """The source of the lesion inside it and the other source elsewhere keeps less lesion contrast (the
    first source's normal tissue is brighter) than the lesion's source everywhere; the term ranks them so."""
    sources = _lesion_pair(size)
    first, second = sources[:, :1], sources[:, 1:]
    lesion_mask = (second > 0.8).float()
    mixed = lesion_mask * second + (1 - lesion_mask) * first
    loss = FidelityLoss(dims, contrast=1.0, contrast_level=1)
    assert float(loss(second, sources)["contrast"]) < float(loss(mixed, sources)["contrast"])
    assert float(loss(mixed, sources)["contrast"]) < float(loss(first, sources)["contrast"])


@pytest.mark.parametrize("dims, size", [(2, (9, 7)), (3, (7, 9, 8))])
def test_regional_contrast_is_finite_and_differentiable_on_small_odd_inputs(dims: int, size: tuple) -> None:
    sources = torch.rand(2, 3, *size, requires_grad=True)
    fused = sources.mean(dim=1, keepdim=True)
    value = regional_contrast_loss(fused, sources, level=4)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(sources.grad).all()


def test_regional_contrast_is_zero_when_one_source_is_the_fusion_and_holds_every_contrast() -> None:
    sources = _lesion_pair((20, 20, 20))
    sources[:, 0] = (sources[:, 0] > 0).float() * 0.6  # the first source: flat tissue, no contrast
    assert float(regional_contrast_loss(sources[:, 1:], sources, level=1)) == pytest.approx(0, abs=1e-6)


def test_regional_contrast_off_by_default() -> None:
    sources = _lesion_pair((40, 40))
    terms = FidelityLoss(2)(sources[:, :1], sources)
    assert float(terms["contrast"]) == 0.0
    with_term = FidelityLoss(2, contrast=2.0)(sources[:, :1], sources)
    assert float(with_term["fidelity"]) > float(terms["fidelity"])


def test_contrast_weight_validated() -> None:
    with pytest.raises(ValueError, match="contrast"):
        ISFLLossWeights(contrast=-1.0)


@pytest.mark.parametrize("dims, size", [(2, (41, 37)), (3, (23, 21, 25))])
def test_bright_contrast_target_keeps_a_lesion_bright_that_another_source_shows_darker(
    dims: int, size: tuple
) -> None:
    """An MS lesion: bright on FLAIR (+0.45 over its normal tissue), darker still on T1 (-0.6). The
    magnitude target asks for the dark T1 lesion, the bright target for the FLAIR's."""
    sources = _lesion_pair(size)
    lesion = sources[:, 1:] > 0.8
    t1 = sources[:, :1].clone()
    t1[lesion] = 0.0
    sources = torch.cat([t1, sources[:, 1:]], dim=1)
    flair_like, t1_like = sources[:, 1:], sources[:, :1]
    bright = FidelityLoss(dims, contrast=1.0, contrast_level=1, contrast_target="bright")
    magnitude = FidelityLoss(dims, contrast=1.0, contrast_level=1, contrast_target="magnitude")
    assert float(bright(flair_like, sources)["contrast"]) < float(bright(t1_like, sources)["contrast"])
    assert float(magnitude(t1_like, sources)["contrast"]) < float(magnitude(flair_like, sources)["contrast"])


def test_contrast_target_validated() -> None:
    with pytest.raises(ValueError, match="contrast_target"):
        FidelityLoss(2, contrast_target="dark")
    with pytest.raises(ValueError, match="contrast_target"):
        ISFLLossWeights(contrast_target="dark")

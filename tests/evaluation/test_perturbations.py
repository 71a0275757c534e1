"""Tests of the robustness-benchmark perturbation families (napari_isfl.evaluation.perturbations)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_isfl.evaluation import perturbations as P
from napari_isfl.evaluation.perturbations import (
    PERTURBATIONS,
    apply_to_all,
    apply_to_modality,
    get_family,
    misregister,
    perturb,
    perturb_with_mask,
    random_bias_field,
    truncate,
)

FAMILIES = list(PERTURBATIONS)
STOCHASTIC = [name for name, fam in PERTURBATIONS.items() if fam.stochastic]
DETERMINISTIC = [name for name, fam in PERTURBATIONS.items() if not fam.stochastic]
# Odd, non-square sizes on purpose: resampling and slab widths must not rely on even extents.
SHAPES = {"2d": (37, 50), "3d": (17, 22, 13)}
LEVELS = (1, 2, 3)


def make_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A seeded structured phantom in [0, 1]: ramp + Gaussian blobs + a bright box + an air hole (0).

    Content reaches every border (so any truncated slab removes signal), many voxels sit mid-range
    (noise can be measured without clipping) and the hole gives a true zero background.
    """
    rng = np.random.default_rng(seed)
    coords = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    img = 0.45 + 0.08 * coords[0] - 0.05 * coords[1]
    for _ in range(4):
        centre = rng.uniform(-0.6, 0.6, len(shape))
        width = rng.uniform(0.15, 0.3)
        amp = rng.uniform(-0.2, 0.3)
        dist2 = sum((c - m) ** 2 for c, m in zip(coords, centre, strict=True))
        img = img + amp * np.exp(-dist2 / (2 * width**2))
    box = tuple(slice(int(0.6 * n), int(0.8 * n) + 1) for n in shape)
    img[box] = 0.9
    hole = sum((c - h) ** 2 for c, h in zip(coords, (-0.45, 0.4, 0.0), strict=False)) < 0.3**2
    img[hole] = 0.0
    return np.clip(img, 0.0, 1.0).astype(np.float32)


@pytest.fixture(params=sorted(SHAPES), scope="module")
def image(request: pytest.FixtureRequest) -> np.ndarray:
    return make_image(SHAPES[request.param], seed=3)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b)))


def gradient_energy(a: np.ndarray) -> float:
    return float(sum(np.mean(np.diff(a.astype(np.float64), axis=ax) ** 2) for ax in range(a.ndim)))


def curvature_ratio(a: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Second-difference energy / variance over valid voxel triples: ~0 for smooth, ~6 per axis for white."""
    a = a.astype(np.float64)
    valid = np.ones(a.shape, bool) if valid is None else valid
    a = a - a[valid].mean()
    var = float(np.mean(a[valid] ** 2))
    total = 0.0
    for ax in range(a.ndim):
        n = a.shape[ax]
        v = valid.take(range(0, n - 2), ax) & valid.take(range(1, n - 1), ax) & valid.take(range(2, n), ax)
        total += float(np.mean(np.diff(a, 2, axis=ax)[v] ** 2))
    return total / var


# ---------------------------------------------------------------------------------------------------
# registry and generic properties of every family
# ---------------------------------------------------------------------------------------------------
def test_registry_contents() -> None:
    assert FAMILIES == [
        "gaussian_noise",
        "rician_noise",
        "bias_field",
        "gamma",
        "resolution",
        "truncation",
        "dropout",
        "misregistration",
        "intensity_scale",
    ]
    for name, fam in PERTURBATIONS.items():
        assert fam.name == name
        assert isinstance(fam.levels, list) and len(fam.levels) == 4 and fam.max_level == 3
        assert isinstance(fam.description, str) and len(fam.description) > 20
        assert get_family(name) is fam and get_family(fam) is fam
        fam.levels.append("edited")  # a copy: the family's levels cannot be altered by a caller
        assert len(fam.levels) == 4
    assert PERTURBATIONS["gaussian_noise"].levels == [0.0, 0.02, 0.05, 0.10]
    assert PERTURBATIONS["resolution"].levels == [1, 2, 3, 4]
    assert PERTURBATIONS["dropout"].levels == ["none", "zeros", "mean", "noise"]
    assert [name for name, fam in PERTURBATIONS.items() if fam.local] == ["truncation"]


@pytest.mark.parametrize("family", FAMILIES)
def test_level_zero_is_identity(family: str, image: np.ndarray) -> None:
    for seed in (0, 5):
        out, mask = perturb_with_mask(image, family, 0, seed=seed)
        assert out.dtype == np.float32
        assert np.array_equal(out, image)
        assert out is not image and not np.shares_memory(out, image)
        assert mask.dtype == bool and mask.shape == image.shape and not mask.any()


@pytest.mark.parametrize("family", FAMILIES)
def test_levels_change_image_and_stay_valid(family: str, image: np.ndarray) -> None:
    fam = PERTURBATIONS[family]
    before = image.copy()
    for level in LEVELS:
        out, mask = perturb_with_mask(image, family, level, seed=1)
        assert out.shape == image.shape and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
        assert not np.array_equal(out, image), f"{family} level {level} left the image unchanged"
        assert mask.shape == image.shape and mask.dtype == bool
        if fam.local:
            assert mask.any() and not mask.all()
        else:
            assert mask.all()
    assert np.array_equal(image, before), "the input must not be modified in place"


def _severity(family: str, clean: np.ndarray, out: np.ndarray) -> float:
    if family == "dropout":
        # Every dropout level removes all information; severity is how far the stand-in departs from
        # the zero-filled modality of training: RMS 0 (zeros) < mean (flat) < RMS of the image (noise).
        return float(np.sqrt(np.mean(out.astype(np.float64) ** 2)))
    return mad(out, clean)


@pytest.mark.parametrize("family", FAMILIES)
def test_severity_is_monotonic(family: str, image: np.ndarray) -> None:
    seeds = range(3)
    # Level 0 (the image itself) is no stand-in for dropout, so its scale starts at level 1.
    levels = LEVELS if family == "dropout" else range(4)
    severity = [
        np.mean([_severity(family, image, perturb(image, family, level, seed=s)) for s in seeds])
        for level in levels
    ]
    assert all(b > a for a, b in zip(severity, severity[1:], strict=False)), severity


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_result(family: str, image: np.ndarray) -> None:
    a, mask_a = perturb_with_mask(image, family, 3, seed=11)
    b, mask_b = perturb_with_mask(image, family, 3, seed=11)
    c, mask_c = PERTURBATIONS[family].apply_with_mask(image, 3, np.random.default_rng(11))
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert np.array_equal(mask_a, mask_b) and np.array_equal(mask_a, mask_c)
    assert np.array_equal(PERTURBATIONS[family].apply(image, 3, 11), a)


@pytest.mark.parametrize("family", STOCHASTIC)
def test_different_seeds_differ(family: str, image: np.ndarray) -> None:
    outputs = [perturb(image, family, 3, seed=s) for s in range(8)]
    distinct = {o.tobytes() for o in outputs}
    if family in ("truncation", "misregistration"):
        # Only a discrete choice (axis, side/sign) is random: some seeds coincide, most do not.
        assert len(distinct) >= 3
    else:
        assert len(distinct) == len(outputs)


@pytest.mark.parametrize("family", DETERMINISTIC)
def test_deterministic_families_ignore_the_seed(family: str, image: np.ndarray) -> None:
    assert np.array_equal(perturb(image, family, 2, seed=0), perturb(image, family, 2, seed=99))


# ---------------------------------------------------------------------------------------------------
# each family does what it claims
# ---------------------------------------------------------------------------------------------------
def _mid(image: np.ndarray) -> np.ndarray:
    # 3.5 sigma from both clipping bounds at the largest sigma (0.10)
    return (image > 0.35) & (image < 0.65)


@pytest.mark.parametrize("family", ["gaussian_noise", "rician_noise"])
def test_noise_std_matches_sigma(family: str, image: np.ndarray) -> None:
    mid = _mid(image)
    assert mid.sum() > 800
    sigmas = PERTURBATIONS[family].levels
    for level in LEVELS:
        residual = (perturb(image, family, level, seed=level) - image)[mid].astype(np.float64)
        assert residual.std() == pytest.approx(sigmas[level], rel=0.1)
        if family == "gaussian_noise":  # unbiased away from the clipping bounds
            assert abs(residual.mean()) < 4 * sigmas[level] / math.sqrt(residual.size)


def test_noise_levels_share_one_realisation(image: np.ndarray) -> None:
    out1 = perturb(image, "gaussian_noise", 1, seed=4)
    out3 = perturb(image, "gaussian_noise", 3, seed=4)
    unclipped = (out3 > 0) & (out3 < 1)
    assert unclipped.mean() > 0.9
    r1, r3 = (out1 - image)[unclipped], (out3 - image)[unclipped]
    np.testing.assert_allclose(r3, r1 * (0.10 / 0.02), atol=1e-5)


def test_rician_background_bias() -> None:
    # Magnitude of pure complex noise is Rayleigh: mean sigma*sqrt(pi/2), never negative.
    zeros = np.zeros((64, 64), np.float32)
    out = perturb(zeros, "rician_noise", 3, seed=0)
    assert out.min() >= 0.0
    assert out.mean() == pytest.approx(0.10 * math.sqrt(math.pi / 2), rel=0.05)
    gauss = perturb(zeros, "gaussian_noise", 3, seed=0)  # clipped Gaussian: about sigma/sqrt(2 pi)
    assert gauss.mean() < 0.6 * out.mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bias_field_is_smooth_multiplicative_and_bounded(image: np.ndarray, seed: int) -> None:
    deviations = PERTURBATIONS["bias_field"].levels
    for level in LEVELS:
        d = deviations[level]
        out = perturb(image, "bias_field", level, seed=seed)
        valid = (image > 0.05) & (out < 1.0)  # signal present and not saturated by the clip
        ratio = np.ones(image.shape)
        ratio[valid] = out[valid].astype(np.float64) / image[valid]
        # the ratio is the documented field ...
        field = random_bias_field(image.shape, d, np.random.default_rng(seed))
        np.testing.assert_allclose(ratio[valid], field[valid], rtol=1e-5)
        # ... within [1/(1+d), 1+d], reaching 1+d, with a clearly non-trivial spread ...
        assert ratio[valid].min() >= 1 / (1 + d) - 1e-5 and ratio[valid].max() <= 1 + d + 1e-5
        assert field.max() == pytest.approx(1 + d, rel=1e-6) and field.min() >= 1 / (1 + d) - 1e-6
        assert ratio[valid].max() - ratio[valid].min() > 0.2 * d
        # ... and smooth: its curvature energy is tiny next to white noise (about 6 per axis)
        assert curvature_ratio(ratio, valid) < 0.1
        assert curvature_ratio(np.random.default_rng(seed).standard_normal(image.shape)) > 5


def test_gamma_is_the_documented_monotone_map(image: np.ndarray) -> None:
    ramp = np.linspace(0.0, 1.0, 37 * 50, dtype=np.float32).reshape(37, 50)
    for level in LEVELS:
        g = PERTURBATIONS["gamma"].levels[level]
        out = perturb(image, "gamma", level)
        np.testing.assert_allclose(out, image.astype(np.float64) ** g, atol=1e-6)
        mapped = perturb(ramp, "gamma", level).ravel()
        assert np.all(np.diff(mapped) >= 0), "the intensity map must be monotone"
        assert mapped[0] == 0.0 and mapped[-1] == 1.0
        assert np.all(mapped <= ramp.ravel() + 1e-7), "gamma > 1 darkens"


def test_resolution_blurs_and_keeps_shape(image: np.ndarray) -> None:
    energies = [gradient_energy(image)]
    for level in LEVELS:
        out = perturb(image, "resolution", level)
        assert out.shape == image.shape
        assert abs(float(out.mean()) - float(image.mean())) < 0.02
        energies.append(gradient_energy(out))
    assert all(b < a for a, b in zip(energies, energies[1:], strict=False)), energies
    assert energies[-1] < 0.5 * energies[0]


@pytest.mark.parametrize("shape", [(5, 7), (9, 10, 11), (3, 64), (1, 13, 8), (101, 33)])
def test_resolution_exact_shape_for_awkward_sizes(shape: tuple[int, ...]) -> None:
    img = make_image(shape, seed=1)
    for level in LEVELS:
        out = perturb(img, "resolution", level)
        assert out.shape == img.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0


def _slab(mask: np.ndarray) -> tuple[int, str, int]:
    """(axis, side, width) of a mask that must be exactly one end slab; fails otherwise."""
    matches = []
    for axis in range(mask.ndim):
        n = mask.shape[axis]
        profile = np.moveaxis(mask, axis, 0).reshape(n, -1)
        full, empty = profile.all(axis=1), ~profile.any(axis=1)
        if not np.all(full | empty):
            continue
        width = int(full.sum())
        if np.all(full[:width]) and width:
            matches.append((axis, "low", width))
        elif np.all(full[n - width :]) and width:
            matches.append((axis, "high", width))
    assert len(matches) == 1, f"mask is not a single end slab: {matches}"
    return matches[0]


@pytest.mark.parametrize("seed", range(4))
def test_truncation_zeroes_exactly_the_slab(image: np.ndarray, seed: int) -> None:
    fractions = PERTURBATIONS["truncation"].levels
    previous = np.zeros(image.shape, bool)
    for level in LEVELS:
        out, mask = perturb_with_mask(image, "truncation", level, seed=seed)
        axis, _, width = _slab(mask)
        assert width == max(1, math.floor(fractions[level] * image.shape[axis] + 0.5))
        assert np.all(out[mask] == 0)
        assert np.array_equal(out[~mask], image[~mask])
        assert np.all(mask[previous]), "levels of one seed are nested slabs"
        previous = mask


def test_truncate_explicit_axis_and_side() -> None:
    img = make_image((17, 22, 13))
    out, mask = truncate(img, 0.2, axis=-1, side="high")
    assert _slab(mask) == (2, "high", 3)
    assert np.all(out[..., -3:] == 0) and np.array_equal(out[..., :-3], img[..., :-3])
    out0, mask0 = truncate(img, 0.0, axis=0, side="low")
    assert not mask0.any() and np.array_equal(out0, img)
    with pytest.raises(ValueError, match="side"):
        truncate(img, 0.2, axis=0, side="middle")
    with pytest.raises(ValueError, match="axis"):
        truncate(img, 0.2, axis=3, side="low")


def test_dropout_levels(image: np.ndarray) -> None:
    zeros = perturb(image, "dropout", 1)
    assert np.array_equal(zeros, np.zeros_like(image))
    flat = perturb(image, "dropout", 2)
    assert np.all(flat == flat.flat[0])
    assert float(flat.flat[0]) == pytest.approx(float(image.mean(dtype=np.float64)), abs=1e-6)
    noise = perturb(image, "dropout", 3, seed=0)
    # the image's own histogram, without its spatial structure
    assert np.array_equal(np.sort(noise, axis=None), np.sort(image, axis=None))
    assert abs(np.corrcoef(noise.ravel(), image.ravel())[0, 1]) < 0.15
    assert gradient_energy(noise) > 5 * gradient_energy(image)


def _shifted(image: np.ndarray, axis: int, shift: int) -> np.ndarray:
    """np.roll with the wrapped-in voxels set to 0: what an integer shift with 0 fill must give."""
    expected = np.roll(image, shift, axis=axis)
    index: list[slice] = [slice(None)] * image.ndim
    index[axis] = slice(0, shift) if shift > 0 else slice(image.shape[axis] + shift, None)
    expected[tuple(index)] = 0.0
    return expected


@pytest.mark.parametrize("seed", range(4))
def test_misregistration_is_an_integer_shift(image: np.ndarray, seed: int) -> None:
    directions = []
    for level in LEVELS:
        out = perturb(image, "misregistration", level, seed=seed)
        matches = [
            (axis, sign)
            for axis in range(image.ndim)
            for sign in (-1, 1)
            if np.array_equal(out, _shifted(image, axis, sign * level))
        ]
        assert len(matches) == 1, f"level {level}: not an exact {level}-voxel shift ({matches})"
        axis, sign = matches[0]
        # away from the borders the content is the original, rolled
        core: list[slice] = [slice(None)] * image.ndim
        core[axis] = slice(level, image.shape[axis] - level)
        rolled = np.roll(image, sign * level, axis=axis)
        assert np.array_equal(out[tuple(core)], rolled[tuple(core)])
        directions.append(matches[0])
    assert len(set(directions)) == 1, "one seed shifts in one direction at every level"


def test_misregister_rotation() -> None:
    img = make_image((37, 51), seed=2)
    assert np.array_equal(misregister(img, (0, 0), rotation_deg=0.0), img)
    diffs = [mad(misregister(img, (0, 0), rotation_deg=a), img) for a in (1.0, 2.0, 3.0)]
    assert 0 < diffs[0] < diffs[1] < diffs[2]
    rotated = misregister(img, (0, 0), rotation_deg=3.0)
    assert rotated[18, 25] == pytest.approx(img[18, 25], abs=1e-6)  # the centre stays put
    vol = make_image((5, 21, 23), seed=2)
    out = misregister(vol, (0, 1, 0), rotation_deg=2.0)
    for z in range(vol.shape[0]):  # in-plane: every slice rotated (then shifted) the same way
        np.testing.assert_allclose(out[z], misregister(vol[z], (1, 0), rotation_deg=2.0), atol=1e-6)
    with pytest.raises(ValueError, match="one finite value per axis"):
        misregister(img, (1, 0, 0))


def test_intensity_scale_ratio_is_the_factor(image: np.ndarray) -> None:
    signal = image > 0.01
    for level in LEVELS:
        factor = PERTURBATIONS["intensity_scale"].levels[level]
        out = perturb(image, "intensity_scale", level)
        np.testing.assert_allclose(out[signal] / image[signal], factor, rtol=1e-6)
        assert np.all(out[~signal] <= image[~signal])


# ---------------------------------------------------------------------------------------------------
# stacks
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_apply_to_modality_touches_only_that_modality(family: str, image: np.ndarray) -> None:
    stack = np.stack([image, make_image(image.shape, seed=8), image[::-1].copy()])
    out, mask = apply_to_modality(stack, 1, family, 2, seed=5, return_mask=True)
    assert out.shape == stack.shape and out.dtype == np.float32
    assert np.array_equal(out[0], stack[0]) and np.array_equal(out[2], stack[2])
    expected, expected_mask = perturb_with_mask(stack[1], family, 2, seed=5)
    assert np.array_equal(out[1], expected) and np.array_equal(mask, expected_mask)
    assert np.array_equal(apply_to_modality(stack, 1, family, 2, seed=5), out)


def test_apply_to_all_independent_streams(image: np.ndarray) -> None:
    stack = np.stack([image, image])
    out, masks = apply_to_all(stack, "gaussian_noise", 2, seed=3, return_mask=True)
    assert out.shape == stack.shape and out.dtype == np.float32 and masks.all()
    assert not np.array_equal(out[0], out[1]), "modalities must get independent noise"
    assert np.array_equal(apply_to_all(stack, "gaussian_noise", 2, seed=3), out)
    assert not np.array_equal(apply_to_all(stack, "gaussian_noise", 2, seed=4), out)
    gen_a = apply_to_all(stack, "gaussian_noise", 2, seed=np.random.default_rng(1))
    gen_b = apply_to_all(stack, "gaussian_noise", 2, seed=np.random.default_rng(1))
    assert np.array_equal(gen_a, gen_b)
    blurred = apply_to_all(stack, "resolution", 3)
    assert np.array_equal(blurred[0], perturb(image, "resolution", 3))
    assert np.array_equal(apply_to_all(stack, "rician_noise", 0), stack)


def test_apply_to_all_allowed_families() -> None:
    allowed = {name for name, fam in PERTURBATIONS.items() if fam.all_modalities}
    assert allowed == {"gaussian_noise", "rician_noise", "resolution", "gamma", "intensity_scale"}
    stack = np.stack([make_image((9, 11)), make_image((9, 11), seed=1)])
    for name in set(FAMILIES) - allowed:
        with pytest.raises(ValueError, match="apply_to_modality") as info:
            apply_to_all(stack, name, 1)
        assert all(a in str(info.value) for a in allowed)


# ---------------------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------------------
def test_unknown_family_lists_valid_names() -> None:
    img = make_image((9, 11))
    with pytest.raises(ValueError, match="unknown perturbation family 'blur'") as info:
        perturb(img, "blur", 1)
    assert all(name in str(info.value) for name in FAMILIES)
    with pytest.raises(TypeError):
        perturb(img, 3, 1)


@pytest.mark.parametrize("level", [-1, 4, 10])
def test_level_out_of_range(level: int) -> None:
    with pytest.raises(ValueError, match=r"valid levels are 0\.\.3"):
        perturb(make_image((9, 11)), "gamma", level)


@pytest.mark.parametrize("level", [1.0, True, "1", None])
def test_level_must_be_an_integer(level: object) -> None:
    with pytest.raises(TypeError, match="level must be an integer"):
        perturb(make_image((9, 11)), "gamma", level)  # type: ignore[arg-type]


def test_image_validation() -> None:
    good = make_image((9, 11))
    with pytest.raises(ValueError, match="2D or 3D"):
        perturb(np.zeros(10, np.float32), "gamma", 1)
    with pytest.raises(ValueError, match="2D or 3D"):
        perturb(np.zeros((2, 3, 4, 5), np.float32), "gamma", 1)
    with pytest.raises(ValueError, match=r"normalised to \[0, 1\]"):
        perturb(good * 255, "gamma", 1)
    with pytest.raises(ValueError, match=r"normalised to \[0, 1\]"):
        perturb(good - 0.5, "gamma", 0)
    bad = good.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        perturb(bad, "gamma", 1)
    with pytest.raises(TypeError, match="real numbers"):
        perturb(good.astype(np.complex64), "gamma", 1)
    with pytest.raises(TypeError, match="rng/seed"):
        perturb(good, "gaussian_noise", 1, seed=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        perturb(good, "gaussian_noise", 1, seed=-1)
    with pytest.raises(ValueError, match="out of range for a stack of 2"):
        apply_to_modality(np.stack([good, good]), 2, "gamma", 1)
    with pytest.raises(ValueError, match=r"\(N, \*spatial\)"):
        apply_to_modality(good, 0, "gamma", 1)


def test_float64_input_gives_float32() -> None:
    img = make_image((9, 11)).astype(np.float64)
    for family in FAMILIES:
        out = perturb(img, family, 2, seed=0)
        assert out.dtype == np.float32 and out.shape == img.shape


def test_low_level_parameter_checks() -> None:
    img = make_image((9, 11))
    with pytest.raises(ValueError):
        P.gaussian_noise(img, -0.1, 0)
    with pytest.raises(ValueError):
        P.gamma_shift(img, 0.0)
    with pytest.raises(ValueError):
        P.resolution_loss(img, 0.5)
    with pytest.raises(ValueError):
        P.random_bias_field((9, 11), 1.0, 0)
    with pytest.raises(ValueError, match="dropout mode"):
        P.modality_dropout(img, "blank")
    with pytest.raises(ValueError, match="needs an rng"):
        P.modality_dropout(img, "noise")
    assert np.array_equal(P.gamma_shift(img, 0.5), np.sqrt(img))  # gamma < 1 is available too

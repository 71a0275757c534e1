"""One ISFL training step: gradients through every pass, the effect of each intervention, batched vs
one-by-one passes, and seeded determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core_helpers import randomize_film, tiny_net
from napari_isfl.model.losses import ISFLLoss, ISFLLossWeights
from napari_isfl.model.network import ISFLNet
from napari_isfl.training.step import InterventionConfig, Interventions, training_step

#: smallest sizes that still fit MONAI's 7-voxel SSIM window; odd on purpose
SHAPES = {2: (21, 26), 3: (11, 12, 9)}
HOLES = {2: 6, 3: 4}


class Recorder(nn.Module):
    """Wraps the network like DistributedDataParallel does (``.module``) and makes every input it is
    called with a leaf that requires grad, so the test can see the gradient reaching each pass."""

    def __init__(self, network: ISFLNet) -> None:
        super().__init__()
        self.module = network
        self.inputs: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor, modalities, return_maps: bool = False):
        images = images.detach().requires_grad_(True)
        self.inputs.append(images)
        return self.module(images, modalities, return_maps=return_maps)


def _images(dims: int, num_mod: int = 2, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand((batch, num_mod, *SHAPES[dims]), generator=torch.Generator().manual_seed(seed))


def _interventions(dims: int, seed: int = 0, **kwargs) -> Interventions:
    return Interventions(InterventionConfig(hole_size=HOLES[dims], **kwargs), seed=seed)


def _step(net: nn.Module, dims: int, tags: list[str], batched: bool = True, seed: int = 0, **kwargs) -> dict:
    loss_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("necessity")}
    criterion = ISFLLoss(dims, ISFLLossWeights(**loss_kwargs))
    images = _images(dims, len(tags))
    return training_step(net, images, tags, criterion, _interventions(dims, seed, **kwargs), batched=batched)


def _no_gradient_by_design(net: ISFLNet) -> set[str]:
    """Parameters whose gradient is zero by construction, not by a broken graph:

    * the bias of a convolution followed by batch norm (the norm removes any constant, in training);
    * the bias of the CFI evidence conv (one logit per modality through the same conv, then a softmax
      over modalities: adding the same constant to every logit changes nothing).
    """
    names = set()
    for name, module in net.named_modules():
        has_norm = hasattr(module, "adn") and any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.adn.children()
        )
        if (has_norm and net.training) or name.endswith("evidence"):
            names.add(f"{name}.conv.bias")
    return names


@pytest.mark.parametrize("encoder", ["shared", "per_modality"])
@pytest.mark.parametrize("dims", [2, 3])
def test_every_parameter_gets_a_finite_nonzero_gradient(dims: int, encoder: str) -> None:
    """After backward of one step (batch norm, training mode), every parameter that can learn from
    these inputs has a finite, non-zero gradient; the FiLM rows / per-tag encoders of the tags that were
    not used get none."""
    net = randomize_film(tiny_net(dims, encoder=encoder)).train()
    out = _step(net, dims, ["mri", "pet"])
    out["loss"].backward()
    exempt = _no_gradient_by_design(net)
    unused_tags = [i for i, m in enumerate(net.modalities) if m not in ("mri", "pet")]
    largest = max(p.grad.abs().max() for p in net.parameters() if p.grad is not None)
    checked = 0
    for name, param in net.named_parameters():
        grad = param.grad
        if encoder == "per_modality" and any(name.startswith(f"encoders.{i}.") for i in unused_tags):
            assert grad is None or grad.abs().max() == 0, name
            continue
        if name in exempt:
            assert grad is None or grad.abs().max() <= 1e-4 * largest, name
            continue
        assert grad is not None, f"{name}: no gradient"
        assert torch.isfinite(grad).all(), f"{name}: non-finite gradient"
        if name.endswith("film.weight"):
            used = [i for i, m in enumerate(net.modalities) if m in ("mri", "pet")]
            assert (grad[used].abs().sum(dim=1) > 0).all(), name
            assert (grad[unused_tags] == 0).all(), name
        else:
            assert grad.abs().max() > 0, f"{name}: zero gradient"
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("mode", ["penalize", "reward"])
def test_gradient_reaches_every_pass(batched: bool, mode: str) -> None:
    """The clean pass, each masking pass and each dropout pass all receive gradient from the loss."""
    dims, tags = 2, ["mri", "ct", "pet"]
    recorder = Recorder(tiny_net(dims, norm="instance"))
    out = _step(recorder, dims, tags, batched=batched, necessity_mode=mode)
    out["loss"].backward()
    if batched:
        assert len(recorder.inputs) == 1
        grads = recorder.inputs[0].grad.unflatten(0, (1 + 2 + len(tags), 2))
    else:
        grads = torch.stack([x.grad for x in recorder.inputs])
    assert grads.shape[0] == 1 + 2 + len(tags)  # clean, complementary, shared, one dropout per modality
    per_pass = grads.flatten(1).abs().sum(dim=1)
    assert (per_pass > 0).all(), per_pass


def test_necessity_off_skips_dropout_passes() -> None:
    """With necessity off nothing in the loss could depend on the dropout passes, so they are not run:
    the batched forward holds only the clean and the two masking passes, and all of them learn."""
    recorder = Recorder(tiny_net(2, norm="instance"))
    out = _step(recorder, 2, ["mri", "ct"], necessity_mode="off")
    assert "necessity" not in out
    out["loss"].backward()
    assert recorder.inputs[0].shape[0] == 3 * 2
    per_pass = recorder.inputs[0].grad.unflatten(0, (3, 2)).flatten(1).abs().sum(dim=1)
    assert (per_pass > 0).all()


def _grads(net: ISFLNet) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


@pytest.mark.parametrize("disabled", ["complementary", "shared", "dropout"])
def test_loss_depends_on_each_intervention(disabled: str) -> None:
    """Disabling one intervention (same seeds, same weights, instance norm so no batch statistics are
    shared between passes) changes the loss terms it feeds and the parameter gradients."""
    dims, tags = 2, ["mri", "ct"]
    grads, terms = {}, {}
    for which in ("all", disabled):
        net = tiny_net(dims, norm="instance")
        flags = {} if which == "all" else {disabled: False}
        out = _step(net, dims, tags, **flags)
        out["loss"].backward()
        grads[which], terms[which] = _grads(net), out
    # far above float32 rounding (identical runs agree exactly, see test_seeded_step_is_deterministic)
    assert (grads["all"] - grads[disabled]).abs().max() > 1e-5 * grads["all"].abs().max()
    # the fidelity of the clean pass does not depend on the interventions
    torch.testing.assert_close(terms["all"]["fidelity"], terms[disabled]["fidelity"])
    if disabled == "dropout":
        assert "necessity" in terms["all"] and "necessity" not in terms[disabled]
        torch.testing.assert_close(terms["all"]["consistency"], terms[disabled]["consistency"])
    else:
        assert terms["all"]["consistency"] != terms[disabled]["consistency"]
        torch.testing.assert_close(terms["all"]["necessity"], terms[disabled]["necessity"])


def test_no_masking_no_invariance_terms() -> None:
    """With both masking interventions off there is no invariance term at all."""
    out = _step(tiny_net(2), 2, ["mri", "ct"], complementary=False, shared=False)
    assert "consistency" not in out and "invariance" not in out
    assert "necessity" in out


@pytest.mark.parametrize(
    ("dims", "norm", "train"),
    [
        pytest.param(2, None, True, id="2d-no-norm"),
        pytest.param(3, None, True, id="3d-no-norm"),
        pytest.param(2, "instance", True, id="2d-instance-norm"),
        pytest.param(2, "batch", False, id="2d-batch-norm-eval"),
        pytest.param(3, "batch", False, id="3d-batch-norm-eval"),
    ],
)
def test_batched_equals_one_by_one(dims: int, norm, train: bool) -> None:
    """Running all passes as one batch or one by one gives the same loss terms and gradients whenever
    no statistic is shared across the batch (no norm, per-sample instance norm, or batch norm with its
    running statistics in evaluation mode). Batch norm in training mode is excluded: there the batched
    run normalises over all passes together, which is the documented difference."""
    tags = ["mri", "ct", "pet"]
    results = {}
    for batched in (True, False):
        net = randomize_film(tiny_net(dims, norm=norm)).train(train)
        out = _step(net, dims, tags, batched=batched)
        out["loss"].backward()
        results[batched] = (out, _grads(net))
    (out_b, grad_b), (out_s, grad_s) = results[True], results[False]
    assert set(out_b) == set(out_s)
    for key in out_b:
        torch.testing.assert_close(out_b[key].detach(), out_s[key].detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad_b, grad_s, rtol=1e-3, atol=1e-4 * grad_b.abs().max().item())


def test_batch_norm_training_statistics_differ() -> None:
    """Guard for the test above: in training mode batch norm does make the two schedules differ, so the
    equality there is a property of the normalisation, not an accident of the inputs."""
    losses = []
    for batched in (True, False):
        losses.append(_step(tiny_net(2).train(), 2, ["mri", "ct"], batched=batched)["loss"].item())
    assert losses[0] != losses[1]


@pytest.mark.parametrize("dims", [2, 3])
def test_seeded_step_is_deterministic(dims: int) -> None:
    """Same weights seed and intervention seed: identical loss terms and gradients; another
    intervention seed changes the intervention terms."""
    runs = []
    for seed in (0, 0, 1):
        net = tiny_net(dims, seed=3)
        out = _step(net, dims, ["mri", "ct"], seed=seed)
        out["loss"].backward()
        runs.append((out, _grads(net)))
    (first, g1), (again, g2), (other, _) = runs
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert torch.equal(g1, g2)
    assert not torch.equal(first["consistency"], other["consistency"])


def test_mixed_modalities_per_sample() -> None:
    """A (B, N) index tensor lets one batch mix tasks; rows equal to a tag list give its result."""
    dims = 2
    net = randomize_film(tiny_net(dims, norm=None))
    criterion = ISFLLoss(dims)
    images = _images(dims)
    by_tags = training_step(net, images, ["mri", "pet"], criterion, _interventions(dims))
    index = torch.tensor([[0, 2], [0, 2]])
    by_index = training_step(net, images, index, criterion, _interventions(dims))
    torch.testing.assert_close(by_tags["loss"], by_index["loss"])
    mixed = torch.tensor([[0, 2], [0, 1]])  # MRI+PET and MRI+CT in one batch
    out = training_step(net, images, mixed, criterion, _interventions(dims))
    assert torch.isfinite(out["loss"]) and out["loss"] != by_tags["loss"]


@pytest.mark.parametrize("dims", [2, 3])
def test_functional_inputs_are_flagged_for_the_loss(dims: int) -> None:
    """The step tells the loss which inputs are PET/SPECT (from the modality tags, per sample in a
    mixed batch), which ``intensity_target="max_anatomical"`` needs."""
    net = tiny_net(dims)
    seen = []

    class Spy(ISFLLoss):
        def forward(self, sources, clean, masked=None, dropped=None, functional=None, targets=None):
            seen.append(functional)
            return super().forward(sources, clean, masked, dropped, functional, targets)

    criterion = Spy(dims, ISFLLossWeights(intensity_target="max_anatomical"))
    mixed = torch.tensor([net.modalities.index(t) for t in ("mri", "pet", "ct", "mri")]).view(2, 2)
    terms = training_step(net, _images(dims), mixed, criterion, _interventions(dims))
    assert seen[0].tolist() == [[False, True], [False, False]]
    assert torch.isfinite(terms["loss"])

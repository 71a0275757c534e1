"""Shared helpers of the core-engine tests (plain functions; imported explicitly, not a conftest).

Everything here is small and seeded so the tests stay fast and reproducible on two CPU cores.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from napari_isfl.model.checkpoint import save_checkpoint
from napari_isfl.model.network import ISFLNet

#: channels of the tiny test network (three scales: full, 1/2, 1/4)
TINY_FEATURES = (4, 8, 8)
#: odd, non-square sizes on purpose: padding/cropping must not rely on even or square extents
SHAPE_2D = (37, 50)
SHAPE_3D = (17, 22, 13)
SHAPES = {2: SHAPE_2D, 3: SHAPE_3D}
#: the shared real-data folder (read only)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_net(spatial_dims: int, seed: int = 0, **kwargs) -> ISFLNet:
    """The tiny network of the tests, built under ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    kwargs.setdefault("features", TINY_FEATURES)
    kwargs.setdefault("grid_size", 2)
    return ISFLNet(spatial_dims, **kwargs)


def randomize_film(net: ISFLNet, seed: int = 0) -> ISFLNet:
    """Give the (zero-initialised) FiLM embedding random values, so modality tags change the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.copy_(0.5 * torch.randn(module.weight.shape, generator=generator))
    return net


def calibrate_batch_norm(net: ISFLNet, spatial_dims: int, seed: int = 0) -> ISFLNet:
    """Set the batch-norm running statistics from one forward pass over phantoms (no training).

    A freshly initialised network in evaluation mode normalises with mean 0 / variance 1 and gives an
    almost constant output; with statistics of real activations its output follows the inputs like a
    trained network's does, which makes window and crop comparisons meaningful.
    """
    shape = (40, 36) if spatial_dims == 2 else (20, 18, 16)
    tags = list(net.modalities[:2])
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: exactly this pass's statistics
    batch = torch.from_numpy(np.stack([np.stack(phantom_stack(shape, 2, seed + s)) for s in range(3)]))
    net.train()
    with torch.no_grad():
        net(batch, tags)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1
    return net.eval()


def save_tiny_checkpoint(
    path: str | os.PathLike, spatial_dims: int, seed: int = 0, calibrate: bool = True, **kwargs
) -> Path:
    """Write a tiny ISFLNet checkpoint (random weights, calibrated batch norm) via ``save_checkpoint``."""
    net = tiny_net(spatial_dims, seed, **kwargs)
    if calibrate:
        calibrate_batch_norm(net, spatial_dims, seed)
    return save_checkpoint(path, net)


def phantom(shape: Sequence[int], seed: int = 0, border: int = 0) -> np.ndarray:
    """A seeded smooth phantom in [0, 1] (ramp + Gaussian blobs); ``border`` voxels of zeros around it."""
    rng = np.random.default_rng(seed)
    coords = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    image = 0.4 + 0.1 * coords[0] - 0.08 * coords[-1]
    for _ in range(4):
        centre = rng.uniform(-0.6, 0.6, len(shape))
        width = rng.uniform(0.15, 0.35)
        amplitude = rng.uniform(-0.3, 0.5)
        image = image + amplitude * np.exp(
            -sum((c - m) ** 2 for c, m in zip(coords, centre, strict=True)) / (2 * width**2)
        )
    image = np.clip(image, 0.02, 1.0)  # strictly positive: the foreground is the whole phantom
    if border:
        inner = tuple(slice(border, n - border) for n in shape)
        framed = np.zeros(shape)
        framed[inner] = image[inner]
        image = framed
    return image.astype(np.float32)


def phantom_stack(shape: Sequence[int], count: int, seed: int = 0, border: int = 0) -> list[np.ndarray]:
    """``count`` different phantoms of one shape (the modalities of one co-registered case)."""
    return [phantom(shape, seed + 17 * i, border) for i in range(count)]


def receptive_radius(net: ISFLNet, size: int = 96) -> int:
    """How far (voxels, per axis) an input voxel can reach an output voxel, from the impulse response.

    Meaningful for a purely convolutional network (``integrator="mean"``): the CFI's pooled attention
    reaches the whole image by design. Measured with autograd on the network as it is (2D).
    """
    centre = size // 2
    image = torch.rand(1, 2, size, size, requires_grad=True, generator=torch.Generator().manual_seed(0))
    net(image, list(net.modalities[:2]))[0, 0, centre, centre].backward()
    reached = torch.nonzero(image.grad.abs().sum(dim=(0, 1)))
    return int((reached - centre).abs().max())


def leftovers(folder: str | os.PathLike) -> list[str]:
    """Temporary files an atomic write could leave behind (``.NAME.*.part*``)."""
    return sorted(p.name for p in Path(folder).iterdir() if ".part" in p.name or p.name.startswith("."))


def write_nifti(
    path: str | os.PathLike, array: np.ndarray, affine: np.ndarray | None = None, **header
) -> Path:
    """Write ``array`` as NIfTI with ``affine`` (identity by default); ``header`` sets header fields."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine)
    for key, value in header.items():
        image.header[key] = value
    nib.save(image, path)
    return Path(path)


#: an oblique, anisotropic, translated voxel-to-world matrix (a realistic, non-trivial affine)
OBLIQUE_AFFINE = np.array(
    [
        [-0.9, 0.05, 0.0, 90.0],
        [0.04, 0.95, 0.1, -120.0],
        [0.0, -0.08, 2.5, -60.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def metric_phantom(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Structured test image on the 8-bit scale: smooth gaussian blobs, a sharp box edge, mild noise.

    Integer-valued 0..255 like an image read back from an 8-bit file, so histogram metrics have one value
    per bin.
    """
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(size, dtype=np.float64) for size in shape], indexing="ij")
    image = np.zeros(shape)
    for _ in range(6):
        centre = [rng.uniform(0, size) for size in shape]
        width = rng.uniform(3, 12)
        distance_sq = sum((grid - c) ** 2 for grid, c in zip(grids, centre, strict=True))
        image += rng.uniform(0.3, 1.0) * np.exp(-distance_sq / (2 * width**2))
    offset = [int(rng.integers(1, size // 4)) for size in shape]
    image[tuple(slice(o, o + size // 3) for o, size in zip(offset, shape, strict=True))] += 0.5
    image += rng.normal(0.0, 0.03, shape)
    image = (image - image.min()) / (image.max() - image.min())
    return np.round(image * 255.0)


def default_sigint() -> None:
    """``preexec_fn`` for a child that a signal test interrupts: give it the default SIGINT disposition.
    A shell without job control starts background commands with SIGINT ignored and children inherit
    that (so Python never raises KeyboardInterrupt); the tests are about the CLI's handling of Ctrl-C,
    not about how the test runner itself was launched."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

"""ISFLNet: intervention-stable fusion network for 2D images and 3D volumes of N >= 2 modalities.

The design follows ../shared/docs/METHOD.md (Wang et al., CVPR 2026) and generalises it:

* one code path for ``spatial_dims`` 2 and 3, built from MONAI blocks and layer factories;
* any number of modalities: a single encoder is shared by all inputs and told which modality it sees
  through a learned per-modality scale and shift (FiLM). One checkpoint therefore serves every
  combination of the modalities it was trained with (MRI+CT, MRI+PET, T1+T2+FLAIR, ...), and the
  network is invariant to the order of its inputs. ``encoder="per_modality"`` gives the paper's
  separate encoder weights per modality type instead;
* the Causal Feature Integrator (CFI) mixes N inputs: pooled cross-modal attention (cost linear in
  voxels), softmax-weighted local evidence, and the invariance gate. Because both branches are
  convex combinations over modalities, the CFI yields per-voxel *contribution maps* that sum to one;
* two output heads. ``head="synthesis"`` (the paper's): a decoder turns the integrated features into
  intensities. ``head="pyramid"``: the integrated features at each scale decide per-voxel, per-scale
  weights of the *sources*, and the fusion is their Laplacian-pyramid blend (:mod:`.pyramid`), so it
  can only show what the sources contain and the weights are exactly the contribution maps. An optional
  bounded residual (``residual > 0``) may add at most that much intensity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from ..normalization import MODALITIES
from . import pyramid

__all__ = [
    "BlendRefiner",
    "CausalFeatureIntegrator",
    "ISFLNet",
    "MeanIntegrator",
    "PooledCrossAttention",
    "modality_indices",
]


_DEFAULT_ACT = ("leakyrelu", {"negative_slope": 0.2, "inplace": True})
#: output heads: the paper's decoder, or the per-scale weighted blend of the sources
HEADS = ("synthesis", "pyramid")


def modality_indices(
    modalities: Sequence[str] | torch.Tensor, known: Sequence[str], batch_size: int, device: torch.device
) -> torch.Tensor:
    """Turn modality tags into a ``(batch_size, N)`` index tensor into ``known``.

    Raises:
        ValueError: a tag that is not in ``known``.
    """
    if isinstance(modalities, torch.Tensor):
        index = modalities.to(device=device, dtype=torch.long)
        if index.ndim == 1:
            index = index.unsqueeze(0).expand(batch_size, -1)
        if index.min() < 0 or index.max() >= len(known):
            raise ValueError(f"modality index out of range 0..{len(known) - 1}: {index.tolist()}")
        return index
    unknown = [m for m in modalities if m not in known]
    if unknown:
        raise ValueError(
            f"unknown modality {unknown[0]!r}: this network knows {', '.join(known)}; "
            "tag MRI contrasts (T1, T2, FLAIR, PD) as 'mri'"
        )
    index = torch.tensor([known.index(m) for m in modalities], dtype=torch.long, device=device)
    return index.unsqueeze(0).expand(batch_size, -1)


def _attend(
    query: torch.Tensor, key_t: torch.Tensor, value: torch.Tensor, chunk: int = 1 << 20
) -> torch.Tensor:
    """``softmax(query @ key_t) @ value`` for ``query (B, L, C)``, ``key_t (B, C, T)``, ``value (B, T, D)``.

    Run as PyTorch's fused ``scaled_dot_product_attention`` (scale 1: the keys come scaled), which does
    not hold the ``(L, T)`` matrix. Its fused kernels want one head size for all three, a multiple of 8
    on CUDA, and the values carry N extra indicator channels, so queries, keys and values are padded with
    zeros to the next multiple of 8 of the widest (the dot products do not change; the padded output
    channels are dropped). On 2 CPU threads that runs a 3D window batch's finest-scale attention 2-3x
    faster than the explicit product (40-44 -> 10-21 ms for 4 windows of 32^3 against 64 tokens); without
    the padding PyTorch falls back to its math kernel, which is slower. Queries go in chunks of ``chunk``
    rows, which bounds the memory of a backend that does fall back (a whole volume in one window).
    """
    width = -(-max(query.shape[-1], value.shape[-1]) // 8) * 8
    query = F.pad(query, (0, width - query.shape[-1]))[:, None]
    key = F.pad(key_t.transpose(1, 2), (0, width - key_t.shape[1]))[:, None]
    padded = F.pad(value, (0, width - value.shape[-1]))[:, None]
    parts = [F.scaled_dot_product_attention(q, key, padded, scale=1.0) for q in query.split(chunk, dim=2)]
    attended = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)  # one chunk: no copy
    return attended[:, 0, :, : value.shape[-1]]


class PooledCrossAttention(nn.Module):
    """Cross-modal attention whose keys and values are average-pooled to a small grid.

    Every voxel of modality ``i`` queries the pooled tokens of all *other* modalities, so the cost is
    ``O(voxels * N * (N - 1) * grid**spatial_dims)``: linear in the number of voxels. The outputs of
    the N queries are averaged (the paper sums two; the mean keeps the scale independent of N).

    A one-hot modality indicator rides along with the values, so the same attention call also
    returns, per voxel, the share of the attended information that came from each modality.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels of every modality.
        grid_size: side of the pooled key/value grid (8 gives 64 tokens in 2D, 512 in 3D).
    """

    def __init__(self, spatial_dims: int, channels: int, grid_size: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.channels = channels
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims]((grid_size,) * spatial_dims)
        self.to_query = conv(channels, channels, kernel_size=1, bias=False)
        self.to_key_value = conv(channels, 2 * channels, kernel_size=1, bias=False)
        self.project = conv(channels, channels, kernel_size=1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            features: ``(B, N, C, *spatial)``.

        Returns:
            ``cross`` ``(B, C, *spatial)`` and ``share`` ``(B, N, *spatial)``, where ``share[:, j]`` is
            the fraction of the attended values that came from modality ``j`` (sums to 1 over ``j``).
        """
        batch, num_mod, channels, *spatial = features.shape
        flat = features.flatten(0, 1)
        query = self.to_query(flat).flatten(2).transpose(1, 2).unflatten(0, (batch, num_mod))
        key_value = self.to_key_value(self.pool(flat)).flatten(2).transpose(1, 2)
        key, value = key_value.unflatten(0, (batch, num_mod)).split(channels, dim=-1)
        tokens = key.shape[2]
        # one-hot modality indicator appended to the values: attention output = per-modality share
        indicator = torch.eye(num_mod, dtype=value.dtype, device=value.device)
        indicator = indicator[None, :, None, :].expand(batch, num_mod, tokens, num_mod)
        value = torch.cat([value, indicator], dim=-1)

        scale = channels**-0.5
        attended = 0.0
        for i in range(num_mod):
            others = [j for j in range(num_mod) if j != i]
            k = key[:, others].flatten(1, 2).transpose(1, 2) * scale
            v = value[:, others].flatten(1, 2)
            attended = attended + _attend(query[:, i], k, v)
        attended = attended / num_mod
        attended = attended.transpose(1, 2).reshape(batch, channels + num_mod, *spatial)
        cross = self.project(attended[:, :channels].contiguous())
        share = attended[:, channels:]
        return cross, share


class CausalFeatureIntegrator(nn.Module):
    """Causal Feature Integrator for N modalities at one scale.

    ``cross`` is pooled cross-modal context, ``local`` a per-voxel softmax-weighted sum of the
    modality features (the paper's ``f_a + f_b`` up to the weights), and the invariance gate
    ``G = sigmoid(conv(cross))`` mixes them: ``fused = G * cross + (1 - G) * local``, then a refining
    convolution. The same convex weights give per-modality contribution maps.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels.
        grid_size: pooled key/value grid side of the cross-modal attention.
        act: activation of the refining convolution (MONAI name or ``(name, args)``).
        norm: normalisation of the refining convolution.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        grid_size: int = 8,
        act: tuple | str | None = _DEFAULT_ACT,
        norm: tuple | str | None = "batch",
    ) -> None:
        super().__init__()
        self.attention = PooledCrossAttention(spatial_dims, channels, grid_size)
        self.evidence = Convolution(spatial_dims, channels, 1, kernel_size=1, conv_only=True)
        self.gate = Convolution(spatial_dims, channels, 1, kernel_size=3, conv_only=True)
        self.refine = Convolution(spatial_dims, channels, channels, kernel_size=3, act=act, norm=norm)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args:
            features: ``(B, N, C, *spatial)``.

        Returns:
            ``(fused (B, C, *spatial), gate (B, 1, *spatial), contributions (B, N, *spatial))``.
        """
        batch, num_mod = features.shape[:2]
        cross, cross_share = self.attention(features)
        logits = self.evidence(features.flatten(0, 1)).unflatten(0, (batch, num_mod))
        weights = torch.softmax(logits, dim=1)  # (B, N, 1, *spatial)
        local = (weights * features).sum(dim=1)
        gate = torch.sigmoid(self.gate(cross))
        fused = self.refine(gate * cross + (1.0 - gate) * local)
        contributions = gate * cross_share + (1.0 - gate) * weights[:, :, 0]
        return fused, gate, contributions


class MeanIntegrator(nn.Module):
    """Ablation of the CFI: the plain mean of the modality features, then the same refining conv.

    Its gate is 1 everywhere (so gate-weighted losses reduce to plain ones) and every modality
    contributes ``1 / N``.
    """

    def __init__(
        self, spatial_dims: int, channels: int, act: tuple | str | None = _DEFAULT_ACT, norm=None
    ) -> None:
        super().__init__()
        self.refine = Convolution(spatial_dims, channels, channels, kernel_size=3, act=act, norm=norm)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, num_mod, _, *spatial = features.shape
        fused = self.refine(features.mean(dim=1))
        gate = features.new_ones((batch, 1, *spatial))
        contributions = features.new_full((batch, num_mod, *spatial), 1.0 / num_mod)
        return fused, gate, contributions


class BlendRefiner(nn.Module):
    """Full-resolution refinement of the pyramid head's blend weights at the finest levels.

    At each refined level every source is described by five maps at that level's resolution: its band
    (x10), the band's magnitude (x10), the level image's gradient magnitude (x10; sum of absolute forward
    differences along each axis), the level image itself, and the log of the weight the selectors gave
    it. A small convolutional net shared by all sources sees those five maps together with their mean
    and maximum over the sources (so it takes any number of sources, in any order) and returns a
    correction of that source's weight logit; the weights stay a softmax over the sources, so the fusion
    stays a convex blend of them. With ``tag_channels`` > 0 every source's maps also carry a learned
    embedding of its modality tag (constant over space), so the pooled maps tell each source which
    modalities it is blended with and one refiner can learn a different choice for MRI+CT than for
    MRI+SPECT. The last layer is zero-initialised: a network grafted onto it starts from its old blend.
    Why: the selectors read 16 smooth feature channels and cannot produce the
    pixel-sharp per-scale choices that keep each source's edges (docs/ABLATION.md, "A full-resolution
    refiner"); the refiner sees the sources' bands directly.

    Args:
        spatial_dims: 2 or 3.
        levels: how many of the finest pyramid levels are refined (>= 1).
        hidden: channels of the 3x3 convolutions.
        act: their activation (MONAI name or ``(name, args)``).
        num_modalities: how many modality tags the embedding knows (needed with ``tag_channels``).
        tag_channels: size of the per-modality embedding appended to every source's maps (0: none).
        depth: how many 3x3 convolutions; after the second their dilation doubles (1, 1, 2, 4, ...), so
            the choice at a pixel can see 2 ** depth + 1 pixels across (5 with the default 2) at the cost
            of one convolution per doubling.
        passes: how many times the weights are corrected. Every pass after the first has its own nets,
            which also see what the previous pass's weights made: the fused band at that level, the
            fused level image's gradient magnitude and each source's level image minus the fused one
            (the quantities edge metrics such as Qabf compare), so a choice can depend on its result.

    Examples::

        >>> refiner = BlendRefiner(spatial_dims=2, levels=2, hidden=8)       # 2D, two sources
        >>> images = torch.rand(1, 2, 32, 32)
        >>> weights = [torch.full((1, 2, 32 // 2**s, 32 // 2**s), 0.5) for s in range(3)]
        >>> [w.shape[2:] for w in refiner(images, weights)] == [w.shape[2:] for w in weights]
        True
        >>> refiner3d = BlendRefiner(spatial_dims=3, levels=1, hidden=4)     # 3D, three sources
        >>> volume = torch.rand(1, 3, 16, 16, 8)
        >>> thirds = [torch.full((1, 3, 16, 16, 8), 1 / 3), torch.full((1, 3, 8, 8, 4), 1 / 3)]
        >>> torch.allclose(refiner3d(volume, thirds)[0], thirds[0])          # untrained: unchanged
        True
        >>> tagged = BlendRefiner(2, levels=1, hidden=8, num_modalities=4, tag_channels=3)
        >>> tags = torch.tensor([[0, 1]])                                   # e.g. mri, ct
        >>> tagged(images, weights, tags)[0].shape
        torch.Size([1, 2, 32, 32])
        >>> twice = BlendRefiner(2, levels=2, hidden=8, passes=2)           # a second, feedback pass
        >>> torch.allclose(twice(images, weights)[1], weights[1])            # untrained: unchanged
        True
    """

    #: per-source maps: band, |band|, gradient magnitude, level image, log weight
    PER_SOURCE = 5
    #: maps of the previous pass's fusion that every later pass adds to each source's maps
    FEEDBACK = 3

    def __init__(
        self,
        spatial_dims: int,
        levels: int,
        hidden: int,
        act: tuple | str | None = _DEFAULT_ACT,
        num_modalities: int = 0,
        tag_channels: int = 0,
        depth: int = 2,
        passes: int = 1,
    ) -> None:
        super().__init__()
        if levels < 1 or hidden < 1 or tag_channels < 0 or depth < 1 or passes < 1:
            raise ValueError(
                "a refiner needs levels >= 1, hidden >= 1, tag_channels >= 0, depth >= 1 and passes >= 1, "
                f"got {levels}, {hidden}, {tag_channels}, {depth}, {passes}"
            )
        if tag_channels and num_modalities < 1:
            raise ValueError(f"tag_channels={tag_channels} needs num_modalities >= 1, got {num_modalities}")
        self.tags = nn.Embedding(num_modalities, tag_channels) if tag_channels else None
        per_source = self.PER_SOURCE + tag_channels

        def level_nets(inputs: int) -> nn.ModuleList:
            nets = nn.ModuleList(
                nn.Sequential(
                    *(
                        Convolution(
                            spatial_dims,
                            inputs if layer == 0 else hidden,
                            hidden,
                            kernel_size=3,
                            dilation=self.dilation(layer),
                            act=act,
                            norm=None,
                        )
                        for layer in range(depth)
                    ),
                    Convolution(spatial_dims, hidden, 1, kernel_size=1, conv_only=True),
                )
                for _ in range(levels)
            )
            for net in nets:
                nn.init.zeros_(net[-1].conv.weight)
                nn.init.zeros_(net[-1].conv.bias)
            return nets

        # own maps plus their mean and maximum over the sources
        self.nets = level_nets(3 * per_source)
        self.feedback = nn.ModuleList(level_nets(3 * (per_source + self.FEEDBACK)) for _ in range(passes - 1))

    @staticmethod
    def dilation(layer: int) -> int:
        """Dilation of 3x3 convolution ``layer``: 1, 1, 2, 4, ... so depth d sees 2 ** d + 1 pixels."""
        return 2 ** max(layer - 1, 0)

    @staticmethod
    def _gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(images)
        for dim in range(2, images.ndim):
            step = images.diff(dim=dim).abs()
            pad = [0, 0] * (images.ndim - 2)
            pad[2 * (images.ndim - 1 - dim) + 1] = 1  # one zero at the end of this axis
            total = total + F.pad(step, pad)
        return total

    def forward(
        self, images: torch.Tensor, weights: Sequence[torch.Tensor], modality: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Refined copies of ``weights`` (one ``(B, N, *spatial_s)`` map per level of ``images``'
        pyramid, finest first); levels beyond the refined ones are returned as they are. ``modality``:
        the sources' tag indices ``(B, N)``, required when the refiner has tag embeddings."""
        if self.tags is not None and modality is None:
            raise ValueError("this refiner embeds modality tags: pass the sources' tag indices")
        level_images = pyramid.gaussian_pyramid(images.float(), len(weights))
        bands = pyramid.bands_of(level_images)
        tag = self.tags(modality) if self.tags is not None else None  # (B or 1, N, E)
        # what every pass sees of the sources at each refined level does not change between passes
        source_maps = [
            self._source_maps(level_images[level], bands[level], tag) for level in range(len(self.nets))
        ]
        refined = list(weights)
        for level, net in enumerate(self.nets):
            refined[level] = self._correct(net, source_maps[level], refined[level])
        for nets in self.feedback:
            fused_bands = pyramid.weighted_bands(bands, [w.float() for w in refined])
            fused_levels = pyramid.collapse_levels(fused_bands)
            for level, net in enumerate(nets):
                feedback = self._feedback_maps(level_images[level], fused_bands[level], fused_levels[level])
                refined[level] = self._correct(net, source_maps[level], refined[level], feedback)
        return refined

    def _feedback_maps(
        self, level_image: torch.Tensor, fused_band: torch.Tensor, fused: torch.Tensor
    ) -> torch.Tensor:
        """What a later pass sees of the previous pass's fusion at one level, per source ``(B, N,
        FEEDBACK, *spatial_s)``: the fused band (x10), the fused level image's gradient magnitude (x10)
        and the source's level image minus the fused one."""
        return torch.stack(
            [
                (10 * fused_band).expand_as(level_image),
                (10 * self._gradient_magnitude(fused)).expand_as(level_image),
                level_image - fused,
            ],
            dim=2,
        )

    def _source_maps(
        self, level_image: torch.Tensor, band: torch.Tensor, tag: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every source's maps at one level ``(B, N, 4, *spatial_s)`` (band, |band|, gradient magnitude,
        level image) and its tag embedding spread over space ``(B, N, E, *spatial_s)`` (or ``None``)."""
        maps = torch.stack(
            [10 * band, 10 * band.abs(), 10 * self._gradient_magnitude(level_image), level_image], dim=2
        )
        if tag is not None:
            tag = tag.expand(maps.shape[0], -1, -1).to(maps.dtype)  # (B, N, E)
            tag = tag.reshape(*tag.shape, *([1] * (maps.ndim - 3))).expand(*tag.shape, *maps.shape[3:])
        return maps, tag

    @staticmethod
    def _correct(
        net: nn.Module,
        source_maps: tuple[torch.Tensor, torch.Tensor | None],
        weight: torch.Tensor,
        feedback: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One level's weights ``(B, N, *spatial_s)`` corrected by ``net`` from every source's maps, its
        log weight (and ``feedback`` maps ``(B, N, K, *spatial_s)`` of the previous pass's fusion), with
        their mean and maximum over the sources."""
        maps, tag = source_maps
        log_weight = torch.log(weight.float().clamp_min(1e-4))
        own = torch.cat(
            [maps, log_weight.unsqueeze(2)]
            + ([tag] if tag is not None else [])
            + ([feedback.to(maps.dtype)] if feedback is not None else []),
            dim=2,
        )  # (B, N, PER_SOURCE [+ E] [+ FEEDBACK], *spatial_s)
        pooled = torch.cat([own.mean(dim=1), own.amax(dim=1)], dim=1).unsqueeze(1)
        joint = torch.cat([own, pooled.expand(-1, own.shape[1], *pooled.shape[2:])], dim=2)
        correction = net(joint.flatten(0, 1))[:, 0].unflatten(0, own.shape[:2])
        return torch.softmax(log_weight + correction, dim=1).to(weight.dtype)


class _Encoder(nn.Module):
    """Multi-scale encoder: per scale two conv-norm-LeakyReLU units, max-pool between scales."""

    def __init__(
        self,
        spatial_dims: int,
        features: Sequence[int],
        act: tuple | str | None,
        norm: tuple | str | None,
        num_modalities: int,
    ) -> None:
        super().__init__()
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.stages = nn.ModuleList()
        in_channels = 1
        for out_channels in features:
            self.stages.append(
                nn.Sequential(
                    Convolution(spatial_dims, in_channels, out_channels, act=act, norm=norm),
                    Convolution(spatial_dims, out_channels, out_channels, act=act, norm=norm),
                )
            )
            in_channels = out_channels
        # FiLM after the first unit: zero-initialised, so every modality starts from the same encoder
        self.film = nn.Embedding(num_modalities, 2 * features[0]) if num_modalities > 1 else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)

    def forward(self, image: torch.Tensor, modality: torch.Tensor | None) -> list[torch.Tensor]:
        outputs = []
        x = image
        for level, stage in enumerate(self.stages):
            if level > 0:
                x = self.pool(x)
            x = stage[0](x)
            if level == 0 and self.film is not None and modality is not None:
                scale, shift = self.film(modality).chunk(2, dim=1)
                view = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
                x = x * (1.0 + scale.view(view)) + shift.view(view)
            x = stage[1](x)
            outputs.append(x)
        return outputs


class ISFLNet(nn.Module):
    """Intervention-stable feature learning network for multi-modal image fusion.

    Args:
        spatial_dims: 2 for images, 3 for volumes.
        modalities: modality tags the network knows; inputs are tagged with these.
        features: channels per scale (one entry per scale, at least two scales). The paper uses
            ``(32, 32, 32)``; the shipped 3D model uses fewer channels at full resolution for speed.
        grid_size: side of the pooled key/value grid of the cross-modal attention.
        encoder: ``"shared"`` (one encoder, modality told by FiLM) or ``"per_modality"`` (separate
            weights per modality tag, as in the paper).
        integrator: ``"cfi"`` (Causal Feature Integrator) or ``"mean"`` (ablation: plain mean).
        act: activation (MONAI name or ``(name, args)``), LeakyReLU by default.
        head: ``"synthesis"`` (a decoder synthesises the intensities, as in the paper) or ``"pyramid"``
            (the fusion is a per-scale weighted Laplacian-pyramid blend of the inputs; see the module
            docstring).
        residual: with ``head="pyramid"``, the largest intensity a learned residual may add to the blend
            (``residual * tanh(...)``); 0 (default) for none.
        saliency: with ``head="pyramid"``, every level's weight logits also get a learned 3x3 filter of
            each source's band saliency there (:func:`.pyramid.band_saliency`, the log local energy of
            its band), so the head can choose the source with the stronger detail at every scale.
            Zero-initialised: a network fine-tuned into it starts from its old blend.
        selector_hidden: with ``head="pyramid"`` and > 0, every level's (linear) selector also gets a
            nonlinear branch (3x3 convolution to this many channels, activation, 1x1 convolution to one
            logit) added to its logits, for choices sharper than a linear read-out of the features.
            Its last layer is zero-initialised: a network fine-tuned into it starts from its old blend.
        refiner_levels: with ``head="pyramid"`` and > 0, a :class:`BlendRefiner` corrects the weights of
            this many of the finest levels from the sources' own bands there (full-resolution capacity
            the selectors lack). Zero-initialised, like the options above.
        refiner_hidden: channels of the refiner's convolutions.
        refiner_tags: size of the refiner's per-modality embedding (0: the refiner does not see the
            tags), so one refiner can choose differently for each combination of modalities.
        refiner_depth: the refiner's 3x3 convolutions per level (dilated 1, 1, 2, 4, ...; 2 sees 5
            pixels across, 4 sees 17).
        refiner_passes: how many times the refiner corrects the weights; passes after the first also
            see the fusion the previous pass made (:class:`BlendRefiner`'s ``passes``).
        norm: normalisation, batch norm by default (a per-channel affine map in evaluation mode, so
            it adds no dependence on the window; the pooled attention and the convolutions' zero
            padding still make sliding-window results differ slightly from a single pass).

    Input ``(B, N, *spatial)`` with N >= 2 and intensities in [0, 1]; any spatial size (padded
    internally to a multiple of ``2 ** (len(features) - 1)``). Output ``(B, 1, *spatial)`` in [0, 1].

    Examples::

        # 2D, MRI + PET
        >>> net = ISFLNet(spatial_dims=2)
        >>> fused = net(torch.rand(1, 2, 97, 130), ["mri", "pet"])
        >>> fused.shape
        torch.Size([1, 1, 97, 130])

        # 3D, T1 + T2 + FLAIR, with gates and contribution maps
        >>> net = ISFLNet(spatial_dims=3, features=(8, 16, 32))
        >>> out = net(torch.rand(1, 3, 33, 40, 28), ["mri", "mri", "mri"], return_maps=True)
        >>> out["contributions"].shape
        torch.Size([1, 3, 33, 40, 28])

    Raises:
        ValueError: invalid arguments, fewer than two inputs, or an unknown modality tag.
    """

    def __init__(
        self,
        spatial_dims: int,
        modalities: Sequence[str] = MODALITIES,
        features: Sequence[int] = (32, 32, 32),
        grid_size: int = 8,
        encoder: str = "shared",
        integrator: str = "cfi",
        act: tuple | str | None = _DEFAULT_ACT,
        norm: tuple | str | None = "batch",
        head: str = "synthesis",
        residual: float = 0.0,
        saliency: bool = False,
        selector_hidden: int = 0,
        refiner_levels: int = 0,
        refiner_hidden: int = 32,
        refiner_tags: int = 0,
        refiner_depth: int = 2,
        refiner_passes: int = 1,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        features = tuple(int(f) for f in features)
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"features needs at least two positive channel counts, got {features}")
        if grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        act = tuple(act) if isinstance(act, list) else act  # lists come back from YAML/JSON configs
        norm = tuple(norm) if isinstance(norm, list) else norm
        modalities = tuple(str(m).lower() for m in modalities)
        if not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be non-empty and unique, got {modalities}")
        if encoder not in ("shared", "per_modality"):
            raise ValueError(f"encoder must be 'shared' or 'per_modality', got {encoder!r}")
        if integrator not in ("cfi", "mean"):
            raise ValueError(f"integrator must be 'cfi' or 'mean', got {integrator!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        residual = float(residual)
        if not 0.0 <= residual <= 1.0 or (residual > 0 and head != "pyramid"):
            raise ValueError(f"residual must lie in [0, 1] and needs head='pyramid', got {residual}")
        if not isinstance(saliency, bool) or (saliency and head != "pyramid"):
            raise ValueError(f"saliency must be a bool and True needs head='pyramid', got {saliency!r}")
        if (
            isinstance(selector_hidden, bool)
            or not isinstance(selector_hidden, int)
            or selector_hidden < 0
            or (selector_hidden > 0 and head != "pyramid")
        ):
            raise ValueError(
                "selector_hidden must be an integer >= 0 and > 0 needs head='pyramid', "
                f"got {selector_hidden!r}"
            )
        for name, value, low in (
            ("refiner_levels", refiner_levels, 0),
            ("refiner_hidden", refiner_hidden, 1),
            ("refiner_tags", refiner_tags, 0),
            ("refiner_depth", refiner_depth, 1),
            ("refiner_passes", refiner_passes, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if refiner_levels > 0 and (head != "pyramid" or refiner_levels > len(features)):
            raise ValueError(
                f"refiner_levels={refiner_levels} needs head='pyramid' and at most one level per scale "
                f"({len(features)})"
            )
        self.spatial_dims = spatial_dims
        self.modalities = modalities
        # the constructor arguments, so a checkpoint can rebuild exactly this network
        self.init_args = {
            "spatial_dims": spatial_dims,
            "modalities": list(modalities),
            "features": list(features),
            "grid_size": int(grid_size),
            "encoder": encoder,
            "integrator": integrator,
            "act": act,
            "norm": norm,
            "head": head,
            "residual": residual,
            "saliency": saliency,
            "selector_hidden": selector_hidden,
            "refiner_levels": refiner_levels,
            "refiner_hidden": refiner_hidden,
            "refiner_tags": refiner_tags,
            "refiner_depth": refiner_depth,
            "refiner_passes": refiner_passes,
        }
        self.features = features
        self.encoder_mode = encoder
        self.head_mode = head
        self.size_multiple = 2 ** (len(features) - 1)

        if encoder == "shared":
            self.encoder = _Encoder(spatial_dims, features, act, norm, len(modalities))
        else:
            self.encoders = nn.ModuleList(_Encoder(spatial_dims, features, act, norm, 1) for _ in modalities)
        self.integrators = nn.ModuleList(
            CausalFeatureIntegrator(spatial_dims, c, grid_size, act, norm)
            if integrator == "cfi"
            else MeanIntegrator(spatial_dims, c, act, norm)
            for c in features
        )
        if head == "synthesis":
            self.upsamplers = nn.ModuleList(
                UpSample(
                    spatial_dims,
                    features[level + 1],
                    features[level],
                    scale_factor=2,
                    mode="nontrainable",
                    interp_mode="bilinear" if spatial_dims == 2 else "trilinear",
                    align_corners=False,
                )
                for level in range(len(features) - 1)
            )
            self.decoders = nn.ModuleList(
                Convolution(spatial_dims, c, c, act=act, norm=norm) for c in features[:-1]
            )
            self.head = Convolution(spatial_dims, features[0], 1, kernel_size=1, conv_only=True)
        else:
            # per scale: weight logits of each source from its own features and the CFI's integrated
            # features; zero-initialised, so an untrained blend is the mean of the sources
            self.selectors = nn.ModuleList(
                Convolution(spatial_dims, 2 * c, 1, kernel_size=3, conv_only=True) for c in features
            )
            for selector in self.selectors:
                nn.init.zeros_(selector.conv.weight)
                nn.init.zeros_(selector.conv.bias)
            self.residual = (
                Convolution(spatial_dims, features[0], 1, kernel_size=1, conv_only=True)
                if residual > 0
                else None
            )
            self.saliency_filters = (
                nn.ModuleList(
                    Convolution(spatial_dims, 1, 1, kernel_size=3, conv_only=True) for _ in features
                )
                if saliency
                else None
            )
            for saliency_filter in self.saliency_filters or ():
                nn.init.zeros_(saliency_filter.conv.weight)
                nn.init.zeros_(saliency_filter.conv.bias)
            self.selector_branches = (
                nn.ModuleList(
                    nn.Sequential(
                        Convolution(spatial_dims, 2 * c, selector_hidden, kernel_size=3, act=act, norm=None),
                        Convolution(spatial_dims, selector_hidden, 1, kernel_size=1, conv_only=True),
                    )
                    for c in features
                )
                if selector_hidden
                else None
            )
            for branch in self.selector_branches or ():
                nn.init.zeros_(branch[1].conv.weight)
                nn.init.zeros_(branch[1].conv.bias)
            self.refiner = (
                BlendRefiner(
                    spatial_dims,
                    refiner_levels,
                    refiner_hidden,
                    act,
                    len(modalities),
                    refiner_tags,
                    refiner_depth,
                    refiner_passes,
                )
                if refiner_levels
                else None
            )

    def encode(self, images: torch.Tensor, modality: torch.Tensor) -> list[torch.Tensor]:
        """Features per scale, each ``(B, N, C_s, *spatial_s)``."""
        batch, num_mod = images.shape[:2]
        if self.encoder_mode == "shared":
            per_scale = self.encoder(images.flatten(0, 1).unsqueeze(1), modality.flatten())
            return [f.unflatten(0, (batch, num_mod)) for f in per_scale]
        # separate weights per modality tag: run each input slot through the encoder of its tag
        slots: list[list[torch.Tensor]] = []
        for slot in range(num_mod):
            tags = modality[:, slot]
            outputs: list[torch.Tensor] | None = None
            for tag in tags.unique().tolist():
                rows = (tags == tag).nonzero().flatten()
                encoded = self.encoders[tag](images[rows, slot : slot + 1], None)
                if outputs is None:
                    outputs = [f.new_zeros((batch,) + f.shape[1:]) for f in encoded]
                for out, f in zip(outputs, encoded, strict=True):
                    out[rows] = f
            slots.append(outputs)
        return [torch.stack(scale, dim=1) for scale in zip(*slots, strict=True)]

    def forward(
        self,
        images: torch.Tensor,
        modalities: Sequence[str] | torch.Tensor,
        return_maps: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor | list[torch.Tensor]]:
        """Fuse ``images`` ``(B, N, *spatial)`` tagged with ``modalities`` (N tags, or indices).

        Returns:
            the fused image ``(B, 1, *spatial)`` in [0, 1]; with ``return_maps`` a dict with
            ``fused``, ``gates`` (one ``(B, 1, *spatial_s)`` map per scale, finest first) and
            ``contributions`` ``(B, N, *spatial)`` (per-modality share, sums to 1 over N: the finest
            CFI mix for the synthesis head, the mean blend weights over the levels for the pyramid
            head), and for the pyramid head ``weights`` (the blend weights of every level, on the
            input padded to :attr:`size_multiple`).
        """
        if images.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"expected input of shape (B, N, {', '.join('HWD'[: self.spatial_dims])}) for a "
                f"{self.spatial_dims}D network, got {tuple(images.shape)}"
            )
        batch, num_mod, *spatial = images.shape
        if num_mod < 2:
            raise ValueError(f"fusion needs at least two input modalities, got {num_mod}")
        modality = modality_indices(modalities, self.modalities, batch, images.device)
        if modality.shape[-1] != num_mod:
            raise ValueError(f"got {modality.shape[-1]} modality tags for {num_mod} input images")
        if modality.shape[0] != batch:
            raise ValueError(
                f"modality index tensor has {modality.shape[0]} rows for a batch of {batch}; give one row "
                "per sample, or one row of N tags for the whole batch"
            )

        pads: list[int] = []
        for size in reversed(spatial):
            pads += [0, (-size) % self.size_multiple]
        padded = F.pad(images, pads) if any(pads) else images

        maps = self._integrate(padded, modality)
        if self.head_mode == "synthesis":
            fused_scales = maps["features"]
            x = fused_scales[-1]
            for level in reversed(range(len(fused_scales) - 1)):
                x = self.decoders[level](self.upsamplers[level](x) + fused_scales[level])
            fused = torch.sigmoid(self.head(x))
            contributions = maps["cfi_contributions"]
        else:
            fused = self.compose(padded, maps["weights"], maps["residual"])
            contributions = self.mean_weights(maps["weights"])

        crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
        fused = fused[crop]
        if not return_maps:
            return fused
        out = {
            "fused": fused,
            "gates": [
                g[(slice(None), slice(None)) + tuple(slice(0, -(-s // 2**lv)) for s in spatial)]
                for lv, g in enumerate(maps["gates"])
            ],
            "contributions": contributions[crop],
        }
        if self.head_mode == "pyramid":
            out["weights"] = maps["weights"]  # on the padded grid, one map per pyramid level
        return out

    def _integrate(self, padded: torch.Tensor, modality: torch.Tensor) -> dict:
        """Encode, integrate at every scale and, for the pyramid head, decide the blend weights."""
        per_scale = self.encode(padded, modality)
        fused_scales, gates, contributions = [], [], None
        for level, (integrator, features) in enumerate(zip(self.integrators, per_scale, strict=True)):
            fused, gate, contrib = integrator(features)
            fused_scales.append(fused)
            gates.append(gate)
            if level == 0:
                contributions = contrib
        maps = {"features": fused_scales, "gates": gates, "cfi_contributions": contributions}
        if self.head_mode == "pyramid":
            logits = None
            weights: list[torch.Tensor] = []
            saliency = (
                pyramid.band_saliency(padded.float(), len(fused_scales))
                if self.saliency_filters is not None
                else None
            )
            for level in reversed(range(len(fused_scales))):
                own, integrated = per_scale[level], fused_scales[level]
                joint = torch.cat([own, integrated.unsqueeze(1).expand_as(own)], dim=2)
                joint = joint.flatten(0, 1)
                level_logits = self.selectors[level](joint)
                if self.selector_branches is not None:
                    level_logits = level_logits + self.selector_branches[level](joint)
                level_logits = level_logits.unflatten(0, own.shape[:2])[:, :, 0]
                if logits is not None:  # coarse to fine: a scale refines the coarser scale's choice
                    level_logits = level_logits + pyramid.upsample(logits, level_logits.shape[2:])
                logits = level_logits
                if saliency is not None:  # this level's cue only; finer levels see their own
                    cue = self.saliency_filters[level](saliency[level].flatten(0, 1).unsqueeze(1))
                    level_logits = level_logits + cue[:, 0].unflatten(0, own.shape[:2]).to(level_logits.dtype)
                weights.insert(0, torch.softmax(level_logits.float(), dim=1).to(level_logits.dtype))
            if self.refiner is not None:
                weights = self.refiner(padded, weights, modality)
            maps["weights"] = weights
            maps["residual"] = self.residual(fused_scales[0]) if self.residual is not None else None
        return maps

    def blend_maps(
        self, images: torch.Tensor, modalities: Sequence[str] | torch.Tensor
    ) -> dict[str, list[torch.Tensor] | torch.Tensor | None]:
        """The pyramid head's decision for ``images`` ``(B, N, *spatial)`` whose sizes are multiples of
        :attr:`size_multiple`: ``weights`` (one ``(B, N, *spatial_s)`` map per level) and ``residual``
        (``(B, 1, *spatial)`` before its bound, or ``None``). Sliding-window inference stitches these
        and calls :meth:`compose` once on the whole image, so windows leave no seam in the blend."""
        if self.head_mode != "pyramid":
            raise ValueError("blend_maps needs head='pyramid'")
        if any(n % self.size_multiple for n in images.shape[2:]):
            raise ValueError(f"sizes {tuple(images.shape[2:])} are not multiples of {self.size_multiple}")
        modality = modality_indices(modalities, self.modalities, images.shape[0], images.device)
        maps = self._integrate(images, modality)
        return {"weights": maps["weights"], "residual": maps["residual"]}

    def compose(
        self, images: torch.Tensor, weights: Sequence[torch.Tensor], residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The fused image ``(B, 1, *spatial)`` in [0, 1]: the weighted pyramid blend of ``images``, plus
        the bounded residual when the network has one."""
        fused = pyramid.blend(images.float(), [w.float() for w in weights])
        if residual is not None:
            fused = fused + self.init_args["residual"] * torch.tanh(residual.float())
        return fused.clamp(0.0, 1.0)

    @staticmethod
    def mean_weights(weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """One contribution map per source at full resolution: the blend weights of every pyramid level,
        upsampled and averaged (sums to 1 over the sources)."""
        size = weights[0].shape[2:]
        return torch.stack([pyramid.upsample(w.float(), size) for w in weights]).mean(dim=0)

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, modalities={self.modalities}, features={self.features}, "
            f"encoder={self.encoder_mode!r}, integrator={self.init_args['integrator']!r}, "
            f"head={self.head_mode!r}"
        )

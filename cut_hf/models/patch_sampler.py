"""PatchSampler: the paper's projection H (official ``PatchSampleF`` / netF) for PatchNCE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn as nn

from cut_hf.hub.mixin import CheckedHubMixin, mixin_kwargs
from cut_hf.models.layers import init_weights


def l2_normalize(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``x / (||x||_2 + eps)`` over dim 1, the original's ``Normalize(2)`` (eps added to the norm)."""
    return x / (x.pow(2).sum(1, keepdim=True).pow(0.5) + eps)  # pow(0.5), not sqrt: the paper's rounding


class Encoder(Protocol):
    """What a sampler is built for: a generator that says its feature maps' channels."""

    def feature_channels(self) -> Sequence[int]: ...


class PatchSampler(nn.Module, CheckedHubMixin, **mixin_kwargs("patch_sampler")):
    """Samples the same random locations from each feature map and projects them with a 2-layer MLP.

    One MLP per encoder layer, ``mlp_i = Linear(C_i, nc) -> ReLU -> Linear(nc, nc)``, built here in
    ``__init__`` (the original built them lazily on the first forward, which breaks optimiser setup,
    DDP and ``from_pretrained``). Outputs are L2-normalised with eps 1e-7 like the original.

    Args:
        in_channels: channels of each feature map, e.g. ``nce_channels(generator_config)``.
        num_patches: locations sampled per feature map (per image) by default.
        nc: embedding size.
        use_mlp: project with the MLPs (CUT) or only L2-normalise the raw features.
    """

    def __init__(
        self, in_channels: Sequence[int] = (3, 128, 256, 256, 256), num_patches: int = 256, nc: int = 256,
        use_mlp: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.num_patches, self.nc, self.use_mlp = num_patches, nc, use_mlp
        if use_mlp:
            for i, c in enumerate(self.in_channels):
                self.add_module(f"mlp_{i}", nn.Sequential(nn.Linear(c, nc), nn.ReLU(), nn.Linear(nc, nc)))
        init_weights(self)

    @classmethod
    def for_generator(
        cls, generator: Encoder, num_patches: int = 256, nc: int = 256, use_mlp: bool = True
    ) -> PatchSampler:
        """A sampler whose MLPs fit ``generator.encode()``'s features (its ``nce_layers``).

        Args:
            generator: a :class:`~cut_hf.CUTGenerator` (anything with ``feature_channels()``).
            num_patches, nc, use_mlp: as in the constructor.
        """
        return cls(generator.feature_channels(), num_patches=num_patches, nc=nc, use_mlp=use_mlp)

    def mlp(self, i: int) -> nn.Module:
        """The projection MLP of feature layer ``i`` (identity without ``use_mlp``)."""
        return getattr(self, f"mlp_{i}") if self.use_mlp else nn.Identity()

    def forward(
        self,
        feats: Sequence[torch.Tensor],
        num_patches: int | None = None,
        patch_ids: Sequence[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Project sampled patches of each feature map.

        Args:
            feats: feature maps (B, C_i, H_i, W_i), one per MLP.
            num_patches: locations per map; ``None`` uses the configured number, ``0`` keeps every
                location and returns whole maps (B, nc, H_i, W_i) normalised over channels.
            patch_ids: indices returned by a previous call. Pass the ids drawn for the source image's
                features when sampling the translated image's, so query i and key i share a location.
            generator: RNG for the location draw (reproducible sampling).

        Returns:
            ``(samples, patch_ids)``: samples are (B * S, nc) per layer, image-major (all S patches of
            image 0 first), and ``patch_ids`` are the (S,) location indices, the same for every image.
        """
        if len(feats) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(feats)}")
        n = self.num_patches if num_patches is None else num_patches
        out, ids_out = [], []
        for i, feat in enumerate(feats):
            b, c, h, w = feat.shape
            if c != self.in_channels[i]:
                raise ValueError(f"feature map {i} has {c} channels, this sampler expects {self.in_channels[i]}")
            flat = feat.permute(0, 2, 3, 1).flatten(1, 2)  # (B, H*W, C)
            if n > 0:
                if patch_ids is not None:
                    ids = patch_ids[i].to(feat.device)
                else:
                    ids = torch.randperm(h * w, generator=generator, device="cpu" if generator is None
                                         else generator.device)[: min(n, h * w)].to(feat.device)
                x = flat[:, ids, :].flatten(0, 1)  # (B*S, C)
            else:
                ids = torch.arange(h * w, device=feat.device)
                x = flat.flatten(0, 1)  # (B*H*W, C)
            x = l2_normalize(self.mlp(i)(x))
            if n == 0:  # back to whole maps (B, nc, H, W)
                x = x.view(b, h * w, -1).permute(0, 2, 1).reshape(b, -1, h, w)
            out.append(x)
            ids_out.append(ids)
        return out, ids_out

"""PatchDiscriminator: the 70x70 PatchGAN of pix2pix/CycleGAN/CUT, anti-aliased as in CUT."""

from __future__ import annotations

import torch
import torch.nn as nn

from cut_hf.hub.mixin import CheckedHubMixin, mixin_kwargs
from cut_hf.models.layers import NORMS, Downsample, conv_bias, init_weights, norm_layer


class PatchDiscriminator(nn.Module, CheckedHubMixin, **mixin_kwargs("patch_discriminator")):
    """Classifies overlapping patches as real or fake; outputs a (B, 1, H', W') map of logits.

    With the defaults its keys are the official ``model.{0,3,7,11,14}.weight/bias`` and the blur
    buffers ``model.{2,6,10}.filt``.

    Args:
        input_nc: channels of the images it judges.
        ndf: channels of the first convolution (doubled per layer, capped at 8 * ndf).
        n_layers: strided stages (3 gives the 70x70 receptive field).
        norm: ``"instance"`` (the paper), ``"batch"`` or ``"none"``.
        antialias: stride-1 conv + blur-pool instead of strided convolutions.
    """

    def __init__(
        self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance", antialias: bool = True
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        bias = conv_bias(norm)
        kw, padw = 4, 1
        stride = 1 if antialias else 2
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, stride=stride, padding=padw), nn.LeakyReLU(0.2, True)]
        if antialias:
            seq.append(Downsample(ndf))
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, stride=stride, padding=padw, bias=bias),
                    norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True)]
            if antialias:
                seq.append(Downsample(ndf * mult))
        prev, mult = mult, min(2**n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=padw, bias=bias),
                norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2, True),
                nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*seq)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits (B, 1, H', W') for images ``x`` (B, C, H, W) in [-1, 1]."""
        return self.model(x)

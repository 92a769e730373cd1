"""The StyleGAN2-based generator and discriminator of SinCUT (the paper's ``netG/netD="stylegan2"``).

State dicts follow the official ``models/stylegan_networks.py`` key for key (``encoder.convs.*``,
``decoder.convs.*``; ``convs.*``, ``final_conv.*``, ``final_linear.*``), so official SinCUT
checkpoints load with ``strict=True``. Channel widths come from the crop size, as officially: the
networks are built for ``2 ** round(log2(crop_size))`` px crops (the official
``min(load_size, crop_size)``; SinCUT's load size 1024 never wins).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from cut_hf.hub.mixin import CheckedHubMixin, mixin_kwargs
from cut_hf.models.stylegan2_layers import (
    ConvLayer,
    EqualLinear,
    ResBlock,
    StyledUpConv,
    channel_table,
    power_of_two_resolution,
)

SINCUT_TAGS = ["image-to-image", "cut", "sincut", "single-image-translation", "contrastive-learning", "stylegan2"]


class ConvStack(nn.Module):
    """A ``convs`` Sequential run in order: the official encoder and decoder modules."""

    def __init__(self, convs: Sequence[nn.Module]) -> None:
        super().__init__()
        self.convs = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class StyleGAN2Generator(nn.Module, CheckedHubMixin, **mixin_kwargs("stylegan2_generator", tags=SINCUT_TAGS)):
    """SinCUT's encoder-decoder generator: StyleGAN2 residual blocks, no normalisation layers.

    Encoder ``convs``: 0 the identity (the input, for PatchNCE), 1 a 1x1 conv, then
    ``num_downsampling`` blur-pool ResBlocks halving the resolution, then ``n_blocks // 2``
    ResBlocks. Decoder ``convs``: ``n_blocks // 2`` ResBlocks, ``num_downsampling`` demodulated
    upsampling convs with noise injection, and a 1x1 conv with a leaky ReLU. The output is that
    scaled leaky ReLU, not a tanh: it is trained towards [-1, 1] but not bounded (``translate``
    clips it). Noise is drawn from the global RNG in every forward; its weights start at zero.

    With the defaults (SinCUT's ``ngf 10``, one downsampling, 64 px crops) the state dict has the
    official 39 keys. Sides must be multiples of :attr:`size_multiple`; others lose their odd row.

    Args:
        input_nc: channels of the input image (the official code fixes 3).
        output_nc: channels of the output image (the official code fixes 3).
        ngf: width multiplier: a resolution r uses ``round(ngf / 32 * table[r])`` channels.
        n_blocks: residual blocks, half in the encoder and half in the decoder.
        num_downsampling: stride-2 stages (the official ``stylegan2_G_num_downsampling``).
        crop_size: training crop size; the widths are those of the nearest power of two.
        inject_noise: add learned-scale noise after each upsampling conv (off in ``smallstylegan2``).
        nce_layers: encoder ``convs`` indices whose outputs :meth:`encode` returns for PatchNCE.
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 10,
        n_blocks: int = 6,
        num_downsampling: int = 1,
        crop_size: int = 64,
        inject_noise: bool = True,
        nce_layers: Sequence[int] = (0, 2, 4),
    ) -> None:
        super().__init__()
        res = power_of_two_resolution(crop_size)
        if ngf < 1 or n_blocks < 0 or num_downsampling < 0 or res >> num_downsampling < 4:
            raise ValueError(f"need ngf >= 1, n_blocks >= 0 and crop_size / 2**num_downsampling >= 4, got ngf={ngf}, "
                             f"n_blocks={n_blocks}, num_downsampling={num_downsampling}, crop_size={crop_size}")
        self.input_nc, self.output_nc, self.ngf, self.n_blocks = input_nc, output_nc, ngf, n_blocks
        self.num_downsampling, self.crop_size, self.inject_noise = num_downsampling, crop_size, inject_noise
        self.nce_layers = tuple(int(i) for i in nce_layers)
        #: Image sides must be multiples of this (each downsampling halves them, each upsampling doubles).
        self.size_multiple = 2**num_downsampling
        ch = channel_table(ngf / 32, cap=512, rounding=True)

        enc: list[nn.Module] = [nn.Identity(), ConvLayer(input_nc, ch[res], 1)]
        for _ in range(num_downsampling):
            enc.append(ResBlock(ch[res], ch[res // 2], downsample=True))
            res //= 2
        enc += [ResBlock(ch[res], ch[res], downsample=False) for _ in range(n_blocks // 2)]
        dec: list[nn.Module] = [ResBlock(ch[res], ch[res], downsample=False) for _ in range(n_blocks // 2)]
        for _ in range(num_downsampling):
            dec.append(StyledUpConv(ch[res], ch[res * 2], inject_noise=inject_noise))
            res *= 2
        dec.append(ConvLayer(ch[res], output_nc, 1))
        self.encoder, self.decoder = ConvStack(enc), ConvStack(dec)
        self._wanted_layers(self.nce_layers)  # fail early on an out-of-range index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate ``x`` (B, C, H, W) in [-1, 1], H and W multiples of :attr:`size_multiple`."""
        return self.decoder(self.encoder(x))

    def _wanted_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Sorted, de-duplicated encoder indices, checked against the encoder's length."""
        wanted = sorted({int(i) for i in (self.nce_layers if layers is None else layers)})
        n = len(self.encoder.convs)
        bad = [i for i in wanted if not 0 <= i < n]
        if bad:
            raise ValueError(f"layers {bad} out of range: the encoder has layers 0-{n - 1}")
        return wanted

    def _encoder_pass(
        self, x: torch.Tensor, layers: Sequence[int] | None, whole: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the encoder (all of it, or up to the last wanted layer); collect the wanted outputs."""
        wanted = self._wanted_layers(layers)
        last = len(self.encoder.convs) - 1 if whole else (wanted[-1] if wanted else -1)
        feats: list[torch.Tensor] = []
        for i, layer in enumerate(self.encoder.convs[: last + 1]):
            x = layer(x)
            if i in wanted:
                feats.append(x)
        return x, feats

    def encode(self, x: torch.Tensor, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Outputs of the given encoder ``convs`` indices (default ``nce_layers``), in index order.

        Equal to the official ``netG(x, layers, encode_only=True)`` (which runs the whole encoder);
        here the encoder stops after the last requested layer and the decoder never runs.
        """
        return self._encoder_pass(x, layers, whole=False)[1]

    def forward_with_features(
        self, x: torch.Tensor, layers: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One pass that returns the translation and the :meth:`encode` features met on the way."""
        h, feats = self._encoder_pass(x, layers, whole=True)
        return self.decoder(h), feats

    def feature_channels(self, layers: Sequence[int] | None = None) -> list[int]:
        """Channel count of each :meth:`encode` output, from the layer list (no forward)."""
        out, channels = [], self.input_nc
        wanted = self._wanted_layers(layers)
        for i, layer in enumerate(self.encoder.convs):
            weights = [p for name, p in layer.named_parameters() if name.endswith("weight") and p.dim() == 4]
            if weights:
                channels = weights[-1].shape[0]  # the last conv of a ConvLayer / ResBlock (skip or conv2)
            if i in wanted:
                out.append(channels)
        return out


class StyleGAN2Discriminator(nn.Module, CheckedHubMixin,
                             **mixin_kwargs("stylegan2_discriminator", tags=SINCUT_TAGS)):
    """SinCUT's discriminator: StyleGAN2 residual blocks down to 4 x 4, then two linear layers.

    It judges whole crops: inputs must be exactly :attr:`size` x :attr:`size` (``2 **
    round(log2(crop_size))``) and the output is one logit per image, (B, 1). With the defaults
    (``ndf 8``, 64 px) its state dict has the official 36 keys.

    Args:
        input_nc: channels of the images it judges (the official code fixes 3).
        ndf: width multiplier: a resolution r uses ``int(ndf / 64 * table[r])`` channels, 384 at most.
        crop_size: size of the crops it judges (the official ``min(load_size, crop_size)``).
    """

    def __init__(self, input_nc: int = 3, ndf: int = 8, crop_size: int = 64) -> None:
        super().__init__()
        self.input_nc, self.ndf, self.crop_size = input_nc, ndf, crop_size
        self.size = power_of_two_resolution(crop_size)
        ch = channel_table(ndf / 64, cap=384, rounding=False)
        if ndf < 1 or min(ch[r] for r in ch if r <= self.size) < 1:
            raise ValueError(f"ndf={ndf} leaves a layer without channels at crop_size {crop_size}")
        convs: list[nn.Module] = [ConvLayer(input_nc, ch[self.size], 1)]
        res = self.size
        while res > 4:  # one blur-pool ResBlock per halving, down to 4 x 4
            convs.append(ResBlock(ch[res], ch[res // 2], downsample=True))
            res //= 2
        self.convs = nn.Sequential(*convs)
        self.final_conv = ConvLayer(ch[4], ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 4 * 4, ch[4], activation=True), EqualLinear(ch[4], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1) for crops ``x`` (B, C, size, size) in [-1, 1]."""
        if tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"StyleGAN2Discriminator judges {self.size} x {self.size} crops, "
                             f"got {tuple(x.shape[-2:])}")
        out = self.final_conv(self.convs(x))  # (B, C4, 4, 4)
        return self.final_linear(out.flatten(1))

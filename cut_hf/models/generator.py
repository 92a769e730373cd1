"""CUTGenerator: the ResNet generator of CUT / FastCUT in the official ``model.<i>`` layout."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from cut_hf.hub.mixin import CheckedHubMixin, mixin_kwargs
from cut_hf.models.layers import (
    NORMS,
    Downsample,
    ReflectionPad2d,
    ResnetBlock,
    Upsample,
    conv_bias,
    init_weights,
    norm_layer,
)
from cut_hf.models.stylegan2 import StyleGAN2Generator


class CUTGenerator(nn.Module, CheckedHubMixin, **mixin_kwargs("cut_generator")):
    """ResNet-based generator (Johnson et al.) with the anti-aliased resampling used by CUT.

    All arguments are plain JSON values, so ``save_pretrained`` writes them to ``config.json``.
    With the defaults the state dict is exactly the official ``latest_net_G.pth`` (52 keys), so
    the published weights load with ``strict=True``.

    Args:
        input_nc: channels of the input image (3 for RGB, 1 for grayscale).
        output_nc: channels of the output image.
        ngf: channels after the first convolution; 256 = 4 * ngf in the residual trunk.
        n_blocks: residual blocks in the trunk (9 for 256 px, 6 and 4 also load official weights).
        norm: ``"instance"`` (the paper), ``"batch"`` or ``"none"``.
        antialias: blur-pool downsampling (stride-1 conv + ``Downsample``) instead of strided convs.
        antialias_up: fixed-filter ``Upsample`` + conv instead of transposed convs.
        dropout: dropout 0.5 inside residual blocks.
        nce_layers: Sequential indices whose *outputs* :meth:`encode` returns for PatchNCE.
        fast_ops: the exact fast equivalents of the official ``Upsample`` (bilinear interpolation),
            instance norm (no view; channels-last kept) and, in bf16 on the CPU, ``Downsample``
            (average pools) in :mod:`cut_hf.models.layers`; False runs the official operations
            step by step. Outputs agree to float rounding either way.
        residual: add the input to the last layer's pre-activation, ``tanh(conv(h) + atanh(x))``,
            so that a generator that has learnt nothing returns its input and every change is
            learnt as a difference (not in the paper; the shipped demo model uses it to keep
            backgrounds whose fine grain a small generator cannot redraw). Needs
            ``input_nc == output_nc``; the layers and weights are the paper's either way.
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        antialias: bool = True,
        antialias_up: bool = True,
        dropout: bool = False,
        nce_layers: Sequence[int] = (0, 4, 8, 12, 16),
        fast_ops: bool = True,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if n_blocks < 0 or ngf < 1:
            raise ValueError(f"need ngf >= 1 and n_blocks >= 0, got ngf={ngf}, n_blocks={n_blocks}")
        if residual and input_nc != output_nc:
            raise ValueError(f"residual=True adds the input to the output: needs input_nc == output_nc, "
                             f"got {input_nc} and {output_nc}")
        self.input_nc, self.output_nc, self.ngf, self.n_blocks = input_nc, output_nc, ngf, n_blocks
        self.nce_layers = tuple(int(i) for i in nce_layers)
        self.fast_ops = bool(fast_ops)
        self.residual = bool(residual)
        bias = conv_bias(norm)

        def norm_(channels: int) -> nn.Module:
            return norm_layer(norm, channels, fast_ops)

        layers: list[nn.Module] = [
            ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, bias=bias),
            norm_(ngf),
            nn.ReLU(True),
        ]
        for mult in (1, 2):  # two downsamplings: ngf -> 2 ngf -> 4 ngf
            cin, cout = ngf * mult, ngf * mult * 2
            if antialias:
                layers += [nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=bias), norm_(cout),
                           nn.ReLU(True), Downsample(cout, fast=fast_ops)]
            else:
                layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=bias), norm_(cout),
                           nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm=norm, dropout=dropout, fast=fast_ops) for _ in range(n_blocks)]
        for mult in (4, 2):  # two upsamplings: 4 ngf -> 2 ngf -> ngf
            cin, cout = ngf * mult, ngf * mult // 2
            if antialias_up:
                layers += [Upsample(cin, fast=fast_ops), nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=bias),
                           norm_(cout), nn.ReLU(True)]
            else:
                layers += [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=bias),
                           norm_(cout), nn.ReLU(True)]
        layers += [ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

        bad = [i for i in self.nce_layers if not 0 <= i < len(self.model)]
        if bad:
            raise ValueError(f"nce_layers {bad} out of range: the generator has {len(self.model)} layers")
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate ``x`` (B, C, H, W) in [-1, 1], H and W multiples of 4, to (B, C', H, W) in [-1, 1]."""
        if not self.residual:
            return self.model(x)
        return self.forward_with_features(x, ())[0]

    def _layer_outputs(self, x: torch.Tensor, stop: int) -> Iterator[tuple[int, torch.Tensor]]:
        """``(i, output of layer i)`` for layers 0..``stop``: the one loop of :meth:`forward` (residual),
        :meth:`encode` and :meth:`forward_with_features`, so all three apply ``residual`` alike."""
        h, last = x, len(self.model) - 1
        for i, layer in enumerate(self.model[: stop + 1]):
            h = self._residual_output(h, x) if self.residual and i == last else layer(h)  # in place of the Tanh
            yield i, h

    @staticmethod
    def _residual_output(pre: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``tanh(pre + atanh(x))``: the last Tanh applied to the pre-activation plus the input's own.

        The input is clamped to +-0.999 first so that atanh stays finite (+-3.8) on pure black or
        white pixels."""
        # In float32: bf16 rounds 0.999 to 1.0, where atanh is infinite.
        return torch.tanh(pre.float() + torch.atanh(x.float().clamp(-0.999, 0.999))).to(pre.dtype)

    def _wanted_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Sorted, de-duplicated layer indices, checked against the Sequential's length."""
        wanted = sorted({int(i) for i in (self.nce_layers if layers is None else layers)})
        bad = [i for i in wanted if not 0 <= i < len(self.model)]
        if bad:
            raise ValueError(f"layers {bad} out of range: the generator has layers 0-{len(self.model) - 1}")
        return wanted

    def encode(self, x: torch.Tensor, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Features after the given Sequential indices (default ``nce_layers``), in index order.

        Equal to the official ``netG(x, layers, encode_only=True)``, and it stops after the last
        requested layer, so the decoder is never run for PatchNCE.

        The official layout puts in-place ReLUs after its norms, and the official code keeps the
        tensor it stored, so a feature taken at a norm index (2, 5, ..., or 8 without anti-aliasing)
        is the ReLU's output; official netF weights were trained on that. We keep those semantics
        for every layer, the last one included (the original skipped that ReLU only when the
        norm was the last layer asked for), so ``encode`` and :meth:`forward_with_features` always
        agree. The default anti-aliased layers are never followed by an in-place op.
        """
        wanted = self._wanted_layers(layers)
        feats: list[torch.Tensor] = []
        if not wanted:
            return feats
        stop = wanted[-1]
        while stop + 1 < len(self.model) and getattr(self.model[stop + 1], "inplace", False):
            stop += 1  # run the in-place ReLU that overwrites the last feature (see above)
        for i, h in self._layer_outputs(x, stop):
            if i in wanted:
                feats.append(h)
        return feats

    def forward_with_features(
        self, x: torch.Tensor, layers: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One pass that returns the translation and the :meth:`encode` features met on the way.

        Training reuses these (detached) as PatchNCE keys instead of a second encoder pass.
        """
        wanted = set(self._wanted_layers(layers))
        feats: list[torch.Tensor] = []
        for i, h in self._layer_outputs(x, len(self.model) - 1):
            if i in wanted:
                feats.append(h)
        return h, feats

    def feature_channels(self, layers: Sequence[int] | None = None) -> list[int]:
        """Channel count of each :meth:`encode` output, computed from the layer list (no forward)."""
        wanted = self._wanted_layers(layers)
        channels, out = self.input_nc, []
        for i, layer in enumerate(self.model):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                channels = layer.out_channels
            if i in wanted:
                out.append(channels)
        return out


def generator_class(generator_config: Mapping[str, Any]) -> type[CUTGenerator] | type[StyleGAN2Generator]:
    """The class a generator's ``config.json`` describes: :class:`StyleGAN2Generator` (SinCUT) for
    a config with ``num_downsampling``, else :class:`CUTGenerator`."""
    return StyleGAN2Generator if "num_downsampling" in generator_config else CUTGenerator


def nce_channels(generator_config: dict) -> list[int]:
    """``PatchSampler`` input channels for a generator config (e.g. a loaded ``config.json``) of
    either generator class."""
    with torch.device("meta"):  # no memory, no init cost: only the layer list is needed
        return generator_class(generator_config)(**generator_config).feature_channels()

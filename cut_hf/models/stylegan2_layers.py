"""Building blocks of the StyleGAN2-style networks of SinCUT, in the official module layout.

Every block keeps the attribute names of the paper's ``models/stylegan_networks.py`` (``weight``,
``bias``, ``kernel``, ``conv``, ``noise``, ``activate``, ``conv1``/``conv2``/``skip``), so the state
dicts of :class:`~cut_hf.StyleGAN2Generator` and :class:`~cut_hf.StyleGAN2Discriminator` match
official checkpoints key for key.

Equalised learning rate: weights are stored as N(0, 1) samples and multiplied by
``1 / sqrt(fan_in)`` in every forward, so Adam sees every layer at the same scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

#: The binomial filter of StyleGAN2's blur-pool resampling.
BLUR_KERNEL = (1, 3, 3, 1)


def blur_kernel_2d(taps: Sequence[int] = BLUR_KERNEL) -> torch.Tensor:
    """Outer product of ``taps`` with itself, normalised to sum 1: (K, K)."""
    k = torch.tensor([float(t) for t in taps])
    k2 = k[None, :] * k[:, None]
    return k2 / k2.sum()


def channel_table(multiplier: float, cap: int, rounding: bool) -> dict[int, int]:
    """Channels per feature resolution (4 ... 1024 px), the table of the official networks.

    Resolutions up to 32 px are capped at ``cap``; from 64 px on the width halves with each doubling.
    The generator rounds (``ngf / 32`` multiplier, cap 512), the discriminator truncates
    (``ndf / 64``, cap 384), as the official code does.
    """
    base = {4: 4096, 8: 2048, 16: 1024, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}

    def width(n: int) -> int:
        return round(n * multiplier) if rounding else int(n * multiplier)

    return {res: (min(cap, width(n)) if res <= 32 else width(n)) for res, n in base.items()}


def power_of_two_resolution(size: int) -> int:
    """``2 ** round(log2(size))``: the resolution whose widths the networks use for ``size`` px crops."""
    if size < 4:
        raise ValueError(f"crop size must be >= 4, got {size}")
    return 2 ** round(math.log2(size))


class Blur(nn.Module):
    """Zero-pad by ``pad`` = (before, after) on both axes, then a depthwise FIR blur (``upfirdn2d``
    with no resampling). The kernel buffer is part of the state dict, as in the official code."""

    kernel: torch.Tensor  # a buffer

    def __init__(self, pad: tuple[int, int], gain: float = 1.0, taps: Sequence[int] = BLUR_KERNEL) -> None:
        super().__init__()
        self.register_buffer("kernel", blur_kernel_2d(taps) * gain)
        self.pad = (int(pad[0]), int(pad[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        p0, p1 = self.pad
        x = F.pad(x, [p0, p1, p0, p1])
        # upfirdn2d convolves (flipped kernel), conv2d correlates: flip so both agree for any taps.
        weight = torch.flip(self.kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, -1, -1)
        return F.conv2d(x, weight, groups=c)


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate (weight scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; ``activation=True`` adds the bias inside a
    fused leaky ReLU (the official ``activation='fused_lrelu'``)."""

    def __init__(self, in_dim: int, out_dim: int, activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias)
        return F.linear(x, self.weight * self.scale, self.bias)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, slope: float = 0.2,
                     gain: float = math.sqrt(2)) -> torch.Tensor:
    """``leaky_relu(x + bias) * sqrt(2)``: the gain keeps the signal's variance through the layer."""
    return F.leaky_relu(x + bias, slope) * gain


class FusedLeakyReLU(nn.Module):
    """A learned per-channel bias (1, C, 1, 1) followed by the scaled leaky ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class ScaledLeakyReLU(nn.Module):
    """``leaky_relu(x) * sqrt(2)`` without a bias (a bias-free activated ``ConvLayer``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 0.2) * math.sqrt(2)


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [FusedLeakyReLU]: the official ``ConvLayer``.

    With ``downsample`` the blur pads and filters first and the convolution has stride 2 and no
    padding (blur-pool); otherwise the convolution pads by ``kernel_size // 2``. An activated layer
    carries its bias in the activation, so its convolution has none.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 bias: bool = True, activate: bool = True) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (len(BLUR_KERNEL) - 2) + (kernel_size - 1)
            layers.append(Blur(((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels) if bias else ScaledLeakyReLU())
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Two 3x3 ``ConvLayer`` s (the second optionally downsampling) plus a skip, summed and divided by sqrt(2).

    The skip is a bias-free 1x1 ``ConvLayer`` when the width or the resolution changes, else the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=downsample)
        if in_channels != out_channels or downsample:
            self.skip: nn.Module = ConvLayer(in_channels, out_channels, 1, downsample=downsample, activate=False,
                                             bias=False)
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class UpsampleDemodConv2d(nn.Module):
    """StyleGAN2's modulated 3x3 convolution with 2x upsampling, for a constant style of 1.

    SinCUT's decoder has no mapping network (the official ``style_dim=None``), so modulation is the
    identity and what remains is weight *demodulation*: each output filter is scaled to unit L2 norm
    (eps 1e-8). The same weight then serves every image, so one batched transposed convolution
    replaces the official per-image grouped one (and no ``.cuda()`` is needed for the absent style).
    The weight keeps the official shape (1, out, in, k, k); a [1, 3, 3, 1] blur (gain 4) follows
    the stride-2 transposed convolution, turning (H, W) into (2H, 2W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        p = (len(BLUR_KERNEL) - 2) - (kernel_size - 1)
        self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def demodulated_weight(self) -> torch.Tensor:
        """(out, in, k, k) weight with each output filter at unit norm."""
        w = self.scale * self.weight[0]
        return w * torch.rsqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.demodulated_weight().transpose(0, 1).to(x.dtype)  # (in, out, k, k) for conv_transpose2d
        return self.blur(F.conv_transpose2d(x, w, stride=2))


class NoiseInjection(nn.Module):
    """Adds per-pixel Gaussian noise (one map per image, shared by the channels) times a learned
    scalar that starts at zero. Like the official code it draws fresh noise from the global RNG in
    every forward, training or not."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return x + self.weight * x.new_empty(b, 1, h, w).normal_()


class FixedNoise(nn.Module):
    """Stand-in for a :class:`NoiseInjection` (whose learned scale it shares) that draws its noise
    once per map size from ``seed`` and then reuses it: every frame of a clip gets the same noise,
    and a seed gives the same result on any device (drawn on the CPU)."""

    def __init__(self, noise: NoiseInjection, seed: int) -> None:
        super().__init__()
        self.noise = noise  # shared with the user's model, not copied
        self.seed = seed
        self.maps: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (*x.shape[-2:], x.device, x.dtype)
        if key not in self.maps:
            drawn = torch.randn(1, 1, *x.shape[-2:], generator=torch.Generator().manual_seed(self.seed))
            self.maps[key] = drawn.to(x.device, x.dtype)
        return x + self.noise.weight * self.maps[key]  # (1, 1, H, W): the same map for every image


class StyledUpConv(nn.Module):
    """The official ``StyledConv`` with ``upsample=True`` and no style: conv, [noise], bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, inject_noise: bool = True) -> None:
        super().__init__()
        self.inject_noise = inject_noise
        self.conv = UpsampleDemodConv2d(in_channels, out_channels, 3)
        self.noise = NoiseInjection()  # present (a state-dict key) even when not injected, as officially
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.inject_noise:
            out = self.noise(out)
        return self.activate(out)

"""An independent re-implementation of the official SinCUT networks and losses, for equality tests.

Written from ``models/stylegan_networks.py`` and ``models/sincut_model.py`` of
https://github.com/taesungp/contrastive-unpaired-translation (BSD licence), keeping what decides the
numbers and the state-dict layout: the generic ``upfirdn2d`` (zero-insertion upsampling, padding,
flipped FIR, decimation), the per-image grouped convolutions of ``ModulatedConv2d`` (with the
optional style), the module nesting and names (``encoder.convs``, ``decoder.convs``, ``conv1``,
``conv2``, ``skip``, ``final_conv``, ``final_linear``), the channel tables and the R1 penalty.
Options objects are replaced by plain arguments, and an absent style becomes ones on the input's
device instead of ``.cuda()``. Nothing here imports ``cut_hf``, so a mistake in the package cannot
hide in its own reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
    """Upsample by zero insertion, pad (negative pads crop), convolve with ``kernel``, decimate."""
    _, ch, in_h, in_w = x.shape
    kh, kw = kernel.shape
    out = x.reshape(-1, ch, in_h, 1, in_w, 1)
    out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1, 0, 0]).reshape(-1, ch, in_h * up, in_w * up)
    p0, p1 = pad
    out = F.pad(out, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    out = out[:, :, max(-p0, 0): out.shape[2] - max(-p1, 0), max(-p0, 0): out.shape[3] - max(-p1, 0)]
    h, w = out.shape[2], out.shape[3]
    out = F.conv2d(out.reshape(-1, 1, h, w), torch.flip(kernel, [0, 1]).view(1, 1, kh, kw))
    out = out.reshape(-1, ch, h - kh + 1, w - kw + 1)
    return out[:, :, ::down, ::down]


def make_kernel(k):
    k = torch.tensor(k, dtype=torch.float32)
    if k.dim() == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


class Blur(nn.Module):
    def __init__(self, kernel, pad, upsample_factor=1):
        super().__init__()
        kernel = make_kernel(kernel)
        if upsample_factor > 1:
            kernel = kernel * upsample_factor**2
        self.register_buffer("kernel", kernel)
        self.pad = pad

    def forward(self, x):
        return upfirdn2d(x, self.kernel, pad=self.pad)


class EqualConv2d(nn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.scale = 1 / math.sqrt(cin * k**2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    def __init__(self, din, dout, bias=True, bias_init=0, lr_mul=1, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dout, din).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(dout).fill_(bias_init)) if bias else None
        self.activation, self.scale, self.lr_mul = activation, 1 / math.sqrt(din) * lr_mul, lr_mul

    def forward(self, x):
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return F.leaky_relu(out + self.bias * self.lr_mul, 0.2) * 2**0.5
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channel, 1, 1))

    def forward(self, x):
        return F.leaky_relu(x + self.bias, 0.2) * 2**0.5


class ScaledLeakyReLU(nn.Module):
    def forward(self, x):
        return F.leaky_relu(x, negative_slope=0.2) * math.sqrt(2)


class ModulatedConv2d(nn.Module):
    def __init__(self, cin, cout, k, style_dim, demodulate=True, upsample=False, downsample=False,
                 blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.k, self.cin, self.cout, self.upsample, self.downsample = k, cin, cout, upsample, downsample
        if upsample:
            p = (len(blur_kernel) - 2) - (k - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        if downsample:
            p = (len(blur_kernel) - 2) + (k - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1 / math.sqrt(cin * k**2)
        self.padding = k // 2
        self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k))
        if style_dim is not None and style_dim > 0:
            self.modulation = EqualLinear(style_dim, cin, bias_init=1)
        self.demodulate = demodulate

    def forward(self, x, style):
        batch, cin, h, w = x.shape
        if style is not None:
            style = self.modulation(style).view(batch, 1, cin, 1, 1)
        else:
            style = torch.ones(batch, 1, cin, 1, 1, device=x.device)  # the official code: .cuda()
        weight = self.scale * self.weight * style  # (B, out, in, k, k): one filter bank per image
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, self.cout, 1, 1, 1)
        weight = weight.view(batch * self.cout, cin, self.k, self.k)
        if self.upsample:
            weight = weight.view(batch, self.cout, cin, self.k, self.k).transpose(1, 2)
            weight = weight.reshape(batch * cin, self.cout, self.k, self.k)
            out = F.conv_transpose2d(x.view(1, batch * cin, h, w), weight, padding=0, stride=2, groups=batch)
            return self.blur(out.view(batch, self.cout, out.shape[2], out.shape[3]))
        if self.downsample:
            x = self.blur(x)
            out = F.conv2d(x.view(1, batch * cin, x.shape[2], x.shape[3]), weight, padding=0, stride=2, groups=batch)
        else:
            out = F.conv2d(x.view(1, batch * cin, h, w), weight, padding=self.padding, groups=batch)
        return out.view(batch, self.cout, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image, noise=None):
        if noise is None:
            b, _, h, w = image.shape
            noise = image.new_empty(b, 1, h, w).normal_()
        return image + self.weight * noise


class StyledConv(nn.Module):
    def __init__(self, cin, cout, k, style_dim=None, upsample=False, blur_kernel=(1, 3, 3, 1), demodulate=True,
                 inject_noise=True):
        super().__init__()
        self.inject_noise = inject_noise
        self.conv = ModulatedConv2d(cin, cout, k, style_dim, upsample=upsample, blur_kernel=blur_kernel,
                                    demodulate=demodulate)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(cout)

    def forward(self, x, style=None, noise=None):
        out = self.conv(x, style)
        if self.inject_noise:
            out = self.noise(out, noise=noise)
        return self.activate(out)


class ConvLayer(nn.Sequential):
    def __init__(self, cin, cout, k, downsample=False, blur_kernel=(1, 3, 3, 1), bias=True, activate=True):
        layers = []
        if downsample:
            p = (len(blur_kernel) - 2) + (k - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, k // 2
        layers.append(EqualConv2d(cin, cout, k, padding=padding, stride=stride, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(cout) if bias else ScaledLeakyReLU())
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, blur_kernel=(1, 3, 3, 1), downsample=True, skip_gain=1.0):
        super().__init__()
        self.skip_gain = skip_gain
        self.conv1 = ConvLayer(cin, cin, 3)
        self.conv2 = ConvLayer(cin, cout, 3, downsample=downsample, blur_kernel=blur_kernel)
        if cin != cout or downsample:
            self.skip = ConvLayer(cin, cout, 1, downsample=downsample, activate=False, bias=False)
        else:
            self.skip = nn.Identity()

    def forward(self, x):
        out = self.conv2(self.conv1(x))
        return (out * self.skip_gain + self.skip(x)) / math.sqrt(self.skip_gain**2 + 1.0)


def generator_channels(ngf):
    m = ngf / 32
    return {4: min(512, int(round(4096 * m))), 8: min(512, int(round(2048 * m))), 16: min(512, int(round(1024 * m))),
            32: min(512, int(round(512 * m))), 64: int(round(256 * m)), 128: int(round(128 * m)),
            256: int(round(64 * m)), 512: int(round(32 * m)), 1024: int(round(16 * m))}


class StyleGAN2Encoder(nn.Module):
    def __init__(self, ngf=64, n_blocks=6, load_size=1024, crop_size=64, num_downsampling=1):
        super().__init__()
        ch = generator_channels(ngf)
        res = 2 ** int(np.rint(np.log2(min(load_size, crop_size))))
        convs = [nn.Identity(), ConvLayer(3, ch[res], 1)]
        for _ in range(num_downsampling):
            convs.append(ResBlock(ch[res], ch[res // 2], downsample=True))
            res //= 2
        for _ in range(n_blocks // 2):
            convs.append(ResBlock(ch[res], ch[res], downsample=False))
        self.convs = nn.Sequential(*convs)

    def forward(self, x, layers=(), get_features=False):
        feats = []
        for layer_id, layer in enumerate(self.convs):
            x = layer(x)
            if layer_id in layers:
                feats.append(x)
        return (x, feats) if get_features else x


class StyleGAN2Decoder(nn.Module):
    def __init__(self, ngf=64, n_blocks=6, load_size=1024, crop_size=64, num_downsampling=1, small=False):
        super().__init__()
        ch = generator_channels(ngf)
        res = 2 ** int(np.rint(np.log2(min(load_size, crop_size)))) // 2**num_downsampling
        convs = [ResBlock(ch[res], ch[res], downsample=False) for _ in range(n_blocks // 2)]
        for _ in range(num_downsampling):
            convs.append(StyledConv(ch[res], ch[res * 2], 3, upsample=True, inject_noise=not small))
            res *= 2
        convs.append(ConvLayer(ch[res], 3, 1))
        self.convs = nn.Sequential(*convs)

    def forward(self, x):
        return self.convs(x)


class StyleGAN2Generator(nn.Module):
    def __init__(self, ngf=10, n_blocks=6, load_size=1024, crop_size=64, num_downsampling=1):
        super().__init__()
        self.encoder = StyleGAN2Encoder(ngf, n_blocks, load_size, crop_size, num_downsampling)
        self.decoder = StyleGAN2Decoder(ngf, n_blocks, load_size, crop_size, num_downsampling)

    def forward(self, x, layers=(), encode_only=False):
        feat, feats = self.encoder(x, layers, True)
        if encode_only:
            return feats
        fake = self.decoder(feat)
        return (fake, feats) if len(layers) > 0 else fake


class StyleGAN2Discriminator(nn.Module):
    """``netD="stylegan2"`` only (no patch / tile variants)."""

    def __init__(self, ndf=8, load_size=1024, crop_size=64):
        super().__init__()
        size = 2 ** int(np.rint(np.log2(min(load_size, crop_size))))
        m = ndf / 64
        ch = {4: min(384, int(4096 * m)), 8: min(384, int(2048 * m)), 16: min(384, int(1024 * m)),
              32: min(384, int(512 * m)), 64: int(256 * m), 128: int(128 * m), 256: int(64 * m), 512: int(32 * m),
              1024: int(16 * m)}
        convs = [ConvLayer(3, ch[size], 1)]
        cin = ch[size]
        for i in range(int(math.log(size, 2)), 2, -1):
            convs.append(ResBlock(cin, ch[2 ** (i - 1)]))
            cin = ch[2 ** (i - 1)]
        self.convs = nn.Sequential(*convs)
        self.final_conv = ConvLayer(cin, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 4 * 4, ch[4], activation="fused_lrelu"),
                                          EqualLinear(ch[4], 1))

    def forward(self, x):
        out = self.convs(x)
        out = self.final_conv(out)
        return self.final_linear(out.view(out.shape[0], -1))


def r1_loss(real_pred, real_img, lambda_r1=1.0):
    """``SinCUTModel.R1_loss``: squared input gradients summed per image, batch mean, times lambda / 2."""
    grad_real, = torch.autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True, retain_graph=True)
    grad_penalty = grad_real.pow(2).view(grad_real.shape[0], -1).sum(1).mean()
    return grad_penalty * (lambda_r1 * 0.5)


def patch_box(zoomed_w, zoomed_h, index, size, startx, starty):
    """The crop box (left, top, right, bottom) of ``base_dataset.__patch`` for a given offset."""
    nw, nh = zoomed_w // size, zoomed_h // size
    index = index % (nw * nh)
    ix, iy = index // nh, index % nh
    gx, gy = startx + ix * size, starty + iy * size
    return gx, gy, gx + size, gy + size

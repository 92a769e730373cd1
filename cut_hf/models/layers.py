"""Building blocks of the official CUT networks: anti-aliased resampling, ResnetBlock, norms by name.

The module order and buffer names here are a compatibility contract: the official
``latest_net_G.pth`` / ``latest_net_D.pth`` state dicts load into our models with ``strict=True``
only if every registered tensor keeps the name and shape the original code gave it.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

NORMS = ("instance", "batch", "none")


def binomial_filter(size: int) -> torch.Tensor:
    """The normalised 2-D binomial blur kernel of side ``size`` (3 -> [1,2,1], 4 -> [1,3,3,1])."""
    rows = {1: [1.0], 2: [1.0, 1.0], 3: [1.0, 2.0, 1.0], 4: [1.0, 3.0, 3.0, 1.0], 5: [1.0, 4.0, 6.0, 4.0, 1.0]}
    if size not in rows:
        raise ValueError(f"binomial filter size must be 1-5, got {size}")
    a = torch.tensor(rows[size], dtype=torch.float32)
    filt = a[:, None] * a[None, :]
    return filt / filt.sum()


def _autocast_off(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context that turns autocast off for ``x``'s device if it is on (else nothing).

    CPU autocast runs padding and interpolation in float32: a bf16 map goes in, a float32 copy
    (often in the contiguous layout) comes out, and the next convolution casts it back to bf16 and
    to channels-last: three full copies of the map per layer. Padding is exact in any dtype, so
    running it in the input's dtype changes no value the convolution sees.
    """
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


class ReflectionPad2d(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` that pads in its input's dtype and memory format under autocast too
    (see :func:`_autocast_off`); bit-identical outputs, no state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast_off(x):
            return super().forward(x)


class Downsample(nn.Module):
    """Blur then subsample (Zhang, "Making Convolutional Networks Shift-Invariant Again", 2019).

    A depthwise [1,2,1] x [1,2,1] blur with reflect padding, applied with stride 2. The kernel is a
    buffer named ``filt`` of shape (C, 1, k, k) so that it appears in the state dict like the original.

    ``fast`` (the default): on a CPU, a bf16 / fp16 map takes an exact reformulation of the default
    3-tap, stride-2 blur: a 2x2 average pool with stride 1 followed by one with stride 2 is the
    [1,2,1] x [1,2,1] / 16 filter at stride 2. oneDNN's reduced-precision depthwise-convolution
    backward is very slow on the CPU and the pools' is not (bench/RESULTS.md); the result equals the
    convolution's up to one more bf16 rounding (tests/test_fast_paths.py). float32 keeps the
    convolution, which is faster there.
    """

    filt: torch.Tensor  # a buffer

    def __init__(self, channels: int, filt_size: int = 3, stride: int = 2, fast: bool = True) -> None:
        super().__init__()
        self.channels = channels
        self.stride = stride
        self.fast = bool(fast)
        self.pooled = filt_size == 3 and stride == 2  # the exact equivalence above
        lo, hi = (filt_size - 1) // 2, filt_size // 2  # asymmetric for even kernels, as in the original
        self.pad = ReflectionPad2d((lo, hi, lo, hi))
        self.register_buffer("filt", binomial_filter(filt_size)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast and self.pooled and x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
            return F.avg_pool2d(F.avg_pool2d(self.pad(x), 2, stride=1), 2, stride=2)
        return F.conv2d(self.pad(x), self.filt.to(x.dtype), stride=self.stride, groups=x.shape[1])


class Upsample(nn.Module):
    """Zero-insertion upsampling by 2 followed by a fixed [1,3,3,1] blur (a transposed depthwise conv).

    Replication-pads by one pixel, transposes with the scaled kernel, and crops exactly as the
    official ``Upsample`` does. For the default (and official) 4-tap filter with stride 2 that
    whole operation *is* bilinear x2 interpolation (``align_corners=False``): output 2i takes
    3/4 of input i and 1/4 of input i-1, output 2i+1 3/4 of i and 1/4 of i+1, and replication
    padding is the clamp at the edges. ``forward`` then calls ``F.interpolate``, one fused pass,
    faster forward and backward than the depthwise transposed convolution on CPU
    (bench/RESULTS.md); outputs equal the convolution's up to float rounding (~1 ulp). ``filt``
    stays a buffer for the official state dict; like the original, it is a constant, not trained.
    ``fast=False`` (``train.py --no-fast-ops``) always runs the official transposed convolution.
    """

    filt: torch.Tensor  # a buffer

    def __init__(self, channels: int, filt_size: int = 4, stride: int = 2, fast: bool = True) -> None:
        super().__init__()
        self.fast = bool(fast)
        self.channels = channels
        self.stride = stride
        self.filt_odd = filt_size % 2 == 1
        self.pad_size = (filt_size - 1) // 2
        self.pad = nn.ReplicationPad2d(1)
        filt = binomial_filter(filt_size) * stride**2
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))
        self.bilinear = filt_size == 4 and stride == 2  # the exact equivalence above

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bilinear and self.fast:
            with _autocast_off(x):  # in the input's dtype: the next convolution would round to it anyway
                return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.transposed_blur(x)

    def transposed_blur(self, x: torch.Tensor) -> torch.Tensor:
        """The official computation, step by step (every filter size and stride)."""
        out = F.conv_transpose2d(
            self.pad(x), self.filt.to(x.dtype), stride=self.stride, padding=1 + self.pad_size, groups=x.shape[1]
        )[:, :, 1:, 1:]
        return out if self.filt_odd else out[:, :, :-1, :-1]


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` whose output is not a view, so the in-place ReLU after it is cheap.

    ``F.instance_norm`` runs batch norm on a (1, B*C, H, W) view of the input and returns a *view*
    of the result. The official layout follows every norm with an in-place ReLU, and an in-place
    op on a view makes autograd rebuild the whole map in backward (CopySlices / AsStridedBackward:
    a zero-fill and two full copies per norm; bench/RESULTS.md has the cost). Here the very
    same batch-norm call is made and its result is reshaped with ``_unsafe_view``, which autograd
    does not track as a view (PyTorch's own ``matmul`` returns its results that way).
    Outputs and gradients are bit-identical to ``nn.InstanceNorm2d``; the state dict is the same
    (empty) and it is still an ``nn.InstanceNorm2d``. Affine, running-statistics and unbatched
    cases take the parent's path, and so does every case with ``fast=False``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = False,
                 track_running_stats: bool = False, fast: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.fast = bool(fast)

    @property
    def fast_path(self) -> bool:
        """Whether batched maps take the fast path (``fast``, no affine, no running statistics)."""
        return self.fast and not self.affine and not self.track_running_stats

    def keeps_channels_last(self, device: torch.device) -> bool:
        """Whether a channels-last map stays channels-last through this norm on ``device`` (the CPU
        fast path, one batch-norm kernel per image: :meth:`_channels_last`)."""
        return self.fast_path and device.type == "cpu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fast_path or x.dim() != 4:
            return super().forward(x)
        b, c, h, w = x.shape
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if channels_last and self.keeps_channels_last(x.device):
            return self._channels_last(x)
        # exactly ATen's instance_norm: batch norm over (1, B*C, H, W) with the input's statistics
        out = torch.batch_norm(x.reshape(1, b * c, h, w), None, None, None, None, True, 0.0, self.eps,
                               torch.backends.cudnn.enabled)
        return torch.ops.aten._unsafe_view(out, (b, c, h, w))

    def _channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """Instance norm of a channels-last map that stays channels-last (CPU).

        The (1, B*C, H, W) view of a channels-last batch does not exist: ``reshape`` copies it to
        the contiguous layout, and every later op and the next convolution pay a layout change.
        Each image is instead batch-normalised on its own (a (1, C, H, W) slice is a view, and the
        CPU batch norm has channels-last kernels); equal to the contiguous path up to float
        rounding (another summation order; tests/test_fast_paths.py).
        """
        def norm(v: torch.Tensor) -> torch.Tensor:
            return torch.batch_norm(v, None, None, None, None, True, 0.0, self.eps, False)

        if x.shape[0] == 1:
            return norm(x)
        return torch.cat([norm(v) for v in x.split(1)])  # split's backward is one cat, no zero-filled maps


def norm_layer(norm: str, channels: int, fast: bool = True) -> nn.Module:
    """A normalisation layer by name: ``instance`` (no affine, no running stats, as in CUT),
    ``batch`` or ``none``. ``fast``: the instance norm's exact fast path (:class:`InstanceNorm2d`)."""
    if norm == "instance":
        return InstanceNorm2d(channels, affine=False, track_running_stats=False, fast=fast)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def conv_bias(norm: str) -> bool:
    """Whether convolutions before a norm carry a bias.

    The original code gives them a bias only with instance norm (batch norm has its own shift, and
    with ``none`` it falls through to ``False``); checkpoints depend on it, so we keep the rule.
    """
    return norm == "instance"


class ResnetBlock(nn.Module):
    """Two reflect-padded 3x3 convolutions with a skip connection.

    ``conv_block`` indices: 0 pad, 1 conv, 2 norm, 3 ReLU, [4 dropout], then pad, conv, norm; the
    convolution keys are therefore ``conv_block.1.*`` and ``conv_block.5.*`` (``.6.*`` with dropout).
    """

    def __init__(self, dim: int, norm: str = "instance", dropout: bool = False, fast: bool = True) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, bias=bias),
            norm_layer(norm, dim, fast),
            nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=bias),
                   norm_layer(norm, dim, fast)]
        self.conv_block = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The paper code's ``xavier`` init: Xavier-normal weights with gain 0.02 on conv and linear
    layers, zero biases, batch-norm scale ~ N(1, gain). Buffers (the blur filters) are untouched."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

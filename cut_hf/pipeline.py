"""``translate()``: images in, translated PIL images out — any size, any mode, tiles for huge images.

The generator only accepts (B, C, H, W) tensors in [-1, 1] with H and W multiples of 4. This module
does everything around that: loading and channel conversion (:mod:`cut_hf.images`), scaling to
[-1, 1], reflect padding to a multiple of 4 and cropping back, optional resizing, batching of
equal-size images, mixed precision, and a tiled mode whose working memory does not grow with the
image (only its 8-bit input and a float32 output buffer do: ~15 bytes per pixel for RGB).

Tiling and instance norm
------------------------
CUT's generator normalises every feature map with instance norm, i.e. with the mean and variance of
the *whole* map. Run tile by tile, each tile would be normalised with its own statistics and the
tiles would come out with different colours and brightness (visible seams). So the tiled mode works
in two passes:

1. *Statistics*: the generator runs once on the whole image and every ``InstanceNorm2d`` records
   the per-channel mean and variance of its input. When the image exceeds ``max_whole_pixels``
   the statistics are estimated within that budget instead: by default from full-resolution crops
   spread over the image and run as one batch whose norms pool over all crops (``tile_stats=
   "crops"``), or from a downscaled copy (``"downscale"``; less faithful, see :func:`_norm_stats`).
2. *Tiles*: overlapping tiles (each read with ``tile_margin`` pixels of context on every side, which
   are computed and thrown away) run through a copy of the generator whose instance norms use the
   frozen statistics of pass 1. With fixed statistics the network is a purely local operator, so a
   tile's centre equals the whole-image result up to the far tail of the receptive field; overlaps
   between neighbouring tiles are cross-faded with a raised-cosine window to hide what is left.

The copy shares all parameters with the user's generator (no weights are duplicated) and swaps only
its norm modules, so the user's model is never modified, even while the call runs.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .images import (
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    check_pixels,
    load_image,
    pil_to_uint8,
    tensor_to_pil,
    uint8_to_unit,
)

PRECISIONS = ("fp32", "bf16", "fp16")

#: Largest image (after ``size`` resizing, in pixels) run in one piece when ``tile`` is None;
#: bigger images are tiled automatically with :data:`DEFAULT_TILE`. A forward of the default
#: generator (ngf 64) in fp32 on CPU takes about 1.9 GB per megapixel (measured, peak RSS at
#: 512 x 512), so 1 Mpx (1024 x 1024) keeps a call near 2 GB above the model. Also the area of the
#: statistics pass of the tiled mode.
DEFAULT_MAX_WHOLE_PIXELS = 1 << 20
#: Output pixels per tile side in the tiled mode (each forward sees ``tile + 2 * margin`` per side:
#: 896^2 = 0.8 Mpx by default, below the statistics pass, which then sets the peak).
DEFAULT_TILE = 768
#: Side of the full-resolution crops that estimate norm statistics of images over the budget.
STATS_CROP = 512
#: At most this many crops (the budget also bounds them).
STATS_MAX_CROPS = 64
#: Context read around each tile and discarded; a multiple of 4. Measured with a 9-block generator
#: given sharp random weights: 64 px brings tiles to the whole-image result within 5e-6, 32 px 3e-2.
DEFAULT_TILE_MARGIN = 64
#: Width of the cross-faded band between neighbouring tiles; a multiple of 4.
DEFAULT_TILE_OVERLAP = 32
#: The generator needs H, W multiples of 4 (two stride-2 stages) and at least 8 (its reflect pads).
MULTIPLE, MIN_SIDE = 4, 8

ImageLike = Union[Image.Image, str, os.PathLike, np.ndarray, torch.Tensor]


# ----------------------------------------------------------------------------------------- setup
def resolve_device(device: str | torch.device | None = None, generator: nn.Module | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` picks the generator's device when it is not the CPU,
    else CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    if generator is not None:
        param = next(iter(generator.parameters()), None)
        if param is not None and param.device.type != "cpu":
            return param.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None for fp32); raises ValueError for
    unknown names and for fp16 off CUDA (CPU kernels for fp16 are slow or missing; bf16 is the CPU's
    reduced precision)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device (got {device.type}); use 'bf16' or 'fp32'")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _channels(generator: nn.Module) -> tuple[int, int]:
    """(input, output) channel counts: the ``input_nc``/``output_nc`` attributes of a CUTGenerator,
    else the first and last convolution."""
    convs = [m for m in generator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    c_in = getattr(generator, "input_nc", None) or (convs[0].in_channels if convs else None)
    c_out = getattr(generator, "output_nc", None) or (convs[-1].out_channels if convs else None)
    if c_in is None or c_out is None:
        raise TypeError(f"cannot tell the channel counts of {type(generator).__name__}: give it input_nc/output_nc")
    return int(c_in), int(c_out)


@contextlib.contextmanager
def _prepared(generator: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """The generator in eval mode on ``device`` for the duration; its mode and device are restored."""
    was_training = generator.training
    param = next(iter(generator.parameters()), None)
    home = param.device if param is not None else device
    generator.eval()
    if home != device:
        generator.to(device)
    try:
        yield generator
    finally:
        if home != device:
            generator.to(home)
        generator.train(was_training)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Inputs stay 8-bit (a quarter of the memory) until they run: uint8 -> float in [-1, 1]."""
    return uint8_to_unit(x) if x.dtype == torch.uint8 else x


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = _as_float(x.to(device))  # uint8 travels to the GPU, 4x less to copy
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---------------------------------------------------------------------------------------- inputs
def _as_list(image_or_images: object) -> tuple[list, bool]:
    """(items, single): a list/tuple or a (B, C, H, W) tensor is many images, anything else one."""
    if isinstance(image_or_images, torch.Tensor):
        if image_or_images.ndim == 3:
            return [image_or_images], True
        if image_or_images.ndim == 4:
            return list(image_or_images), False
        raise ValueError(f"a tensor input must be (C, H, W) or (B, C, H, W), got shape {tuple(image_or_images.shape)}")
    if isinstance(image_or_images, (list, tuple)):
        return list(image_or_images), False
    return [image_or_images], True


def _tensor_input(x: torch.Tensor, channels: int, max_pixels: int | None) -> torch.Tensor:
    """Check a (C, H, W) tensor; return it on the CPU as uint8 or as float32 in [-1, 1].

    uint8 tensors are taken as [0, 255] images (scaled when run); float tensors must already be in [-1, 1]
    (an out-of-range tensor is refused, and an all-non-negative one warns: it is probably [0, 1]).
    """
    if x.ndim != 3:
        raise ValueError(f"each tensor image must be (C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] != channels:
        raise ValueError(f"tensor has {x.shape[0]} channels but the generator takes {channels}")
    check_pixels(x.shape[2], x.shape[1], max_pixels, "tensor image")
    if x.dtype == torch.uint8:
        return x.detach().cpu()
    if not x.is_floating_point():
        raise ValueError(f"tensor dtype {x.dtype} not supported: use float in [-1, 1] or uint8 in [0, 255]")
    x = x.detach().cpu().float()
    if not torch.isfinite(x).all():
        raise ValueError("tensor image contains NaN or inf")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1.001 or hi > 1.001:
        hint = " (looks like [0, 255]: use x / 127.5 - 1)" if hi > 2 else ""
        raise ValueError(f"tensor values must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}]{hint}")
    if lo >= 0.0:
        warnings.warn(
            "tensor image has no negative values: translate expects [-1, 1]; if it is in [0, 1], pass x * 2 - 1",
            stacklevel=3,
        )
    return x.clamp_(-1.0, 1.0)


def _to_tensor(item: object, channels: int, max_pixels: int | None) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return _tensor_input(item, channels, max_pixels)
    if isinstance(item, (Image.Image, str, os.PathLike, np.ndarray, bytes)):
        return pil_to_uint8(load_image(item, channels, max_pixels=max_pixels))  # (C, H, W) uint8
    raise ImageLoadError(f"cannot translate a {type(item).__name__}: pass PIL images, paths, arrays or tensors")


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) with the shorter side set to ``size`` snapped to the nearest multiple of 4 (halves up,
    at least 4), the longer side scaled in proportion."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    short = max(MULTIPLE, int(size / MULTIPLE + 0.5) * MULTIPLE)
    scale = short / min(height, width)
    if height <= width:
        return short, max(1, int(round(width * scale)))
    return max(1, int(round(height * scale))), short


def _resize(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of a (..., C, H, W) tensor in [-1, 1], clamped back into range."""
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    return TF.resize(x, list(shape), interpolation=InterpolationMode.BICUBIC, antialias=True).clamp_(-1.0, 1.0)


# ------------------------------------------------------------------------------------- whole path
def _pad_amounts(n: int) -> tuple[int, int]:
    """(before, after) padding that brings a side of ``n`` to a multiple of 4, at least 8."""
    target = max(MIN_SIDE, -(-n // MULTIPLE) * MULTIPLE)
    pad = target - n
    return pad // 2, pad - pad // 2


def _pad(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Reflect-pad (B, C, H, W) to multiples of 4; replicate where the image is too small to reflect."""
    top, bottom = _pad_amounts(x.shape[-2])
    left, right = _pad_amounts(x.shape[-1])
    pads = (left, right, top, bottom)
    if not any(pads):
        return x, pads
    reflectable = max(top, bottom) < x.shape[-2] and max(left, right) < x.shape[-1]
    return F.pad(x, pads, mode="reflect" if reflectable else "replicate"), pads


def _unpad(y: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    left, right, top, bottom = pads
    return y[..., top : y.shape[-2] - bottom, left : y.shape[-1] - right]


def _run_whole(
    model: nn.Module, x: torch.Tensor, device: torch.device, dtype: torch.dtype | None, channels_last: bool
) -> torch.Tensor:
    """Translate a CPU batch (B, C, H, W) of any H, W in one forward; returns float32 on the CPU."""
    xp, pads = _pad(x)
    with _autocast(device, dtype):
        y = model(_to_device(xp, device, channels_last))
    return _unpad(y.float(), pads).cpu()


# ------------------------------------------------------------------------------------- tiled path
class _InstanceNorm(nn.Module):
    """Stand-in for an ``InstanceNorm2d`` (which it keeps for ``eps`` and the optional affine).

    Written with element-wise ops, so it keeps a channels-last input channels-last (the built-in
    one returns NCHW, which sends the next convolution back to its slow bf16 path on CPU).
    ``stats=None`` normalises with the input's own per-channel mean and biased variance, like the
    original, and with ``record=True`` keeps them in ``self.stats``; ``pool=True`` takes them over
    the whole batch, as if its images were pieces of one image. Given ``stats`` (mean, var) of
    shape (1, C, 1, 1) it normalises with those instead (the frozen statistics of tiling).
    """

    def __init__(
        self,
        norm: nn.InstanceNorm2d,
        stats: tuple[torch.Tensor, torch.Tensor] | None = None,
        record: bool = False,
        pool: bool = False,
    ) -> None:
        super().__init__()
        self.norm = norm  # shared with the user's model, not copied
        self.frozen = stats
        self.record = record
        self.dims = (0, 2, 3) if pool else (2, 3)
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()  # statistics in float32 even under autocast
        if self.frozen is not None:
            mean, var = self.frozen
        else:
            var, mean = torch.var_mean(xf, dim=self.dims, keepdim=True, correction=0)  # (B or 1, C, 1, 1)
            if self.record:
                if self.stats is not None:
                    raise RuntimeError("an InstanceNorm2d is called twice per forward; tiling cannot freeze it")
                self.stats = (mean, var)
        y = (xf - mean) * torch.rsqrt(var + self.norm.eps)
        if self.norm.affine:
            y = y * self.norm.weight.float()[None, :, None, None] + self.norm.bias.float()[None, :, None, None]
        return y.to(x.dtype)


def _uses_instance_stats(module: nn.Module) -> bool:
    """An InstanceNorm2d that normalises with the statistics of its input (the CUT case)."""
    return isinstance(module, nn.InstanceNorm2d) and (module.training or not module.track_running_stats)


def _swap_norms(module: nn.Module, make: object, prefix: str = "") -> nn.Module:
    """A structural copy of ``module`` whose instance norms are replaced by ``make(name, norm)``.

    Every sub-module is shallow-copied (``copy.copy``: parameters and buffers are the same tensors),
    and only the copies' child dicts are rebuilt, so the original is untouched and no weight memory
    is duplicated.
    """
    # A torch.compile wrapper calls its original module directly, so swap inside that module instead.
    module = getattr(module, "_orig_mod", module)
    clone = copy.copy(module)
    clone._modules = {}
    for name, child in module._modules.items():
        full = f"{prefix}{name}"
        if child is None:
            clone._modules[name] = None
        elif _uses_instance_stats(child):
            clone._modules[name] = make(full, child)
        else:
            clone._modules[name] = _swap_norms(child, make, full + ".")
    return clone


def _tile_layout(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis of length ``n`` (a multiple of 4): (start, size, overlap_before, overlap_after).

    Starts are multiples of 4, so every tile meets the stride-2 sampling grids exactly where the
    whole image does; the last tile is moved back to end at ``n`` (its overlap may be larger).
    """
    if n <= tile:
        return [(0, n, 0, 0)]
    starts = list(range(0, n - tile, tile - overlap)) + [n - tile]
    layout = []
    for i, s in enumerate(starts):
        before = starts[i - 1] + tile - s if i > 0 else 0
        after = s + tile - starts[i + 1] if i + 1 < len(starts) else 0
        layout.append((s, tile, before, after))
    return layout


def _window(size: int, before: int, after: int) -> torch.Tensor:
    """1-D blending weights of one tile: 1 inside, raised-cosine ramps over the overlaps.

    The ramps of two neighbours over the same band sum to exactly 1 (cos a + cos(pi - a) = 0).
    """
    w = torch.ones(size, dtype=torch.float64)
    if before:
        w[:before] = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(before, dtype=torch.float64) + 0.5) / before)
    if after:
        ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(after, dtype=torch.float64) + 0.5) / after)
        w[size - after :] = w[size - after :] * ramp.flip(0)
    return w


def _stat_crops(h: int, w: int, max_pixels: int) -> tuple[int, list[tuple[int, int]]]:
    """Square crops (side, top-left corners) spread evenly over an (h, w) image, at most
    ``max_pixels`` in all: at least 4 crops when the budget allows (several places of the image
    beat one bigger crop), up to :data:`STATS_CROP` px per side, corners on multiples of 4."""
    side = min(STATS_CROP, h, w, int(math.sqrt(max_pixels / 4)))
    side = max(MIN_SIDE, side // MULTIPLE * MULTIPLE)
    count = max(1, min(STATS_MAX_CROPS, max_pixels // (side * side)))
    # A grid of ny x nx crops in the image's aspect, never more crops per axis than fit side by side.
    ny = min(max(1, round(math.sqrt(count * h / w))), -(-h // side))
    nx = min(max(1, count // ny), -(-w // side))

    def spread(n: int, length: int) -> list[int]:  # crops centred in n equal cells along the axis
        starts = [((i + 0.5) * length / n - side / 2) for i in range(n)]
        return [min(max(0, int(v) // MULTIPLE * MULTIPLE), (length - side) // MULTIPLE * MULTIPLE) for v in starts]

    return side, [(y, x) for y in spread(ny, h) for x in spread(nx, w)]


def _norm_stats(
    model: nn.Module,
    xp: torch.Tensor,
    max_pixels: int,
    device: torch.device,
    dtype: torch.dtype | None,
    channels_last: bool,
    sample: str = "crops",
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pass 1: instance-norm statistics (mean, var), each (1, C, 1, 1), of the padded image (1, C, H, W).

    Exact when H * W fits ``max_pixels``: the whole image runs once. Otherwise they are estimated
    from at most ``max_pixels`` pixels, by ``sample``:

    - ``"crops"``: full-resolution crops spread evenly over the image run as one batch whose
      norms pool their statistics over all crops (as if they were one image).
    - ``"downscale"``: the whole image, downscaled so that its area fits.

    Crops keep the scale the generator sees in the tiles; downscaling changes the frequency
    content and with it the statistics of texture-sensitive layers. Measured on a 384 x 256
    textured image with a sharp 9-block generator, at a quarter of the pixels: mean error of the
    result 0.07 (crops) against 0.37 (downscale), in [-1, 1] units.
    """
    h, w = xp.shape[-2:]
    pool = False
    if h * w > max_pixels:
        if sample == "downscale":
            scale = math.sqrt(max_pixels / (h * w))
            def snap(n: float) -> int:
                return max(MIN_SIDE, int(n) // MULTIPLE * MULTIPLE)

            xp = _resize(_as_float(xp), (snap(h * scale), snap(w * scale)))
        else:
            side, corners = _stat_crops(h, w, max_pixels)
            xp = torch.cat([xp[..., y : y + side, x : x + side] for y, x in corners])  # (K, C, side, side)
            pool = True
    recorders: dict[str, _InstanceNorm] = {}

    def record(name: str, norm: nn.InstanceNorm2d) -> nn.Module:
        recorders[name] = _InstanceNorm(norm, record=True, pool=pool)
        return recorders[name]

    recording = _swap_norms(model, record)
    with _autocast(device, dtype):
        recording(_to_device(xp, device, channels_last))
    missing = [n for n, r in recorders.items() if r.stats is None]
    if missing:
        raise RuntimeError(f"instance norms {missing} were not run by the generator's forward")
    return {n: r.stats for n, r in recorders.items()}  # type: ignore[misc]


def _run_tiled(
    model: nn.Module,
    x: torch.Tensor,
    out_channels: int,
    tile: int,
    margin: int,
    overlap: int,
    stats_pixels: int,
    device: torch.device,
    dtype: torch.dtype | None,
    channels_last: bool,
    stats_sample: str = "crops",
    on_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Translate one CPU image (1, C, H, W) tile by tile with whole-image norm statistics.

    Peak memory: the padded input and a float32 output of the image's size, plus one forward over
    (tile + 2 margin)^2 pixels and one over ``stats_pixels``.
    """
    xp, pads = _pad(x)
    h, w = xp.shape[-2:]
    stats = _norm_stats(model, xp, stats_pixels, device, dtype, channels_last, stats_sample)
    frozen = _swap_norms(model, lambda name, norm: _InstanceNorm(norm, stats[name]))

    rows, cols = _tile_layout(h, tile, overlap), _tile_layout(w, tile, overlap)
    # The tiles form a full grid with separable windows, so the total weight is separable too.
    row_w = [_window(s, b, a) for _, s, b, a in rows]
    col_w = [_window(s, b, a) for _, s, b, a in cols]
    total_r, total_c = torch.zeros(h, dtype=torch.float64), torch.zeros(w, dtype=torch.float64)
    for (y0, th, _, _), wr in zip(rows, row_w):
        total_r[y0 : y0 + th] += wr
    for (x0, tw, _, _), wc in zip(cols, col_w):
        total_c[x0 : x0 + tw] += wc

    out = torch.zeros(1, out_channels, h, w)  # (1, C', H, W) float32 accumulator
    for (y0, th, _, _), wr in zip(rows, row_w):
        iy0, iy1 = max(0, y0 - margin), min(h, y0 + th + margin)  # multiples of 4: grid-aligned
        for (x0, tw, _, _), wc in zip(cols, col_w):
            ix0, ix1 = max(0, x0 - margin), min(w, x0 + tw + margin)
            with _autocast(device, dtype):
                y = frozen(_to_device(xp[..., iy0:iy1, ix0:ix1], device, channels_last))
            core = y[..., y0 - iy0 : y0 - iy0 + th, x0 - ix0 : x0 - ix0 + tw].float().cpu()
            weight = (wr[:, None] * wc[None, :]).float()  # (th, tw)
            out[..., y0 : y0 + th, x0 : x0 + tw].addcmul_(core, weight)
            if on_tile is not None:
                on_tile()
    out /= (total_r[:, None] * total_c[None, :]).float()
    return _unpad(out, pads)


def _check_tiling(tile: int, margin: int, overlap: int) -> tuple[int, int, int]:
    if margin < 0 or overlap < 0:
        raise ValueError(f"tile_margin and tile_overlap must be >= 0, got {margin} and {overlap}")
    tile = max(2 * MIN_SIDE, -(-tile // MULTIPLE) * MULTIPLE)  # round up to a multiple of 4
    margin = -(-margin // MULTIPLE) * MULTIPLE
    overlap = min(-(-overlap // MULTIPLE) * MULTIPLE, tile // 2 // MULTIPLE * MULTIPLE)
    return tile, margin, overlap


# -------------------------------------------------------------------------------------- the call
@dataclass(frozen=True)
class TranslationReport:
    """What :func:`translate` did (``return_report=True``).

    Attributes:
        tiled: whether any image ran in tiles.
        tiles: tiles run over all images (0 when every image ran whole).
        precision: the precision name it ran in (``fp32``, ``bf16``, ``fp16``).
        device: the device it ran on, e.g. ``"cpu"`` or ``"cuda:0"``.
        sizes: the (width, height) each image ran at (after ``size`` resizing), in input order.
    """

    tiled: bool
    tiles: int
    precision: str
    device: str
    sizes: list[tuple[int, int]]


def _tiled_rule(height: int, width: int, tile: int | None, max_whole_pixels: int) -> bool:
    padded = (height + sum(_pad_amounts(height))) * (width + sum(_pad_amounts(width)))
    tile_px = _check_tiling(tile or DEFAULT_TILE, 0, 0)[0]
    return (tile is None and padded > max_whole_pixels) or (bool(tile) and max(height, width) > tile_px)


def will_tile(
    width: int, height: int, tile: int | None = None, size: int | None = None,
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS,
) -> bool:
    """Whether :func:`translate` with these ``tile``/``size``/``max_whole_pixels`` arguments would run
    a ``width`` x ``height`` image in tiles (the same rule translate applies)."""
    if size is not None:
        height, width = resized_shape(height, width, size)
    return _tiled_rule(height, width, tile, max_whole_pixels)


def translate(
    generator: nn.Module,
    image_or_images: ImageLike | Sequence[ImageLike],
    *,
    size: int | None = None,
    keep_size: bool = True,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    tile: int | None = None,
    tile_margin: int = DEFAULT_TILE_MARGIN,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    channels_last: bool | None = None,
    tile_stats: str = "crops",
    progress: Callable[[int, int], None] | None = None,
    return_report: bool = False,
) -> Image.Image | list[Image.Image] | tuple[Image.Image | list[Image.Image], TranslationReport]:
    """Translate one image or many with a CUT generator.

    Args:
        generator: a :class:`~cut_hf.CUTGenerator` (or any generator with ``input_nc``/``output_nc``
            and the same (B, C, H, W) in [-1, 1] contract). It is left as it was found: its
            train/eval mode and device are restored and its modules are never swapped.
        image_or_images: one image or a list of them. Each is a PIL image (any mode: L, LA, RGB,
            RGBA, P, CMYK, I;16, I, F, ...), a path, a numpy array (uint8/uint16, or float in
            [0, 1]) or a tensor (C, H, W) **in [-1, 1]** (uint8 tensors are taken as [0, 255]); a
            (B, C, H, W) tensor is B images. Files get their EXIF orientation applied; every image
            is converted to the generator's ``input_nc`` channels and scaled to [-1, 1]. All
            inputs are loaded up front (8 bits per channel); for a large folder call this per
            chunk, as ``python -m cut_hf.translate`` does.
        size: if set, the shorter side is resized to ``size`` (snapped to a multiple of 4) before
            translating.
        keep_size: with ``size``, resize the result back to the input's size (default) or return
            it at the working size.
        batch_size: images of equal size run together in batches of this many (order is kept).
        device: ``"cpu"``, ``"cuda"``, ... ; ``None``: the generator's device if it is not the CPU,
            else CUDA when available, else the CPU.
        precision: ``"fp32"``, ``"bf16"`` (autocast, also on CPU) or ``"fp16"`` (CUDA only).
        tile: translate images larger than ``tile`` x ``tile`` in overlapping tiles with
            whole-image norm statistics (see the module docstring), bounding memory. ``None``:
            tile automatically (with :data:`DEFAULT_TILE`) only images over ``max_whole_pixels``;
            ``0``: never tile.
        tile_margin: context pixels read around each tile and discarded.
        tile_overlap: width of the cross-faded band between neighbouring tiles.
        max_whole_pixels: the auto-tiling threshold and the area of the statistics pass.
        tile_stats: how the statistics of an image over ``max_whole_pixels`` are estimated:
            ``"crops"`` (full-resolution crops spread over the image, pooled) or ``"downscale"``
            (a downscaled copy). Images within the budget always get exact statistics.
        max_pixels: refuse inputs larger than this (:class:`~cut_hf.images.ImageTooLargeError`).
        progress: called as ``progress(done, total)`` after every tile of a tiled image and after
            every batch of whole images; the units are tiles plus whole images.
        return_report: also return a :class:`TranslationReport` of what was done.
        channels_last: run in the channels-last memory format. ``None``: only for bf16 on the CPU,
            where oneDNN's NCHW bf16 convolutions are very slow on CPUs without native bf16
            (measured 25x slower than channels-last on this project's AVX2 machine).

    Returns:
        A PIL image (``RGB`` for 3 output channels, ``L`` for 1) of the input's size, or a list of
        them for a list or batch input. Output size always equals input size (odd sizes are
        reflect-padded and cropped back), except with ``size`` and ``keep_size=False``. With
        ``return_report=True``: ``(output, report)``.

    Raises:
        ImageLoadError: an input cannot be read (the message names it).
        ValueError: bad arguments, e.g. ``precision="fp16"`` on the CPU or a tensor outside [-1, 1].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device, generator)
    dtype = autocast_dtype(precision, dev)
    tile_px, margin, overlap = _check_tiling(tile or DEFAULT_TILE, tile_margin, tile_overlap)
    if tile_stats not in ("crops", "downscale"):
        raise ValueError(f"tile_stats must be 'crops' or 'downscale', got {tile_stats!r}")
    in_nc, out_nc = _channels(generator)
    cl = (dev.type == "cpu" and dtype is not None) if channels_last is None else bool(channels_last)

    items, single = _as_list(image_or_images)
    inputs = [_to_tensor(item, in_nc, max_pixels) for item in items]  # (C, H, W) uint8 or [-1, 1], CPU
    original = [tuple(x.shape[-2:]) for x in inputs]
    if size is not None:
        inputs = [_resize(_as_float(x), resized_shape(*x.shape[-2:], size)) for x in inputs]

    # Group equal sizes (first-seen order); results go back to their input positions.
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape[-2:]), []).append(i)

    def finish(i: int, y: torch.Tensor) -> Image.Image:  # y: (C', h, w) float in [-1, 1]
        if size is not None and keep_size:
            y = _resize(y, original[i])
        return tensor_to_pil(y)

    tiled_groups = {hw: _tiled_rule(*hw, tile, max_whole_pixels) for hw in groups}
    def n_tiles(h: int, w: int) -> int:
        ph, pw = h + sum(_pad_amounts(h)), w + sum(_pad_amounts(w))
        return len(_tile_layout(ph, tile_px, overlap)) * len(_tile_layout(pw, tile_px, overlap))

    tiles = sum(n_tiles(*hw) * len(ix) for hw, ix in groups.items() if tiled_groups[hw])
    total = tiles + sum(len(ix) for hw, ix in groups.items() if not tiled_groups[hw])
    done = 0

    def advance(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    report = TranslationReport(tiled=tiles > 0, tiles=tiles, precision=precision, device=str(dev),
                               sizes=[(x.shape[-1], x.shape[-2]) for x in inputs])
    results: list[Image.Image | None] = [None] * len(inputs)
    with _prepared(generator, dev) as model, torch.inference_mode():
        # Channels-last needs instance norms that keep the layout: run a norm-swapped structural copy.
        whole = _swap_norms(model, lambda name, norm: _InstanceNorm(norm)) if cl else model
        for (h, w), indices in groups.items():
            if tiled_groups[(h, w)]:
                for i in indices:
                    y = _run_tiled(
                        model, inputs[i][None], out_nc, tile_px, margin, overlap, max_whole_pixels, dev, dtype, cl,
                        tile_stats, on_tile=advance,
                    )
                    results[i] = finish(i, y[0])
                    inputs[i] = None  # type: ignore[call-overload]  # free the input early
                continue
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                parts = [inputs[i] for i in chunk]
                if any(t.dtype != parts[0].dtype for t in parts):  # PIL (uint8) and float tensors mixed
                    parts = [_as_float(t) for t in parts]
                y = _run_whole(whole, torch.stack(parts), dev, dtype, cl)
                for i, yi in zip(chunk, y):
                    results[i] = finish(i, yi)
                    inputs[i] = None  # type: ignore[call-overload]
                advance(len(chunk))
    output = results[0] if single else results
    return (output, report) if return_report else output  # type: ignore[return-value]

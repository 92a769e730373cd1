"""Run a generator on CPU tensors: whole, or tiled with whole-image instance-norm statistics.

:func:`cut_hf.translation.pipeline.translate` turns images into tensors and back; this module runs them. The
generator takes (B, C, H, W) in [-1, 1] with H and W multiples of 4: inputs are reflect-padded and
cropped back. The tiled mode's working memory does not grow with the image (only its 8-bit input
and a float32 output buffer do).

Tiling and instance norm: CUT's generator normalises every feature map with the mean and variance
of the *whole* map, so tiles run on their own would each get their own statistics (seams, colour
shifts). The tiled mode works in two passes:

1. *Statistics*: the generator runs once on the whole image and every ``InstanceNorm2d`` records
   the per-channel mean and variance of its input. Over the budget (``Tiling.max_whole_pixels``) they
   are estimated within it: from full-resolution crops spread over the image, run as one batch
   whose norms pool over all crops (``"crops"``), or from a downscaled copy (``"downscale"``).
2. *Tiles*: overlapping tiles, each read with ``margin`` pixels of context that are computed and
   thrown away, run through a copy of the generator whose norms use the frozen statistics. With
   fixed statistics the network is a local operator, so a tile's centre equals the whole-image
   result up to the far tail of the receptive field; overlaps are cross-faded with raised-cosine
   windows to hide what is left.

The copy shares all parameters with the user's generator and swaps only its norm modules, so the
user's model is never modified, even while the call runs.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from cut_hf.images import uint8_to_unit
from cut_hf.models.layers import InstanceNorm2d
from cut_hf.precision import autocast, autocast_dtype

#: Largest image (after resizing, in pixels) run in one piece when no tile size is given; bigger
#: images are tiled with :data:`DEFAULT_TILE`. A forward's activations grow with the image's
#: area, so this bounds the memory of a call (bench/RESULTS.md has figures). Also the area of the
#: statistics pass of the tiled mode.
DEFAULT_MAX_WHOLE_PIXELS = 1 << 20
#: Output pixels per tile side in the tiled mode (each forward sees ``tile + 2 * margin`` per side,
#: below the statistics pass by default, which then sets the peak).
DEFAULT_TILE = 768
#: Side of the full-resolution crops that estimate norm statistics of images over the budget.
STATS_CROP = 512
#: At most this many crops (the budget also bounds them).
STATS_MAX_CROPS = 64
#: Context read around each tile and discarded; a multiple of 4. It must cover the part of the
#: receptive field that still matters (tests/translation/test_pipeline.py checks tiles against the whole image).
DEFAULT_TILE_MARGIN = 64
#: Width of the cross-faded band between neighbouring tiles; a multiple of 4.
DEFAULT_TILE_OVERLAP = 32
#: The generator needs H, W multiples of 4 (two stride-2 stages) and at least 8 (its reflect pads).
MULTIPLE, MIN_SIDE = 4, 8
#: Smallest tile side (and never below the margin): below it most of every forward is discarded context.
MIN_TILE = 128
#: How statistics of an image over the budget are estimated (see :func:`norm_stats`).
STATS_SAMPLES = ("crops", "downscale")


# ----------------------------------------------------------------------------------------- setup
def as_float(x: torch.Tensor) -> torch.Tensor:
    """Inputs stay 8-bit (a quarter of the memory) until they run: uint8 -> float in [-1, 1]."""
    return uint8_to_unit(x) if x.dtype == torch.uint8 else x


def resize(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of a (..., C, H, W) tensor in [-1, 1], clamped back into range."""
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    return TF.resize(as_float(x), list(shape), interpolation=InterpolationMode.BICUBIC, antialias=True).clamp_(-1, 1)


@dataclass(frozen=True)
class Runner:
    """How a generator runs: on which device, in which precision, in which memory format."""

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        autocast_dtype(self.precision, self.device)  # unknown names and fp16 off CUDA fail here

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this precision on this device (nothing for fp32)."""
        return autocast(self.device, self.precision)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A CPU tensor on the device as float in [-1, 1], in the chosen memory format."""
        x = as_float(x.to(self.device))  # uint8 travels to the GPU, 4x less to copy
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


@dataclass(frozen=True)
class Tiling:
    """When and how an image runs in tiles (the tiling knobs of :func:`~cut_hf.translation.pipeline.translate`).

    Attributes:
        tile: ``None`` tiles only images whose padded area exceeds ``max_whole_pixels``, in
            :data:`DEFAULT_TILE` px tiles; ``0`` never tiles; ``N`` tiles images with a side longer
            than N, in N x N tiles (rounded up to a multiple of 4). N must be at least
            :data:`MIN_TILE` and at least ``margin``: smaller tiles spend most of each forward on the
            context around them (a 512 px image in 10 px tiles is 3,969 forwards).
        margin: context pixels read around each tile and discarded (rounded up to a multiple of 4).
        overlap: width of the cross-faded band between neighbouring tiles (at most half a tile).
        max_whole_pixels: the automatic threshold above, and the area of the statistics pass.
        stats_sample: how statistics of an image over ``max_whole_pixels`` are estimated:
            ``"crops"`` or ``"downscale"`` (see :func:`norm_stats`).

    Raises ValueError (one line) for a tile below the minimum, a negative margin or overlap, or an
    unknown ``stats_sample``.
    """

    tile: int | None = None
    margin: int = DEFAULT_TILE_MARGIN
    overlap: int = DEFAULT_TILE_OVERLAP
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS
    stats_sample: str = "crops"

    def __post_init__(self) -> None:
        if self.margin < 0 or self.overlap < 0:
            raise ValueError(f"tile margin and overlap must be >= 0, got {self.margin} and {self.overlap}")
        if self.stats_sample not in STATS_SAMPLES:
            raise ValueError(f"tile statistics must be 'crops' or 'downscale', got {self.stats_sample!r}")
        margin = -(-self.margin // MULTIPLE) * MULTIPLE
        smallest = max(MIN_TILE, margin)
        if self.tile is not None and (self.tile < 0 or 0 < self.tile < smallest):
            raise ValueError(f"tile {self.tile} px is too small: tiles must be at least {smallest} px (each one "
                             f"computes {margin} px of context on every side); use 0 to never tile")
        if self.tile:
            object.__setattr__(self, "tile", -(-self.tile // MULTIPLE) * MULTIPLE)
        object.__setattr__(self, "margin", margin)
        overlap = -(-self.overlap // MULTIPLE) * MULTIPLE
        object.__setattr__(self, "overlap", min(overlap, self.side // 2 // MULTIPLE * MULTIPLE))

    @property
    def side(self) -> int:
        """Output pixels per tile side when an image is tiled (``tile``, or :data:`DEFAULT_TILE`)."""
        return self.tile or DEFAULT_TILE

    def applies_to(self, height: int, width: int) -> bool:
        """Whether an image of ``height`` x ``width`` runs in tiles (the rule of ``tile`` above)."""
        if self.tile is None:
            return padded_side(height) * padded_side(width) > self.max_whole_pixels
        return bool(self.tile) and max(height, width) > self.tile

    def count(self, height: int, width: int) -> int:
        """Tiles of an image of ``height`` x ``width`` (before padding) when it is tiled."""
        ph, pw = (padded_side(n) for n in (height, width))
        return len(tile_layout(ph, self.side, self.overlap)) * len(tile_layout(pw, self.side, self.overlap))


# ------------------------------------------------------------------------------------- whole path
def padded_side(n: int) -> int:
    """A side of ``n`` pixels padded to what the generator takes: a multiple of 4, at least 8."""
    return max(MIN_SIDE, -(-n // MULTIPLE) * MULTIPLE)


def pad(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Reflect-pad (B, C, H, W) to multiples of 4; replicate where the image is too small to reflect."""
    (top, bottom), (left, right) = ((p // 2, p - p // 2) for p in (padded_side(n) - n for n in x.shape[-2:]))
    pads = (left, right, top, bottom)
    if not any(pads):
        return x, pads
    reflectable = max(top, bottom) < x.shape[-2] and max(left, right) < x.shape[-1]
    return F.pad(x, pads, mode="reflect" if reflectable else "replicate"), pads


def unpad(y: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Crop what :func:`pad` added."""
    left, right, top, bottom = pads
    return y[..., top : y.shape[-2] - bottom, left : y.shape[-1] - right]


def run_whole(model: nn.Module, x: torch.Tensor, runner: Runner) -> torch.Tensor:
    """Translate a CPU batch (B, C, H, W) of any H, W in one forward; returns float32 on the CPU."""
    xp, pads = pad(x)
    with runner.autocast():
        y = model(runner.to_device(xp))
    return unpad(y.float(), pads).cpu()


# ------------------------------------------------------------------------------------- norm swaps
class StatsInstanceNorm(nn.Module):
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


def _uses_instance_stats(module: nn.Module) -> TypeGuard[nn.InstanceNorm2d]:
    """An InstanceNorm2d that normalises with the statistics of its input (the CUT case)."""
    return isinstance(module, nn.InstanceNorm2d) and (module.training or not module.track_running_stats)


def swap_modules(
    module: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[str, nn.Module], nn.Module],
    prefix: str = "",
) -> nn.Module:
    """A structural copy of ``module`` whose sub-modules ``m`` with ``match(m)`` are replaced by ``make(name, m)``.

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
        elif match(child):
            clone._modules[name] = make(full, child)
        else:
            clone._modules[name] = swap_modules(child, match, make, full + ".")
    return clone


def swap_norms(module: nn.Module, make: Callable[[str, nn.InstanceNorm2d], nn.Module]) -> nn.Module:
    """:func:`swap_modules` of the instance norms that normalise with their input's statistics."""
    return swap_modules(module, _uses_instance_stats, make)  # type: ignore[arg-type]


def freeze_norms(model: nn.Module, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """A copy of ``model`` whose instance norms use ``stats`` (from :func:`norm_stats`): a local operator.
    Statistics of shape (B, C, 1, 1) give each image of a batch its own."""
    return swap_norms(model, lambda name, norm: StatsInstanceNorm(norm, stats[name]))


def keeps_channels_last(norm: nn.Module, device: torch.device) -> bool:
    """Whether ``norm`` already keeps a channels-last map channels-last on ``device`` (the fast
    :class:`cut_hf.models.layers.InstanceNorm2d` on the CPU, with one batch-norm kernel per image)."""
    return isinstance(norm, InstanceNorm2d) and norm.keeps_channels_last(device)


def layout_keeping(model: nn.Module, runner: Runner) -> nn.Module:
    """``model`` itself, or in channels-last a copy whose instance norms keep that layout."""
    if not runner.channels_last:
        return model
    return swap_norms(model, lambda name, norm: norm if keeps_channels_last(norm, runner.device)
                      else StatsInstanceNorm(norm))


# ------------------------------------------------------------------------------------- tiled path
def tile_layout(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis of length ``n`` (a multiple of 4): (start, size, overlap_before, overlap_after).

    Starts are multiples of 4, so every tile meets the stride-2 sampling grids exactly where the
    whole image does; the last tile is moved back to end at ``n`` (its overlap may be larger).
    """
    if n <= tile:
        return [(0, n, 0, 0)]
    starts = [*range(0, n - tile, tile - overlap), n - tile]
    layout = []
    for i, s in enumerate(starts):
        before = starts[i - 1] + tile - s if i > 0 else 0
        after = s + tile - starts[i + 1] if i + 1 < len(starts) else 0
        layout.append((s, tile, before, after))
    return layout


def window(size: int, before: int, after: int) -> torch.Tensor:
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


def stat_crops(h: int, w: int, max_pixels: int) -> tuple[int, list[tuple[int, int]]]:
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


def _stats_input(xp: torch.Tensor, max_pixels: int, sample: str) -> tuple[torch.Tensor, bool]:
    """What the statistics pass runs on, and whether its norms pool over the batch (crops, or the
    N frames of a clip sharing one set of statistics)."""
    n, (h, w) = xp.shape[0], xp.shape[-2:]
    if n * h * w <= max_pixels:
        return xp, n > 1
    if sample == "downscale":
        scale = math.sqrt(max_pixels / (n * h * w))
        h2, w2 = (max(MIN_SIDE, int(s * scale) // MULTIPLE * MULTIPLE) for s in (h, w))
        return resize(xp, (h2, w2)), n > 1
    side, corners = stat_crops(h, w, max(1, max_pixels // n))  # the same crops of every frame
    return torch.cat([xp[..., y : y + side, x : x + side] for y, x in corners]), True  # (N K, C, side, side)


def norm_stats(
    model: nn.Module, xp: torch.Tensor, max_pixels: int, runner: Runner, sample: str = "crops"
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Pass 1: instance-norm statistics (mean, var), each (1, C, 1, 1), of the padded image (1, C, H, W),
    or pooled over N frames (N, C, H, W) of a clip as if they were pieces of one image.

    Exact when N * H * W fits ``max_pixels`` (everything runs once); otherwise estimated from at
    most ``max_pixels`` pixels by ``sample``: ``"crops"`` (full-resolution crops spread over the
    image, run as one batch whose norms pool over all crops) or ``"downscale"`` (the whole image,
    downscaled). Crops keep the scale the tiles see; downscaling changes the frequency content and
    with it the statistics of texture-sensitive layers (tests/translation/test_pipeline.py compares the two).
    """
    x, pool = _stats_input(xp, max_pixels, sample)
    recorders: dict[str, StatsInstanceNorm] = {}

    def record(name: str, norm: nn.InstanceNorm2d) -> nn.Module:
        recorders[name] = StatsInstanceNorm(norm, record=True, pool=pool)
        return recorders[name]

    recording = swap_norms(model, record)
    with runner.autocast():
        recording(runner.to_device(x))
    stats = {n: r.stats for n, r in recorders.items() if r.stats is not None}
    if len(stats) < len(recorders):
        missing = sorted(set(recorders) - set(stats))
        raise RuntimeError(f"instance norms {missing} were not run by the generator's forward")
    return stats


def _total_weight(rows: list, cols: list, row_w: list, col_w: list, h: int, w: int) -> torch.Tensor:
    """The summed blending weight per pixel: the tiles form a full grid of separable windows."""
    total_r, total_c = torch.zeros(h, dtype=torch.float64), torch.zeros(w, dtype=torch.float64)
    for (y0, th, _, _), wr in zip(rows, row_w, strict=True):
        total_r[y0 : y0 + th] += wr
    for (x0, tw, _, _), wc in zip(cols, col_w, strict=True):
        total_c[x0 : x0 + tw] += wc
    return (total_r[:, None] * total_c[None, :]).float()  # (H, W)


def run_tiled(
    model: nn.Module,
    x: torch.Tensor,
    out_channels: int,
    tiling: Tiling,
    runner: Runner,
    on_tile: Callable[[], None] | None = None,
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Translate one CPU image (1, C, H, W) tile by tile with whole-image norm statistics; calls
    ``on_tile()`` after each tile. Returns float32 (1, C', H, W) on the CPU. ``stats``: statistics
    taken elsewhere (:func:`norm_stats` of a whole clip, say) instead of this image's own.

    Peak memory: the padded input and a float32 output of the image's size, plus one forward over
    (tile + 2 margin)^2 pixels and one over ``tiling.max_whole_pixels``.
    """
    xp, pads = pad(x)
    h, w = xp.shape[-2:]
    tile, margin = tiling.side, tiling.margin
    if stats is None:
        stats = norm_stats(model, xp, tiling.max_whole_pixels, runner, tiling.stats_sample)
    frozen = freeze_norms(model, stats)

    rows, cols = tile_layout(h, tile, tiling.overlap), tile_layout(w, tile, tiling.overlap)
    row_w = [window(s, b, a) for _, s, b, a in rows]
    col_w = [window(s, b, a) for _, s, b, a in cols]
    out = torch.zeros(1, out_channels, h, w)  # (1, C', H, W) float32 accumulator
    for (y0, th, _, _), wr in zip(rows, row_w, strict=True):
        iy0, iy1 = max(0, y0 - margin), min(h, y0 + th + margin)  # multiples of 4: grid-aligned
        for (x0, tw, _, _), wc in zip(cols, col_w, strict=True):
            ix0, ix1 = max(0, x0 - margin), min(w, x0 + tw + margin)
            with runner.autocast():
                y = frozen(runner.to_device(xp[..., iy0:iy1, ix0:ix1]))
            core = y[..., y0 - iy0 : y0 - iy0 + th, x0 - ix0 : x0 - ix0 + tw].float().cpu()
            out[..., y0 : y0 + th, x0 : x0 + tw].addcmul_(core, (wr[:, None] * wc[None, :]).float())
            if on_tile is not None:
                on_tile()
    out /= _total_weight(rows, cols, row_w, col_w, h, w)
    return unpad(out, pads)

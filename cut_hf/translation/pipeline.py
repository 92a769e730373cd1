"""``translate()``: images in, translated PIL images out — any size, any mode, tiles for huge images.

This module turns inputs into tensors and results into images: loading and channel conversion
(:mod:`cut_hf.images`), scaling to [-1, 1], optional resizing, batching of equal-size images, and
the choice of whole or tiled running. Running itself, the padding to multiples of 4 and the tiled
mode with whole-image instance-norm statistics, is :mod:`cut_hf.translation.inference`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal, overload

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from cut_hf.images import DEFAULT_MAX_PIXELS, ImageLoadError, check_pixels, load_image, pil_to_uint8, tensor_to_pil
from cut_hf.perf import channels_last_default, default_device
from cut_hf.precision import check_inference_precision
from cut_hf.translation.inference import (
    MULTIPLE,
    Runner,
    Tiling,
    as_float,
    layout_keeping,
    resize,
    run_tiled,
    run_whole,
)
from cut_hf.translation.quantize import MAX_CALIBRATION_IMAGES, int8_generator, size_class

__all__ = [
    "ImageLike", "Tiling", "TranslationReport", "io_channels", "resized_shape", "resolve_device", "translate",
    "will_tile",
]

ImageLike = Image.Image | str | os.PathLike | np.ndarray | torch.Tensor


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


# ----------------------------------------------------------------------------------------- setup
def resolve_device(device: str | torch.device | None = None, generator: nn.Module | None = None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` picks the generator's device when it is not the CPU,
    else :func:`cut_hf.perf.default_device` (CUDA, then MPS / XPU, then the CPU)."""
    if device is not None:
        return torch.device(device)
    if generator is not None:
        param = next(iter(generator.parameters()), None)
        if param is not None and param.device.type != "cpu":
            return param.device
    return default_device()


def io_channels(generator: nn.Module) -> tuple[int, int]:
    """(input, output) channel counts: the ``input_nc``/``output_nc`` attributes of a CUTGenerator,
    else the first and last convolution."""
    convs = [m for m in generator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    c_in = getattr(generator, "input_nc", None) or (convs[0].in_channels if convs else None)
    c_out = getattr(generator, "output_nc", None) or (convs[-1].out_channels if convs else None)
    if c_in is None or c_out is None:
        raise TypeError(f"cannot tell the channel counts of {type(generator).__name__}: give it input_nc/output_nc")
    return int(c_in), int(c_out)


@contextlib.contextmanager
def prepared(generator: nn.Module, device: torch.device) -> Iterator[nn.Module]:
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
        return short, max(1, round(width * scale))
    return max(1, round(height * scale)), short


def will_tile(height: int, width: int, tiling: Tiling | None = None, size: int | None = None) -> bool:
    """Whether :func:`translate`, given these ``tiling`` and ``size`` arguments, runs a ``height`` x
    ``width`` image in tiles (the rule translate itself applies)."""
    if size is not None:
        height, width = resized_shape(height, width, size)
    return (tiling or Tiling()).applies_to(height, width)


# -------------------------------------------------------------------------------------- the work
@dataclass
class _Job:
    """One call's settings and its progress: the pieces every group of equal-size images needs."""

    runner: Runner
    tiling: Tiling
    out_channels: int
    batch_size: int
    finish: Callable[[int, torch.Tensor], Image.Image]
    total: int = 0
    done: int = 0
    progress: Callable[[int, int], None] | None = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


def _groups(inputs: list[torch.Tensor], tiling: Tiling) -> dict[tuple[int, int], tuple[list, bool]]:
    """Equal sizes grouped in first-seen order: (H, W) -> (input indices, tiled?)."""
    groups: dict[tuple[int, int], tuple[list, bool]] = {}
    for i, x in enumerate(inputs):
        h, w = x.shape[-2:]
        groups.setdefault((h, w), ([], tiling.applies_to(h, w)))[0].append(i)
    return groups


def _run_groups(model: nn.Module, inputs: list, groups: dict, job: _Job) -> list[Image.Image]:
    """Translate every group, tiled or in batches; results go back to their input positions."""
    results: list[Image.Image | None] = [None] * len(inputs)
    whole = layout_keeping(model, job.runner)
    for indices, tiled in groups.values():
        if tiled:
            for i in indices:
                y = run_tiled(model, inputs[i][None], job.out_channels, job.tiling, job.runner, on_tile=job.advance)
                results[i] = job.finish(i, y[0])
                inputs[i] = None  # free the input early
            continue
        for start in range(0, len(indices), job.batch_size):
            chunk = indices[start : start + job.batch_size]
            parts = [inputs[i] for i in chunk]
            if any(t.dtype != parts[0].dtype for t in parts):  # PIL (uint8) and float tensors mixed
                parts = [as_float(t) for t in parts]
            for i, yi in zip(chunk, run_whole(whole, torch.stack(parts), job.runner), strict=True):
                results[i] = job.finish(i, yi)
                inputs[i] = None
            job.advance(len(chunk))
    done = [r for r in results if r is not None]
    assert len(done) == len(results)  # every input is in one group
    return done


# -------------------------------------------------------------------------------------- the call
def exported_limits(generator: nn.Module, tiling: Tiling, channels_last: bool) -> tuple[Tiling, bool]:
    """``tiling`` and channels-last for ``generator``: an exported graph (:mod:`cut_hf.translation.exported`) has
    no norm modules to swap, so it runs whole in the layout it was exported with."""
    if getattr(generator, "tileable", True):
        return tiling, channels_last
    if tiling.tile:
        raise ValueError(f"{type(generator).__name__} cannot be tiled (no norm modules to freeze): "
                         "use tiling=Tiling(tile=0)")
    return replace(tiling, tile=0), False


def _check_int8_tiling(tiling: Tiling | None) -> None:
    """int8 runs the quantised graph whole: it has no norm modules whose statistics tiles could share."""
    if tiling is not None and tiling.tile:
        raise ValueError("precision 'int8' runs the quantised graph whole (it has no norm modules to freeze for "
                         "tiles): use tiling=Tiling(tile=0) or another precision")


def _quantised(generator: nn.Module, calibration: object, inputs: list[torch.Tensor]) -> nn.Module:
    """The int8 graph that stands in for ``generator`` (float32 around its int8 convolutions), for the
    size class of the first input, calibrated on ``calibration`` or on the first inputs."""
    return int8_generator(generator, calibration, size_class(*inputs[0].shape[-2:]),
                          inputs=inputs[:MAX_CALIBRATION_IMAGES])


def _work(groups: dict, tiling: Tiling) -> tuple[int, int]:
    """(tiles, progress units) of a job: every tile of a tiled image, plus one per whole image."""
    tiles = sum(tiling.count(*hw) * len(ix) for hw, (ix, tiled) in groups.items() if tiled)
    return tiles, tiles + sum(len(ix) for ix, tiled in groups.values() if not tiled)


# Typed by return_report; one image or a list comes back as the input was one or many (a 4-D tensor is many).
@overload
def translate(
    generator: nn.Module,
    image_or_images: ImageLike | Sequence[ImageLike],
    *,
    size: int | None = None,
    keep_size: bool = True,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    calibration: object = None,
    tiling: Tiling | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    channels_last: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    return_report: Literal[False] = False,
) -> Image.Image | list[Image.Image]: ...


@overload
def translate(
    generator: nn.Module,
    image_or_images: ImageLike | Sequence[ImageLike],
    *,
    size: int | None = None,
    keep_size: bool = True,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    calibration: object = None,
    tiling: Tiling | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    channels_last: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    return_report: Literal[True],
) -> tuple[Image.Image | list[Image.Image], TranslationReport]: ...


def translate(
    generator: nn.Module,
    image_or_images: ImageLike | Sequence[ImageLike],
    *,
    size: int | None = None,
    keep_size: bool = True,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    calibration: object = None,
    tiling: Tiling | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    channels_last: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    return_report: bool = False,
) -> Image.Image | list[Image.Image] | tuple[Image.Image | list[Image.Image], TranslationReport]:
    """Translate one image or many with a CUT generator.

    Args:
        generator: a :class:`~cut_hf.CUTGenerator` (or any (B, C, H, W) [-1, 1] generator with
            ``input_nc``/``output_nc``), left as found: mode and device restored, modules unswapped.
        image_or_images: one image or a list of them: PIL images (any mode), paths, numpy arrays
            (uint8/uint16, or float in [0, 1]) or tensors (C, H, W) **in [-1, 1]** (uint8 tensors
            are [0, 255]); a (B, C, H, W) tensor is B images. Files get their EXIF orientation;
            every image becomes the generator's ``input_nc`` channels in [-1, 1]. All inputs are
            loaded up front; for a large folder use :mod:`cut_hf.translation.folders` or the CLI.
        size: resize the shorter side to ``size`` (snapped to a multiple of 4) first; ``keep_size``:
            resize the result back to the input's size (default) or not.
        batch_size: images of equal size run together in batches of this many (order is kept).
        device: ``"cpu"``, ``"cuda"``, ...; ``None``: :func:`resolve_device`.
        precision: ``"fp32"``, ``"bf16"`` (autocast, also on CPU), ``"fp16"`` (CUDA only) or ``"int8"``
            (CPU only, never tiled: :mod:`cut_hf.translation.quantize`, quantised once per weights and size class).
        calibration: int8 only: images of the model's domain that set the 8-bit ranges (a folder, files,
            images); ``None``: the first inputs of the model's first int8 call at this size class.
        tiling: a :class:`Tiling`: when and how images run in overlapping tiles with whole-image norm
            statistics, bounding memory. ``None`` (``Tiling()``) tiles only images over 1 Mpx, in 768 px
            tiles; ``Tiling(tile=0)`` never tiles. :func:`will_tile` tells in advance.
        max_pixels: refuse inputs larger than this (:class:`~cut_hf.images.ImageTooLargeError`).
        channels_last: channels-last memory format; ``None``: :func:`cut_hf.perf.channels_last_default`.
        progress: called as ``progress(done, total)`` after every tile of a tiled image and after
            every batch of whole images; the units are tiles plus whole images.
        return_report: also return a :class:`TranslationReport` of what was done.

    Returns:
        A PIL image (``RGB`` for 3 output channels, ``L`` for 1) of the input's size, or a list of
        them for a list or batch input (odd sizes are padded and cropped back); at the working size
        with ``size`` and ``keep_size=False``. With ``return_report=True``: ``(output, report)``.

    Raises ImageLoadError when an input cannot be read (the message names it) and ValueError for bad
    arguments, e.g. ``precision="fp16"`` on the CPU, a tensor outside [-1, 1], or int8 for a model
    that cannot be quantised (:class:`~cut_hf.translation.quantize.QuantizationError`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    int8 = precision == "int8"
    dev = resolve_device("cpu" if int8 and device is None else device, generator)
    check_inference_precision(precision, dev)  # unknown names, fp16 off CUDA, int8 off the CPU fail before any work
    if int8:
        _check_int8_tiling(tiling)
    in_nc, out_nc = io_channels(generator)
    items, single = _as_list(image_or_images)
    inputs = [_to_tensor(item, in_nc, max_pixels) for item in items]  # (C, H, W) uint8 or [-1, 1], CPU
    original = [(x.shape[-2], x.shape[-1]) for x in inputs]
    inputs = [resize(x, resized_shape(x.shape[-2], x.shape[-1], size)) for x in inputs] if size is not None else inputs
    if int8 and inputs:
        generator = _quantised(generator, calibration, inputs)
    run_precision = "fp32" if int8 else precision
    cl = channels_last_default(dev, run_precision) if channels_last is None else bool(channels_last)
    tiling, cl = exported_limits(generator, tiling or Tiling(), cl)
    restore = size is not None and keep_size
    job = _Job(Runner(dev, run_precision, cl), tiling, out_nc, batch_size, progress=progress,
               finish=lambda i, y: tensor_to_pil(resize(y, original[i]) if restore else y))
    groups = _groups(inputs, tiling)
    tiles, job.total = _work(groups, tiling)
    report = TranslationReport(tiles > 0, tiles, precision, str(dev), [(x.shape[-1], x.shape[-2]) for x in inputs])
    with prepared(generator, dev) as model, torch.inference_mode():
        results = _run_groups(model, inputs, groups, job)
    output = results[0] if single else results
    return (output, report) if return_report else output

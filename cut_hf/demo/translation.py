"""The Translate tab's work: resize as asked, translate with :func:`cut_hf.translate`, time it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from cut_hf.demo.errors import DemoError
from cut_hf.demo.models import DemoModel
from cut_hf.perf import EMULATED_BF16_NOTE, default_device, emulated_bf16, fast_int8
from cut_hf.precision import PRECISIONS
from cut_hf.translation.inference import DEFAULT_TILE, Tiling
from cut_hf.translation.pipeline import resized_shape, translate
from cut_hf.translation.quantize import model_examples
from cut_hf.translation.video import fixed_noise

#: Resolution choices of the tab: keep the upload's size, or resize its shorter side to N pixels.
RESOLUTIONS = ("original", "64", "128", "256", "512", "1024")

#: Images with more pixels than this go through translate's tiled path (whole-image norm
#: statistics, :data:`~cut_hf.translation.inference.DEFAULT_TILE` px tiles), so memory stays bounded however
#: large the upload.
DEFAULT_TILE_ABOVE = 1 << 20


def precisions_available() -> list[str]:
    """fp32 and bf16 everywhere; fp16 only with CUDA (CPU fp16 kernels are slow or missing); int8 only
    on a CPU where it is faster (:func:`cut_hf.perf.fast_int8`)."""
    found = [p for p in PRECISIONS if p != "fp16" or torch.cuda.is_available()]
    return [*found, "int8"] if fast_int8(translation_device()) else found


def translation_device() -> str:
    """Where the tab translates: :func:`cut_hf.perf.default_device` (CUDA, then MPS / XPU, then the CPU)."""
    return default_device().type


def device_line() -> str:
    """What the page says about where it translates."""
    where = translation_device()
    return f"Translating on **{where}**" + (" (no GPU found: CUDA, MPS and XPU are tried first)" if where == "cpu"
                                             else "")


def precision_note() -> str | None:
    """A hint for the precision control where bf16 would be emulated (slow), else None."""
    return EMULATED_BF16_NOTE if emulated_bf16("bf16", translation_device()) else None


def parse_resolution(value: str | int | float | None) -> int | None:
    """``"original"``/None/0 -> None (keep the size); ``"256"`` or 256 -> 256. Bad values raise DemoError."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "original")):
        return None
    try:
        side = int(float(value))
    except (TypeError, ValueError):
        raise DemoError(f"resolution must be 'original' or a number of pixels, got {value!r}") from None
    if side == 0:
        return None
    if not 16 <= side <= 4096:
        raise DemoError(f"the shorter side must be between 16 and 4096 pixels, got {side}")
    return side


@dataclass
class TranslationResult:
    """Before and after at the same size, and how it went."""

    before: Image.Image
    after: Image.Image
    seconds: float
    precision: str
    tiled: bool
    device: str
    tiles: int = 0

    def describe(self, original_size: tuple[int, int]) -> str:
        w0, h0 = original_size
        w, h = self.after.size
        size = "the upload's size" if (w, h) == (w0, h0) else f"resized from {w0}×{h0} px"
        tiles = f"{self.tiles} tile{'s' * (self.tiles != 1)} of up to {DEFAULT_TILE} px"
        path = f"tiled ({tiles}, whole-image norm statistics)" if self.tiled else "whole image"
        line = f"**{self.seconds:.2f} s** · output {w}×{h} px ({size}) · {self.precision} on {self.device} · {path}"
        if emulated_bf16(self.precision, self.device):
            line += f" · {EMULATED_BF16_NOTE}"
        return line


def run_translation(model: DemoModel, image: Image.Image, resolution: str | int | None = "original",
                    precision: str = "fp32", tile_above: int = DEFAULT_TILE_ABOVE,
                    max_pixels: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> TranslationResult:
    """Translate an RGB image with ``model``; ``resolution`` may resize its shorter side first.

    The returned ``before`` is the image the generator saw (the resized input when a resolution
    is chosen), so the before/after slider compares like with like. Images over ``tile_above``
    pixels take the tiled path; ``max_pixels`` bounds the size after resizing (None: no bound).
    ``progress(done, total)`` is called as tiles finish (see :func:`cut_hf.translate`). A SinCUT
    model's noise is drawn from seed 0, so the same upload always gives the same result.
    """
    side = parse_resolution(resolution)
    if precision not in precisions_available():
        raise DemoError(f"precision must be one of {', '.join(precisions_available())}, got {precision!r}")
    before = image.convert("RGB")
    if side is not None:
        h, w = resized_shape(before.height, before.width, side)
        if max_pixels is not None and w * h > max_pixels:
            raise DemoError(f"shorter side {side} px would make a {w}x{h} image, over this app's limit of "
                            f"{max_pixels / 1e6:.0f} Mpx")
        before = before.resize((w, h), Image.Resampling.BICUBIC)
    start = time.perf_counter()
    try:
        # int8 calibrates on the model's own examples where it has them (else on the first upload).
        calibration = model_examples(model.source) if precision == "int8" else None
        after, report = translate(fixed_noise(model.generator, seed=0), before, device=translation_device(),
                                  precision=precision, calibration=calibration,
                                  tiling=Tiling(max_whole_pixels=tile_above),
                                  max_pixels=None,  # checked against the app's limit
                                  progress=progress, return_report=True)
    except ValueError as err:  # bad precision for the device, an unusable image
        raise DemoError(str(err)) from None
    seconds = time.perf_counter() - start
    if isinstance(after, list):  # one image in, one out
        after = after[0]
    return TranslationResult(before, after, seconds, report.precision, report.tiled, report.device, report.tiles)

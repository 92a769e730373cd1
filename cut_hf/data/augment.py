"""SimCLR's augmentation family T(.): two random views of one image, seedable and replayable.

The paper (Chen et al., 2020, appendix A) composes, in this order: random resized crop (area
8%-100%, aspect 3/4-4/3, bicubic) -> horizontal flip (p 0.5) -> colour jitter with strength s
(brightness, contrast, saturation 0.8 s, hue 0.2 s, in random order, p 0.8) -> grayscale (p 0.2)
-> Gaussian blur (p 0.5, kernel 10% of the image side, sigma 0.1-2.0).

The pixel work is done by ``torchvision.transforms.v2.functional`` kernels. The random parameters
are drawn here, from an explicit ``torch.Generator`` (never the global RNG), into a
:class:`ViewParams` record, so that a view can be reported (the app's explorer shows what each
view sampled) and replayed exactly with :meth:`SimCLRAugment.apply`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, overload

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")

# Presets: keyword arguments of SimCLRAugment. "simclr" is the paper's ImageNet recipe; "cifar" is
# the paper's CIFAR-10 variant (appendix B.9: strength 0.5, no blur) at 32 px.
PRESETS: dict[str, dict[str, Any]] = {
    "simclr": dict(size=224),
    "cifar": dict(size=32, jitter_strength=0.5, blur=False),
}


@dataclass
class ViewParams:
    """Everything one view sampled; :meth:`SimCLRAugment.apply` replays it exactly.

    Attributes:
        source_size: (height, width) of the input image.
        crop: (top, left, height, width) of the crop box, in input pixels.
        flip: horizontal flip taken.
        jitter: colour jitter taken (the p 0.8 coin).
        jitter_ops: (operation, factor) pairs in the order applied; empty when ``jitter`` is False.
            Factors are torchvision's: multiplicative for brightness/contrast/saturation, a shift
            of the hue circle in [-0.5, 0.5] for hue.
        grayscale: conversion to grayscale (kept 3 channels) taken.
        blur: Gaussian blur taken.
        sigma: the blur's sigma (None when no blur).
        kernel_size: the blur's kernel size in pixels (None when no blur).
    """

    source_size: tuple[int, int]
    crop: tuple[int, int, int, int]
    flip: bool = False
    jitter: bool = False
    jitter_ops: list[tuple[str, float]] = field(default_factory=list)
    grayscale: bool = False
    blur: bool = False
    sigma: float | None = None
    kernel_size: int | None = None

    @property
    def crop_area_fraction(self) -> float:
        """Crop box area as a fraction of the input image area."""
        return self.crop[2] * self.crop[3] / (self.source_size[0] * self.source_size[1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViewParams:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["source_size"] = tuple(data["source_size"])
        data["crop"] = tuple(data["crop"])
        data["jitter_ops"] = [(str(name), float(f)) for name, f in data.get("jitter_ops", [])]
        return cls(**data)


def to_rgb_tensor(image: Image.Image | torch.Tensor | np.ndarray) -> torch.Tensor:
    """Any PIL image, (C, H, W) tensor or (H, W[, C]) array -> (3, H, W) tensor, uint8 or float in [0, 1].

    PIL images of any mode are converted to RGB (palette, alpha, CMYK included; 16/32-bit grayscale
    rescaled to float). Tensors may be uint8 or float in [0, 1], with 1, 3 or 4 (alpha dropped)
    channels. uint8 stays uint8 so that the crop can take torchvision's fast uint8 resize path.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(image, dtype=np.float32)
            top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
            return torch.from_numpy(np.clip(arr / top, 0, 1)).unsqueeze(0).expand(3, -1, -1).contiguous()
        image = TF.pil_to_tensor(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        arr = image if image.ndim == 3 else image[..., None]
        image = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a PIL image, a tensor or an array, got {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected an image tensor of shape (C, H, W) with C in 1, 3, 4, got {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        image = image.float() if image.is_floating_point() else TF.to_dtype(image, torch.float32, scale=True)
    image = image[:3]
    return (image.expand(3, -1, -1) if image.shape[0] == 1 else image).contiguous()


def blur_kernel_size(size: int, fraction: float = 0.1) -> int:
    """Odd Gaussian kernel size, ``fraction`` of the image side (23 px at 224, 3 px at 32)."""
    k = max(3, round(size * fraction))
    return k if k % 2 else k + 1


def _pair(value: Sequence[float], name: str, low: float = 0.0, high: float = math.inf) -> tuple[float, float]:
    if len(value) != 2 or not low <= float(value[0]) <= float(value[1]) <= high:
        raise ValueError(f"{name} must be an increasing pair within [{low}, {high}], got {tuple(value)}")
    return float(value[0]), float(value[1])


def _prob(value: float, name: str) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return float(value)


class SimCLRAugment:
    """Two random views of one image, SimCLR's T(.), with the paper's defaults.

    Every operation has an enable switch, a probability and its strength or ranges, so that
    ablations (and the app's explorer) need no code. Disabling the crop resizes the largest centred
    square instead, so views always have the same size.

    Args:
        size: side of the square output views in pixels.
        crop: enable the random resized crop.
        crop_scale: range of the crop area as a fraction of the image area.
        crop_ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        interpolation: resampling of the crop, ``"bicubic"`` in the paper (or ``"bilinear"``).
        flip: enable the horizontal flip; ``flip_p`` its probability.
        jitter: enable colour jitter; ``jitter_p`` its probability; ``jitter_strength`` is s.
        brightness, contrast, saturation, hue: override the jitter magnitudes derived from s
            (0.8 s, 0.8 s, 0.8 s, 0.2 s); 0 removes that operation.
        grayscale: enable the grayscale conversion; ``grayscale_p`` its probability.
        blur: enable the Gaussian blur; ``blur_p`` its probability; ``blur_sigma`` the sigma
            range; ``blur_kernel_fraction`` the kernel size as a fraction of ``size``.
        seed: seed of the generator used when a call passes none; None draws a fresh seed from
            the operating system (still not the global torch RNG).

    Example:
        >>> aug = SimCLRAugment.from_preset("cifar", seed=0)
        >>> (v1, v2), (p1, p2) = aug(image, return_params=True)
        >>> torch.equal(aug.apply(image, p1), v1)
        True
    """

    def __init__(
        self,
        size: int = 224,
        *,
        crop: bool = True,
        crop_scale: Sequence[float] = (0.08, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        flip: bool = True,
        flip_p: float = 0.5,
        jitter: bool = True,
        jitter_p: float = 0.8,
        jitter_strength: float = 1.0,
        brightness: float | None = None,
        contrast: float | None = None,
        saturation: float | None = None,
        hue: float | None = None,
        grayscale: bool = True,
        grayscale_p: float = 0.2,
        blur: bool = True,
        blur_p: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        blur_kernel_fraction: float = 0.1,
        seed: int | None = None,
    ) -> None:
        if int(size) < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        if interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"interpolation must be bicubic, bilinear or nearest, got {interpolation!r}")
        if jitter_strength < 0:
            raise ValueError(f"jitter_strength must be >= 0, got {jitter_strength}")
        self.size = int(size)
        self.crop, self.flip, self.jitter = bool(crop), bool(flip), bool(jitter)
        self.grayscale, self.blur = bool(grayscale), bool(blur)
        self.crop_scale = _pair(crop_scale, "crop_scale", 0.0, 1.0)
        if self.crop_scale[1] <= 0:
            raise ValueError(f"crop_scale must allow a non-empty crop, got {tuple(crop_scale)}")
        self.crop_ratio = _pair(crop_ratio, "crop_ratio", 1e-6)
        self.interpolation = interpolation
        self.flip_p = _prob(flip_p, "flip_p")
        self.jitter_p = _prob(jitter_p, "jitter_p")
        self.grayscale_p = _prob(grayscale_p, "grayscale_p")
        self.blur_p = _prob(blur_p, "blur_p")
        self.jitter_strength = float(jitter_strength)
        s = self.jitter_strength
        self.brightness = float(0.8 * s if brightness is None else brightness)
        self.contrast = float(0.8 * s if contrast is None else contrast)
        self.saturation = float(0.8 * s if saturation is None else saturation)
        self.hue = float(0.2 * s if hue is None else hue)
        for name in JITTER_OPS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.hue > 0.5:
            raise ValueError(f"hue must be <= 0.5 (half the hue circle), got {self.hue}")
        self.blur_sigma = _pair(blur_sigma, "blur_sigma", 1e-6)
        if not 0 < blur_kernel_fraction <= 1:
            raise ValueError(f"blur_kernel_fraction must be in (0, 1], got {blur_kernel_fraction}")
        self.blur_kernel_fraction = float(blur_kernel_fraction)
        self.seed = seed
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SimCLRAugment:
        """``"simclr"`` (the paper's ImageNet recipe, 224 px) or ``"cifar"`` (s 0.5, no blur, 32 px)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def config(self) -> dict[str, Any]:
        """The constructor arguments as JSON values (for logs and model cards)."""
        keys = ("size", "crop", "crop_scale", "crop_ratio", "interpolation", "flip", "flip_p", "jitter",
                "jitter_p", "jitter_strength", "brightness", "contrast", "saturation", "hue", "grayscale",
                "grayscale_p", "blur", "blur_p", "blur_sigma", "blur_kernel_fraction")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in keys)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    @property
    def kernel_size(self) -> int:
        """The blur kernel size used at this output size."""
        return blur_kernel_size(self.size, self.blur_kernel_fraction)

    # ----------------------------------------------------------------------------- sampling
    def _uniform(self, low: float, high: float, g: torch.Generator) -> float:
        return low + (high - low) * float(torch.rand((), generator=g))

    def _coin(self, p: float, g: torch.Generator) -> bool:
        return float(torch.rand((), generator=g)) < p

    def _sample_crop(self, height: int, width: int, g: torch.Generator) -> tuple[int, int, int, int]:
        """A crop box as torchvision's RandomResizedCrop, whose *rounded* area is in ``crop_scale``."""
        if not self.crop:
            side = min(height, width)
            return (height - side) // 2, (width - side) // 2, side, side
        area = height * width
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        for _ in range(10):
            target = area * self._uniform(*self.crop_scale, g)
            ratio = math.exp(self._uniform(log_lo, log_hi, g))
            w = round(math.sqrt(target * ratio))
            h = round(math.sqrt(target / ratio))
            # Also reject boxes that rounding pushed outside the area range (torchvision does not).
            if 0 < w <= width and 0 < h <= height and self.crop_scale[0] <= h * w / area <= self.crop_scale[1]:
                top = int(torch.randint(0, height - h + 1, (1,), generator=g))
                left = int(torch.randint(0, width - w + 1, (1,), generator=g))
                return top, left, h, w
        # Fallback, as torchvision: the central crop with the closest allowed aspect ratio.
        in_ratio = width / height
        if in_ratio < self.crop_ratio[0]:
            w, h = width, round(width / self.crop_ratio[0])
        elif in_ratio > self.crop_ratio[1]:
            h, w = height, round(height * self.crop_ratio[1])
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def _sample_jitter(self, g: torch.Generator) -> list[tuple[str, float]]:
        ranges = {
            "brightness": (max(0.0, 1 - self.brightness), 1 + self.brightness),
            "contrast": (max(0.0, 1 - self.contrast), 1 + self.contrast),
            "saturation": (max(0.0, 1 - self.saturation), 1 + self.saturation),
            "hue": (-self.hue, self.hue),
        }
        order = torch.randperm(len(JITTER_OPS), generator=g).tolist()  # random order, as the paper
        ops = []
        for i in order:
            name = JITTER_OPS[i]
            low, high = ranges[name]
            if low != high:  # a zero magnitude removes the operation
                ops.append((name, self._uniform(low, high, g)))
        return ops

    def sample_params(self, height: int, width: int, generator: torch.Generator | None = None) -> ViewParams:
        """Draw the parameters of one view of a ``height`` x ``width`` image."""
        if height < 1 or width < 1:
            raise ValueError(f"cannot augment an empty image of size {height}x{width}")
        g = self.generator if generator is None else generator
        params = ViewParams(source_size=(int(height), int(width)), crop=self._sample_crop(height, width, g))
        params.flip = self.flip and self._coin(self.flip_p, g)
        params.jitter = self.jitter and self._coin(self.jitter_p, g)
        if params.jitter:
            params.jitter_ops = self._sample_jitter(g)
        params.grayscale = self.grayscale and self._coin(self.grayscale_p, g)
        params.blur = self.blur and self._coin(self.blur_p, g)
        if params.blur:
            params.sigma = self._uniform(*self.blur_sigma, g)
            params.kernel_size = self.kernel_size
        return params

    # ----------------------------------------------------------------------------- applying
    def apply(self, image: Image.Image | torch.Tensor | np.ndarray, params: ViewParams) -> torch.Tensor:
        """Render the view described by ``params``: (3, size, size) float32 in [0, 1]."""
        x = to_rgb_tensor(image)
        if tuple(x.shape[-2:]) != tuple(params.source_size):
            raise ValueError(f"params were sampled for a {params.source_size} image, got {tuple(x.shape[-2:])}")
        top, left, h, w = params.crop
        x = TF.resized_crop(x, top, left, h, w, [self.size, self.size], interpolation=self.interpolation,
                            antialias=True)  # on uint8 when the input is: fast, and saturates
        x = TF.to_dtype(x, torch.float32, scale=True) if x.dtype == torch.uint8 else x.clamp(0.0, 1.0)
        if params.flip:
            x = TF.horizontal_flip(x)
        for name, factor in params.jitter_ops:
            x = getattr(TF, f"adjust_{name}")(x, factor)
        if params.grayscale:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if params.blur:
            k = params.kernel_size or self.kernel_size
            x = TF.gaussian_blur(x, [k, k], [params.sigma, params.sigma])
        return x.contiguous()

    def view(
        self, image: Image.Image | torch.Tensor | np.ndarray, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, ViewParams]:
        """One random view and the parameters it sampled."""
        x = to_rgb_tensor(image)
        params = self.sample_params(x.shape[-2], x.shape[-1], generator)
        return self.apply(x, params), params

    @overload
    def __call__(self, image: Image.Image | torch.Tensor | np.ndarray, generator: torch.Generator | None = None,
                 return_params: Literal[False] = False) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def __call__(self, image: Image.Image | torch.Tensor | np.ndarray, generator: torch.Generator | None,
                 return_params: Literal[True]) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                        tuple[ViewParams, ViewParams]]: ...

    def __call__(
        self,
        image: Image.Image | torch.Tensor | np.ndarray,
        generator: torch.Generator | None = None,
        return_params: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[tuple[torch.Tensor, torch.Tensor], tuple[ViewParams, ViewParams]]:
        """Two independent views of ``image``, each (3, size, size) float32 in [0, 1].

        Args:
            image: PIL image (any mode), (C, H, W) tensor or (H, W[, C]) array.
            generator: source of randomness; the augmenter's own seeded generator when None.
            return_params: also return the two :class:`ViewParams`.
        """
        x = to_rgb_tensor(image)
        v1, p1 = self.view(x, generator)
        v2, p2 = self.view(x, generator)
        return ((v1, v2), (p1, p2)) if return_params else (v1, v2)

"""Small drawing helpers of the demo: colour maps, heatmap overlays, boxes and markers (PIL only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Anchor colours of two colour maps, interpolated linearly (no matplotlib needed).
# "inferno"-like for similarities in [0, 1]; a blue-white-red diverging map for [-1, 1].
_INFERNO = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                     [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=np.float32)
_DIVERGING = np.array([[33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247],
                       [253, 219, 199], [239, 138, 98], [178, 24, 43]], dtype=np.float32)
COLORMAPS = {"inferno": _INFERNO, "diverging": _DIVERGING}


def colormap(values: np.ndarray, low: float, high: float, name: str = "inferno") -> np.ndarray:
    """Map ``values`` (any shape) from [low, high] to RGB uint8 (..., 3) with a named colour map."""
    anchors = COLORMAPS[name]
    t = np.clip((np.asarray(values, dtype=np.float32) - low) / max(high - low, 1e-12), 0.0, 1.0)
    pos = t * (len(anchors) - 1)
    i = np.minimum(pos.astype(np.int64), len(anchors) - 2)
    frac = (pos - i)[..., None]
    return (anchors[i] * (1 - frac) + anchors[i + 1] * frac + 0.5).astype(np.uint8)


def font(size: int = 12) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in scalable font (no font files needed)."""
    return ImageFont.load_default(size=size)


def upscale(image: Image.Image, min_side: int = 256) -> Image.Image:
    """Enlarge small images by an integer factor with nearest neighbour, so pixels stay visible."""
    factor = max(1, -(-min_side // max(1, min(image.size))))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def overlay_heatmap(image: Image.Image, heat: np.ndarray, low: float, high: float, alpha: float = 0.6) -> Image.Image:
    """Blend a colour-mapped ``heat`` (h, w), resized to the image with nearest neighbour, over ``image``."""
    colours = Image.fromarray(colormap(heat, low, high)).resize(image.size, Image.Resampling.NEAREST)
    return Image.blend(image.convert("RGB"), colours, alpha)


def draw_marker(image: Image.Image, xy: tuple[float, float], colour: str = "#00ff66", radius: int | None = None,
                shape: str = "cross") -> Image.Image:
    """A copy of ``image`` with a crosshair (``"cross"``) or a ring (``"ring"``) centred on ``xy``."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    r = radius or max(3, min(out.size) // 24)
    width = max(1, min(out.size) // 128)
    x, y = xy
    if shape == "cross":
        draw.line([(x - r, y), (x + r, y)], fill=colour, width=width)
        draw.line([(x, y - r), (x, y + r)], fill=colour, width=width)
    else:
        draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=width)
    return out


def draw_boxes(image: Image.Image, boxes: Sequence[tuple[int, int, int, int]], colours: Sequence[str],
               labels: Sequence[str]) -> Image.Image:
    """A copy of ``image`` with (top, left, height, width) boxes outlined and labelled."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(1, round(min(out.size) / 100))
    f = font(max(10, min(out.size) // 14))
    for (top, left, h, w), colour, label in zip(boxes, colours, labels, strict=True):
        draw.rectangle([left, top, left + w - 1, top + h - 1], outline=colour, width=width)
        draw.text((left + width + 1, top + width), label, fill=colour, font=f, stroke_width=1, stroke_fill="black")
    return out

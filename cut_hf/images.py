"""Image loading and conversion shared by inference, training data, evaluation and the app.

One place decides how a file, a PIL image or an array becomes the network's input, so every entry
point treats odd inputs the same way:

- EXIF orientation is applied (phone photos are stored sideways with a rotation tag).
- Any PIL mode becomes 1 (``L``), 2 (``LA``), 3 (``RGB``) or 4 (``RGBA``) channels. Transparency is
  composited over a background (white by default) when the alpha channel is dropped, because the
  colour stored under transparent pixels is arbitrary. High bit-depth modes (``I;16*``, ``I``,
  ``F``) are rescaled to 8 bits rather than clipped: Pillow's own ``convert("L")`` clips 16-bit
  values at 255, which turns most 16-bit photos white.
- Network tensors are (C, H, W) float in [-1, 1]; 8-bit values map as ``v / 127.5 - 1``.
- Unreadable, truncated, non-image and oversized files raise :class:`ImageLoadError` (or its
  subclass :class:`ImageTooLargeError`) with a one-line message naming the file.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

#: Largest image (width * height) :func:`open_image` accepts by default: 64 Mpx (8192 x 8192), above
#: a 6000 x 4000 photo and below Pillow's own decompression-bomb warning (~89 Mpx). Pass
#: ``max_pixels=None`` to turn the check off; Pillow's hard limit (``Image.MAX_IMAGE_PIXELS * 2``)
#: still applies and is reported as :class:`ImageTooLargeError` too.
DEFAULT_MAX_PIXELS = 8192 * 8192

#: Modes produced for a given channel count.
CHANNEL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}

#: File extensions Pillow can decode (lower case, with the dot), used to find images in folders.
#: Stub formats (HDF5, GRIB, MPEG, WMF, ...) that Pillow recognises but cannot decode are left out.
IMAGE_EXTENSIONS = frozenset(
    ext
    for ext, fmt in Image.registered_extensions().items()
    if fmt in Image.OPEN
    # the factory is usually the ImageFile class itself; a plain function is never a stub
    and ImageFile.StubImageFile not in getattr(Image.OPEN[fmt][0], "__mro__", ())
)

ImageSource = str | os.PathLike | bytes | BinaryIO | Image.Image | np.ndarray


class ImageLoadError(ValueError):
    """An input could not be read as an image; the message says which and why, in one line."""


class ImageTooLargeError(ImageLoadError):
    """An image has more pixels than allowed (ours or Pillow's decompression-bomb guard)."""


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(str(source))
    return f"<{type(source).__name__}>"


def check_pixels(width: int, height: int, max_pixels: int | None, what: str = "image") -> None:
    """Raise :class:`ImageTooLargeError` when ``width * height`` exceeds ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (raise max_pixels to allow it)"
        )


def open_image(source: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``source`` as a fully decoded PIL image in its own mode, EXIF orientation applied.

    Args:
        source: a path, raw file bytes, a binary file object, a PIL image or a numpy array
            (see :func:`from_array`).
        max_pixels: refuse images with more pixels than this (checked from the header, before
            decoding); ``None`` disables the check.

    Raises:
        ImageLoadError: missing file, not an image, truncated or corrupt data.
        ImageTooLargeError: over ``max_pixels`` or over Pillow's decompression-bomb limit.
    """
    what = _describe(source)
    if isinstance(source, np.ndarray):
        image = from_array(source)
        check_pixels(*image.size, max_pixels, f"image {what}")
        return image
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.exists():
                raise ImageLoadError(f"{what}: no such file")
            if not path.is_file():
                raise ImageLoadError(f"{what}: not a file")
        try:
            image = Image.open(source)  # reads the header only
        except Image.DecompressionBombError as err:
            raise ImageTooLargeError(f"{what}: refused by Pillow's decompression-bomb guard ({err})") from None
        except UnidentifiedImageError:
            raise ImageLoadError(f"{what}: not an image file (or a format Pillow cannot read)") from None
        except OSError as err:
            raise ImageLoadError(f"{what}: cannot be read ({err})") from None
    try:
        check_pixels(*image.size, max_pixels, f"image {what}")
        image.load()  # decode now (a no-op when loaded), so bad data fails here, naming the file
    except ImageTooLargeError:
        _close_opened(image, source)
        raise
    except Image.DecompressionBombError as err:
        _close_opened(image, source)
        raise ImageTooLargeError(f"{what}: refused by Pillow's decompression-bomb guard ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        _close_opened(image, source)
        raise ImageLoadError(f"{what}: truncated or corrupt image data ({err})") from None
    try:
        # exif_transpose returns a copy when it rotates; a PIL input is never modified in place.
        return ImageOps.exif_transpose(image)
    except Exception as err:  # noqa: BLE001 - a malformed EXIF block must not hide the image itself
        warnings.warn(f"{what}: EXIF orientation ignored, the block is malformed ({err})", stacklevel=2)
        return image


def _close_opened(image: Image.Image, source: object) -> None:
    """Close the file behind an image this module opened (never a caller's PIL image)."""
    if not isinstance(source, Image.Image):
        image.close()


def find_images(root: str | os.PathLike, *, recursive: bool = True,
                extensions: frozenset[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under ``root``, sorted, chosen by extension (:data:`IMAGE_EXTENSIONS`, or
    ``extensions``: videos use the same rules): the one rule for "the images in a folder"
    (training data, translation, evaluation).

    - Hidden files and folders (``.DS_Store``, ``._photo.jpg`` from macOS, ``.git``) are left out.
    - Subfolders are searched (``recursive=False``: only files directly in ``root``).
    - Symbolic links are followed, to files and to folders (a dataset assembled from links is
      common); a folder reached twice, e.g. through a link loop, is searched once.

    Whether each file really is a readable image is only known when it is opened.
    """
    root = Path(root)
    found: list[Path] = []
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back to a folder already searched
            subfolders[:] = []
            continue
        seen.add(real)
        # pruned in place: os.walk then never enters hidden folders (nor any with recursive=False)
        subfolders[:] = [d for d in subfolders if recursive and not d.startswith(".")]
        found += [Path(folder) / f for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in extensions
                  and os.path.isfile(os.path.join(folder, f))]
    return sorted(found)


def from_array(array: np.ndarray) -> Image.Image:
    """A PIL image from a numpy array: (H, W) or (H, W, C) with C in 1-4.

    ``uint8`` is taken as 8-bit, ``uint16`` as 16-bit (``I;16``, single channel only), floats as
    [0, 1] (values are clipped), bools as black/white.
    """
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise ImageLoadError(f"array of shape {tuple(array.shape)} is not an image: expected (H, W) or (H, W, 1-4)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        array = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif array.dtype == np.uint16:
        if array.ndim == 3:  # Pillow has no multi-channel 16-bit mode: keep the high byte
            array = (array >> 8).astype(np.uint8)
        else:
            return Image.fromarray(np.ascontiguousarray(array))  # -> I;16
    elif array.dtype != np.uint8:
        raise ImageLoadError(f"array dtype {array.dtype} is not supported: use uint8, uint16, bool or float in [0, 1]")
    return Image.fromarray(np.ascontiguousarray(array))


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """``I;16*``, ``I`` and ``F`` images as 8-bit ``L``, rescaled instead of clipped.

    ``I;16*`` is 16-bit by definition. ``I`` (32-bit int, which is how many 16-bit PNGs decode)
    and ``F`` (float) carry no declared range, so it is read from the values: within [0, 1] for
    floats -> unit range; within [0, 255] -> 8-bit; within [0, 65535] -> 16-bit; otherwise the
    minimum and maximum are stretched to [0, 255].
    """
    values = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16"):
        scale, low = 65535.0, 0.0
    else:
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if image.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scale, low = 1.0, 0.0
        elif lo >= 0.0 and hi <= 255.0:
            scale, low = 255.0, 0.0
        elif lo >= 0.0 and hi <= 65535.0:
            scale, low = 65535.0, 0.0
        else:
            scale, low = max(hi - lo, 1e-12), lo
    out = np.clip((np.nan_to_num(values) - low) / scale, 0.0, 1.0) * 255.0 + 0.5
    return Image.fromarray(out.astype(np.uint8))  # 2-D uint8 -> L


def _flatten_alpha(image: Image.Image, background: Sequence[int]) -> Image.Image:
    """Composite an ``RGBA`` or ``LA`` image over a solid background; returns ``RGB`` or ``L``."""
    if image.mode == "LA":
        gray = sum(background[:3]) // len(background[:3]) if len(background) >= 3 else background[0]
        base = Image.new("L", image.size, int(gray))
        base.paste(image.getchannel("L"), mask=image.getchannel("A"))
        return base
    base = Image.new("RGB", image.size, tuple(int(v) for v in background[:3]))
    base.paste(image.convert("RGB"), mask=image.getchannel("A"))
    return base


def to_channels(
    image: Image.Image, channels: int = 3, *, background: Sequence[int] = (255, 255, 255)
) -> Image.Image:
    """Convert a PIL image of any mode to ``channels`` channels (1 L, 2 LA, 3 RGB, 4 RGBA), 8 bits each.

    Alpha is kept when the target has alpha and composited over ``background`` when it does not;
    palette transparency counts as alpha. Colour to gray uses Pillow's ITU-R 601 luma; gray to
    colour repeats the channel; CMYK uses Pillow's conversion (no ICC colour management).
    """
    if channels not in CHANNEL_MODES:
        raise ValueError(f"channels must be 1, 2, 3 or 4, got {channels}")
    target = CHANNEL_MODES[channels]
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        image = _high_depth_to_l(image)
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("RGBa", "RGBX"):
        image = image.convert("RGBA" if mode == "RGBa" else "RGB")
    elif mode == "La":
        image = image.convert("LA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        try:  # CMYK, YCbCr, HSV, LAB, ...
            image = image.convert("RGB")
        except (ValueError, OSError) as err:
            raise ImageLoadError(f"image mode {mode!r} cannot be converted to {target} ({err})") from None
    if image.mode == target:
        return image
    if image.mode in ("LA", "RGBA") and target in ("L", "RGB"):
        image = _flatten_alpha(image, background)
        return image if image.mode == target else image.convert(target)
    return image.convert(target)


def load_image(
    source: ImageSource,
    channels: int = 3,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: Sequence[int] = (255, 255, 255),
) -> Image.Image:
    """:func:`open_image` then :func:`to_channels`: any file, PIL image or array -> an 8-bit image."""
    return to_channels(open_image(source, max_pixels=max_pixels), channels, background=background)


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """An 8-bit ``L``/``LA``/``RGB``/``RGBA`` image -> uint8 tensor (C, H, W) (a view of one copy)."""
    if image.mode not in CHANNEL_MODES.values():
        raise ValueError(f"expected an 8-bit L, LA, RGB or RGBA image, got mode {image.mode!r}; use to_channels")
    array = np.array(image, dtype=np.uint8)  # a writable copy that torch can own
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1)


def uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 values [0, 255] -> float32 in [-1, 1]: ``v / 127.5 - 1``."""
    return x.float().div_(127.5).sub_(1.0)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An 8-bit ``L``/``LA``/``RGB``/``RGBA`` image -> float tensor (C, H, W) in [-1, 1] (0 -> -1, 255 -> 1)."""
    return uint8_to_unit(pil_to_uint8(image))


def tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """A (C, H, W) or (1, C, H, W) tensor in [-1, 1] -> 8-bit PIL image (C 1 L, 2 LA, 3 RGB, 4 RGBA).

    Values outside [-1, 1] are clipped; rounding is to nearest.
    """
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] not in CHANNEL_MODES:
        raise ValueError(f"expected a (C, H, W) tensor with C in 1-4, got shape {tuple(tensor.shape)}")
    # One float temporary (clamp makes it; the rest is in place), so big images cost little extra.
    pixels = tensor.detach().float().clamp(-1.0, 1.0).add_(1.0).mul_(127.5).round_().to(torch.uint8)
    array = pixels.permute(1, 2, 0).cpu().numpy()
    # (H, W) uint8 -> L; (H, W, 2/3/4) uint8 -> LA / RGB / RGBA
    return Image.fromarray(np.ascontiguousarray(array[:, :, 0] if array.shape[2] == 1 else array))


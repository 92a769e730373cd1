"""Turning whatever the page sends into an RGB image, or a one-line refusal.

The app's event handlers run with ``preprocess=False``, so Gradio hands over the upload as sent
(a file-data dict with a ``path``) instead of decoding it first: decoding is done here, by
:mod:`cut_hf.images`, where every failure becomes a readable :class:`DemoError` (a non-image, a
truncated file, an image over the pixel limit or Pillow's decompression-bomb guard). 16-bit,
CMYK, palette, RGBA (composited over white), grayscale and EXIF-rotated images are converted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cut_hf.demo.errors import DemoError
from cut_hf.images import ImageLoadError, ImageTooLargeError, open_image, to_channels

#: The app's default upload limit in pixels (width x height): 25 Mpx, a 6000 x 4000 photo fits.
#: Smaller than the library's ``cut_hf.images.DEFAULT_MAX_PIXELS`` (a limit against decompression
#: bombs for files a user chose): a public page serves strangers at once, and every large upload
#: is long tiled CPU work that other visitors wait behind.
UPLOAD_MAX_PIXELS = 25_000_000


def upload_path(value: Any) -> str | None:
    """The file path inside an upload value (a path, a Gradio file-data dict or object), else None."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    if isinstance(value, dict):
        path = value.get("path")
        return str(path) if path else None
    path = getattr(value, "path", None)
    return str(path) if path else None


def read_image(value: Any, max_pixels: int | None = UPLOAD_MAX_PIXELS) -> Image.Image:
    """Decode an upload to an 8-bit RGB PIL image, EXIF orientation applied.

    Args:
        value: a path, a Gradio file-data dict / object (``{"path": ...}``), a PIL image or a
            numpy array (H, W[, C]).
        max_pixels: refuse larger images (checked from the header, before decoding).

    Raises:
        DemoError: nothing uploaded, not an image, corrupt, or too large; the message says which.
    """
    if value is None:
        raise DemoError("no image: upload one (or pick an example) first")
    source: Any
    if isinstance(value, (Image.Image, np.ndarray)):
        source, name = value, "the image"
    else:
        source = upload_path(value)
        if source is None:
            raise DemoError(f"cannot read an image from a {type(value).__name__}")
        orig = value.get("orig_name") if isinstance(value, dict) else getattr(value, "orig_name", None)
        name = repr(orig or Path(source).name)
    try:
        image = open_image(source, max_pixels=max_pixels)
        return to_channels(image, 3)
    except ImageTooLargeError as err:
        limit = f"{max_pixels / 1e6:.0f} Mpx" if max_pixels else "Pillow's limit"
        raise DemoError(f"{name} is too large for this app (limit {limit}): {_reason(err, source, name)}") from None
    except ImageLoadError as err:
        raise DemoError(f"{name} could not be read as an image: {_reason(err, source, name)}") from None


def _reason(err: Exception, source: Any, name: str) -> str:
    """The error's message with the server-side path replaced by the upload's name, and the
    leading "<file>: " of cut_hf.images messages dropped (the caller names the file)."""
    text = str(err)
    if isinstance(source, str):
        text = text.replace(repr(source), name).replace(source, name)
    head, sep, tail = text.partition(": ")
    return tail if sep and head in (name, "<Image>", "<ndarray>") else text

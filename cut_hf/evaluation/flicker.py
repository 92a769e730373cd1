"""How much a translated video flickers, measured where the input stands still.

Translating frame by frame makes colours pulse: instance normalisation takes new statistics on every
frame, so a region that does not move in the input changes colour in the output. Two numbers
capture it, both over the *still* pixels (where the input does not change):

- ``still_change``: the mean absolute change of those pixels between consecutive frames (0-255
  units): pulsing and noise alike.
- ``mean_spread``: the standard deviation over frames of their mean colour, averaged over the
  channels (0-255 units): the slow, global pulsing that the eye notices first.

A perfectly steady translation scores 0 on both. :func:`still_mask` finds the still pixels of an
input clip; a caller that knows them (a test's still background) passes its own mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Flicker", "flicker", "still_mask"]


@dataclass(frozen=True)
class Flicker:
    """Flicker of a clip over its still pixels (0-255 units; 0 = perfectly steady)."""

    still_change: float
    mean_spread: float
    frames: int

    def line(self) -> str:
        return (f"still-pixel change {self.still_change:.2f}, mean-colour spread {self.mean_spread:.2f} "
                f"(0-255 units, {self.frames} frames)")


def _as_float(frame: torch.Tensor | object) -> torch.Tensor:
    """(C, H, W) uint8 tensor, or an (H, W, C) uint8 array, -> (C, H, W) float64 in 0-255."""
    if not isinstance(frame, torch.Tensor):
        frame = torch.as_tensor(np.array(frame)).permute(2, 0, 1)
    return frame.to(torch.float64)


def still_mask(frames: Iterable[torch.Tensor], tolerance: float = 8.0) -> torch.Tensor:
    """(H, W) bool: pixels of an input clip whose every channel stays within ``tolerance`` (0-255)
    of the first frame throughout (codec noise tolerated, anything that moves left out)."""
    first: torch.Tensor | None = None
    mask = torch.ones(0, dtype=torch.bool)
    for frame in frames:
        x = _as_float(frame)
        if first is None:
            first, mask = x, torch.ones(x.shape[-2:], dtype=torch.bool)
            continue
        mask &= ((x - first).abs() <= tolerance).all(dim=0)
    if first is None:
        raise ValueError("still_mask needs at least one frame")
    return mask


def flicker(frames: Iterable[torch.Tensor], mask: torch.Tensor | None = None) -> Flicker:
    """:class:`Flicker` of a clip (frames (C, H, W) uint8 tensors or (H, W, C) arrays, streamed) over
    the pixels where ``mask`` (H, W) is true (None: all of them)."""
    prev: torch.Tensor | None = None
    means: list[torch.Tensor] = []
    change, steps = 0.0, 0
    for frame in frames:
        x = _as_float(frame)
        m = torch.ones(x.shape[-2:], dtype=torch.bool) if mask is None else mask.to(torch.bool)
        if not m.any():
            raise ValueError("the mask selects no pixels")
        pixels = x[:, m]  # (C, N)
        means.append(pixels.mean(dim=1))
        if prev is not None:
            change += (pixels - prev).abs().mean().item()
            steps += 1
        prev = pixels
    if not means:
        raise ValueError("flicker needs at least one frame")
    spread = torch.stack(means).std(dim=0, correction=0).mean().item()  # per channel over frames, then averaged
    return Flicker(change / steps if steps else 0.0, spread, len(means))

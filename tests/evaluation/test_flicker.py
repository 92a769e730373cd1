"""The flicker measure: zero for a steady clip, the known spread and change for a pulsing one, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cut_hf.evaluation.flicker import flicker, still_mask


def test_steady_clip_scores_zero_and_a_pulse_its_size() -> None:
    steady = [torch.full((3, 4, 5), 100, dtype=torch.uint8)] * 4
    assert flicker(steady) == flicker(steady) and flicker(steady).mean_spread == 0 and flicker(steady).still_change == 0
    pulsing = [torch.full((3, 4, 5), v, dtype=torch.uint8) for v in (100, 110, 100, 110)]
    f = flicker(pulsing)
    assert f.mean_spread == pytest.approx(5.0) and f.still_change == pytest.approx(10.0) and f.frames == 4


def test_mask_selects_the_pixels_scored_and_arrays_work() -> None:
    frames = [np.zeros((4, 6, 3), np.uint8) for _ in range(3)]
    for i, f in enumerate(frames):
        f[:, 3:] = 50 * i  # the right half changes, the left half is still
    mask = still_mask(frames)
    assert mask[:, :3].all() and not mask[:, 3:].any()
    assert flicker(frames, mask).mean_spread == 0 and flicker(frames).mean_spread > 0
    with pytest.raises(ValueError, match="selects no pixels"):
        flicker(frames, torch.zeros(4, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one frame"):
        flicker([])

"""Helpers shared by tests in several folders (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository


def make_images(folder, n: int, size=(40, 44), seed: int = 0, prefix: str = "img", ext: str = "png") -> list:
    """``n`` random RGB images of ``size`` (H, W) saved as ``folder/<prefix>_<i>.<ext>``; returns their paths."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"{prefix}_{i}.{ext}"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths

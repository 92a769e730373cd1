"""Helpers shared by tests in several folders (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository


def image_to_tensor(source, channels: int = 3):
    """Any image source -> (channels, H, W) float in [-1, 1]: what translate() gives the generator."""
    from cut_hf.images import load_image, pil_to_tensor

    return pil_to_tensor(load_image(source, channels))


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


def sharpen(module, seed: int = 0, bias_std: float = 0.1):
    """Re-draw ``module``'s weights at He scale (std sqrt(2 / fan_in)), biases at ``bias_std``, and
    batch-norm scales, shifts and running statistics around 1 and 0; returns ``module``.

    The paper's initialisation (Xavier, gain 0.02, zero biases) makes a random network's output tiny
    (~1e-10 for a discriminator without norms, ~1e-12 for a batch-norm generator) or nearly constant,
    so comparing two networks at any tolerance above float rounding would pass whatever they compute.
    At He scale every layer keeps its input's magnitude: outputs are O(1) and every layer shows in them.
    Buffers such as the blur filters are left alone.
    """
    import math

    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * bias_std)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return module


def assert_close_to(actual, expected, rel: float = 1e-5, min_std: float = 0.05) -> None:
    """``actual`` equals ``expected`` to ``rel`` of ``expected``'s largest magnitude, and
    ``expected`` varies (std > ``min_std``), so the comparison can tell two networks apart."""
    import torch

    scale = expected.abs().max().item()
    assert expected.float().std().item() > min_std, f"reference output too flat to compare (std {expected.std():.2e})"
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)

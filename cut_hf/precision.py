"""Precision names and the autocast they mean: one table for training, inference, the CLIs and the app."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: The precisions every entry point accepts (``--precision`` / ``--mixed-precision`` values).
PRECISIONS = ("fp32", "bf16", "fp16")
# Accelerate spells fp32 "no"; accepted here so its mixed-precision setting can be passed through.
_DTYPES = {"fp32": None, "no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: str | torch.device | None = None) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None for fp32).

    Raises ValueError for unknown names, and for fp16 when ``device`` is given and is not CUDA
    (CPU kernels for fp16 are slow or missing; bf16 is the CPU's reduced precision).
    """
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device is not None and torch.device(device).type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device (got {torch.device(device).type}); "
                         "use 'bf16' or 'fp32'")
    return _DTYPES[precision]


@contextlib.contextmanager
def autocast(device: str | torch.device, precision: str) -> Iterator[None]:
    """``torch.autocast`` for ``precision`` on ``device``; nothing for fp32. No device check: training
    may run fp16 autocast on a CPU for tests; inference checks with :func:`autocast_dtype` first."""
    device = torch.device(device)
    dtype = autocast_dtype(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield

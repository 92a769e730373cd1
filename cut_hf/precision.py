"""Precision names and the autocast they mean: one table for training, inference, the CLIs and the app."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: The precisions every entry point accepts (``--precision`` / ``--mixed-precision`` values).
PRECISIONS = ("fp32", "bf16", "fp16")
#: What translation accepts (``translate()``, the translate command, the app): the autocast precisions
#: and int8, 8-bit convolutions on the CPU (:mod:`cut_hf.translation.quantize`; not a training precision).
INFERENCE_PRECISIONS = (*PRECISIONS, "int8")
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


def check_inference_precision(precision: str, device: str | torch.device | None = None) -> None:
    """Raise ValueError (one line) unless ``precision`` can translate on ``device``: one of
    :data:`INFERENCE_PRECISIONS`, fp16 on CUDA only, int8 on the CPU only."""
    if precision == "int8":
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"precision 'int8' runs on the CPU (got {torch.device(device).type}); "
                             "use device 'cpu', or bf16/fp16 on the GPU")
        return
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    autocast_dtype(precision, device)


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

"""Export a generator to ONNX or to a torch.export program, with dynamic batch, height and width.

    cut-hf export --model ID_OR_DIR --format onnx --output model.onnx
    cut-hf export --model ID_OR_DIR --format exported-program --output model.pt2

Both formats come from one ``torch.export`` trace (ONNX through ``torch.onnx.export(dynamo=True)``,
which needs ``onnx`` and ``onnxscript``): the batch is dynamic, and so are height and width as
multiples of the generator's ``size_multiple`` (4 for the ResNet generator: two stride-2 stages).
The older TorchScript-based ONNX exporter cannot give the instance norms a dynamic batch (it needs
a known channel count for the batch-norm call they are made of), so it is not used.

What was exported is recorded in the file: ONNX ``metadata_props`` and, in a ``.pt2`` archive, a
JSON file (:data:`cut_hf.translation.exported.METADATA_FILE`) with ``format``, ``opset``, ``precision``,
``input_nc``, ``output_nc``, ``size_multiple``, ``generator`` (class name), ``cut_hf_version`` and
``source`` (the model id or folder). :mod:`cut_hf.translation.exported` reads them back.

Precisions: ``fp32``; ``fp16`` (weights and activations in half precision, for GPUs; onnxruntime
also runs it on CPU, more slowly than fp32); ``bf16`` only for the exported program (onnxruntime
has no bfloat16 convolution).

Any generator works that maps (B, input_nc, H, W) to (B, output_nc, H, W), has ``input_nc`` and
``output_nc`` attributes and, if its sizes must be multiples of something other than 4, a
``size_multiple`` attribute.
"""

from __future__ import annotations

import copy
import json
import os
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cut_hf import __version__
from cut_hf.translation.exported import (
    METADATA_FILE,
    ExportedModelError,
    OnnxGenerator,
    ProgramGenerator,
    load_onnx_generator,
)

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "MIN_OPSET",
    "ExportError",
    "ExportedModelError",
    "OnnxGenerator",
    "ProgramGenerator",
    "export_metadata",
    "export_onnx",
    "export_program",
    "load_onnx_generator",
    "max_difference",
    "require_onnx",
    "size_multiple",
]

FORMATS = ("onnx", "exported-program")
PRECISIONS = {"onnx": ("fp32", "fp16"), "exported-program": ("fp32", "bf16", "fp16")}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: The default ONNX opset; the torch.export-based exporter implements opset 18 and later only.
DEFAULT_OPSET, MIN_OPSET = 20, 18
#: Trace size: any multiple of ``size_multiple`` works, the exported graph takes every size.
DEFAULT_EXAMPLE_SIZE = (64, 64)
#: The trace runs a batch of 2: with 1, torch.export would treat the batch size as a constant.
EXAMPLE_BATCH = 2


class ExportError(ValueError):
    """A model cannot be exported as asked; the message says why in one line."""


def size_multiple(generator: nn.Module) -> int:
    """The multiple that heights and widths must be: the generator's ``size_multiple`` attribute,
    else 4 (the ResNet generator's two stride-2 stages)."""
    return int(getattr(generator, "size_multiple", 4))


def _channels(generator: nn.Module) -> tuple[int, int]:
    c_in, c_out = getattr(generator, "input_nc", None), getattr(generator, "output_nc", None)
    if c_in is None or c_out is None:
        raise ExportError(f"{type(generator).__name__} has no input_nc/output_nc attributes: cannot export it")
    return int(c_in), int(c_out)


def require_onnx(runtime: bool = True) -> None:
    """Raise :class:`ExportError` naming what is missing when ONNX export (``onnx``, ``onnxscript``)
    or, with ``runtime``, running it (``onnxruntime``) is not installed."""
    wanted = ["onnx", "onnxscript"] + (["onnxruntime"] if runtime else [])
    missing = [name for name in wanted if find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: "
                          "pip install -e '.[export]' in the cut-hf folder")


def export_metadata(
    generator: nn.Module, fmt: str, precision: str, opset: int | None = None, source: str | None = None
) -> dict[str, str]:
    """The metadata recorded in an exported file (all values strings, as ONNX ``metadata_props`` are)."""
    c_in, c_out = _channels(generator)
    meta = {
        "format": fmt,
        "precision": precision,
        "input_nc": str(c_in),
        "output_nc": str(c_out),
        "size_multiple": str(size_multiple(generator)),
        "generator": type(generator).__name__,
        "cut_hf_version": __version__,
        "source": "" if source is None else str(source),
    }
    if opset is not None:
        meta["opset"] = str(opset)
    return meta


def _check_args(generator: nn.Module, fmt: str, precision: str, example_size: tuple[int, int]) -> int:
    """Validate the common arguments; returns the size multiple."""
    if precision not in PRECISIONS[fmt]:
        why = " (onnxruntime has no bfloat16 convolution)" if fmt == "onnx" and precision == "bf16" else ""
        raise ExportError(f"precision for {fmt} must be one of {', '.join(PRECISIONS[fmt])}, got {precision!r}{why}")
    _channels(generator)
    m = size_multiple(generator)
    h, w = example_size
    if h % m or w % m or h < 2 * m or w < 2 * m:
        raise ExportError(f"example size must be multiples of {m} and at least {2 * m}, got {h}x{w}")
    return m


def _traceable(
    generator: nn.Module, precision: str, example_size: tuple[int, int], m: int
) -> tuple[nn.Module, torch.Tensor, tuple[dict[int, Any], ...]]:
    """(model, example input, dynamic shapes): an eval-mode CPU copy in ``precision`` (the user's
    generator is untouched), a batch of 2 random images, and batch / m*h / m*w dynamic dims."""
    model = copy.deepcopy(getattr(generator, "_orig_mod", generator)).to("cpu", DTYPES[precision]).eval()
    c_in, _ = _channels(generator)
    x = torch.rand(EXAMPLE_BATCH, c_in, *example_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    dim = torch.export.Dim
    # A side of m*k with k >= 2: the smallest size the reflect pads of the ResNet generator take.
    shapes = ({0: dim("batch", min=1), 2: m * dim("h", min=2), 3: m * dim("w", min=2)},)
    return model, x.to(DTYPES[precision]), shapes


def _writable(path: str | os.PathLike) -> Path:
    """``path`` as a Path whose folder exists (created) and can be written; ExportError otherwise."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ExportError(f"output {str(p)!r} is a folder; give a file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create the output folder {str(p.parent)!r}: {e.strerror}") from e
    if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ExportError(f"output {str(p)!r} is not writable")
    return p


def export_onnx(
    generator: nn.Module,
    path: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    precision: str = "fp32",
    example_size: tuple[int, int] = DEFAULT_EXAMPLE_SIZE,
    source: str | None = None,
) -> Path:
    """Write ``generator`` as one self-contained ONNX file (weights inside) and return its path.

    Input ``input`` (B, input_nc, H, W) and output ``output`` (B, output_nc, H, W), in [-1, 1],
    with B dynamic and H, W dynamic multiples of :func:`size_multiple`. The opset and the
    :func:`export_metadata` are recorded in the model's ``metadata_props``.

    Raises:
        ExportError: bad precision, opset or example size, a generator without channel
            attributes, a missing ``onnx``/``onnxscript``, or an unwritable ``path``.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"opset must be at least {MIN_OPSET} (the torch.export-based ONNX exporter), got {opset}")
    m = _check_args(generator, "onnx", precision, example_size)
    require_onnx(runtime=False)
    p = _writable(path)
    model, x, shapes = _traceable(generator, precision, example_size, m)
    program = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                                input_names=["input"], output_names=["output"], verbose=False)
    if program is None:  # only the legacy (dynamo=False) exporter returns nothing
        raise ExportError("torch.onnx.export returned no ONNX program")
    # The opset actually written (the exporter may keep a newer one when conversion fails).
    written = program.model.opset_imports.get("", opset)
    for key, value in export_metadata(generator, "onnx", precision, written, source).items():
        program.model.metadata_props[key] = value
    program.save(str(p), external_data=False)
    return p


def export_program(
    generator: nn.Module,
    path: str | os.PathLike,
    *,
    precision: str = "fp32",
    example_size: tuple[int, int] = DEFAULT_EXAMPLE_SIZE,
    source: str | None = None,
) -> Path:
    """Write ``generator`` as a ``torch.export`` ExportedProgram (``torch.export.save``, ``.pt2``).

    Same dynamic dimensions as :func:`export_onnx`; the :func:`export_metadata` travels inside the
    archive. Load it with :class:`cut_hf.translation.exported.ProgramGenerator` (or ``torch.export.load``).

    Raises:
        ExportError: bad precision or example size, a generator without channel attributes, or
            an unwritable ``path``.
    """
    m = _check_args(generator, "exported-program", precision, example_size)
    p = _writable(path)
    model, x, shapes = _traceable(generator, precision, example_size, m)
    program = torch.export.export(model, (x,), dynamic_shapes=shapes)
    meta = export_metadata(generator, "exported-program", precision, source=source)
    torch.export.save(program, str(p), extra_files={METADATA_FILE: json.dumps(meta)})
    return p


def max_difference(
    generator: nn.Module, exported: nn.Module, size: tuple[int, int], batch: int = 2, seed: int = 0
) -> float:
    """Largest absolute difference between ``generator`` (eager, fp32, eval mode) and an exported
    one on a random batch of ``size``, in [-1, 1] units."""
    c_in, _ = _channels(generator)
    x = torch.rand(batch, c_in, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    model = getattr(generator, "_orig_mod", generator)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            param = next(iter(model.parameters()), None)
            ref = model(x.to(param.device) if param is not None else x).float().cpu()
            out = exported(x).float().cpu()
    finally:
        model.train(was_training)
    return float((ref - out).abs().max())

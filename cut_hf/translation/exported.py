"""Run exported generators (ONNX through onnxruntime, torch.export ``.pt2``) like a CUTGenerator.

A deployment loads the file written by ``cut-hf export`` and needs no model code:

    from cut_hf.translation.exported import OnnxGenerator
    from cut_hf import translate
    image = translate(OnnxGenerator("model.onnx"), "horse.jpg")

:class:`OnnxGenerator` and :class:`ProgramGenerator` take and return (B, C, H, W) tensors in
[-1, 1], as the eager generator does, and carry what :func:`cut_hf.translate` reads from a
generator: ``input_nc``/``output_nc``, ``eval()``/``train()``/``to()`` (no-ops: an exported graph
has a fixed mode, and it runs where its runtime runs; outputs come back on the input's device).

They cannot be *tiled*: tiling freezes the statistics of the generator's ``InstanceNorm2d``
modules, and an exported graph has no modules to swap (its instance norms are graph operations).
``tileable`` is False, and a structural copy (which the tiled and channels-last paths of
:mod:`cut_hf.translation.pipeline` make) raises :class:`ExportedModelError` rather than let each tile be
normalised with its own statistics, which would leave visible seams.

This module imports nothing else from cut_hf, so every loader may import it; onnxruntime is
imported only when an ONNX file is opened (``pip install -e '.[export]' in the cut-hf folder``).
"""

from __future__ import annotations

import json
import os
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = ["METADATA_FILE", "ExportedModelError", "OnnxGenerator", "OpenVinoGenerator", "ProgramGenerator",
           "load_exported_generator", "load_onnx_generator", "onnx_metadata"]

#: Name of the JSON metadata stored inside a ``.pt2`` archive (``torch.export.save(extra_files=...)``).
METADATA_FILE = "cut_hf_metadata.json"
#: File suffixes of exported generators (what ``load_generator`` hands to this module).
EXPORTED_SUFFIXES = (".onnx", ".pt2")
_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


class ExportedModelError(RuntimeError):
    """An exported model cannot be loaded or run; the message says why in one line."""


def _check_file(path: str | os.PathLike, suffix: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ExportedModelError(f"exported model {str(p)!r} does not exist or is not a file")
    if p.suffix.lower() != suffix:
        raise ExportedModelError(f"{str(p)!r} is not a {suffix} file")
    return p


class _ExportedGenerator(nn.Module):
    """What the exported generators share: the generator interface around a fixed graph."""

    tileable = False  # see the module docstring

    def __init__(self, path: Path, metadata: dict[str, str], input_nc: int, output_nc: int) -> None:
        super().__init__()
        self.path = path
        self.metadata = dict(metadata)
        self.input_nc, self.output_nc = int(input_nc), int(output_nc)
        self.size_multiple = int(metadata.get("size_multiple", 4))
        self.precision = metadata.get("precision", "fp32")
        self.train(False)

    def train(self, mode: bool = True) -> _ExportedGenerator:
        """No-op: the graph was exported in eval mode and stays there (``training`` is always False)."""
        self.training = False
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> _ExportedGenerator:
        return self  # .to()/.cuda()/.half(): the graph keeps its device and precision

    def __copy__(self) -> _ExportedGenerator:
        raise ExportedModelError(
            f"{type(self).__name__} cannot be tiled or have its norms swapped (an exported graph has no norm "
            "modules): translate with tiling=Tiling(tile=0) and precision='fp32'"
        )

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.input_nc:
            raise ValueError(f"expected a (B, {self.input_nc}, H, W) tensor, got shape {tuple(x.shape)}")
        m = self.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"height and width must be multiples of {m}, got {x.shape[-2]}x{x.shape[-1]}")

    def extra_repr(self) -> str:
        return f"{str(self.path)!r}, input_nc={self.input_nc}, output_nc={self.output_nc}, precision={self.precision}"


class OnnxGenerator(_ExportedGenerator):
    """An ONNX generator run by onnxruntime, callable like a CUTGenerator.

    Args:
        path: the ``.onnx`` file (weights inside it, or in the ``.data`` file next to it).
        providers: onnxruntime execution providers, best first; default: all that are available.
        threads: intra-op threads of the session (default: onnxruntime's choice).
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None) -> None:
        p = _check_file(path, ".onnx")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ExportedModelError("running an ONNX model needs onnxruntime: "
                                     "pip install -e '.[export]' in the cut-hf folder") from e
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            session = ort.InferenceSession(str(p), options, providers=providers or ort.get_available_providers())
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ExportedModelError(f"onnxruntime cannot load {str(p)!r}: {str(e).splitlines()[0]}") from e
        inp, out = session.get_inputs()[0], session.get_outputs()[0]
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        c_in = metadata.get("input_nc", inp.shape[1])
        c_out = metadata.get("output_nc", out.shape[1])
        if not str(c_in).isdigit() or not str(c_out).isdigit():
            raise ExportedModelError(f"{str(p)!r}: cannot tell the channel counts (no input_nc/output_nc metadata)")
        super().__init__(p, metadata, int(c_in), int(c_out))
        self.session = session
        self.input_name, self.output_name = inp.name, out.name
        self.input_dtype = _ONNX_DTYPES.get(inp.type, np.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, C', H, W) in [-1, 1], on ``x``'s device and in its float dtype."""
        self._check(x)
        array = np.ascontiguousarray(x.detach().float().cpu().numpy(), dtype=self.input_dtype)
        (y,) = self.session.run([self.output_name], {self.input_name: array})
        out_dtype = x.dtype if x.is_floating_point() else torch.float32
        return torch.from_numpy(y).to(device=x.device, dtype=out_dtype)


class ProgramGenerator(_ExportedGenerator):
    """A ``torch.export`` program (``.pt2``) callable like a CUTGenerator; runs on the device it was
    saved from (the CPU for ``cut-hf export``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        p = _check_file(path, ".pt2")
        extra = {METADATA_FILE: ""}
        try:
            program = torch.export.load(str(p), extra_files=extra)
        except Exception as e:  # a foreign or truncated archive fails deep inside the deserializer
            raise ExportedModelError(f"torch.export cannot load {str(p)!r}: {str(e).splitlines()[0]}") from e
        try:
            metadata = {k: str(v) for k, v in json.loads(extra[METADATA_FILE] or "{}").items()}
        except (json.JSONDecodeError, AttributeError) as e:
            raise ExportedModelError(f"{str(p)!r}: unreadable {METADATA_FILE}") from e
        if "input_nc" not in metadata or "output_nc" not in metadata:
            raise ExportedModelError(f"{str(p)!r} was not written by cut_hf.translation.export "
                                     "(no input_nc/output_nc metadata)")
        super().__init__(p, metadata, int(metadata["input_nc"]), int(metadata["output_nc"]))
        # Kept in a dict, not as a sub-module: nn.Module.eval()/to() would reach it, and the
        # module of an exported program refuses train()/eval().
        self._graph = {"module": program.module()}
        param = next(iter(program.state_dict.values()), None)
        self.device = param.device if isinstance(param, torch.Tensor) else torch.device("cpu")
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision,
                                                                                               torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, C', H, W) in [-1, 1], on ``x``'s device and in its float dtype."""
        self._check(x)
        y = self._graph["module"](x.detach().to(device=self.device, dtype=self.dtype))
        out_dtype = x.dtype if x.is_floating_point() else torch.float32
        return y.to(device=x.device, dtype=out_dtype)


def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (``{}`` when ``onnx`` is not installed or the file has none)."""
    try:
        import onnx
    except ImportError:
        return {}
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for foreign files
        raise ExportedModelError(f"cannot load ONNX file {str(path)!r}: {str(e).splitlines()[0]}") from e
    return {prop.key: prop.value for prop in model.metadata_props}


class OpenVinoGenerator(_ExportedGenerator):
    """An ONNX generator run by OpenVINO on the CPU, callable like a CUTGenerator: the runtime of
    int8 files (:mod:`cut_hf.translation.quantize`), whose quantised convolutions OpenVINO runs on the
    CPU's int8 units (VNNI, AMX-INT8) where onnxruntime runs them much more slowly (bench/RESULTS.md).

    OpenVINO compiles a graph for static shapes fastest, so one compiled model is kept per input shape
    (the last :attr:`MAX_SHAPES`); a compile takes about a second.

    Args:
        path: the ``.onnx`` file.
        threads: inference threads (default: ``torch.get_num_threads()``, as the eager generator uses).
    """

    MAX_SHAPES = 4

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        p = _check_file(path, ".onnx")
        try:
            import openvino as ov
        except ImportError as e:
            raise ExportedModelError("running an int8 model needs openvino: "
                                     "pip install -e '.[int8]' in the cut-hf folder") from e
        metadata = onnx_metadata(p)
        if "input_nc" not in metadata or "output_nc" not in metadata:
            raise ExportedModelError(f"{str(p)!r} was not written by cut_hf (no input_nc/output_nc metadata)")
        super().__init__(p, metadata, int(metadata["input_nc"]), int(metadata["output_nc"]))
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(p))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with long messages
            raise ExportedModelError(f"openvino cannot load {str(p)!r}: {str(e).splitlines()[0]}") from e
        self.threads = threads
        self._compiled: dict[tuple[int, ...], Any] = {}

    def _request(self, shape: tuple[int, ...]) -> Any:
        """An infer request of the model compiled for ``shape`` (compiled on first use)."""
        if shape not in self._compiled:
            if len(self._compiled) >= self.MAX_SHAPES:
                self._compiled.pop(next(iter(self._compiled)))
            model = self._model.clone()
            model.reshape({model.inputs[0].get_any_name(): list(shape)})
            config = {"INFERENCE_NUM_THREADS": int(self.threads or torch.get_num_threads()),
                      "INFERENCE_PRECISION_HINT": "f32",  # the float parts (norms, ends) stay fp32, not bf16
                      "PERFORMANCE_HINT": "LATENCY"}
            self._compiled[shape] = self._core.compile_model(model, "CPU", config).create_infer_request()
        return self._compiled[shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, C', H, W) in [-1, 1], on ``x``'s device and in its float dtype."""
        self._check(x)
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        y = self._request(tuple(array.shape)).infer({0: array})[0]
        out_dtype = x.dtype if x.is_floating_point() else torch.float32
        return torch.from_numpy(np.array(y)).to(device=x.device, dtype=out_dtype)


def _precision(path: Path) -> str | None:
    """The precision an ONNX file records; None when unreadable (onnxruntime then says why)."""
    try:
        return onnx_metadata(path).get("precision")
    except ExportedModelError:
        return None


def load_onnx_generator(path: str | os.PathLike, **kwargs: Any) -> OnnxGenerator:
    """An :class:`OnnxGenerator` for ``path``; keyword arguments go to its constructor.
    Raises :class:`ExportedModelError` (one line) for a missing or unreadable file."""
    return OnnxGenerator(path, **kwargs)


def load_exported_generator(
    path: str | os.PathLike, **kwargs: Any
) -> OnnxGenerator | OpenVinoGenerator | ProgramGenerator:
    """The runtime generator for an exported file, by suffix: ``.onnx`` or ``.pt2``; an int8 ONNX file
    runs on OpenVINO when it is installed (:class:`OpenVinoGenerator`), any other ONNX file on onnxruntime.
    Raises :class:`ExportedModelError` (one line) for other suffixes and unreadable files."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        if find_spec("openvino") is not None and _precision(_check_file(path, ".onnx")) == "int8":
            return OpenVinoGenerator(path, **kwargs)  # onnxruntime runs int8 files too, but slowly
        return OnnxGenerator(path, **kwargs)
    if suffix == ".pt2":
        return ProgramGenerator(path)
    raise ExportedModelError(f"{str(path)!r}: exported generators are .onnx or .pt2 files")

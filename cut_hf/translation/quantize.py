"""int8 inference on the CPU: calibrate, quantise and run a generator with 8-bit convolutions.

    from cut_hf import translate
    image = translate(generator, "horse.jpg", precision="int8")               # quantised once, then cached
    image = translate(generator, "horse.jpg", precision="int8", calibration="my_photos/")

The engine, chosen by measurement (bench/RESULTS.md): the generator is exported to ONNX
(:func:`export_float_graph`), onnxruntime's static quantisation turns its
convolutions into QDQ int8 (weights per output channel, activations per tensor with ranges seen on
calibration images), and OpenVINO runs that file on the CPU's int8 units
(:class:`~cut_hf.translation.exported.OpenVinoGenerator`). Accuracy: the first and the last
convolution (the RGB input and the tanh output) and everything that is not a convolution (instance
norms, the fixed blur filters, the transposed-convolution upsampling) stay in float.

Calibration sets each activation's int8 range, so it wants images of the model's own domain: the
images the user names (``calibration=``: a folder, files, PIL images, arrays or tensors), else the
images of the first int8 call (which are of the domain by definition). Images are resized so that
their shorter side is the *size class* of the inputs (:func:`size_class`), since ranges drift
with the image size. A quantised model is kept in memory per (weights, size class, calibration) for
the rest of the process (:func:`int8_generator`); :func:`quantize_to_file` writes it to disk with
a JSON record of its calibration beside it (``cut-hf export --format onnx --precision int8``), and
:func:`cut_hf.load_generator` runs such a file.

Only generators made of plain convolutions quantise: SinCUT's StyleGAN2 generator (modulated
convolutions whose weights depend on a style vector) and exported files are refused in one line.
The quantised graph has no norm modules to freeze, so it cannot be tiled (as the other exported
graphs); :func:`cut_hf.translate` refuses an explicit tile size with int8 and runs large images whole.

Needs ``onnx``, ``onnxruntime`` and ``openvino``: ``pip install -e '.[int8]'`` in the cut-hf folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import tempfile
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from cut_hf.images import load_image, pil_to_uint8
from cut_hf.models.layers import InstanceNorm2d
from cut_hf.translation.exported import OnnxGenerator, OpenVinoGenerator
from cut_hf.translation.inference import as_float, pad, resize, swap_norms

__all__ = ["CALIBRATION_SIDES", "QuantizationError", "calibration_inputs", "check_quantizable", "int8_generator",
           "model_examples", "psnr", "quantize_to_file", "require_int8", "size_class"]

#: Size classes: calibration images are resized to the class's shorter side. Activation ranges after
#: the instance norms settle as images grow, so images above 512 px share the 512 px class.
CALIBRATION_SIDES = (256, 512)
#: At most this many calibration images are used (more cost time and change the ranges little).
MAX_CALIBRATION_IMAGES = 8
#: Suffix of the calibration record written beside an int8 file: ``model.onnx`` -> ``model.onnx.calibration.json``.
RECORD_SUFFIX = ".calibration.json"
#: Quantised models kept in memory (each holds its compiled graphs).
CACHE_SIZE = 4
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_PARAMETRISED_OK = (nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)

_cache: OrderedDict[tuple, OpenVinoGenerator] = OrderedDict()
# generator -> (the identity and in-place version of each tensor, weights_key) of its last int8 use
_weight_keys: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


class QuantizationError(ValueError):
    """A model cannot be quantised or run in int8 as asked; the message says why in one line."""


def require_int8() -> None:
    """Raise :class:`QuantizationError` naming what is missing when int8 needs packages that are not installed."""
    missing = [name for name in ("onnx", "onnxruntime", "openvino") if find_spec(name) is None]
    if missing:
        raise QuantizationError(f"precision 'int8' needs {', '.join(missing)}: "
                                "pip install -e '.[int8]' in the cut-hf folder")


def check_quantizable(generator: nn.Module) -> None:
    """Raise :class:`QuantizationError` (one line) unless ``generator`` can be quantised: an eager
    model whose weighted layers are plain convolutions and norms, with at least three convolutions
    (the first and last stay float)."""
    name = type(generator).__name__
    if not getattr(generator, "tileable", True):  # the exported graphs of cut_hf.translation.exported
        raise QuantizationError(f"{name} is an exported graph and cannot be quantised: export an int8 file from "
                                "the model itself (cut-hf export --format onnx --precision int8)")
    for module_name, module in generator.named_modules():
        if any(True for _ in module.parameters(recurse=False)) and not isinstance(module, _PARAMETRISED_OK):
            raise QuantizationError(f"{name} cannot be quantised to int8: {module_name or 'it'} is a "
                                    f"{type(module).__name__}, not a plain convolution (e.g. SinCUT's modulated "
                                    "convolutions); use precision fp32 or bf16")
    convs = sum(isinstance(m, nn.Conv2d) for m in generator.modules())
    if convs < 3:
        raise QuantizationError(f"{name} has {convs} convolutions: int8 keeps the first and last in float, "
                                "so there is nothing to quantise")


def model_examples(model: str | os.PathLike) -> Path | None:
    """The ``examples/`` folder of a local model folder (the shipped model's test images), or of the
    folder above a ``generator/`` folder; None when there is none (Hub ids included)."""
    if not str(model):
        return None
    path = Path(model).expanduser()
    for folder in (path / "examples", path.parent / "examples"):
        if folder.is_dir():
            return folder
    return None


def size_class(height: int, width: int) -> int:
    """The calibration side for an image of ``height`` x ``width``: the :data:`CALIBRATION_SIDES`
    entry nearest to its shorter side (on a log scale)."""
    short = max(1, min(height, width))
    return min(CALIBRATION_SIDES, key=lambda side: abs(math.log(short / side)))


# ------------------------------------------------------------------------------------ calibration
def _expand(calibration: object) -> list[Any]:
    """A folder -> its images (sorted); a single path/image/array -> a list of one; a list as is."""
    if isinstance(calibration, (str, os.PathLike)) and Path(calibration).is_dir():
        files = sorted(p for p in Path(calibration).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise QuantizationError(f"calibration folder {str(calibration)!r} holds no images")
        return [str(p) for p in files]
    if isinstance(calibration, torch.Tensor) and calibration.ndim == 4:
        return list(calibration)
    if isinstance(calibration, (list, tuple)):
        if not calibration:
            raise QuantizationError("calibration needs at least one image")
        return list(calibration)
    return [calibration]


def _as_unit(item: object, channels: int) -> torch.Tensor:
    """One calibration image as a (C, H, W) float tensor in [-1, 1]."""
    if isinstance(item, torch.Tensor):
        item = item[0] if item.ndim == 4 and item.shape[0] == 1 else item  # calibration_inputs' own output
        if item.ndim != 3 or item.shape[0] != channels:
            raise QuantizationError(f"calibration tensors must be ({channels}, H, W), got {tuple(item.shape)}")
        return as_float(item.detach().cpu()).float()
    return as_float(pil_to_uint8(load_image(item, channels)))  # type: ignore[arg-type]  # paths, PIL images, arrays; ImageLoadError names it


def calibration_inputs(calibration: object, side: int, channels: int = 3) -> list[torch.Tensor]:
    """Calibration images as (1, C, H, W) float tensors in [-1, 1], the shorter side resized to ``side``
    and padded to multiples of 4 (as translate pads); at most :data:`MAX_CALIBRATION_IMAGES`.

    ``calibration``: a folder, a path, a PIL image, an array, a (C, H, W) tensor ([-1, 1] float or
    uint8) or a list of them. Raises QuantizationError for an empty folder or list, ImageLoadError for
    an unreadable image."""
    inputs = []
    for item in _expand(calibration)[:MAX_CALIBRATION_IMAGES]:
        x = _as_unit(item, channels)
        scale = side / min(x.shape[-2:])
        x = resize(x, (max(8, round(x.shape[-2] * scale)), max(8, round(x.shape[-1] * scale))))
        inputs.append(pad(x[None])[0].contiguous())
    return inputs


def calibration_key(inputs: Sequence[torch.Tensor]) -> str:
    """A short digest of the calibration tensors (part of the cache key and of the record)."""
    digest = hashlib.blake2b(digest_size=12)
    for x in inputs:
        digest.update(str(tuple(x.shape)).encode())
        digest.update(x.numpy().tobytes())
    return digest.hexdigest()


def weights_key(generator: nn.Module) -> str:
    """A digest of ``generator``'s class, configuration and weights: equal weights, equal key."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(type(generator).__qualname__.encode())
    digest.update(json.dumps(getattr(generator, "config", None) or {}, sort_keys=True, default=str).encode())
    for name, tensor in generator.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------- quantisation
class _Reader:
    """onnxruntime's CalibrationDataReader protocol over the calibration tensors."""

    def __init__(self, inputs: Sequence[torch.Tensor]) -> None:
        self._items = iter([{"input": x.numpy()} for x in inputs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:  # onnxruntime >= 1.17 may iterate the reader
        return iter(self.get_next, None)


#: Opset of the float graph handed to the quantiser (the TorchScript exporter's range).
QUANTIZE_OPSET = 17


def _plain_norm(name: str, norm: nn.InstanceNorm2d) -> nn.Module:
    """A shallow copy of ``norm`` on PyTorch's own instance-norm path (shared parameters): the TorchScript
    exporter writes that as one InstanceNormalization node, the fast path's reshapes it cannot export."""
    plain = copy.copy(norm)
    if isinstance(plain, InstanceNorm2d):
        plain.fast = False
    return plain


def _atanh_symbolic(graph: Any, x: Any) -> Any:
    return graph.op("Atanh", x)


def export_float_graph(generator: nn.Module, path: Path, source: str | None = None) -> Path:
    """``generator`` as an fp32 ONNX file for the quantiser, dynamic in batch, height and width.

    Written by the TorchScript exporter, which takes about half a second where the torch.export-based
    one of :func:`cut_hf.translation.export.export_onnx` takes 15-20 s on two loaded cores; the graph is
    the same network (its instance norms on PyTorch's own path), and its metadata that of an export."""
    from cut_hf.translation.export import export_metadata  # see quantize_to_file

    model = swap_norms(generator, _plain_norm).eval()
    x = torch.zeros(1, int(getattr(generator, "input_nc", 3)), 64, 64)
    axes = {0: "batch", 2: "height", 3: "width"}
    # The exporter has no rule for atanh (the residual generator's output); ONNX has the op. The rule is
    # registered for this export only, so nothing outlives the call.
    torch.onnx.register_custom_op_symbolic("aten::atanh", _atanh_symbolic, QUANTIZE_OPSET)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=QUANTIZE_OPSET,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": axes, "output": axes})
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::atanh", QUANTIZE_OPSET)
    import onnx

    graph = onnx.load(str(path))
    for key, value in export_metadata(generator, "onnx", "fp32", QUANTIZE_OPSET, source).items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))
    return path


def _quantize_onnx(fp32: Path, out: Path, inputs: Sequence[torch.Tensor]) -> list[str]:
    """fp32 ONNX -> QDQ int8 ONNX (per-channel s8 weights, u8 activations, MinMax ranges over ``inputs``),
    the first and last Conv left in float. Returns the names of the float convolutions."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    prepared = out.with_name(out.stem + ".pre.onnx")
    # Graph clean-up and ONNX shape inference, as onnxruntime advises; its symbolic shape inference knows no Atanh.
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared))
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    # The input conv sees raw RGB and the output conv feeds tanh: 8 bits there cost 0.6-3 dB (bench/RESULTS.md).
    kept = [convs[0], convs[-1]]
    quantize_static(str(prepared), str(out), _Reader(inputs), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                    nodes_to_exclude=kept, calibrate_method=CalibrationMethod.MinMax)
    # quantize_static drops metadata_props: put the export's record back, marked int8.
    quantised = onnx.load(str(out))
    del quantised.metadata_props[:]
    for prop in model.metadata_props:
        quantised.metadata_props.add(key=prop.key, value="int8" if prop.key == "precision" else prop.value)
    onnx.save(quantised, str(out))
    prepared.unlink(missing_ok=True)
    return kept


def quantize_to_file(
    generator: nn.Module,
    path: str | os.PathLike,
    calibration: object,
    *,
    side: int = CALIBRATION_SIDES[0],
    source: str | None = None,
) -> Path:
    """Write ``generator`` as an int8 ONNX file calibrated on ``calibration`` (see
    :func:`calibration_inputs`) resized to ``side``, with its calibration record beside it
    (``<path>.calibration.json``: images, side, method, float layers, weights digest). Returns the path.

    Raises QuantizationError for a model that cannot be quantised or missing packages, ExportError
    for an unwritable path."""
    # Imported here: export needs cut_hf.__version__, which cut_hf/__init__ sets after importing translate.
    from cut_hf import __version__

    require_int8()
    check_quantizable(generator)
    channels = int(getattr(generator, "input_nc", 3))
    inputs = calibration_inputs(calibration, side, channels)
    out = Path(path).expanduser()
    with tempfile.TemporaryDirectory(prefix="cut_hf_int8_") as tmp:
        fp32 = export_float_graph(generator, Path(tmp) / "fp32.onnx", source=source)
        out.parent.mkdir(parents=True, exist_ok=True)
        kept = _quantize_onnx(fp32, out, inputs)
    names = [str(c) if isinstance(c, (str, os.PathLike)) else type(c).__name__ for c in _expand(calibration)]
    record = {"calibration_images": names[:MAX_CALIBRATION_IMAGES], "side": side, "method": "MinMax",
              "activations": "uint8 per tensor", "weights": "int8 per output channel",
              "float_layers": [*kept, "everything but Conv"], "calibration_digest": calibration_key(inputs),
              "weights_digest": weights_key(generator), "source": source or "", "cut_hf_version": __version__}
    Path(str(out) + RECORD_SUFFIX).write_text(json.dumps(record, indent=2) + "\n")
    return out


def _weights_key(generator: nn.Module) -> str:
    """:func:`weights_key`, recomputed only when a parameter or buffer changed in place since the last
    call (PyTorch counts in-place writes in ``Tensor._version``): hashing every call would cost more
    than an int8 forward of a 256 px image."""
    versions = tuple((t.data_ptr(), t._version) for t in generator.state_dict().values())
    known = _weight_keys.get(generator)
    if known is None or known[0] != versions:
        known = (versions, weights_key(generator))
        _weight_keys[generator] = known
    return known[1]


def _calibration_id(calibration: object, side: int) -> tuple | None:
    """A key for a calibration named by paths (the files' names, sizes and times), without reading the
    images; None for images given in memory (their digest is the key)."""
    items = _expand(calibration) if isinstance(calibration, (str, os.PathLike, list, tuple)) else [calibration]
    paths = [item for item in items if isinstance(item, (str, os.PathLike))]
    if len(paths) != len(items):
        return None
    stats = []
    for item in paths:
        stat = os.stat(item) if os.path.isfile(item) else None
        stats.append((str(Path(item).resolve()), stat and (stat.st_size, stat.st_mtime_ns)))
    return ("files", side, *stats)


def int8_generator(
    generator: nn.Module, calibration: object = None, side: int = CALIBRATION_SIDES[0], *, inputs: object = None
) -> nn.Module:
    """``generator`` quantised to int8 and ready to run (an :class:`OpenVinoGenerator`), from the
    in-memory cache when the same weights were quantised for ``side`` with the same calibration before.

    ``calibration``: images of the model's domain (see :func:`calibration_inputs`). ``None``: the
    images this model first ran in int8 with at this size class, ``inputs`` (a later call with other
    inputs reuses that quantisation: once per model and size class). An int8 file already loaded
    (:func:`cut_hf.load_generator` of an int8 ``.onnx``) is returned as it is.
    Raises :class:`QuantizationError` (one line) for models that cannot be quantised, missing packages
    or no calibration images."""
    if isinstance(generator, (OpenVinoGenerator, OnnxGenerator)) and generator.precision == "int8":
        return generator
    require_int8()
    check_quantizable(generator)
    model = getattr(generator, "_orig_mod", generator)  # torch.compile wrappers: quantise the module inside
    channels = int(getattr(model, "input_nc", 3))
    weights = _weights_key(model)
    if calibration is None:
        key: tuple = (weights, side, "first inputs")
        source = inputs
    else:
        key = (weights, *(_calibration_id(calibration, side) or (side, calibration_key(
            calibration_inputs(calibration, side, channels)))))
        source = calibration
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    if source is None:
        raise QuantizationError("int8 needs calibration images of the model's domain: pass calibration=")
    with tempfile.TemporaryDirectory(prefix="cut_hf_int8_") as tmp:
        path = quantize_to_file(model, Path(tmp) / "int8.onnx", source, side=side)
        runner = OpenVinoGenerator(path)  # OpenVINO has read the whole file: the folder may go
    _cache[key] = runner
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return runner


def psnr(reference: Image.Image | torch.Tensor, other: Image.Image | torch.Tensor) -> float:
    """PSNR in dB of ``other`` against ``reference``: two PIL images (8-bit, peak 255) or two
    tensors in [-1, 1] (peak-to-peak 2). The fidelity of int8 outputs to fp32 ones; inf when equal."""
    if isinstance(reference, Image.Image) and isinstance(other, Image.Image):
        a, b = (torch.from_numpy(np.asarray(im, dtype=np.float64)) for im in (reference, other))
        peak = 255.0
    elif isinstance(reference, torch.Tensor) and isinstance(other, torch.Tensor):
        a, b, peak = reference.double(), other.double(), 2.0
    else:
        raise TypeError("psnr compares two PIL images or two tensors")
    if a.shape != b.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    mse = float((a - b).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)

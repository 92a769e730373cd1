"""Facts about the machine, and helpers that build fast modules for training and inference.

Each helper is one decision that ``train.py``, ``bench/bench.py`` and users share; the measurements
behind them are in ``bench/RESULTS.md``:

- :func:`channels_last_default`: whether the channels-last memory format pays off. On CUDA it
  does (tensor-core kernels are NHWC). On a CPU it depends on the ISA: oneDNN runs NHWC forward
  and data-gradient convolutions with fast brgemm kernels on AVX2, but its NHWC weight-gradient
  kernel there is an older, much slower one; only AVX-512 CPUs have brgemm weight gradients. So
  fp32 training on AVX2 stays NCHW; emulated bf16 goes channels-last. On AVX-512 it pays only if
  the map stays channels-last from layer to layer: the fast layers of :mod:`cut_hf.models.layers`
  keep the layout (and bf16 under autocast), where the plain ones convert to NCHW / float32.
- :func:`native_bf16`: whether bf16 is computed natively. Without AVX512-BF16 / AMX (CPUs) oneDNN
  has no bf16 convolution at all and PyTorch falls back to slow reference loops; ``train.py``, the
  translate CLI and the app warn then (:func:`emulated_bf16`).
- :func:`fast_int8`: whether int8 translation pays: a CPU with 8-bit dot-product instructions
  (AVX-512 VNNI, AVX-VNNI, AMX-INT8) and OpenVINO to run them; elsewhere int8 convolutions are
  no faster than fp32 ones, and the app does not offer int8.
- :func:`keep_freed_memory`: glibc keeps freed tensor memory mapped between training steps (no
  page faults on every step's large activations).
- :func:`channels_last_`, :func:`compile_generator`, :func:`set_threads`: the helpers themselves.
  ``torch.compile`` stays off by default (slower on the CPUs measured, after a long compilation).
  The exact fast operations are chosen when a generator is built (``CUTGenerator(fast_ops=...)``).
Precision names and autocast live in :mod:`cut_hf.precision`.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from importlib.util import find_spec
from typing import Any

import torch
import torch.nn as nn

from cut_hf.precision import autocast_dtype


# ------------------------------------------------------------------------------ the machine
def cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` of ``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_device() -> torch.device:
    """Where cut-hf runs when no device is named: CUDA, then another accelerator PyTorch knows
    (Apple's MPS, Intel's XPU, ...: ``torch.accelerator``), then the CPU. The one choice that
    ``translate()``, ``cut-hf translate``, ``cut-hf evaluate`` and the app share."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.accelerator.is_available():
        accelerator = torch.accelerator.current_accelerator()
        if accelerator is not None:
            return torch.device(accelerator.type)
    return torch.device("cpu")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bf16 convolutions natively (fast) rather than by emulation."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
            return False
    return True  # other accelerators (mps, xpu): assume their bf16 is native


def emulated_bf16(precision: str, device: str | torch.device = "cpu") -> bool:
    """Whether ``precision`` on ``device`` means bf16 on a CPU that emulates it (slow, see above)."""
    device = torch.device(device)
    if precision == "int8":  # a translation precision with no autocast (cut_hf.translation.quantize)
        return False
    return device.type == "cpu" and autocast_dtype(precision) == torch.bfloat16 and not native_bf16(device)


#: CPU flags of 8-bit dot-product instructions, which int8 convolutions need to beat fp32 ones.
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def fast_int8(device: str | torch.device = "cpu") -> bool:
    """Whether ``precision="int8"`` translates faster than fp32 on ``device``: a CPU with one of
    :data:`INT8_FLAGS` and the int8 runtime installed (``pip install -e '.[int8]'`` in the cut-hf folder)."""
    if torch.device(device).type != "cpu" or not cpu_flags() & set(INT8_FLAGS):
        return False
    return all(find_spec(name) is not None for name in ("onnx", "onnxruntime", "openvino"))


#: What the translate CLI, the app and training tell a user of emulated bf16 (figures: bench/RESULTS.md).
EMULATED_BF16_NOTE = "this CPU has no native bf16; PyTorch emulates bf16 convolutions, many times slower than fp32"


def machine_description() -> dict[str, Any]:
    """What a benchmark figure depends on: CPU, ISA, threads, library versions, accelerator, load."""
    flags = cpu_flags()
    desc: dict[str, Any] = {
        "cpu": cpu_model(),
        "usable_cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "isa": sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma", "avx_vnni")),
        "avx512": any(f.startswith("avx512") for f in flags),
        "amx": any(f.startswith("amx") for f in flags),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_bf16": native_bf16("cpu"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/meminfo") as f:
            desc["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    if torch.cuda.is_available():
        desc["cuda_device"] = torch.cuda.get_device_name(0)
        desc["cuda_bf16"] = torch.cuda.is_bf16_supported()
    return desc


# ------------------------------------------------------------------------------ the switches
#: Tensors up to this size come from the heap, and freed memory is kept for the next step.
HEAP_LIMIT = 1 << 30


def keep_freed_memory(limit: int = HEAP_LIMIT) -> bool:
    """Make glibc keep freed tensor memory for reuse instead of returning it to the OS (CPU runs).

    glibc serves allocations above its mmap threshold (at most 32 MiB, adapted at run time) with
    fresh ``mmap`` pages and unmaps them on free, so every training step page-faults its large
    activations in again: hundreds of thousands of zero-filled page faults per 256 px step
    (bench/RESULTS.md). Raising the mmap and trim thresholds to ``limit`` keeps the step's working
    set mapped; the resident size then stays at the peak between steps, which a training process
    reaches every step anyway. Returns whether glibc took the settings (False elsewhere: musl,
    macOS, Windows). Process-wide; call once before training.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, int(limit))) and bool(mallopt(m_trim_threshold, int(2 * limit)))


def set_threads(n: int | None = None) -> int:
    """Use ``n`` intra-op threads (default: the usable cores, not the logical CPUs of the host,
    which oversubscribes containers); returns the number set."""
    n = usable_cores() if n is None else int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def channels_last_default(device: str | torch.device, precision: str = "fp32") -> bool:
    """The measured default for the channels-last format on ``device`` (see the module docstring).

    CUDA: yes. CPU: yes with AVX-512 (brgemm NHWC kernels for every pass); on AVX2 no for fp32
    (the NHWC weight-gradient kernel is the slow one), but yes for emulated bf16, whose NCHW
    convolution is far slower than its NHWC one (bench/RESULTS.md).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        if any(f.startswith("avx512") for f in cpu_flags()):
            return True
        return emulated_bf16(precision, device)
    return False


def channels_last_(*modules: nn.Module) -> None:
    """Convert the 4-D weights of ``modules`` to channels-last, in place.

    Inputs need no conversion: a convolution whose weight is channels-last returns a channels-last
    output, so the format spreads through the network from the first layer.
    """
    for module in modules:
        module.to(memory_format=torch.channels_last)


def compile_generator(generator: nn.Module, **compile_kwargs: Any) -> nn.Module:
    """Compile what training and inference call on a :class:`~cut_hf.CUTGenerator`, in place.

    ``forward`` (through ``__call__``), ``forward_with_features`` and ``encode`` are each replaced on
    the instance by a ``torch.compile``-d version, so the state dict, ``save_pretrained`` and the
    module's identity are unchanged (an ``OptimizedModule`` wrapper would prefix every key with
    ``_orig_mod.``). Returns the same generator.
    """
    generator.compile(**compile_kwargs)
    for name in ("forward_with_features", "encode"):
        method = getattr(generator, name, None)
        if method is not None:
            setattr(generator, name, torch.compile(method, **compile_kwargs))
    return generator


def training_fast_paths_(
    generator: nn.Module,
    discriminator: nn.Module,
    device: str | torch.device,
    channels_last: bool | None = None,
    compile: bool = False,
    precision: str = "fp32",
) -> dict[str, bool]:
    """Apply ``train.py``'s ``--channels-last`` (``None``: :func:`channels_last_default` for
    ``device`` and ``precision``, the ``--mixed-precision`` value) and ``--compile`` to G and D
    before they are prepared; returns what was applied (``--fast-ops`` is a generator argument).

    The PatchSampler stays as it is: its inputs are (patches, channels) matrices, not images.
    """
    cl = channels_last_default(device, precision) if channels_last is None else bool(channels_last)
    if cl:
        channels_last_(generator, discriminator)
    if compile:
        compile_generator(generator)
        discriminator.compile()
    return {"channels_last": cl, "compile": bool(compile)}

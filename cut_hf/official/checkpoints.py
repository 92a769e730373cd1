"""The paper's official checkpoints (``latest_net_G.pth``, ``_D``, ``_F``): read safely, recognised, loaded.

The original release stores plain state dicts (``torch.save(net.state_dict())``). We read them with
``torch.load(weights_only=True)`` only, so a file that would need to run code when unpickled is
refused instead of executed. The architecture (ngf, residual blocks, channels, anti-aliasing,
dropout, norm) is inferred from the tensor names and shapes and the weights are loaded with
``strict=True``, so a converted model holds exactly the original numbers.

:data:`KINDS` is the table of networks we can read (how to recognise one, its class, how to infer
its config) and :data:`MODES` the table of training modes (which kind fills each slot:
``--checkpoint``, ``--netD``, ``--netF``). A new network family is one entry in each.
"""

from __future__ import annotations

import os
import pickletools
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn as nn

from cut_hf.errors import mismatch_message, one_line
from cut_hf.models import CUTGenerator, PatchDiscriminator, PatchSampler, StyleGAN2Discriminator, StyleGAN2Generator
from cut_hf.official.stylegan2 import (
    infer_stylegan2_discriminator_config,
    infer_stylegan2_generator_config,
    is_stylegan2_discriminator,
    is_stylegan2_generator,
)

__all__ = [
    "KINDS",
    "MODES",
    "CheckpointKind",
    "ConversionError",
    "Mode",
    "checkpoint_kind",
    "drop_stale_instance_norm_stats",
    "infer_discriminator_config",
    "infer_generator_config",
    "infer_sampler_config",
    "load_official",
    "load_official_generator",
    "load_state_dict_file",
]


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message says why in one line."""


# --------------------------------------------------------------------------------------------
# Reading a checkpoint safely
# --------------------------------------------------------------------------------------------

def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` state dict with ``torch.load(weights_only=True)`` and strip ``module.`` prefixes.

    Accepts a plain state dict (what the official code saves) or one nested once under
    ``state_dict`` / ``model`` / ``netG`` / ``generator``. Raises :class:`ConversionError` for a
    missing, truncated or foreign file, and for a pickle that needs code to load (never run).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ConversionError(f"{str(path)!r} does not exist")
    if not path.is_file():
        raise ConversionError(f"{str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise ConversionError(f"{str(path)!r} is empty")
    try:
        with warnings.catch_warnings():  # a protocol-4 pickle warns before being refused: one line is enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the safe unpickler raises many types on foreign bytes
        # weights_only refuses any global outside torch's allow-list (os.system, arbitrary classes,
        # ...) without running it. Name what the pickle wanted to import, read without executing.
        foreign = _foreign_globals(path)
        if foreign or "Unsupported global" in str(err):
            found = f" (it imports {', '.join(foreign[:3])})" if foreign else ""
            raise ConversionError(
                f"refusing {str(path)!r}: it is a pickle that needs to run code to load{found}; "
                "official CUT checkpoints are plain state dicts of tensors"
            ) from err
        raise ConversionError(f"{str(path)!r} is truncated or not a PyTorch checkpoint: {one_line(err)}") from err

    if isinstance(obj, Mapping) and not _all_tensors(obj):
        for key in ("state_dict", "model", "netG", "generator"):
            if isinstance(obj.get(key), Mapping) and _all_tensors(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not _all_tensors(obj):
        kind = type(obj).__name__ if not isinstance(obj, Mapping) else "a dict that is not a state dict"
        raise ConversionError(f"{str(path)!r} holds {kind}, not a state dict of tensors")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        # DataParallel / DDP wrappers add one (sometimes repeated) "module." prefix.
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    return out


# Globals an ordinary state-dict pickle refers to; anything else means code would run on load.
_SAFE_GLOBALS = ("collections.OrderedDict", "_codecs.encode")


def _foreign_globals(path: Path) -> list[str]:
    """``module.name`` of every global the pickle in ``path`` imports that a state dict never needs.

    Reads opcodes with :mod:`pickletools` (nothing is executed); for a zip checkpoint it reads the
    ``data.pkl`` member. Stops quietly at the end of a truncated stream.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                data = zf.read(member) if member else b""
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile, KeyError):
        return []
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, str] = {}  # pickle memo slots that hold strings
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING",
                           "BINSTRING", "STRING"):
                strings.append(str(arg))
            elif op.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings and isinstance(arg, int):
                memo[arg] = strings[-1]
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(arg, int) and arg in memo:
                strings.append(memo[arg])
            elif op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001 - truncated or garbage stream: report what was read
        pass
    return [g for g in dict.fromkeys(found) if g.split(".")[0] != "torch" and g not in _SAFE_GLOBALS]


def _all_tensors(mapping: Mapping) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items())


# --------------------------------------------------------------------------------------------
# What is it, and what configuration made it
# --------------------------------------------------------------------------------------------

_BLOCK_KEY = re.compile(r"^model\.(\d+)\.conv_block\.(\d+)\.weight$")
_TOP_WEIGHT = re.compile(r"^model\.(\d+)\.weight$")
_MLP_KEY = re.compile(r"^mlp_(\d+)\.(\d+)\.weight$")


def _norm_from_keys(state_dict: Mapping[str, torch.Tensor], conv_before_norm: str) -> str:
    """Instance norm has no tensors but its convs carry a bias; batch norm keeps running stats."""
    if any(k.endswith("running_mean") for k in state_dict):
        return "batch"
    return "instance" if f"{conv_before_norm}.bias" in state_dict else "none"


def infer_generator_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``CUTGenerator`` arguments that reproduce the layout of an official ``netG`` state dict.

    Reads: ``model.1.weight`` (ngf, input_nc, 7, 7); residual blocks ``model.<i>.conv_block.*``
    (their count, their first index: 12 with blur-pool downsampling, 10 with strided convs, and
    whether the second conv sits at ``.5`` or, after a dropout, at ``.6``); a ``filt`` buffer right
    after the trunk (anti-aliased upsampling) and the last 7x7 conv (output_nc, ngf, 7, 7).
    """
    first = state_dict.get("model.1.weight")
    if first is None or first.dim() != 4 or tuple(first.shape[-2:]) != (7, 7):
        raise ConversionError("not a CUT ResNet generator: no 7x7 input convolution at model.1")
    ngf, input_nc = int(first.shape[0]), int(first.shape[1])

    blocks: dict[int, set[int]] = {}
    for key, value in state_dict.items():
        m = _BLOCK_KEY.match(key)
        if m and value.dim() == 4:  # convolutions only (batch norm also has .weight)
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks:
        raise ConversionError("not a CUT ResNet generator: no residual blocks (model.<i>.conv_block.*)")
    indices = sorted(blocks)
    n_blocks = len(indices)
    if indices != list(range(indices[0], indices[0] + n_blocks)):
        raise ConversionError(f"not a CUT ResNet generator: residual blocks at non-consecutive indices {indices}")
    antialias = "model.7.filt" in state_dict  # Downsample after the first stride-1 conv (indices 4-7)
    expected_first = 12 if antialias else 10
    if indices[0] != expected_first:
        raise ConversionError(
            f"not a CUT ResNet generator: residual blocks start at model.{indices[0]}, expected "
            f"model.{expected_first} for {'anti-aliased' if antialias else 'strided'} downsampling"
        )
    conv_positions = {frozenset(v) for v in blocks.values()}
    if conv_positions == {frozenset({1, 5})}:
        dropout = False
    elif conv_positions == {frozenset({1, 6})}:
        dropout = True
    else:
        layout = sorted(blocks[indices[0]])
        raise ConversionError(f"not a CUT ResNet generator: unexpected residual block layout {layout}")
    up = indices[0] + n_blocks
    antialias_up = f"model.{up}.filt" in state_dict

    top = sorted(int(m.group(1)) for k, v in state_dict.items() if (m := _TOP_WEIGHT.match(k)) and v.dim() == 4)
    last = state_dict[f"model.{top[-1]}.weight"] if top else None
    if last is None or last.dim() != 4 or tuple(last.shape[-2:]) != (7, 7) or int(last.shape[1]) != ngf:
        raise ConversionError("not a CUT ResNet generator: no 7x7 output convolution from ngf channels")
    return dict(
        input_nc=input_nc,
        output_nc=int(last.shape[0]),
        ngf=ngf,
        n_blocks=n_blocks,
        norm=_norm_from_keys(state_dict, "model.1"),
        antialias=antialias,
        antialias_up=antialias_up,
        dropout=dropout,
    )


def infer_discriminator_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``PatchDiscriminator`` arguments for an official ``netD`` (PatchGAN ``basic`` / ``n_layers``).

    The convolutions are 4x4: the first gives (ndf, input_nc); there are ``n_layers + 2`` of them;
    ``filt`` buffers mean blur-pool (anti-aliased) downsampling.
    """
    convs = sorted(
        int(m.group(1)) for k, v in state_dict.items() if (m := _TOP_WEIGHT.match(k)) and v.dim() == 4
    )
    first = state_dict.get("model.0.weight")
    if first is None or first.dim() != 4 or tuple(first.shape[-2:]) != (4, 4) or len(convs) < 3:
        raise ConversionError("not a PatchGAN discriminator: expected 4x4 convolutions model.0 ... model.<n>")
    if any(tuple(state_dict[f"model.{i}.weight"].shape[-2:]) != (4, 4) for i in convs):
        raise ConversionError("not a PatchGAN discriminator: not all convolutions are 4x4")
    if int(state_dict[f"model.{convs[-1]}.weight"].shape[0]) != 1:
        raise ConversionError("not a PatchGAN discriminator: the last convolution does not output 1 channel")
    return dict(
        input_nc=int(first.shape[1]),
        ndf=int(first.shape[0]),
        n_layers=len(convs) - 2,
        norm=_norm_from_keys(state_dict, f"model.{convs[1]}"),
        antialias=any(k.endswith(".filt") for k in state_dict),
    )


def infer_sampler_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``PatchSampler`` arguments for an official ``netF`` (``mlp_sample``): ``mlp_<i>.0.weight``
    is (nc, C_i). The number of patches is a training option, not stored: the paper's 256 is used."""
    first_layers = {int(m.group(1)): v for k, v in state_dict.items() if (m := _MLP_KEY.match(k)) and m.group(2) == "0"}
    if not first_layers:
        raise ConversionError("not a PatchNCE sampler (netF): no mlp_<i>.0.weight tensors")
    order = sorted(first_layers)
    if order != list(range(len(order))):
        raise ConversionError(f"not a PatchNCE sampler (netF): MLPs numbered {order}, expected 0..{len(order) - 1}")
    ncs = {int(v.shape[0]) for v in first_layers.values()}
    if len(ncs) != 1 or any(v.dim() != 2 for v in first_layers.values()):
        raise ConversionError("not a PatchNCE sampler (netF): the MLPs do not share one embedding size")
    return dict(in_channels=[int(first_layers[i].shape[1]) for i in order], num_patches=256, nc=ncs.pop(), use_mlp=True)


# --------------------------------------------------------------------------------------------
# The table of networks, and building our models from official checkpoints
# --------------------------------------------------------------------------------------------

def _is_sampler(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(_MLP_KEY.match(k) for k in state_dict)


def _is_generator(state_dict: Mapping[str, torch.Tensor]) -> bool:
    first = state_dict.get("model.1.weight")
    return any(_BLOCK_KEY.match(k) for k in state_dict) and first is not None and first.dim() == 4


def _is_discriminator(state_dict: Mapping[str, torch.Tensor]) -> bool:
    first = state_dict.get("model.0.weight")
    return first is not None and first.dim() == 4 and tuple(first.shape[-2:]) == (4, 4)


#: What an official checkpoint becomes: one of our model classes (a :data:`KINDS` entry's ``model_class``).
OfficialModel = CUTGenerator | PatchDiscriminator | PatchSampler | StyleGAN2Generator | StyleGAN2Discriminator


@dataclass(frozen=True)
class CheckpointKind:
    """One kind of official network: how to recognise its state dict and which model it becomes."""

    label: str  #: in messages: "a CUT generator (netG)"
    flag: str  #: the command-line flag that takes it
    model_class: type[OfficialModel]
    infer_config: Callable[[Mapping[str, torch.Tensor]], dict[str, Any]]
    recognise: Callable[[Mapping[str, torch.Tensor]], bool]


#: Networks we read, in the order they are tried by :func:`checkpoint_kind` (netF's MLP keys
#: are the most specific). SinCUT's StyleGAN2 networks (:mod:`cut_hf.official.stylegan2`) are one entry each.
KINDS: dict[str, CheckpointKind] = {
    "sampler": CheckpointKind("a PatchNCE sampler (netF)", "--netF", PatchSampler, infer_sampler_config, _is_sampler),
    "generator": CheckpointKind("a CUT generator (netG)", "--checkpoint", CUTGenerator, infer_generator_config,
                                _is_generator),
    "discriminator": CheckpointKind("a PatchGAN discriminator (netD)", "--netD", PatchDiscriminator,
                                    infer_discriminator_config, _is_discriminator),
    "stylegan2_generator": CheckpointKind("a SinCUT StyleGAN2 generator (netG)", "--checkpoint and --mode sincut",
                                          StyleGAN2Generator, infer_stylegan2_generator_config, is_stylegan2_generator),
    "stylegan2_discriminator": CheckpointKind("a SinCUT StyleGAN2 discriminator (netD)", "--netD and --mode sincut",
                                              StyleGAN2Discriminator, infer_stylegan2_discriminator_config,
                                              is_stylegan2_discriminator),
}


@dataclass(frozen=True)
class Mode:
    """A training mode of the paper: its name in cards and the kind read in each slot."""

    title: str
    generator: str = "generator"  #: kind of ``--checkpoint`` (written at the output's root)
    discriminator: str = "discriminator"  #: kind of ``--netD`` (written to ``discriminator/``)
    sampler: str = "sampler"  #: kind of ``--netF`` (written to ``sampler/``)


MODES: dict[str, Mode] = {"cut": Mode("CUT"), "fastcut": Mode("FastCUT"),
                          "sincut": Mode("SinCUT", "stylegan2_generator", "stylegan2_discriminator")}


def checkpoint_kind(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The :data:`KINDS` key of the network a state dict holds (``"generator"``, ...), or ``None``."""
    return next((name for name, kind in KINDS.items() if kind.recognise(state_dict)), None)


def _expect_kind(state_dict: Mapping[str, torch.Tensor], path: Path, kind: str) -> None:
    found = checkpoint_kind(state_dict)
    if found == kind:
        return
    wanted = KINDS[kind].label
    if found is None:
        sample = ", ".join(list(state_dict)[:3])
        raise ConversionError(f"{path.name} is not {wanted}: its tensors ({sample}, ...) match no CUT network")
    raise ConversionError(f"{path.name} is {KINDS[found].label}, not {wanted}: pass it with {KINDS[found].flag}")


def drop_stale_instance_norm_stats(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Remove the running statistics that PyTorch < 0.4 saved for InstanceNorm layers, in place.

    Old pix2pix/CycleGAN checkpoints (e.g. the CycleGAN baseline's) carry ``running_mean`` /
    ``running_var`` for affine-free instance norms, which use per-image statistics and never read
    them; the original ``test.py`` deletes them the same way. A norm with a ``.weight`` is a real
    batch norm and is left alone. Returns the removed keys.
    """
    stale = [k[: -len(".running_mean")] for k in state_dict
             if k.endswith(".running_mean") and k[: -len(".running_mean")] + ".weight" not in state_dict]
    removed = [f"{p}.{b}" for p in stale for b in ("running_mean", "running_var", "num_batches_tracked")
               if f"{p}.{b}" in state_dict]
    for key in removed:
        del state_dict[key]
    if removed:
        print(f"note: dropped {len(removed)} stale InstanceNorm running-stat buffers (PyTorch < 0.4 checkpoint)",
              file=sys.stderr)
    return removed


def load_official(path: str | os.PathLike, kind: str = "generator") -> OfficialModel:
    """Our model holding the weights of an official checkpoint of ``kind`` (a :data:`KINDS` key), in eval mode.

    The file is read with ``weights_only=True``, must hold that kind of network (else the message
    names the flag it belongs to), and loads with ``strict=True`` into the inferred architecture.
    Raises :class:`ConversionError` with a one-line reason.
    """
    path = Path(path)
    state_dict = load_state_dict_file(path)
    _expect_kind(state_dict, path, kind)
    drop_stale_instance_norm_stats(state_dict)
    try:
        model = KINDS[kind].model_class(**KINDS[kind].infer_config(state_dict))
    except ConversionError:
        raise
    except ValueError as err:  # official_stylegan2's inference and the models' own checks
        raise ConversionError(f"{path.name}: {one_line(err)}") from err
    problem = mismatch_message(model, state_dict, f"{path.name} does not match the inferred {type(model).__name__}")
    if problem:
        raise ConversionError(problem)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


_Net = TypeVar("_Net", bound=nn.Module)


def _load_official_as(path: str | os.PathLike, kind: str, cls: type[_Net]) -> _Net:
    """:func:`load_official` for a kind whose :data:`KINDS` class is ``cls``, typed as such."""
    model = load_official(path, kind)
    if not isinstance(model, cls):  # only if KINDS[kind] changed its class
        raise TypeError(f"KINDS[{kind!r}] built a {type(model).__name__}, not a {cls.__name__}")
    return model


def load_official_generator(path: str | os.PathLike) -> CUTGenerator:
    """A :class:`CUTGenerator` holding the weights of an official ``latest_net_G.pth`` (eval mode)."""
    return _load_official_as(path, "generator", CUTGenerator)


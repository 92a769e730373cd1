"""Bring official CUT / FastCUT checkpoints (``latest_net_G.pth``, ``_D``, ``_F``) to the Hub format.

``python -m cut_hf.convert --checkpoint latest_net_G.pth --output DIR [--netD latest_net_D.pth]
[--netF latest_net_F.pth] [--name horse2zebra --mode cut|fastcut] [--push-to-hub ID]``

The original release stores plain state dicts (``torch.save(net.state_dict())``). We read them with
``torch.load(weights_only=True)`` only, so a file that would need to run code when unpickled is
refused instead of executed. The architecture (ngf, residual blocks, channels, anti-aliasing,
dropout, norm) is inferred from the tensor names and shapes and the weights are loaded with
``strict=True``, so a converted folder holds exactly the original numbers.

Output layout (every folder is a normal ``from_pretrained`` folder with its own model card)::

    DIR/                 CUTGenerator       (config.json, model.safetensors, README.md)
    DIR/discriminator/   PatchDiscriminator (with --netD)
    DIR/sampler/         PatchSampler       (with --netF)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickletools
import re
import shlex
import sys
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from huggingface_hub import HfApi

from . import __version__
from .hub import PAPER_URL
from .models import CUTGenerator, PatchDiscriminator, PatchSampler, nce_channels

OFFICIAL_REPO_URL = "https://github.com/taesungp/contrastive-unpaired-translation"
OFFICIAL_PRETRAINED_URL = "http://efrosgans.eecs.berkeley.edu/CUT/pretrained_models.tar"
MODES = {"cut": "CUT", "fastcut": "FastCUT"}
# FID on the test split as reported in the paper (pytorch-fid on 256x256 outputs).
PAPER_FID = {("horse2zebra", "cut"): 45.5, ("horse2zebra", "fastcut"): 73.4}

__all__ = [
    "ConversionError",
    "load_state_dict_file",
    "checkpoint_kind",
    "infer_generator_config",
    "infer_discriminator_config",
    "infer_sampler_config",
    "drop_stale_instance_norm_stats",
    "load_official_generator",
    "load_official_discriminator",
    "load_official_sampler",
    "convert",
    "main",
]


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message says why in one line."""


# --------------------------------------------------------------------------------------------
# Reading a checkpoint safely
# --------------------------------------------------------------------------------------------

def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    except Exception as err:  # noqa: BLE001 - the safe unpickler raises many types on foreign bytes
        # weights_only refuses any global outside torch's allow-list (os.system, arbitrary classes,
        # ...) without running it. Name what the pickle wanted to import, read without executing.
        foreign = _foreign_globals(path)
        if foreign or "Unsupported global" in str(err):
            found = f" (it imports {', '.join(foreign[:3])})" if foreign else ""
            raise ConversionError(
                f"refusing {str(path)!r}: it is a pickle that needs to run code to load{found}; "
                "official CUT checkpoints are plain state dicts of tensors"
            ) from err
        raise ConversionError(f"{str(path)!r} is truncated or not a PyTorch checkpoint: {_one_line(err)}") from err

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
    memo: dict[int, Any] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING",
                           "BINSTRING", "STRING"):
                strings.append(str(arg))
            elif op.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                memo[int(arg)] = strings[-1]
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(memo.get(int(arg)), str):
                strings.append(memo[int(arg)])
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


def checkpoint_kind(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """``"generator"``, ``"discriminator"``, ``"sampler"`` (netF) or ``None`` for anything else."""
    keys = list(state_dict)
    if any(_MLP_KEY.match(k) for k in keys):
        return "sampler"
    first = state_dict.get("model.1.weight")
    if any(_BLOCK_KEY.match(k) for k in keys) and first is not None and first.dim() == 4:
        return "generator"
    first_d = state_dict.get("model.0.weight")
    if first_d is not None and first_d.dim() == 4 and tuple(first_d.shape[-2:]) == (4, 4):
        return "discriminator"
    return None


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
# Building our models from official checkpoints
# --------------------------------------------------------------------------------------------

_KIND_NAMES = {
    "generator": ("a CUT generator (netG)", "--checkpoint"),
    "discriminator": ("a PatchGAN discriminator (netD)", "--netD"),
    "sampler": ("a PatchNCE sampler (netF)", "--netF"),
}


def _expect_kind(state_dict: Mapping[str, torch.Tensor], path: Path, kind: str) -> None:
    found = checkpoint_kind(state_dict)
    if found == kind:
        return
    wanted = _KIND_NAMES[kind][0]
    if found is None:
        sample = ", ".join(list(state_dict)[:3])
        raise ConversionError(f"{path.name} is not {wanted}: its tensors ({sample}, ...) match no CUT network")
    name, flag = _KIND_NAMES[found]
    raise ConversionError(f"{path.name} is {name}, not {wanted}: pass it with {flag}")


def _load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)`` with a one-line account of any mismatch."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    resized = [f"{k} {found[k]} vs {expected[k]}" for k in expected if k in found and found[k] != expected[k]]
    if missing or unexpected or resized:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if resized:
            parts.append(f"{len(resized)} of another shape (e.g. {'; '.join(resized[:2])})")
        raise ConversionError(f"{path.name} does not match the inferred {type(model).__name__}: " + ", ".join(parts))
    model.load_state_dict(state_dict, strict=True)


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


def load_official_generator(path: str | os.PathLike) -> CUTGenerator:
    """A :class:`CUTGenerator` holding the weights of an official ``latest_net_G.pth`` (eval mode)."""
    path = Path(path)
    sd = load_state_dict_file(path)
    _expect_kind(sd, path, "generator")
    drop_stale_instance_norm_stats(sd)
    model = CUTGenerator(**infer_generator_config(sd))
    _load_strict(model, sd, path)
    return model.eval()


def load_official_discriminator(path: str | os.PathLike) -> PatchDiscriminator:
    """A :class:`PatchDiscriminator` holding the weights of an official ``latest_net_D.pth``."""
    path = Path(path)
    sd = load_state_dict_file(path)
    _expect_kind(sd, path, "discriminator")
    drop_stale_instance_norm_stats(sd)
    model = PatchDiscriminator(**infer_discriminator_config(sd))
    _load_strict(model, sd, path)
    return model.eval()


def load_official_sampler(path: str | os.PathLike) -> PatchSampler:
    """A :class:`PatchSampler` holding the weights of an official ``latest_net_F.pth``."""
    path = Path(path)
    sd = load_state_dict_file(path)
    _expect_kind(sd, path, "sampler")
    model = PatchSampler(**infer_sampler_config(sd))
    _load_strict(model, sd, path)
    return model.eval()


# --------------------------------------------------------------------------------------------
# Writing the folders and their cards
# --------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _domains(name: str | None) -> tuple[str | None, str | None]:
    """``horse2zebra`` -> (horse, zebra); names without one ``2`` between two words -> (None, None)."""
    if name and re.fullmatch(r"[A-Za-z_]+2[A-Za-z_]+", name) and name.count("2") == 1:
        a, b = name.split("2")
        return a.replace("_", " "), b.replace("_", " ")
    return None, None


def _architecture_line(kind: str, config: Mapping[str, Any]) -> str:
    if kind == "generator":
        return (f"ngf {config['ngf']}, {config['n_blocks']} residual blocks, {config['input_nc']} -> "
                f"{config['output_nc']} channels, {config['norm']} norm, anti-aliased down/up sampling "
                f"{'on' if config['antialias'] else 'off'}/{'on' if config['antialias_up'] else 'off'}, "
                f"dropout {'on' if config['dropout'] else 'off'}")
    if kind == "discriminator":
        return (f"ndf {config['ndf']}, {config['n_layers']} strided stages, {config['input_nc']} input channels, "
                f"{config['norm']} norm, anti-aliased {'on' if config['antialias'] else 'off'}")
    return f"MLPs for feature channels {config['in_channels']}, embedding size {config['nc']}"


def _provenance(kind: str, path: Path, config: Mapping[str, Any], n_tensors: int, *, name: str | None,
                mode: str | None, source: str, command: str) -> str:
    """Markdown for the card's Provenance section: where the weights came from and how."""
    rows = [
        ("paper", f"Park, Efros, Zhang, Zhu, *Contrastive Learning for Unpaired Image-to-Image Translation*, "
                  f"ECCV 2020 ([arXiv]({PAPER_URL}))"),
        ("original release", f"[{OFFICIAL_REPO_URL.split('github.com/')[1]}]({OFFICIAL_REPO_URL}); "
                             f"weights from {source}"),
        ("source file", f"`{path.name}`, SHA-256 `{_sha256(path)}`"),
        ("mode", MODES.get(mode or "", "not stated at conversion")),
        ("dataset", name or "not stated at conversion"),
        ("architecture (inferred)", _architecture_line(kind, config)),
        ("check", f"all {n_tensors} tensors loaded with `strict=True` (names and shapes of the original)"),
        ("conversion", f"`{command}` (cut-hf {__version__})"),
    ]
    fid = PAPER_FID.get((name or "", mode or ""))
    if kind == "generator" and fid is not None:
        rows.append(("paper's FID", f"{fid} on the {name} test split (as reported in the paper; not re-measured "
                                    "by the conversion, see `python -m cut_hf.evaluate`)"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    intro = (f"These weights are the official {MODES.get(mode or '', 'CUT')} release converted to the cut-hf "
             "format: the numbers are unchanged, only the container is (safetensors + config.json).")
    if kind != "generator":
        intro += (" It lives in a subfolder of the generator's repository: download it with "
                  "`huggingface_hub.snapshot_download(repo_id)` and pass the subfolder's path to `from_pretrained`.")
    return f"{intro}\n\n| | |\n|---|---|\n{table}"


def _save(model: nn.Module, out: Path, card_kwargs: dict[str, Any], extra_tags: Sequence[str]) -> None:
    """``save_pretrained`` plus a card rendered from the model's template with our metadata."""
    model.save_pretrained(out)
    card = model.generate_model_card(**card_kwargs)
    card.data.tags = list(dict.fromkeys(list(card.data.tags or []) + [t for t in extra_tags if t]))
    card.save(out / "README.md")  # replaces any card of an earlier conversion in the same folder


def convert(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    netD: str | os.PathLike | None = None,
    netF: str | os.PathLike | None = None,
    name: str | None = None,
    mode: str | None = None,
    source: str = OFFICIAL_PRETRAINED_URL,
    push_to_hub: str | None = None,
    private: bool | None = None,
    command: str | None = None,
) -> Path:
    """Convert official CUT checkpoints to a ``from_pretrained`` folder (and optionally push it).

    Args:
        checkpoint: the generator, e.g. ``checkpoints/horse2zebra_cut_pretrained/latest_net_G.pth``.
        output: folder to write; the generator at its root, ``discriminator/`` and ``sampler/`` beside.
        netD: optional ``latest_net_D.pth`` to convert too.
        netF: optional ``latest_net_F.pth`` to convert too.
        name: dataset name for the card (``horse2zebra``); ``a2b`` names give the card its domains.
        mode: ``"cut"`` or ``"fastcut"`` (recorded in the card; both share one architecture).
        source: where the checkpoint came from, for the card (the official tarball by default).
        push_to_hub: a Hub repository id to upload the whole folder to.
        private: visibility of a repository created by the push.
        command: the command line to record in the card (the CLI passes its own).

    Returns:
        The output folder. Raises :class:`ConversionError` (one-line message) on any refused input.
    """
    if mode is not None and mode not in MODES:
        raise ConversionError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConversionError(f"output {str(out)!r} exists and is not a folder")
    command = command or "cut_hf.convert.convert(" + ", ".join(
        [repr(str(checkpoint))] + [f"{k}={v!r}" for k, v in dict(netD=netD, netF=netF, name=name, mode=mode).items()
                                   if v is not None]) + ")"

    # Read and check everything before writing anything: a refused netF leaves no half folder.
    parts: list[tuple[str, Path, nn.Module, str]] = []
    loaders = {"generator": load_official_generator, "discriminator": load_official_discriminator,
               "sampler": load_official_sampler}
    for kind, src, sub in (("generator", checkpoint, ""), ("discriminator", netD, "discriminator"),
                           ("sampler", netF, "sampler")):
        if src is not None:
            parts.append((kind, Path(src), loaders[kind](src), sub))

    generator = parts[0][2]
    sampler = next((m for k, _, m, _ in parts if k == "sampler"), None)
    if sampler is not None and list(sampler.in_channels) != nce_channels(generator._hub_mixin_config):
        print(f"warning: the sampler's MLP inputs {sampler.in_channels} do not match the generator's default "
              f"NCE layers {list(generator.nce_layers)} (channels {nce_channels(generator._hub_mixin_config)}); "
              "pass the right nce_layers when training on", file=sys.stderr)

    domain_a, domain_b = _domains(name)
    mode_title = MODES.get(mode or "", "CUT")
    extra_tags = [name or "", mode or "", "converted-from-official"]
    for kind, src, model, sub in parts:
        config = model._hub_mixin_config
        n_tensors = len(model.state_dict())
        card_kwargs: dict[str, Any] = dict(
            provenance=_provenance(kind, src, config, n_tensors, name=name, mode=mode, source=source, command=command),
        )
        if kind == "generator":
            card_kwargs.update(
                model_name=f"{mode_title} {name or 'generator'} (official weights)",
                mode_title=mode_title, domain_a=domain_a, domain_b=domain_b, repo_id=push_to_hub,
                description=(f"The {mode_title} generator published by the paper's authors"
                             f"{f' for {name}' if name else ''}, converted without retraining."),
            )
        else:
            title = "discriminator" if kind == "discriminator" else "patch sampler"
            card_kwargs["model_name"] = f"{mode_title} {name + ' ' if name else ''}{title} (official weights)"
        _save(model, out / sub if sub else out, card_kwargs, extra_tags)

    if push_to_hub:
        api = HfApi()
        repo_id = api.create_repo(repo_id=push_to_hub, private=private, exist_ok=True).repo_id
        api.upload_folder(
            repo_id=repo_id, repo_type="model", folder_path=out,
            commit_message=f"Official {mode_title} weights{f' ({name})' if name else ''} converted with cut-hf",
        )
    return out


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cut_hf.convert",
        description="Convert official CUT/FastCUT checkpoints (latest_net_G.pth, ...) to a from_pretrained folder.",
    )
    p.add_argument("--checkpoint", required=True, help="the generator: latest_net_G.pth of the official release")
    p.add_argument("--netD", help="also convert this discriminator (latest_net_D.pth) into OUTPUT/discriminator/")
    p.add_argument("--netF", help="also convert this patch sampler (latest_net_F.pth) into OUTPUT/sampler/")
    p.add_argument("--output", required=True, help="folder to write (the generator at its root)")
    p.add_argument("--name", help="dataset name for the model card, e.g. horse2zebra")
    p.add_argument("--mode", choices=sorted(MODES), help="how the weights were trained: cut or fastcut")
    p.add_argument("--source", default=OFFICIAL_PRETRAINED_URL, help="where the checkpoint came from (for the card)")
    p.add_argument("--push-to-hub", metavar="ID", help="upload the folder to this Hub repository")
    p.add_argument("--private", action="store_true", default=None, help="create the Hub repository as private")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 refused input or failed push)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    command = "python -m cut_hf.convert " + shlex.join(argv)
    try:
        out = convert(args.checkpoint, args.output, netD=args.netD, netF=args.netF, name=args.name, mode=args.mode,
                      source=args.source, push_to_hub=args.push_to_hub, private=args.private, command=command)
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, permissions, Hub upload failures (HTTP errors are OSErrors)
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    print(f"converted {args.checkpoint} -> {out} ({', '.join(written)})")
    print(f"generator config: {(out / 'config.json').read_text(encoding='utf-8').strip()}")
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/{args.push_to_hub}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

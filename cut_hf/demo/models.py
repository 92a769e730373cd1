"""Models of the demo: a generator (and, when there is one, its PatchSampler) by Hub id or folder, cached.

The shipped model lives in ``models/mini-horse2zebra/`` of the repository: the generator's
``save_pretrained`` files at the top, the trained PatchSampler in ``sampler/``. A ``train.py``
output folder (``OUTPUT/generator/`` + ``OUTPUT/sampler/``) and Hub repositories in either layout
work the same way.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import torch

from cut_hf.demo.catalog import SHIPPED_MODEL, display_name
from cut_hf.demo.errors import DemoError
from cut_hf.errors import ModelLoadError
from cut_hf.hub.loading import load_generator
from cut_hf.models.generator import CUTGenerator
from cut_hf.models.patch_sampler import PatchSampler
from cut_hf.models.stylegan2 import StyleGAN2Generator

__all__ = ["SHIPPED_MODEL", "DemoModel", "ModelCache", "load_demo_model", "warm_up"]


@dataclass
class DemoModel:
    """A loaded generator, its sampler (None when the model has none) and where they came from."""

    name: str
    generator: CUTGenerator | StyleGAN2Generator
    sampler: PatchSampler | None
    source: str = ""  # what was loaded (Hub id or folder): int8 calibrates on a folder's examples/

    def describe(self) -> str:
        """One Markdown line: what is loaded."""
        g = self.generator
        n = sum(p.numel() for p in g.parameters())
        sampler = "with its PatchSampler" if self.sampler is not None else "no PatchSampler (raw features)"
        residual = " (residual output: learns changes to its input)" if getattr(g, "residual", False) else ""
        return (f"**{self.name}** — {type(g).__name__}{residual} ngf {g.ngf}, {g.n_blocks} blocks, "
                f"{n / 1e6:.2f} M parameters, NCE layers {list(g.nce_layers)}, {sampler}")


def _sampler_dirs(model: str) -> list[Path]:
    """Local folders where ``model``'s sampler may lie (``sampler/`` inside it, or beside ``generator/``)."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return []
    found = [path / "sampler"]
    if path.name == "generator":
        found.append(path.parent / "sampler")
    return [p for p in found if (p / "config.json").is_file() and (p / "model.safetensors").is_file()]


def _hub_sampler_dir(repo_id: str) -> Path | None:
    """The ``sampler/`` of a Hub repository, from the cache or the Hub; None when there is none."""
    from huggingface_hub import hf_hub_download

    try:
        config = hf_hub_download(repo_id, "config.json", subfolder="sampler")
        hf_hub_download(repo_id, "model.safetensors", subfolder="sampler")
    except Exception:  # noqa: BLE001 - no sampler (or no network): the explorer falls back to raw features
        return None
    return Path(config).parent


def load_demo_model(model: str | os.PathLike, device: str = "cpu", name: str | None = None) -> DemoModel:
    """Load the generator and, when present, the sampler of ``model`` (a folder or a Hub id).

    ``name`` is what messages and :meth:`DemoModel.describe` call it (default: its display
    name, never the server's absolute path).

    Raises:
        DemoError: with a one-line reason (missing folder, unknown id, offline, broken files).
    """
    source = str(model).strip()
    if not source:
        raise DemoError("enter a model: a Hugging Face Hub id (user/name) or a local folder")
    name = name or display_name(source)
    try:
        generator = load_generator(source, map_location=device)
    except ModelLoadError as err:
        raise DemoError(f"cannot load model {name!r}: {_hide(err, source, name)}") from None
    if not isinstance(generator, (CUTGenerator, StyleGAN2Generator)):  # an exported .onnx / .pt2 file
        raise DemoError(f"cannot show model {name!r}: the demo needs its PyTorch folder or Hub id, "
                        "not an exported file (it has no encoder features to explore)")
    dirs = _sampler_dirs(source)
    if not dirs and not Path(source).expanduser().exists():
        hub_dir = _hub_sampler_dir(source)
        dirs = [hub_dir] if hub_dir is not None else []
    sampler = None
    if dirs:
        try:
            sampler = PatchSampler.from_pretrained(dirs[0], map_location=device)
        except ModelLoadError as err:
            reason = _hide(err, source, name)
            raise DemoError(f"model {name!r} has a sampler/ that cannot be loaded: {reason}") from None
        if sampler.in_channels != generator.feature_channels():
            raise DemoError(f"the sampler of {name!r} expects feature channels {sampler.in_channels}, "
                            f"the generator gives {generator.feature_channels()}: they do not belong together")
    return DemoModel(name, generator.eval(), sampler.eval() if sampler is not None else None, source)


def _hide(err: Exception, source: str, name: str) -> str:
    """The error's message with the model's server-side location replaced by its display name."""
    text = str(err)
    path = Path(source).expanduser()
    for location in sorted({source, str(path), str(path.resolve())}, key=len, reverse=True):
        if os.sep in location:  # a bare "." or name would replace pieces of words
            text = text.replace(location, name)
    return text


class ModelCache:
    """The last few loaded models, by source (thread-safe, least recently used out).

    Each load runs in a daemon thread of its own, so a caller can stop waiting (``timeout``)
    while a stalled Hub lookup finishes or fails in the background; two requests for the same
    model share one load. A failed load is not cached (the next request tries again) and never
    evicts a loaded model.
    """

    def __init__(self, capacity: int = 3, device: str = "cpu") -> None:
        self.capacity, self.device = capacity, device
        self._models: OrderedDict[str, DemoModel] = OrderedDict()
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()

    def get(self, model: str | os.PathLike, name: str | None = None, timeout: float | None = None) -> DemoModel:
        """The model loaded from ``model`` (a folder or a Hub id), loading it when needed.

        Raises:
            DemoError: the load failed, or took longer than ``timeout`` seconds (it goes on in
                the background; a later request gets its result).
        """
        key = str(model).strip()
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            future = self._pending.get(key)
            if future is None:
                future = self._pending[key] = Future()
                threading.Thread(target=self._load, args=(key, name, future), daemon=True,
                                 name="cut-hf model load").start()
        try:
            return future.result(timeout)
        except FutureTimeout:
            shown = name or display_name(key)
            raise DemoError(f"loading {shown!r} takes longer than {timeout:g} s (a slow or unreachable Hub?); "
                            "the previous model stays in use, try again later") from None

    def loaded(self, model: str | os.PathLike) -> DemoModel | None:
        """The model if it is loaded already (never starts a load), else None."""
        key = str(model).strip()
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
            return self._models.get(key)

    def _load(self, key: str, name: str | None, future: Future) -> None:
        try:
            loaded = load_demo_model(key, self.device, name)
        except BaseException as err:  # noqa: BLE001 - handed to the waiting request
            with self._lock:
                self._pending.pop(key, None)
            future.set_exception(err)
            return
        with self._lock:
            self._pending.pop(key, None)
            self._models[key] = loaded
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        future.set_result(loaded)

    def __contains__(self, model: object) -> bool:
        return str(model).strip() in self._models


@torch.inference_mode()
def warm_up(model: DemoModel, side: int = 64) -> None:
    """One tiny forward, so the first user request does not pay for lazy kernel setup."""
    model.generator(torch.zeros(1, model.generator.input_nc, side, side))

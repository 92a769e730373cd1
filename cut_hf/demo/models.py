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
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError
from ..loading import load_generator, load_pretrained
from ..models.generator import CUTGenerator
from ..models.patch_sampler import PatchSampler
from .errors import DemoError

#: The model ``python app.py`` uses when given none, in a source checkout (``models/`` is not
#: part of the installed package).
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "mini-horse2zebra"


@dataclass
class DemoModel:
    """A loaded generator, its sampler (None when the model has none) and where they came from."""

    name: str
    generator: CUTGenerator
    sampler: PatchSampler | None

    def describe(self) -> str:
        """One Markdown line: what is loaded."""
        g = self.generator
        n = sum(p.numel() for p in g.parameters())
        sampler = "with its PatchSampler" if self.sampler is not None else "no PatchSampler (raw features)"
        return (f"**{self.name}** — CUTGenerator ngf {g.ngf}, {g.n_blocks} blocks, {n / 1e6:.2f} M parameters, "
                f"NCE layers {list(g.nce_layers)}, {sampler}")


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


def load_demo_model(model: str | os.PathLike, device: str = "cpu") -> DemoModel:
    """Load the generator and, when present, the sampler of ``model`` (a folder or a Hub id).

    Raises:
        DemoError: with a one-line reason (missing folder, unknown id, offline, broken files).
    """
    name = str(model).strip()
    if not name:
        raise DemoError("enter a model: a Hugging Face Hub id (user/name) or a local folder")
    try:
        generator = load_generator(name, map_location=device)
    except ModelLoadError as err:
        raise DemoError(f"cannot load model {name!r}: {err}") from None
    dirs = _sampler_dirs(name)
    if not dirs and not Path(name).expanduser().exists():
        hub_dir = _hub_sampler_dir(name)
        dirs = [hub_dir] if hub_dir is not None else []
    sampler = None
    if dirs:
        try:
            sampler = load_pretrained(PatchSampler, dirs[0], map_location=device)
        except ModelLoadError as err:
            raise DemoError(f"model {name!r} has a sampler/ that cannot be loaded: {err}") from None
        if sampler.in_channels != generator.feature_channels():
            raise DemoError(f"the sampler in {str(dirs[0])!r} expects feature channels {sampler.in_channels}, "
                            f"the generator gives {generator.feature_channels()}: they do not belong together")
    return DemoModel(name, generator.eval(), sampler.eval() if sampler is not None else None)


class ModelCache:
    """The last few loaded models, by the name they were asked for (thread-safe, least recently used out).

    Loading the same name twice returns the same objects; a failed load is not cached (the next
    request tries again, e.g. once the network is back).
    """

    def __init__(self, capacity: int = 3, device: str = "cpu") -> None:
        self.capacity, self.device = capacity, device
        self._models: OrderedDict[str, DemoModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str | os.PathLike) -> DemoModel:
        key = str(model).strip()
        with self._lock:  # one load at a time: two requests for a new model load it once
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loaded = load_demo_model(key, self.device)
            self._models[key] = loaded
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return loaded

    def __contains__(self, model: object) -> bool:
        return str(model).strip() in self._models


@torch.inference_mode()
def warm_up(model: DemoModel, side: int = 64) -> None:
    """One tiny forward, so the first user request does not pay for lazy kernel setup."""
    model.generator(torch.zeros(1, model.generator.input_nc, side, side))

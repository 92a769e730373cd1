"""What every cut-hf model shares for the Hub: card metadata, card templates, clear loading errors."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

REPO_URL = "https://github.com/cut-hf/cut-hf"
PAPER_URL = "https://arxiv.org/abs/2007.15651"
SIMCLR_PAPER_URL = "https://arxiv.org/abs/2002.05709"
LIBRARY_NAME = "cut-hf"
LICENSE = "mit"
CUT_TAGS = ["image-to-image", "cut", "unpaired-image-translation", "contrastive-learning"]


def model_card_template(name: str) -> str:
    """Text of the Jinja model-card template ``model_cards/templates/<name>.md``.

    Installed packages carry the folder as ``cut_hf/model_cards`` (see pyproject.toml); a source
    checkout reads it from the repository root.
    """
    candidates = []
    try:
        candidates.append(Path(str(resources.files("cut_hf") / "model_cards" / "templates" / f"{name}.md")))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - only in odd import setups
        pass
    candidates.append(Path(__file__).resolve().parent.parent / "model_cards" / "templates" / f"{name}.md")
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(f"model card template {name!r} not found in {[str(c) for c in candidates]}")


def mixin_kwargs(
    template: str,
    tags: list[str] | None = None,
    paper_url: str = PAPER_URL,
    pipeline_tag: str = "image-to-image",
) -> dict[str, Any]:
    """Keyword arguments for ``PyTorchModelHubMixin`` subclassing, shared by all cut-hf models."""
    return dict(
        library_name=LIBRARY_NAME,
        tags=list(tags if tags is not None else CUT_TAGS),
        pipeline_tag=pipeline_tag,
        license=LICENSE,
        repo_url=REPO_URL,
        paper_url=paper_url,
        model_card_template=model_card_template(template),
    )


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why in one line."""


def check_local_model_dir(model_id: str | os.PathLike) -> Path | None:
    """If ``model_id`` looks like a local path, check it holds a complete model and return it.

    Returns ``None`` for things that look like Hub ids (``user/name``) and do not exist locally.
    Raises :class:`ModelLoadError` with a one-line reason for a missing or incomplete folder.
    """
    path = Path(model_id).expanduser()
    looks_local = path.exists() or str(model_id).startswith((".", "/", "~")) or str(model_id).count("/") > 1
    if not looks_local:
        return None
    if not path.exists():
        raise ModelLoadError(f"model folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"{str(path)!r} is a file; pass the folder written by save_pretrained")
    missing = [f for f in ("config.json", "model.safetensors") if not (path / f).is_file()]
    if missing:
        raise ModelLoadError(f"model folder {str(path)!r} is incomplete: missing {', '.join(missing)}")
    return path

"""What every cut-hf model shares for the Hub: card metadata, card templates, clear loading errors."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import PyTorchModelHubMixin

if TYPE_CHECKING:  # the models import this module, so only for annotations
    from .models.generator import CUTGenerator

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


class CheckedHubMixin(PyTorchModelHubMixin):
    """``PyTorchModelHubMixin`` whose ``from_pretrained`` refuses incomplete folders and loads strictly.

    The stock mixin builds a default model when ``config.json`` is missing and loads weights with
    ``strict=False``, so a wrong or partial folder can load silently. Here a local folder must hold
    both files (:func:`check_local_model_dir`), and ``strict`` defaults to ``True``.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, strict: bool = True,
                        **kwargs: Any) -> Any:
        local = check_local_model_dir(pretrained_model_name_or_path)
        return super().from_pretrained(local or pretrained_model_name_or_path, strict=strict, **kwargs)


# Keyword arguments of ``load_pretrained`` that go to ``hf_hub_download`` rather than to the model.
_DOWNLOAD_KWARGS = ("revision", "cache_dir", "force_download", "token", "local_files_only")


def _hub_error_message(model_id: str, err: Exception) -> str:
    """One line saying why ``model_id`` could not be fetched from the Hub (or its cache)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    not_local = f"{model_id!r} is not a local folder"
    # Order matters: GatedRepoError is a RepositoryNotFoundError, and every HTTP error is an OSError.
    if isinstance(err, HFValidationError):
        return f"{not_local} and not a valid Hugging Face Hub id (expected 'user/name')"
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        if constants.is_offline_mode():
            return f"{not_local} and is not in the Hugging Face cache; HF_HUB_OFFLINE=1 forbids downloading it"
        return (f"{not_local}, is not in the Hugging Face cache and the Hub could not be reached "
                "(check the id and your network connection)")
    if isinstance(err, GatedRepoError):
        return f"{model_id!r} is a gated Hub repository: accept its terms on the Hub and log in (`hf auth login`)"
    if isinstance(err, RepositoryNotFoundError):
        return (f"{not_local} and no Hub repository {model_id!r} exists "
                "(or it is private: log in with `hf auth login`)")
    if isinstance(err, RevisionNotFoundError):
        return f"Hub repository {model_id!r} has no such revision"
    if isinstance(err, RemoteEntryNotFoundError):
        return f"Hub repository {model_id!r} holds no cut-hf model (config.json / model.safetensors missing)"
    return f"could not download {model_id!r} from the Hugging Face Hub: {' '.join(str(err).split())[:200]}"


def _resolve_model_dir(model_id_or_dir: str | os.PathLike, subfolder: str | None, download_kwargs: dict) -> Path:
    """A local folder holding ``config.json`` + ``model.safetensors``: the given folder, its
    ``subfolder`` (e.g. ``generator/`` of a training output folder), or the Hub snapshot of an id."""
    path = Path(model_id_or_dir).expanduser()
    if subfolder and path.is_dir() and not (path / "config.json").is_file() and (path / subfolder).is_dir():
        path = path / subfolder  # a train.py output folder: OUTPUT/generator/ is the model
    local = check_local_model_dir(path)
    if local is not None:
        return local

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    model_id = str(model_id_or_dir)
    first_error: Exception | None = None
    for sub in (None, subfolder) if subfolder else (None,):
        try:
            config_file = hf_hub_download(model_id, "config.json", subfolder=sub, **download_kwargs)
            hf_hub_download(model_id, "model.safetensors", subfolder=sub, **download_kwargs)
            return Path(config_file).parent  # both files lie in the same snapshot folder
        except EntryNotFoundError as err:  # not at the root (remote) or not cached there: try the subfolder
            first_error = first_error or err
        except (OSError, HFValidationError) as err:  # every other Hub error is one of these
            raise ModelLoadError(_hub_error_message(model_id, err)) from err
    assert first_error is not None
    raise ModelLoadError(_hub_error_message(model_id, first_error)) from first_error


def _mismatch_message(model: Any, state: dict, weights_file: Path) -> str:
    """One line comparing the tensors of ``weights_file`` with what ``model`` expects."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    resized = [f"{k} {found[k]} vs {expected[k]}" for k in expected if k in found and found[k] != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if resized:
        parts.append(f"{len(resized)} of another shape (e.g. {'; '.join(resized[:2])})")
    return (f"{str(weights_file)!r} does not hold {type(model).__name__} weights for its config.json: "
            + ", ".join(parts))


def load_pretrained(
    cls: type, model_id_or_dir: str | os.PathLike, *, subfolder: str | None = None, strict: bool = True,
    map_location: str = "cpu", **kwargs: Any,
) -> Any:
    """Load a cut-hf model from a local folder or the Hub, with one-line errors.

    Like ``cls.from_pretrained`` but every failure (missing or incomplete folder, unknown id,
    offline without a cached copy, unreadable config, truncated or foreign weights) raises
    :class:`ModelLoadError` with a message fit for a CLI or a web page.

    Args:
        cls: the model class, e.g. ``CUTGenerator``.
        model_id_or_dir: a ``save_pretrained`` folder, a folder containing ``subfolder``, or a Hub id.
        subfolder: where the model lies inside a larger folder or repository (``"generator"``).
        strict: refuse weights with missing or unexpected tensors (the default).
        map_location: device the weights are loaded to.
        **kwargs: ``revision``, ``cache_dir``, ``force_download``, ``token``, ``local_files_only``
            for the download; anything else overrides ``config.json`` values (e.g. ``nce_layers``).
    """
    import inspect
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    download_kwargs = {k: kwargs.pop(k) for k in _DOWNLOAD_KWARGS if k in kwargs}
    folder = _resolve_model_dir(model_id_or_dir, subfolder, download_kwargs)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"config.json in {str(folder)!r} is unreadable: {err}") from err
    if not isinstance(config, dict):
        raise ModelLoadError(f"config.json in {str(folder)!r} is not a JSON object")
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - params)
    if unknown:  # a caller's typo, not a broken model: a plain TypeError
        raise TypeError(f"{cls.__name__} takes no argument(s) {unknown}")
    init_kwargs = {k: v for k, v in config.items() if k in params}  # as from_pretrained: extra keys ignored
    init_kwargs.update(kwargs)
    try:
        model = cls(**init_kwargs)
    except (TypeError, ValueError) as err:
        raise ModelLoadError(f"config.json in {str(folder)!r} does not describe a {cls.__name__}: {err}") from err
    weights_file = folder / "model.safetensors"
    try:
        state = load_file(str(weights_file), device=map_location)
    except (SafetensorError, OSError) as err:
        raise ModelLoadError(f"{str(weights_file)!r} is unreadable (truncated or not safetensors): {err}") from err
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        raise ModelLoadError(_mismatch_message(model, state, weights_file)) from err
    return model.to(map_location).eval()


def load_generator(model_id_or_dir: str | os.PathLike, **kwargs: Any) -> CUTGenerator:
    """Load a :class:`~cut_hf.CUTGenerator` from a folder, a training output folder or a Hub id.

    Accepts a ``save_pretrained`` folder, a ``train.py`` output folder (its ``generator/``), or a
    Hub id (cached or downloadable; a repository that keeps the model in ``generator/`` works too).
    Raises :class:`ModelLoadError` with a one-line reason on any failure. Keyword arguments are
    those of :func:`load_pretrained` (``map_location``, ``revision``, ``strict``, config overrides).
    """
    from .models.generator import CUTGenerator  # noqa: F811 - the runtime import

    kwargs.setdefault("subfolder", "generator")
    return load_pretrained(CUTGenerator, model_id_or_dir, **kwargs)

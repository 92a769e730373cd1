"""What every cut-hf model shares for the Hub: the loading mixin, card metadata and card templates.

Below the models (they subclass :class:`CheckedHubMixin`), so it imports no model. Loading
helpers that name a model class (``load_generator``) live above the models, in
:mod:`cut_hf.hub.loading`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import torch.nn as nn
from huggingface_hub import ModelCard, PyTorchModelHubMixin

from cut_hf.errors import ModelLoadError, mismatch_message, one_line
from cut_hf.hub.files import DOWNLOAD_KWARGS, check_local_model_dir, resolve_model_dir

__all__ = [
    "CODE_URL",
    "CUT_TAGS",
    "DOCS_URL",
    "PAPER_URL",
    "SIMCLR_CODE_URL",
    "SIMCLR_PAPER_URL",
    "CheckedHubMixin",
    "ModelLoadError",
    "check_local_model_dir",
    "mixin_kwargs",
    "model_card_template",
    "read_config",
]

PAPER_URL = "https://arxiv.org/abs/2007.15651"
#: The paper's own code (the official release); cut-hf links to it, not to a home of its own.
CODE_URL = "https://github.com/taesungp/contrastive-unpaired-translation"
SIMCLR_PAPER_URL = "https://arxiv.org/abs/2002.05709"
SIMCLR_CODE_URL = "https://github.com/google-research/simclr"
#: How ``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` work (the mixin's reference).
DOCS_URL = "https://huggingface.co/docs/huggingface_hub/package_reference/mixins"
LIBRARY_NAME = "cut-hf"
LICENSE = "mit"
CUT_TAGS = ["image-to-image", "cut", "unpaired-image-translation", "contrastive-learning"]
# The subfolder of a training output folder that holds each kind of model (train.py writes
# generator/, sampler/, discriminator/; the SimCLR trainer writes model/), by card template.
OUTPUT_SUBFOLDERS = {"cut_generator": "generator", "patch_sampler": "sampler",
                     "patch_discriminator": "discriminator", "simclr": "model",
                     "stylegan2_generator": "generator", "stylegan2_discriminator": "discriminator"}


def model_card_template(name: str) -> str:
    """Text of the Jinja model-card template ``model_cards/templates/<name>.md``.

    Installed packages carry the folder as ``cut_hf/model_cards`` (see pyproject.toml); a source
    checkout reads it from the repository root.
    """
    candidates = []
    with contextlib.suppress(ModuleNotFoundError, TypeError):  # pragma: no cover - only in odd import setups
        candidates.append(Path(str(resources.files("cut_hf") / "model_cards" / "templates" / f"{name}.md")))
    candidates.append(Path(__file__).resolve().parents[2] / "model_cards" / "templates" / f"{name}.md")
    for path in candidates:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(f"model card template {name!r} not found in {[str(c) for c in candidates]}")


def mixin_kwargs(
    template: str,
    tags: list[str] | None = None,
    paper_url: str = PAPER_URL,
    pipeline_tag: str = "image-to-image",
    code_url: str = CODE_URL,
    output_subfolder: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for subclassing :class:`CheckedHubMixin`, shared by all cut-hf models.

    Args:
        template: card template name (``model_cards/templates/<template>.md``).
        tags, paper_url, pipeline_tag: card metadata.
        code_url: the paper's code, linked from the card (``repo_url`` of the mixin).
        output_subfolder: the subfolder of a training output folder that holds this kind of
            model; default from :data:`OUTPUT_SUBFOLDERS`.
    """
    return dict(
        library_name=LIBRARY_NAME,
        tags=list(tags if tags is not None else CUT_TAGS),
        pipeline_tag=pipeline_tag,
        license=LICENSE,
        repo_url=code_url,
        paper_url=paper_url,
        docs_url=DOCS_URL,
        model_card_template=model_card_template(template),
        output_subfolder=output_subfolder or OUTPUT_SUBFOLDERS.get(template),
    )


_Model = TypeVar("_Model", bound="CheckedHubMixin")


class CheckedHubMixin(PyTorchModelHubMixin):
    """``PyTorchModelHubMixin`` whose ``from_pretrained`` refuses incomplete folders and loads strictly.

    The stock mixin builds a default model when ``config.json`` is missing and loads weights with
    ``strict=False``, so a wrong or partial folder can load silently, and it lets Hub errors
    through as they come (a multi-line ``LocalEntryNotFoundError`` offline, a minute of retries
    without network). Here every failure is a one-line :class:`~cut_hf.errors.ModelLoadError`.
    """

    #: Where a training output folder keeps this kind of model (``generator``, ``sampler``, ...).
    output_subfolder: str | None = None

    def __init_subclass__(cls, *args: Any, output_subfolder: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(*args, **kwargs)
        if output_subfolder is not None:
            cls.output_subfolder = output_subfolder

    @classmethod
    def from_pretrained(
        cls: type[_Model], pretrained_model_name_or_path: str | os.PathLike, *, strict: bool = True,
        map_location: str = "cpu", subfolder: str | None = None, **kwargs: Any,
    ) -> _Model:
        """Load a model from a ``save_pretrained`` folder, a training output folder or the Hub.

        Every failure (missing or incomplete folder, unknown id, offline without a cached copy,
        unreachable Hub, unreadable config, truncated or foreign weights) raises
        :class:`~cut_hf.errors.ModelLoadError` with a one-line message; for Hub failures it is
        also an instance of the Hub's error class.

        Args:
            pretrained_model_name_or_path: a folder, a ``train.py`` output folder (the model is
                taken from its subfolder for this class, e.g. ``generator/``) or a Hub id.
            strict: refuse weights with missing or unexpected tensors (the default).
            map_location: device the weights are loaded to.
            subfolder: where the model lies inside a larger folder or Hub repository. Without it
                the root is tried, then :attr:`output_subfolder` (``generator``, ``sampler``, ...):
                a ``train.py`` output folder (no model at its root) and a shipped or converted
                folder (the generator at its root, ``sampler/`` and ``discriminator/`` beside it)
                load alike, e.g. ``PatchSampler.from_pretrained("models/mini-horse2zebra")``.
            **kwargs: ``revision``, ``cache_dir``, ``force_download``, ``token``,
                ``local_files_only``, ``timeout`` (seconds per Hub request) for the download;
                anything else overrides ``config.json`` values (e.g. ``nce_layers``).
        """
        download = {k: kwargs.pop(k) for k in DOWNLOAD_KWARGS if k in kwargs}
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(kwargs) - params)
        if unknown:  # a caller's typo, not a broken model: a plain TypeError
            raise TypeError(f"{cls.__name__} takes no argument(s) {unknown}")
        folder = resolve_model_dir(pretrained_model_name_or_path, subfolder, fallback_subfolder=cls.output_subfolder,
                                   **download)
        try:
            model = cls._from_folder(folder, kwargs, strict, map_location)
        except ModelLoadError as err:
            sub = cls.output_subfolder
            if subfolder or not sub or folder.name == sub:
                raise
            try:  # the root holds another model (a shipped or converted folder's generator): this one is in sub/
                return cls.from_pretrained(pretrained_model_name_or_path, strict=strict, map_location=map_location,
                                           subfolder=sub, **download, **kwargs)
            except ModelLoadError:
                raise err from err.__cause__  # no sub/ either: what is wrong with the root
        if isinstance(model, nn.Module):  # every cut-hf model is one; the mixin itself has no device
            model.to(map_location).eval()
        return model

    @classmethod
    def _from_folder(cls: type[_Model], folder: Path, overrides: dict[str, Any], strict: bool,
                     map_location: str) -> _Model:
        """The model ``folder``'s config.json describes (``overrides`` win), with its weights."""
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        init_kwargs = {k: v for k, v in read_config(folder).items() if k in params}  # extra keys ignored, as the mixin
        try:
            model = cls(**{**init_kwargs, **overrides})
        except (TypeError, ValueError) as err:
            raise ModelLoadError(f"config.json in {str(folder)!r} does not describe a {cls.__name__}: "
                                 f"{one_line(err)}") from err
        _load_weights(model, folder / "model.safetensors", strict, map_location)
        return model

    def hub_config(self) -> dict[str, Any]:
        """The constructor arguments ``save_pretrained`` writes to ``config.json`` (a copy)."""
        config = self._hub_mixin_config  # cut-hf models take plain JSON values: always a dict
        return dict(config) if isinstance(config, dict) else {}

    def generate_model_card(self, *args: Any, datasets: str | Sequence[str] | None = None,
                            examples: Sequence[dict[str, str]] | None = None, base_model: str | None = None,
                            eval_results: Sequence[Any] | None = None, **kwargs: Any) -> ModelCard:
        """The mixin's card from this class's template, with more card keyword arguments.

        Args:
            datasets: Hub dataset id(s) the model was trained on: the card's ``datasets:`` metadata.
            examples: example images, each ``{"input": path_or_url, "output": path_or_url,
                "title": str}`` (paths relative to the card): the card's ``widget:`` metadata and
                its Examples section.
            base_model: the Hub id of the model this one was fine-tuned from (``base_model:``).
            eval_results: ``huggingface_hub.EvalResult`` s (:func:`cut_hf.hub.cards.translation_eval_results`):
                the card's ``model-index``, named by ``repo_id`` or ``model_name``.
            *args, **kwargs: template variables (``model_name``, ``training``, ``metrics``, ...).
        """
        examples = [dict(e) for e in examples or []]
        card = super().generate_model_card(*args, examples=examples, **kwargs)
        if datasets:
            card.data["datasets"] = [datasets] if isinstance(datasets, str) else list(datasets)
        if base_model:
            card.data["base_model"] = base_model
        if eval_results:
            card.data["eval_results"] = list(eval_results)
            card.data["model_name"] = kwargs.get("repo_id") or kwargs.get("model_name") or type(self).__name__
        if examples:
            card.data["widget"] = [{"src": e["input"], "example_title": e.get("title") or Path(e["input"]).stem,
                                 **({"output": {"url": e["output"]}} if e.get("output") else {})} for e in examples]
        return card


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a model folder as a dict, or a one-line :class:`ModelLoadError`."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"config.json in {str(folder)!r} is unreadable: {one_line(err)}") from err
    if not isinstance(config, dict):
        raise ModelLoadError(f"config.json in {str(folder)!r} is not a JSON object")
    return config


def _load_weights(model: Any, weights_file: Path, strict: bool, map_location: str) -> None:
    """Load ``model.safetensors`` into ``model``, or a one-line :class:`ModelLoadError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_file), device=map_location)
    except (SafetensorError, OSError) as err:
        raise ModelLoadError(f"{str(weights_file)!r} is unreadable (truncated or not safetensors): "
                             f"{one_line(err)}") from err
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        source = f"{str(weights_file)!r} does not hold {type(model).__name__} weights for its config.json"
        raise ModelLoadError(mismatch_message(model, state, source) or f"{source}: {one_line(err)}") from err

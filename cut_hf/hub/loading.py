"""Loading cut-hf models by what a user types: a folder, a ``train.py`` output folder or a Hub id.

Above the models (it names them). Every model class loads the same way, through
:meth:`cut_hf.hub.mixin.CheckedHubMixin.from_pretrained`; the functions here only choose the class.
Failures are one-line :class:`~cut_hf.errors.ModelLoadError` s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from cut_hf.errors import ModelLoadError
from cut_hf.hub.mixin import CheckedHubMixin, read_config
from cut_hf.hub.files import DOWNLOAD_KWARGS, resolve_model_dir
from cut_hf.models.generator import CUTGenerator, generator_class
from cut_hf.models.stylegan2 import StyleGAN2Generator
from cut_hf.translation.exported import (
    EXPORTED_SUFFIXES, ExportedModelError, OnnxGenerator, OpenVinoGenerator, ProgramGenerator, load_exported_generator,
)

__all__ = ["ModelLoadError", "load_generator", "load_pretrained"]

Model = TypeVar("Model", bound=CheckedHubMixin)


def load_pretrained(cls: type[Model], model_id_or_dir: str | os.PathLike, **kwargs: Any) -> Model:
    """``cls.from_pretrained(model_id_or_dir, **kwargs)`` for any cut-hf model class.

    Kept for callers that pick the class at run time; ``subfolder``, ``strict``,
    ``map_location``, download options and config overrides are those of
    :meth:`~cut_hf.hub.mixin.CheckedHubMixin.from_pretrained`.
    """
    if not hasattr(cls, "output_subfolder"):
        raise TypeError(f"{cls.__name__} is not a cut-hf model class (it has no CheckedHubMixin)")
    return cls.from_pretrained(model_id_or_dir, **kwargs)


def load_generator(
    model_id_or_dir: str | os.PathLike, **kwargs: Any
) -> CUTGenerator | StyleGAN2Generator | OnnxGenerator | OpenVinoGenerator | ProgramGenerator:
    """Load a generator from a folder, a training output folder, a Hub id or an exported file.

    Accepts a ``save_pretrained`` folder, a ``train.py`` output folder (its ``generator/``), a
    Hub id (cached or downloadable; a repository that keeps the model in ``generator/`` works too),
    or an exported ``.onnx`` / ``.pt2`` file (:mod:`cut_hf.translation.export`), run by
    :mod:`cut_hf.translation.exported`
    without the model's PyTorch code (keyword arguments are ignored for those).
    The class is the one the folder's ``config.json`` describes (:func:`~cut_hf.models.generator.generator_class`:
    a SinCUT :class:`~cut_hf.StyleGAN2Generator` or a :class:`~cut_hf.CUTGenerator`).
    Raises :class:`ModelLoadError` with a one-line reason on any failure. Keyword arguments are
    those of ``CUTGenerator.from_pretrained`` (``map_location``, ``revision``, ``strict``, config
    overrides).
    """
    if Path(str(model_id_or_dir)).suffix.lower() in EXPORTED_SUFFIXES:
        try:
            return load_exported_generator(model_id_or_dir)
        except ExportedModelError as err:
            raise ModelLoadError(str(err)) from err
    # The class comes from the folder's config.json (SinCUT's StyleGAN2Generator or CUTGenerator).
    download = {k: kwargs.pop(k) for k in DOWNLOAD_KWARGS if k in kwargs}
    folder = resolve_model_dir(model_id_or_dir, kwargs.pop("subfolder", None),
                               fallback_subfolder=CUTGenerator.output_subfolder, **download)
    try:
        config = read_config(folder)
    except ModelLoadError:
        config = {}  # from_pretrained says what is wrong with it
    return generator_class(config).from_pretrained(folder, **kwargs)

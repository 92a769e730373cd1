"""Errors of model loading, at the bottom of the package so that every layer can raise them.

:class:`ModelLoadError` is what every load failure becomes (``from_pretrained`` of each model,
``load_generator``, the CLIs and the app): one line fit for a terminal or a web page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ModelLoadError", "hub_load_error", "mismatch_message", "one_line"]


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why in one line.

    When a Hub lookup failed, the error raised is also an instance of the Hub's own error class
    (e.g. ``huggingface_hub.errors.RepositoryNotFoundError`` or ``LocalEntryNotFoundError``), so
    code written against ``huggingface_hub`` keeps catching it. See :func:`hub_load_error`.
    """


# One subclass per Hub error class, made on first use (see hub_load_error).
_HUB_FLAVOURS: dict[type, type] = {}


def _flavour(hub_error_class: type[BaseException]) -> type[ModelLoadError]:
    """``ModelLoadError`` that also derives from ``hub_error_class`` (made once per class)."""
    flavour = _HUB_FLAVOURS.get(hub_error_class)
    if flavour is not None:
        return flavour

    def __init__(self: BaseException, message: str) -> None:  # the Hub's own __init__ wants an HTTP response
        Exception.__init__(self, message)

    def __str__(self: BaseException) -> str:
        return str(self.args[0])

    def __reduce_ex__(self: BaseException, protocol: Any) -> tuple:  # a dynamic class does not pickle by name
        return ModelLoadError, (str(self),)

    namespace = {"__init__": __init__, "__str__": __str__, "__reduce_ex__": __reduce_ex__,
                 "__module__": __name__, "__doc__": ModelLoadError.__doc__}
    try:
        # The Hub class first: its __new__ (OSError's for most) must build the instance.
        flavour = type("ModelLoadError", (hub_error_class, ModelLoadError), namespace)
    except TypeError:  # an exception class that cannot be combined: a plain ModelLoadError then
        flavour = ModelLoadError
    _HUB_FLAVOURS[hub_error_class] = flavour
    return flavour


def hub_load_error(message: str, cause: BaseException) -> ModelLoadError:
    """A :class:`ModelLoadError` saying ``message`` that is also an instance of ``type(cause)``.

    The attributes the Hub error carried (``response``, ``repo_id``, ``server_message``, ...) are
    copied, so ``except RepositoryNotFoundError as e: e.response`` works as before.
    """
    error = _flavour(type(cause))(message)
    for key, value in getattr(cause, "__dict__", {}).items():
        error.__dict__.setdefault(key, value)
    return error


def mismatch_message(model: Any, state: Mapping[str, Any], source: str) -> str:
    """One line comparing the tensors of ``state`` with what ``model`` expects.

    ``source`` starts the sentence, e.g. ``"'run/model.safetensors' does not hold CUTGenerator
    weights for its config.json"``; the counts and a few names of missing, unexpected and
    resized tensors follow. Returns an empty string when names and shapes all match.
    """
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
    return f"{source}: {', '.join(parts)}" if parts else ""


def one_line(text: object, limit: int = 200) -> str:
    """``text`` on one line (runs of whitespace and newlines become one space), cut at ``limit``."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

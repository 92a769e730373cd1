"""Errors every layer can raise, at the bottom of the package: model loading and full disks.

:class:`ModelLoadError` is what every load failure becomes (``from_pretrained`` of each model,
``load_generator``, the CLIs and the app): one line fit for a terminal or a web page.
:class:`DiskFullError` is what a write that ran out of space (or quota) becomes, in training
(checkpoints, model folders) and in translation jobs; :func:`is_disk_full` recognises the forms
the writers raise it in.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DiskFullError", "ModelLoadError", "hub_load_error", "is_disk_full", "mismatch_message", "one_line",
           "tree_bytes"]


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


# ----------------------------------------------------------------------------- full disks
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How the writers that do not raise OSError say it: safetensors (Rust's io::Error text) and the
# OS's own strerror texts inside other messages.
_DISK_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "os error 28)", "os error 122)")
#: Below this much free space a failed write is taken for a full disk even when the writer's error
#: does not say so (torch.save reports a short write as "unexpected pos ..." or "file write failed").
NEARLY_FULL_BYTES = 1 << 20


class DiskFullError(RuntimeError):
    """A file could not be written because its disk is full or its quota is reached.

    The message is one line: what, in which folder, about how much space it needed and how much
    is free. ``folder`` and ``needed`` (bytes, None when unknown) are kept as attributes.
    """

    def __init__(self, what: str, folder: str | os.PathLike, needed: int | None = None, advice: str = "") -> None:
        self.folder, self.needed = Path(folder), needed
        free = _free_bytes(self.folder)
        space = f"needs about {_human(needed)}" if needed else "needs more space"
        if free is not None:
            space += f", {_human(free)} free"
        tail = f"; {advice}" if advice else ""
        super().__init__(f"disk full: cannot write {what} in {self.folder} ({space}){tail}")


def is_disk_full(err: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """Whether ``err`` (raised by a write into ``folder``) means the disk or the quota is full.

    ``OSError`` with ``ENOSPC``/``EDQUOT``, or any error whose text says so (safetensors), or any
    ``OSError``/``RuntimeError`` raised while ``folder``'s file system has less than
    :data:`NEARLY_FULL_BYTES` free (torch.save's short writes). Call it before removing what
    the failed write left, or the space is free again.
    """
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in _DISK_FULL_ERRNOS:
            return True
        if any(t in str(e).lower() for t in _DISK_FULL_TEXTS):
            return True
    if folder is not None and isinstance(err, (OSError, RuntimeError)):
        free = _free_bytes(Path(folder))
        return free is not None and free < NEARLY_FULL_BYTES
    return False


def tree_bytes(path: str | os.PathLike) -> int:
    """Bytes in the files under ``path`` (a file: its size; missing: 0), for the messages' estimates."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for p in path.rglob("*") if path.is_dir() else ():
        with contextlib.suppress(OSError):  # removed while we counted
            total += p.stat().st_size if p.is_file() else 0
    return total


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the errors it was raised from (``__cause__``/``__context__``)."""
    seen: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in seen and len(seen) < 8:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def _free_bytes(folder: Path) -> int | None:
    """Free bytes on the file system of ``folder`` (or its nearest existing parent); None if unknown."""
    for p in (folder, *folder.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def _human(n: int) -> str:
    """``n`` bytes for people: 812 bytes, 1.4 MB, 2.0 GB."""
    if n < 1024:
        return f"{n} bytes"
    size, unit = n / 1024, "KB"
    for bigger in ("MB", "GB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"

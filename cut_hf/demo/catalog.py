"""Which models the demo may load, and the names it shows for them.

A public app must not open whatever a visitor types: a folder name would let anyone probe the
server's file system, and a Hub id would let anyone start slow downloads. So the app offers an
allowlist (the shipped model and each ``--model`` of the command line), and only a local session
started with ``--allow-any-model`` loads arbitrary Hub ids or folders. Everything shown (the
page, the API defaults, messages) uses display names: a Hub id as it is, a folder by its name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cut_hf.demo.errors import DemoError

#: The model ``python app.py`` uses when given none, in a source checkout (``models/`` is not
#: part of the installed package).
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "mini-horse2zebra"
#: The shipped SinCUT model (day -> night, trained on scikit-learn's ``china.jpg``): the app offers it
#: beside the default, with that photograph as an example.
SHIPPED_SINCUT = SHIPPED_MODEL.parent / "sincut-china2night"

#: Longest piece of a refused name repeated in the message (one readable line).
_ECHO_CHARS = 60


def display_name(source: str | os.PathLike) -> str:
    """The name shown for a model: a local folder by its name (``run/generator`` for the
    ``generator/`` of a ``train.py`` output; a missing one too), anything else (a Hub id) as given."""
    text = str(source).strip()
    path = Path(text).expanduser()
    if not (path.is_dir() or text.startswith(("/", ".", "~")) or text.count("/") > 1):  # as cut_hf's loaders tell
        return text
    path = path.resolve() if path.exists() else path
    return f"{path.parent.name}/{path.name}" if path.name == "generator" else path.name


@dataclass(frozen=True)
class ModelCatalog:
    """The models a session offers: display name -> source (a folder or a Hub id), the default first.

    Attributes:
        choices: the allowlist, in order; the first entry is the default model.
        allow_any: also resolve names outside the allowlist (a local session only).
    """

    choices: dict[str, str]
    allow_any: bool = False

    @classmethod
    def from_flags(cls, models: Sequence[str | os.PathLike] | None = None, allow_any: bool = False,
                   shipped: str | os.PathLike | Sequence[str | os.PathLike] = SHIPPED_MODEL) -> ModelCatalog:
        """The models named on the command line (the first is the default), then the shipped one(s)."""
        choices: dict[str, str] = {}
        extra = [shipped] if isinstance(shipped, (str, os.PathLike)) else list(shipped)
        for source in [*(models or []), *extra]:
            name = base = display_name(source)
            n = 2
            while name in choices and choices[name] != str(source):  # two folders with the same name
                name, n = f"{base} ({n})", n + 1
            choices.setdefault(name, str(source))
        return cls(choices, allow_any)

    @property
    def default(self) -> str:
        """The display name of the default model."""
        return next(iter(self.choices))

    def resolve(self, name: str | None) -> tuple[str, str]:
        """(display name, source) of a name typed in the model box or sent through the API.

        Raises:
            DemoError: an empty name, or one outside the allowlist (unless ``allow_any``). The
                message depends only on the name and the allowlist, never on the server's files.
        """
        text = (name or "").strip()
        if not text:
            raise DemoError("enter a model: " + self._offer())
        if text in self.choices:
            return text, self.choices[text]
        if self.allow_any:
            return display_name(text), text
        echo = text if len(text) <= _ECHO_CHARS else text[:_ECHO_CHARS] + "…"
        raise DemoError(f"{echo!r} is not a model of this app: choose {self._offer()} (the app's owner can add models "
                        "with --model, or allow any with --allow-any-model)")

    def _offer(self) -> str:
        listed = "one of " + ", ".join(self.choices)
        return f"a Hugging Face Hub id (user/name), a local folder or {listed}" if self.allow_any else listed

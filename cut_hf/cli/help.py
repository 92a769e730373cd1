"""``--help`` of every command: each default shown once, and a preset's own values where a preset sets them."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from typing import Any

# What argparse's BooleanOptionalAction appends to a help text itself (Python 3.11).
_BOOLEAN_SUFFIX = " (default: %(default)s)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to a flag's help only where it says something: not when the help
    names its default already (``(default: the usable cores)``), not for switches (``store_true`` /
    ``store_false``: off unless given) and not for ``None`` (no value)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("(default" in text or "default:" in text or action.default is None or action.default is argparse.SUPPRESS
                or action.nargs == 0):
            return text
        return super()._get_help_string(action) or ""


def preset_defaults_in_help(parser: argparse.ArgumentParser, presets: Mapping[str, Mapping[str, Any]],
                            flag: str) -> None:
    """Say in the help of every flag whose default depends on the preset chosen by ``flag`` what
    each preset gives, once: ``(default: cut/fastcut 0.0002, sincut 0.002)``. ``presets``: preset
    name -> {dest: value} over the parser's own defaults (what ``parser.set_defaults`` applies).
    A help text's own ``(default: ...)`` phrase describes the ``None`` value (e.g. "where it is faster")."""
    for action in parser._actions:
        values = {name: preset.get(action.dest, action.default) for name, preset in presets.items()}
        if action.dest == "help" or len({repr(v) for v in values.values()}) < 2:
            continue
        text = (action.help or "").replace(_BOOLEAN_SUFFIX, "")
        own = re.search(r" ?\(default: (.*)\)$", text)
        unset = own.group(1) if own else "none"
        text = text[: own.start()] if own else text
        groups: dict[str, list[str]] = {}
        for name, value in values.items():
            groups.setdefault(unset if value is None else _shown(value), []).append(name)
        sep = "; " if any(", " in value for value in groups) else ", "  # "where it is faster: CUDA, ..."
        given = sep.join(f"{'/'.join(names)} {value}" for value, names in groups.items())
        action.help = f"{text} (default: {given})".lstrip()


def _shown(value: Any) -> str:
    """A default as --help shows it: switches as on/off, anything else as printed."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)

"""``--help`` of every command shows each default once, and --mode's own value where a mode sets it."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from cut_hf.__main__ import COMMANDS
from cut_hf.cli.help import HelpFormatter

# Every parser with flags: the commands of ``cut-hf``, SimCLR's training flags, and the app's.
PARSERS = [f"cut_hf.cli.{module}" for module, _ in COMMANDS.values()] + ["cut_hf.cli.simclr_train"]


def flag_helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each flag's help text as --help prints it (one line each, before wrapping)."""
    formatter = HelpFormatter(parser.prog)
    return {action.option_strings[0]: formatter._expand_help(action) for action in parser._actions
            if action.option_strings and action.help}


def app_parser() -> argparse.ArgumentParser:
    from tests.demo.test_app import load_app

    app, captured = load_app(), {}
    real = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = lambda self, argv=None: captured.setdefault("parser", self)  # type: ignore
    try:
        app.parse_args([])
    finally:
        argparse.ArgumentParser.parse_args = real  # type: ignore
    return captured["parser"]


@pytest.mark.parametrize("module", [*PARSERS, "app.py"])
def test_every_default_is_shown_once(module: str) -> None:
    parser = app_parser() if module == "app.py" else importlib.import_module(module).build_parser()
    assert parser.formatter_class is HelpFormatter
    for flag, text in flag_helps(parser).items():
        assert len(re.findall(r"\(default|default:", text)) <= 1, f"{module} {flag}: {text}"
        assert "(default: None)" not in text and "(default: False)" not in text, f"{module} {flag}: {text}"


def test_switches_show_no_default_and_modes_show_their_own() -> None:
    from cut_hf.cli.train import build_parser

    helps = flag_helps(build_parser())
    assert "default" not in helps["--no-reuse-features"]  # once "(default: True)" on a flag that turns it off
    assert helps["--lr"].endswith("(default: cut/fastcut 0.0002, sincut 0.002)")  # SinCUT trains at 0.002
    assert helps["--lambda-nce"].endswith("(default: cut 1.0, fastcut 10.0, sincut 4.0)")
    assert helps["--nce-idt"].endswith("(default: cut/sincut on, fastcut off)")
    assert helps["--channels-last"].endswith("(default: cut/fastcut where it is faster: CUDA, AVX-512 CPUs, "
                                             "emulated bf16; sincut off)")
    assert helps["--num-workers"].count("default") == 1  # "(default: 4, at most the usable cores)" alone
    assert helps["--ngf"].endswith("(default: cut/fastcut 64, sincut 10)")

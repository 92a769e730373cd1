"""The README as a new user follows it: the environment activated once, right after Quick start;
install lines that work from a clone; commands and flags that exist."""

from __future__ import annotations

import importlib
import re
import shlex

import pytest
import tomllib

from cut_hf.__main__ import COMMANDS
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
ACTIVATE = "source .venv/bin/activate"


def sections() -> dict[str, str]:
    """The README's ``## `` sections by title."""
    parts = re.split(r"^## (.+)$", README, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def command_lines(text: str) -> list[str]:
    """The lines of the ``bash`` blocks of ``text``, continuation lines joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_the_environment_is_activated_once_right_after_quick_start() -> None:
    quick, everything = sections()["Quick start"], command_lines(README)
    assert [line for line in everything if ACTIVATE in line] == [ACTIVATE]  # one activation line ...
    assert ACTIVATE in command_lines(quick)  # ... in Quick start, which says it holds for every command
    assert "Every command in this README runs in that environment" in quick
    later = README[README.index("## Where things are"):]
    assert ".venv/bin/" not in later  # later examples use `python`, `cut-hf`, `accelerate`, `torchrun` as they are


def test_install_lines_work_from_a_clone() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installs = [line for line in command_lines(README) if "pip install" in line]
    assert installs
    for line in installs:
        assert "cut-hf[" not in line and "install cut-hf" not in line, line  # the package is on no index
        assert "-e ." in line or "-e '." in line or "-r requirements.txt" in line, line
        for extra in re.findall(r"\.\[([a-z,]+)\]", line):
            assert set(extra.split(",")) <= set(extras), line
    assert "pip install -e '.[export]'" in README and "cut-hf[" not in README  # prose too
    # The library's own messages say the same (they once said `pip install 'cut-hf[export]'`).
    for path in (ROOT / "cut_hf").rglob("*.py"):
        assert "cut-hf[" not in path.read_text(encoding="utf-8"), path


def _invocation(line: str) -> tuple[str, list[str]] | None:
    """(command, its arguments) of a README line that runs cut-hf, else None."""
    tokens = shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))
    for i, token in enumerate(tokens):
        if token == "cut-hf" or (token == "-m" and tokens[i + 1 : i + 2] == ["cut_hf"]):
            start = i + 1 if token == "cut-hf" else i + 2
            return tokens[start], tokens[start + 1 :]
        if token == "train.py":
            return "train", tokens[i + 1 :]
    return None


def _parser_options(command: str, args: list[str]) -> set[str]:
    module = "simclr_train" if command == "train" and "simclr" in args else COMMANDS[command][0]
    parser = importlib.import_module(f"cut_hf.cli.{module}").build_parser()
    return {option for action in parser._actions for option in action.option_strings}


def test_every_command_and_flag_in_the_readme_exists() -> None:
    assert "python -m cut_hf." not in README and "train_simclr" not in README and "cut-translate" not in README
    runs = [run for run in map(_invocation, command_lines(README)) if run is not None]
    assert len(runs) > 20
    for command, args in runs:
        assert command in COMMANDS, f"cut-hf {command}: no such command"
        flags = {arg.split("=")[0] for arg in args if arg.startswith("--")}
        unknown = flags - _parser_options(command, args) - {"--help"}
        assert not unknown, f"cut-hf {command}: no flag(s) {sorted(unknown)}"
    # SimCLR is trained one way: `cut-hf train --task simclr` (or train.py, the same main).
    simclr = [args for command, args in runs if command == "train" and "--task" in args]
    assert simclr and all(args[args.index("--task") + 1] == "simclr" for args in simclr)
    assert "python -m cut_hf.cli" not in README


@pytest.mark.parametrize("line", [line for line in command_lines(README) if line.startswith("python ")
                                  and "-m" not in line.split()[:2]])
def test_python_scripts_named_in_the_readme_exist(line: str) -> None:
    script = line.split()[1]
    assert (ROOT / script).is_file(), line

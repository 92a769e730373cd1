"""``cut-hf <command>`` / ``python -m cut_hf <command>``: one program, every command reachable, clear usage errors."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from cut_hf.__main__ import COMMANDS, main
from tests.helpers import ROOT

EXPECTED = ("translate", "train", "push", "convert", "export", "evaluate", "evaluate-simclr")


def test_help_lists_every_command_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split(None, 1)[1]) > 10, line  # a real description, not just the name
    assert set(COMMANDS) == set(EXPECTED)


def test_no_command_prints_usage_and_fails(capsys):
    assert main([]) == 2
    assert "usage: cut-hf <command>" in capsys.readouterr().out


def test_unknown_command_is_one_usage_error(capsys):
    assert main(["tranlsate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'tranlsate'" in err and "translate" in err


@pytest.mark.parametrize("name", EXPECTED)
def test_each_command_has_its_own_help_named_after_cut_hf(capsys, name):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cut-hf {name}"), out[:200]


def test_console_script_is_the_same_program():
    """The installed ``cut-hf`` script is this main, and the only script cut-hf installs."""
    ours = [e for e in entry_points(group="console_scripts") if e.value.startswith("cut_hf")]
    assert [(e.name, e.value) for e in ours] == [("cut-hf", "cut_hf.__main__:main")]


def test_python_m_cut_hf_runs_a_command_in_a_real_process(tmp_path):
    """What ``torchrun -m cut_hf translate`` and ``accelerate launch -m cut_hf train`` start: a one-line error
    for a missing input, exit status 2, no traceback."""
    model = ROOT / "models" / "mini-horse2zebra"
    proc = subprocess.run([sys.executable, "-m", "cut_hf", "translate", "--model", str(model),
                           "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_old_entry_points_are_gone():
    assert not (ROOT / "train_simclr.py").exists()
    assert not (ROOT / "cut_hf" / "translate.py").exists() and not (ROOT / "cut_hf" / "simclr_train.py").exists()

"""A disk that fills while translating a folder: the job stops with one line naming the folder and
the space the rest needs, the outputs written stay, no partial file is left, and a rerun continues."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cut_hf.cli.translate import main
from cut_hf.translation import folders
from tests.translation.test_folders import model_dir  # noqa: F401 - fixture


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    root, rng = tmp_path / "in", np.random.default_rng(0)
    root.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / f"img_{i}.png")
    return root


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_injected_full_disk_stops_keeps_and_continues(model_dir: Path, inputs: Path, tmp_path: Path, monkeypatch,
                                                      capsys):
    out = tmp_path / "out"
    write, calls = folders.write_atomic, []

    def full_after_two(image, target, ext=None):
        calls.append(target)
        if len(calls) > 2:
            folders.partial_path(target).write_bytes(b"half")  # what the encoder got out before it filled
            folders.partial_path(target).unlink()  # write_atomic's own clean-up
            raise OSError(errno.ENOSPC, "No space left on device")
        write(image, target, ext)

    monkeypatch.setattr(folders, "write_atomic", full_after_two)
    argv = ["--model", str(model_dir), "--input", str(inputs), "--output", str(out), "--num-workers", "0"]
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"error: disk full: cannot write img_2.png (4 output(s) to go) in {out} (needs about ")
    assert "the 2 written stay; free space and rerun the same command to continue" in line
    assert sorted(p.name for p in out.iterdir()) == ["img_0.png", "img_1.png"]  # whole outputs, no partials
    monkeypatch.setattr(folders, "write_atomic", write)
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "translated 4 of 6 image(s)" in summary and "2 already there" in summary
    assert len(list(out.iterdir())) == 6


def test_real_tmpfs_fills_while_translating(model_dir: Path, inputs: Path, tmp_path: Path, tmpfs, capsys):
    """A real full disk (a 16 KB tmpfs; each output is a ~7 KB PNG): one line, whole outputs only."""
    disk = tmpfs(16 * 1024)
    argv = ["--model", str(model_dir), "--input", str(inputs), "--output", str(disk / "out"), "--num-workers", "0"]
    assert main(argv) == 1
    line = one_error_line(capsys)
    assert line.startswith("error: disk full: cannot write img_") and f"in {disk / 'out'} (needs about " in line
    written = list((disk / "out").iterdir())
    assert written and all(not p.name.endswith(".partial") for p in written)
    assert all(folders.output_complete(p) for p in written)

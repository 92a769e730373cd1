"""Nothing lost on a full disk or a damaged checkpoint: one line, no traceback, the last complete
checkpoint stays and resumes; keep-last-K never deletes it first; a damaged newest checkpoint is
set aside and --resume latest falls back to the one before."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from cut_hf.errors import DiskFullError, is_disk_full, tree_bytes
from cut_hf.training.checkpoints import MANIFEST, damage
from cut_hf.training.tasks.cut import CUTTask
from tests.training.test_train import data_dir, run_main  # noqa: F401 - fixture

TINY = ["--load-size", "36", "--crop-size", "32", "--ngf", "4", "--ndf", "4", "--n-blocks", "2", "--num-patches", "16",
        "--netf-nc", "16", "--num-workers", "0", "--report-to", "none", "--threads", "1"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_is_disk_full_recognises_the_writers_forms(tmp_path: Path):
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    # safetensors raises its own class with the OS's text; torch.save a RuntimeError that only says
    # "unexpected pos" (taken for a full disk only when the folder's file system is nearly full).
    assert is_disk_full(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert not is_disk_full(RuntimeError("unexpected pos 576 vs 534"), tmp_path)  # this disk has room
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
    message = str(DiskFullError("checkpoint-4", tmp_path, 3 * 2**20, "free space"))
    assert message.startswith(f"disk full: cannot write checkpoint-4 in {tmp_path} (needs about 3.0 MB, ")
    assert message.endswith(" free); free space")


def test_full_disk_while_checkpointing_keeps_the_last_complete_one(data_dir: Path, tmp_path: Path, monkeypatch,
                                                                     capsys):
    """ENOSPC half-way through checkpoint-4 (with --keep-checkpoints 1): one line naming the folder and
    the space; the half-written folder is gone; checkpoint-2 was not pruned and resumes to the end."""
    from accelerate import Accelerator

    save_state, calls = Accelerator.save_state, []

    def fills_the_disk(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:
            Path(output_dir, "model.safetensors").write_bytes(b"\0" * 1000)  # what got written before it filled
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_state(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", fills_the_disk)
    out = tmp_path / "out"
    common = ["--data-dir", str(data_dir), *TINY, "--output-dir", str(out), "--max-steps", "6",
              "--checkpoint-every", "2", "--keep-checkpoints", "1"]
    assert run_main(common) == 1
    line = error_line(capsys)
    assert line.startswith(f"error: disk full: cannot write checkpoint-4 in {out / 'checkpoints'} (needs about ")
    assert "checkpoint-2 is complete" in line and "--resume latest" in line
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert damage(out / "checkpoints" / "checkpoint-2") is None
    monkeypatch.setattr(Accelerator, "save_state", save_state)
    assert run_main([*common, "--resume", "latest"]) == 0
    assert (out / "generator" / "model.safetensors").is_file()


def test_full_disk_while_writing_the_models_removes_the_half_written_folders(data_dir: Path, tmp_path: Path,
                                                                             monkeypatch, capsys):
    out = tmp_path / "out"
    save = CUTTask.save

    def half_then_full(self, summary, grid):
        (out / "generator").mkdir(parents=True)
        (out / "generator" / "model.safetensors").write_bytes(b"\0" * 100)
        raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(CUTTask, "save", half_then_full)
    common = ["--data-dir", str(data_dir), *TINY, "--output-dir", str(out), "--max-steps", "2"]
    assert run_main(common) == 1
    line = error_line(capsys)
    weights = sum(tree_bytes(f) for f in (out / "checkpoints" / "checkpoint-2").glob("model*.safetensors"))
    assert line.startswith(f"error: disk full: cannot write the model folders in {out} (needs about ")
    assert f"{weights / 1024:.1f} KB" in line and "checkpoint-2 holds the trained state" in line
    assert not (out / "generator").exists()
    monkeypatch.setattr(CUTTask, "save", save)
    assert run_main([*common, "--resume", "latest"]) == 0  # nothing left to train: writes the models
    assert (out / "generator" / "model.safetensors").is_file()


def test_damaged_newest_checkpoint_falls_back_to_the_previous(data_dir: Path, tmp_path: Path, capsys):
    """A truncated file in the newest checkpoint: --resume latest warns once naming it, sets it aside and
    resumes from the one before; --resume naming it is refused. Without a manifest (older checkpoints)
    the safetensors header check still sees the truncation."""
    out = tmp_path / "out"
    common = ["--data-dir", str(data_dir), *TINY, "--output-dir", str(out), "--checkpoint-every", "2"]
    assert run_main([*common, "--max-steps", "4"]) == 0
    newest = out / "checkpoints" / "checkpoint-4"
    weights = newest / "model.safetensors"
    assert damage(newest) is None and MANIFEST in {p.name for p in newest.iterdir()}
    weights.write_bytes(weights.read_bytes()[:-100])
    assert damage(newest) == f"model.safetensors has {weights.stat().st_size} of {weights.stat().st_size + 100} bytes"
    copy = tmp_path / "old-style"
    shutil.copytree(newest, copy)
    (copy / MANIFEST).unlink()
    assert "model.safetensors" in damage(copy)
    capsys.readouterr()
    assert run_main([*common, "--max-steps", "6", "--resume", str(newest)]) == 1
    assert "is damaged (model.safetensors has" in error_line(capsys)
    assert run_main([*common, "--max-steps", "6", "--resume", "latest"]) == 0
    out_lines = capsys.readouterr().out.splitlines()
    warnings = [line for line in out_lines if line.startswith("warning:")]
    assert len(warnings) == 1 and str(newest) in warnings[0] and "moved to damaged-checkpoint-4" in warnings[0]
    assert any(line.startswith(f"resumed from {out / 'checkpoints' / 'checkpoint-2'} at step 2") for line in out_lines)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["checkpoint-2", "checkpoint-4", "checkpoint-6", "damaged-checkpoint-4"]


def test_real_tmpfs_holding_one_checkpoint_but_not_two(data_dir: Path, tmp_path: Path, tmpfs, capsys):
    """The issue's case: --checkpoint-every 5 on a disk with room for one checkpoint. One "disk full"
    line, no traceback; checkpoint-5 is whole, and copied elsewhere it resumes to the end."""
    common = ["--data-dir", str(data_dir), *TINY, "--checkpoint-every", "5"]
    probe = tmp_path / "probe"
    assert run_main([*common, "--output-dir", str(probe), "--max-steps", "5"]) == 0
    one = tree_bytes(probe / "checkpoints" / "checkpoint-5")
    disk = tmpfs((one * 3 // 2 // 4096 + 1) * 4096)
    out = disk / "run"
    capsys.readouterr()
    assert run_main([*common, "--output-dir", str(out), "--max-steps", "15"]) == 1
    line = error_line(capsys)
    assert line.startswith(f"error: disk full: cannot write checkpoint-10 in {out / 'checkpoints'}")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-5"]
    assert damage(out / "checkpoints" / "checkpoint-5") is None
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(out, elsewhere)
    assert run_main([*common, "--output-dir", str(elsewhere), "--max-steps", "15", "--resume", "latest"]) == 0
    assert (elsewhere / "generator" / "model.safetensors").is_file()

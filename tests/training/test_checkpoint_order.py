"""Which folders are checkpoints, and their order: by step as a number, not as a name
(checkpoint-10 comes after checkpoint-9), for 'latest' and for pruning; only folders with the
COMPLETE marker count."""

from __future__ import annotations

from pathlib import Path

from cut_hf.cli import train
from cut_hf.training.checkpoints import CheckpointManager
from tests.helpers import make_images


class _Accelerator:
    """The three things CheckpointManager.save asks of Accelerate, on one process."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, path: str) -> None:
        Path(path, "model.safetensors").write_bytes(b"weights")


def test_steps_order_numerically_for_latest_and_pruning(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path / "ckpt", keep=3)
    for step in (2, 9, 10, 11):
        mgr.save(_Accelerator(), {"step": step}, step)
    # As names, "checkpoint-10" < "checkpoint-11" < "checkpoint-2" < "checkpoint-9".
    assert [p.name for p in mgr.complete()] == ["checkpoint-9", "checkpoint-10", "checkpoint-11"]  # 2 pruned
    assert mgr.latest().name == "checkpoint-11" and mgr.read_state(mgr.latest())["step"] == 11


def test_a_folder_without_the_marker_is_no_checkpoint(tmp_path: Path) -> None:
    mgr = CheckpointManager(tmp_path / "ckpt", keep=3)
    mgr.save(_Accelerator(), {"step": 3}, 3)
    (tmp_path / "ckpt" / "checkpoint-5").mkdir()  # copied in part, or by hand: no COMPLETE marker
    (tmp_path / "ckpt" / "checkpoint-5" / "model.safetensors").write_bytes(b"weights")
    assert [p.name for p in mgr.complete()] == ["checkpoint-3"]
    assert mgr.latest().name == "checkpoint-3" and mgr.resolve("latest").name == "checkpoint-3"


def test_the_last_step_is_saved_off_the_schedule(tmp_path: Path) -> None:
    """--max-steps 4 with --checkpoint-every 3: checkpoint-3 on the schedule, then checkpoint-4 at
    the end, so a finished run resumes (or extends) from where it ended, not one step short."""
    from accelerate.state import AcceleratorState, GradientState

    make_images(tmp_path / "data" / "trainA", 4, seed=1, prefix="a")
    make_images(tmp_path / "data" / "trainB", 4, seed=2, prefix="b")
    argv = ["--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"), "--load-size", "36",
            "--crop-size", "32", "--ngf", "4", "--ndf", "4", "--n-blocks", "1", "--num-patches", "16",
            "--netf-nc", "16", "--num-workers", "0", "--report-to", "none", "--threads", "1",
            "--max-steps", "4", "--checkpoint-every", "3"]
    try:
        assert train.main(argv) == 0
    finally:  # Accelerate keeps process-wide state: leave none behind for other tests
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    mgr = CheckpointManager(tmp_path / "out" / "checkpoints")
    assert [p.name for p in mgr.complete()] == ["checkpoint-3", "checkpoint-4"]
    assert mgr.read_state(mgr.latest())["step"] == 4

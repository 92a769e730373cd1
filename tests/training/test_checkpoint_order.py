"""Which folders are checkpoints, and their order: by step as a number, not as a name
(checkpoint-10 comes after checkpoint-9), for 'latest' and for pruning; only folders with the
COMPLETE marker count."""

from __future__ import annotations

from pathlib import Path

from cut_hf.training.checkpoints import CheckpointManager


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

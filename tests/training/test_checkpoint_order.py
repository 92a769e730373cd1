"""Checkpoints are ordered by step as a number, not as a name: checkpoint-10 comes after checkpoint-9,
for 'latest' and for pruning."""

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

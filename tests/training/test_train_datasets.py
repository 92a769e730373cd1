"""One 🤗 dataset per domain and streamed datasets (issue 20, point 4): --dataset-a/--dataset-b trains,
--streaming trains from each process's part of the streams, resumes exactly, and skips bad rows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import cut_hf.cli.train as train
from cut_hf.training.checkpoints import CheckpointManager
from cut_hf.training.tasks.cut import CUTTask
from tests.training.test_train import TINY, _one_thread_and_fresh_accelerate, reset_accelerate, run_main  # noqa: F401

datasets = pytest.importorskip("datasets")


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _save(folder: Path, n: int, seed: int, bad: int = 0) -> Path:
    """A save_to_disk dataset with one Image column "image" (``bad`` rows of broken bytes at the start)."""
    rows = [{"bytes": b"\x89PNG not really", "path": None}] * bad + [{"bytes": _png(seed + i), "path": None}
                                                                      for i in range(n)]
    ds = datasets.Dataset.from_dict({"image": rows, "label": list(range(len(rows)))},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.Value("int64")}))
    ds.save_to_disk(str(folder))
    return folder


@pytest.fixture
def two_datasets(tmp_path: Path) -> tuple[Path, Path]:
    return _save(tmp_path / "horses", 5, seed=1, bad=1), _save(tmp_path / "zebras", 4, seed=100)


def test_one_saved_dataset_per_domain_trains(two_datasets, tmp_path: Path):
    a, b = two_datasets
    out = tmp_path / "out"
    assert run_main(["--dataset-a", str(a), "--dataset-b", str(b), "--output-dir", str(out), *TINY,
                     "--max-steps", "3", "--report-to", "none", "--checkpoint-every", "0"]) == 0
    card = (out / "generator" / "README.md").read_text()
    assert f"datasets `{a}` (column image) and `{b}` (column image)" in card
    assert "datasets:" not in card.split("---")[1]  # local folders are not Hub ids
    args = train.parse_args(["--dataset-a", str(a), "--dataset-b", str(b)])
    assert (args.column_a, args.column_b) == ("image", "image")  # the per-domain default
    assert train.parse_args(["--dataset", "x"]).column_a == "imageA"  # the two-column form keeps its own
    assert run_main(["--dataset-a", str(a), "--output-dir", str(tmp_path / "o2"), *TINY]) == 1  # B missing


def test_streams_give_each_process_its_own_rows(two_datasets):
    from cut_hf.data.streaming import StreamedDomain, open_stream

    a, _ = two_datasets
    seen = []
    for rank in (0, 1):
        domain = StreamedDomain(open_stream(str(a), "train"), "image", "horses", rank=rank, world=2, seed=0,
                                buffer_size=4)
        rows = domain.rows()
        seen.append({value["bytes"] for _, value in (next(rows) for _ in range(3))})  # 6 rows / 2: one pass each
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 6


def test_streamed_run_trains_skips_bad_rows_and_resumes_exactly(two_datasets, tmp_path: Path, monkeypatch):
    """4 steps straight == 2 steps, a crash, --resume latest, 2 more: the same weights to the bit."""
    a, b = two_datasets
    common = ["--dataset-a", str(a), "--dataset-b", str(b), "--streaming", "--shuffle-buffer", "4", *TINY,
              "--max-steps", "4", "--checkpoint-every", "2", "--report-to", "none"]
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    summary = train.run(train.parse_args([*common, "--output-dir", str(straight)]))
    reset_accelerate()
    assert summary["step"] == 4 and summary["skipped_files"] == 1  # the broken row was met, skipped and counted
    assert "unreadable files skipped | 1" in (straight / "generator" / "README.md").read_text()
    assert "streamed" in (straight / "generator" / "README.md").read_text()

    real_step, calls = CUTTask.step, []

    def crash_at_step_3(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("preempted")
        return real_step(self, batch)

    monkeypatch.setattr(CUTTask, "step", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train.run(train.parse_args([*common, "--output-dir", str(crashed)]))
    reset_accelerate()
    monkeypatch.setattr(CUTTask, "step", real_step)
    assert [p.name for p in CheckpointManager(crashed / "checkpoints").complete()] == ["checkpoint-2"]
    assert run_main([*common, "--output-dir", str(crashed), "--resume", "latest"]) == 0
    for sub in ("generator", "sampler", "discriminator"):
        x, y = load_file(straight / sub / "model.safetensors"), load_file(crashed / sub / "model.safetensors")
        assert all(torch.equal(x[k], y[k]) for k in x), sub


def test_streaming_needs_datasets_and_max_steps(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--data-dir", "x", "--streaming", "--max-steps", "2"])
    assert "--streaming reads 🤗 datasets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--dataset", "x", "--streaming"])
    assert "--streaming needs --max-steps" in capsys.readouterr().err

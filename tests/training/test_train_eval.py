"""train.py --eval-every: FID/KID logged during training, OUTPUT/best/ kept, survives resume, bad folders fail early.

Tiny configs (32 px, ngf 8, 2 blocks) and cut_hf.evaluation.metrics.TinyFeatureExtractor: no Inception weights needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import cut_hf.cli.train as train
from cut_hf import CUTGenerator
from cut_hf.training.checkpoints import CheckpointManager
from tests.helpers import make_images
from tests.training.test_train import _one_thread_and_fresh_accelerate, run_main  # noqa: F401 - fixture

TINY = ["--load-size", "36", "--crop-size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "2",
        "--num-patches", "16", "--netf-nc", "16", "--num-workers", "0", "--n-epochs", "1", "--n-epochs-decay", "1",
        "--sample-every", "0", "--log-every", "1", "--eval-feature-extractor", "tiny"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for sub, n, seed in (("trainA", 4, 1), ("trainB", 4, 2), ("testA", 3, 3), ("testB", 3, 4)):
        make_images(root / sub, n, size=(36, 36), seed=seed, prefix=sub)
    return root


def eval_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Tensorboard scalars under eval/: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith("eval/"):
                found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {k: sorted(v) for k, v in found.items()}


def test_eval_every_logs_fid_keeps_best_and_survives_resume(data_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    base = ["--data-dir", str(data_dir), "--output-dir", str(out), *TINY, "--eval-every", "2",
            "--checkpoint-every", "2"]
    assert run_main([*base, "--max-steps", "2"]) == 0, capsys.readouterr().err
    # The checkpoint carries the best metric and its step, as does OUTPUT/best/best.json.
    ckpt = CheckpointManager(out / "checkpoints").complete()[-1]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["best_step"] == 2 and np.isfinite(state["best_metric"])
    first = json.loads((out / "best" / "best.json").read_text())
    assert (first["metric"], first["step"]) == ("fid", 2) and first["value"] == pytest.approx(state["best_metric"])

    assert run_main([*base, "--max-steps", "6", "--resume", "latest"]) == 0, capsys.readouterr().err
    scalars = eval_scalars(out / "logs")
    assert {"eval/fid", "eval/kid_mean"} <= set(scalars)
    fids = dict(scalars["eval/fid"])
    assert sorted(fids) == [2, 4, 6] and all(np.isfinite(v) for v in fids.values())
    # OUTPUT/best/ is the generator of the lowest-FID step, across the resume.
    best_step = min(fids, key=fids.get)
    record = json.loads((out / "best" / "best.json").read_text())
    assert record["step"] == best_step and record["value"] == pytest.approx(fids[best_step], rel=1e-5)
    best = CUTGenerator.from_pretrained(out / "best", strict=True)
    assert best.ngf == 8 and best.n_blocks == 2
    if best_step == 6:
        reference = CUTGenerator.from_pretrained(out / "generator", strict=True).state_dict()
    else:  # checkpoint-<step>: the GeneratorWithFeatures wrapper's weights
        saved = load_file(out / "checkpoints" / f"checkpoint-{best_step}" / "model.safetensors")
        reference = {k[len("generator."):]: v for k, v in saved.items()}
    for k, v in best.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert not (out / ".best.tmp").exists() and not (out / ".best.old").exists()
    card = (out / "generator" / "README.md").read_text()
    assert f"| best evaluation | step {best_step}: FID {fids[best_step]:.4f}" in card
    assert "## Evaluation" in card and "fid (step 6)" in card and "kid_mean (step 6)" in card
    assert "{{" not in card


def test_bad_eval_dir_fails_before_training(data_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "nowhere"
    rc = run_main(["--data-dir", str(data_dir), "--output-dir", str(out), *TINY, "--max-steps", "2",
                   "--eval-every", "1", "--eval-dir", f"{data_dir / 'testA'}:{missing}"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "error:" in err and "nowhere" in err and "does not exist" in err
    assert not (out / "generator").exists() and not (out / "checkpoints").exists()
    # An empty folder is as clear; a value without ':' and a missing folder pair are refused by the parser.
    (tmp_path / "empty").mkdir()
    rc = run_main(["--data-dir", str(data_dir), "--output-dir", str(out), *TINY, "--max-steps", "2",
                   "--eval-every", "1", "--eval-dir", f"{tmp_path / 'empty'}:{data_dir / 'testB'}"])
    assert rc == 1 and "holds no images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--data-dir", str(data_dir), "--eval-every", "2", "--eval-dir", "testA"])
    assert "INPUT:REFERENCE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--domain-a", "a", "--domain-b", "b", "--eval-every", "2"])
    args = train.parse_args(["--data-dir", str(data_dir), "--eval-every", "2", "--crop-size", "64"])
    assert args.eval_dirs == (str(data_dir / "testA"), str(data_dir / "testB")) and args.eval_size == 64

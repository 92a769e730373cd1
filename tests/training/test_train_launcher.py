"""What Accelerate's launcher and trackers decide (issue 20, points 1 and 2): the precision comes from
`accelerate launch` / `accelerate config` / ACCELERATE_MIXED_PRECISION unless --mixed-precision is given,
and is what the card, trainer_state.json and the start-up line say; --report-to takes Accelerate's trackers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cut_hf.cli.train as train
from tests.helpers import ROOT, make_images
from tests.training.test_train import TINY, _event_tags, _one_thread_and_fresh_accelerate, run_main  # noqa: F401

SHORT = [*TINY, "--max-steps", "2", "--checkpoint-every", "2", "--report-to", "none"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    make_images(tmp_path / "data" / "trainA", 3, size=(36, 36), seed=1, prefix="a")
    make_images(tmp_path / "data" / "trainB", 3, size=(36, 36), seed=2, prefix="b")
    return tmp_path / "data"


def _precision(out: Path) -> tuple[str, str]:
    """(the card's precision row, trainer_state.json's saved --mixed-precision)."""
    card = (out / "generator" / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| precision |"))
    state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    return row, state["args"]["mixed_precision"]


def test_accelerate_env_decides_the_precision_unless_the_flag_is_given(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert run_main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "env"), *SHORT]) == 0
    assert "precision bf16 (Accelerate's setting)" in capsys.readouterr().out
    assert _precision(tmp_path / "env") == ("| precision | bf16 |", "bf16")
    # An explicit flag wins over the launcher's setting.
    assert run_main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "flag"), *SHORT,
                     "--mixed-precision", "no"]) == 0
    assert "precision fp32 (--mixed-precision)" in capsys.readouterr().out
    assert _precision(tmp_path / "flag") == ("| precision | fp32 |", "no")
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert run_main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "none"), *SHORT]) == 0
    assert "precision fp32 (default)" in capsys.readouterr().out


def test_accelerate_launch_bf16_trains_in_bf16(data_dir, tmp_path):
    """The real launcher: `accelerate launch --cpu --num_processes 1 --mixed_precision bf16 train.py`."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "bf16", "--dynamo_backend", "no", str(ROOT / "train.py"),
           "--data-dir", str(data_dir), "--output-dir", str(out), *SHORT]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "precision bf16 (Accelerate's setting); 1 process(es) on cpu" in proc.stdout
    assert _precision(out) == ("| precision | bf16 |", "bf16")


def test_simclr_takes_the_launchers_precision_too(tmp_path, monkeypatch, capsys):
    from cut_hf.cli import simclr_train

    config = simclr_train.parse_args(["--data", "x", "--batch-size", "2"])
    assert config.mixed_precision is None  # not "no": Accelerate resolves it when the run starts
    make_images(tmp_path / "imgs", 4, size=(16, 16), seed=3)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    out = tmp_path / "simclr"
    assert run_main(["--task", "simclr", "--data", str(tmp_path / "imgs"), "--output-dir", str(out), "--backbone",
                     "resnet18", "--cifar-stem", "--proj-dim", "8", "--image-size", "16", "--batch-size", "2",
                     "--num-workers", "0", "--max-steps", "1", "--report-to", "none", "--checkpoint-every", "0"]) == 0
    assert "precision bf16 (Accelerate's setting)" in capsys.readouterr().out
    assert "| precision | bf16 |" in (out / "model" / "README.md").read_text()


def test_report_to_takes_accelerates_trackers_and_says_what_is_missing(data_dir, tmp_path, capsys):
    given = train.parse_args(["--data-dir", "x", "--report-to", "tensorboard, trackio"]).report_to
    assert given == "tensorboard,trackio"
    assert train.parse_args(["--data-dir", "x", "--report-to", "all"]).report_to == "all"
    for bad in ("tensorbored", "none,wandb", ""):
        with pytest.raises(SystemExit):
            train.parse_args(["--data-dir", "x", "--report-to", bad])
        assert "--report-to takes" in capsys.readouterr().err
    from accelerate.tracking import get_available_trackers

    missing = next(n for n in ("comet_ml", "aim", "clearml", "swanlab", "dvclive", "mlflow", "wandb")
                   if n not in {str(t) for t in get_available_trackers()})
    assert run_main(["--data-dir", str(data_dir), "--output-dir", str(tmp_path / "o"), *TINY,
                     "--report-to", f"tensorboard,{missing}"]) == 1
    assert f"--report-to {missing}: not installed here" in capsys.readouterr().err


def test_trackio_logs_offline_with_images_next_to_tensorboard(data_dir, tmp_path, monkeypatch):
    """trackio is local-first: with HF_HUB_OFFLINE=1 it writes its SQLite database and media under
    TRACKIO_DIR; TensorBoard logs the same run under OUTPUT/logs."""
    import sqlite3

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    if "trackio" in sys.modules:  # trackio reads TRACKIO_DIR when it is imported
        pytest.skip("trackio was imported before this test; its folder is fixed")
    out = tmp_path / "run1"
    assert run_main(["--data-dir", str(data_dir), "--output-dir", str(out), *TINY, "--max-steps", "2",
                     "--log-every", "1", "--sample-every", "2", "--checkpoint-every", "0",
                     "--report-to", "tensorboard,trackio"]) == 0
    db = tmp_path / "trackio" / "cut-hf.db"
    assert db.is_file()
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        rows = " ".join(str(r) for t in tables for r in conn.execute(f"select * from {t}"))
    assert "run1" in rows and "G_GAN" in rows and "NCE" in rows  # the run, named by its folder, and its losses
    assert list((tmp_path / "trackio" / "media").rglob("*.png")), "no sample image in trackio"
    scalars, images = _event_tags(out / "logs")
    assert "G_GAN" in scalars and "samples" in images

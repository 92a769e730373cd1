"""train.py launched by torchrun as 2 CPU processes (gloo): one job, different data per rank, same weights,
and evaluation on the main process while the other waits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from tests.helpers import make_images

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_share_weights_and_split_the_data(tmp_path: Path):
    data, out = tmp_path / "data", tmp_path / "out"
    make_images(data / "trainA", 8, size=(36, 36), seed=1, prefix="a")
    make_images(data / "trainB", 6, size=(36, 36), seed=2, prefix="b")
    make_images(data / "testA", 3, size=(36, 36), seed=3, prefix="ta")
    make_images(data / "testB", 3, size=(36, 36), seed=4, prefix="tb")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # train.py must join the processes by itself on a CPU machine
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train.py"), "--data-dir", str(data), "--output-dir", str(out),
           "--load-size", "36", "--crop-size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "2",
           "--num-patches", "16", "--netf-nc", "16", "--num-workers", "0", "--n-epochs", "1", "--n-epochs-decay", "1",
           "--max-steps", "4", "--checkpoint-every", "2", "--log-every", "1", "--log-seen-files",
           "--eval-every", "2", "--eval-feature-extractor", "tiny"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # One job of 2 processes: 8 A images / (batch 1 x 2 processes) = 4 steps per epoch.
    assert proc.stdout.count("4 steps per epoch on each of 2 process(es)") == 1  # printed by the main process only
    ranks = [json.loads((out / "seen_files" / f"rank{r}.json").read_text()) for r in (0, 1)]
    a0, a1 = set(ranks[0]["A"]), set(ranks[1]["A"])
    assert len(ranks[0]["A"]) == len(ranks[1]["A"]) == 4
    assert not a0 & a1 and a0 | a1 == {f"a_{i}.png" for i in range(8)}  # different data, the whole epoch
    assert ranks[0]["B"] != ranks[1]["B"]  # B drawn independently per item
    # Gradients were averaged: both replicas hold the same weights, which moved from their start.
    assert ranks[0]["generator_sha256"] == ranks[1]["generator_sha256"]

    import cut_hf.cli.train as train

    args = train.parse_args(["--data-dir", str(data), "--ngf", "8", "--n-blocks", "2", "--netf-nc", "16"])
    torch.manual_seed(0)
    initial, _, _ = train.build_models(args)
    from cut_hf.training.logs import weights_digest

    assert weights_digest(initial) != ranks[0]["generator_sha256"]
    assert weights_digest(train.CUTGenerator.from_pretrained(out / "generator")) == ranks[0]["generator_sha256"]
    # Checkpoints hold both processes' RNG states; outputs were written once.
    ckpt = out / "checkpoints" / "checkpoint-4"
    assert (ckpt / "random_states_0.pkl").is_file() and (ckpt / "random_states_1.pkl").is_file()
    assert json.loads((ckpt / "trainer_state.json").read_text())["num_processes"] == 2
    assert proc.stdout.count("saved checkpoint") == 2
    # --eval-every ran on the main process only (one line per evaluation) and kept the best generator.
    assert proc.stdout.count("step 2: eval/fid") == 1 and proc.stdout.count("step 4: eval/fid") == 1, proc.stdout[-2000:]
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["metric"] == "fid" and best["step"] in (2, 4)
    assert train.CUTGenerator.from_pretrained(out / "best", strict=True).ngf == 8

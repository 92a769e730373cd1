"""Nothing lost when a run is stopped: SIGTERM / SIGUSR1 / Ctrl-C save a checkpoint at the same step
and exit with STOPPED_EXIT_CODE, a second Ctrl-C stops at once, --checkpoint-minutes, and the resumed
run ends with the same generator bytes as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cut_hf.cli.train as train
from cut_hf.training.checkpoints import CheckpointManager
from cut_hf.training.signals import INTERRUPTED, STOPPED_EXIT_CODE, StopSignals
from cut_hf.training.tasks.cut import CUTTask
from tests.helpers import ROOT, make_images
from tests.training.test_train import run_main

TINY = ["--load-size", "36", "--crop-size", "32", "--ngf", "4", "--ndf", "4", "--n-blocks", "2", "--num-patches", "16",
        "--netf-nc", "16", "--num-workers", "0", "--report-to", "none", "--threads", "1"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_images(root / "trainA", 5, seed=1, prefix="a")  # 5 steps per epoch
    make_images(root / "trainB", 4, seed=2, prefix="b")
    return root


def generator_bytes(out: Path) -> bytes:
    return (out / "generator" / "model.safetensors").read_bytes()


def start(argv: list[str]) -> subprocess.Popen:
    """``python train.py`` in a child whose SIGINT is the default one: a background shell job's
    children inherit SIGINT ignored, and Python would keep ignoring it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``path`` exists (the child got that far); fails if the child ended first."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name}: {proc.communicate()}"
        assert time.monotonic() < end, f"no {path} after {timeout} s"
        time.sleep(0.02)


def test_sigterm_saves_at_the_step_and_resume_is_byte_identical(data_dir: Path, tmp_path: Path):
    """A real `python train.py`: SIGTERM after the first checkpoint -> exit 75 with one line and a
    complete checkpoint at the step it stopped; --resume latest ends with the uninterrupted run's bytes."""
    common = ["--data-dir", str(data_dir), *TINY, "--max-steps", "25", "--checkpoint-every", "5"]
    split, straight = tmp_path / "split", tmp_path / "straight"
    proc = start([*common, "--output-dir", str(split)])
    wait_for(split / "checkpoints" / "checkpoint-5", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == STOPPED_EXIT_CODE, err
    assert "Traceback" not in err
    stopped = [line for line in out.splitlines() if line.startswith("stopped at step")]
    assert len(stopped) == 1 and stopped[0].endswith("by SIGTERM; resume with --resume latest"), out
    step = int(stopped[0].split()[3])
    assert 5 <= step < 25
    latest = CheckpointManager(split / "checkpoints").latest()
    assert latest.name == f"checkpoint-{step}" and not (split / "generator").exists()

    assert run_main([*common, "--output-dir", str(split), "--resume", "latest"]) == 0
    assert run_main([*common, "--output-dir", str(straight)]) == 0
    assert generator_bytes(split) == generator_bytes(straight)


def test_a_second_ctrl_c_stops_at_once(monkeypatch, capsys):
    """The first SIGINT asks for a stop after the step; the second raises KeyboardInterrupt at once,
    which main() turns into one line and exit 130. The old handlers come back afterwards."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with it ignored
    try:
        with StopSignals(announce=False) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0)  # Python runs the handler between bytecodes
            assert stop.requested == "SIGINT"
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with StopSignals(announce=False):  # ignored at start (nohup, `&`): stays ignored
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run", interrupted)
    assert train.main(["--data-dir", "x", *TINY]) == 130
    assert capsys.readouterr().err.strip() == INTERRUPTED


def test_sigusr1_on_an_epochs_last_step_resumes_bit_exactly(data_dir: Path, tmp_path: Path, monkeypatch, capsys):
    """SIGUSR1 (SLURM's --signal) during step 5, the last of epoch 0: the checkpoint holds epoch 1,
    and 5 + resume + 3 steps give the bytes of 8 steps straight."""
    common = ["--data-dir", str(data_dir), *TINY, "--max-steps", "8", "--checkpoint-every", "0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_main([*common, "--output-dir", str(straight)]) == 0
    step, calls = CUTTask.step, []

    def signal_in_5(self, batch):
        calls.append(1)
        if len(calls) == 5:  # arrives during step 5, as a scheduler's signal does
            os.kill(os.getpid(), signal.SIGUSR1)
        return step(self, batch)

    monkeypatch.setattr(CUTTask, "step", signal_in_5)
    before = signal.getsignal(signal.SIGUSR1)
    capsys.readouterr()
    assert run_main([*common, "--output-dir", str(split)]) == STOPPED_EXIT_CODE
    assert "stopped at step 5 by SIGUSR1; resume with --resume latest" in capsys.readouterr().out
    state = CheckpointManager.read_state(split / "checkpoints" / "checkpoint-5")
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 0)
    monkeypatch.setattr(CUTTask, "step", step)
    assert signal.getsignal(signal.SIGUSR1) == before  # the handlers were given back
    assert run_main([*common, "--output-dir", str(split), "--resume", "latest"]) == 0
    assert generator_bytes(split) == generator_bytes(straight)


def test_checkpoint_minutes_saves_on_wall_time(data_dir: Path, tmp_path: Path):
    """--checkpoint-minutes: a checkpoint whenever that much time passed, whatever --checkpoint-every says."""
    out = tmp_path / "out"
    assert run_main(["--data-dir", str(data_dir), *TINY, "--max-steps", "3", "--checkpoint-every", "0",
                     "--checkpoint-minutes", "1e-7", "--output-dir", str(out)]) == 0  # every step takes longer
    assert [p.name for p in CheckpointManager(out / "checkpoints").complete()] == [f"checkpoint-{i}" for i in (1, 2, 3)]


def test_simclr_stops_the_same_way(tmp_path: Path, monkeypatch, capsys):
    """SimCLR runs in the same runtime: SIGTERM during step 2 -> checkpoint-2, the line, exit 75.
    (Its bit-exact resume from a checkpoint is tests/training/test_simclr_train.py's.)"""
    from cut_hf.cli import simclr_train
    from cut_hf.training.tasks.simclr import SimCLRTask

    make_images(tmp_path / "images", 8, size=(20, 20))
    step, calls = SimCLRTask.step, []
    before = signal.getsignal(signal.SIGTERM)  # whatever an earlier test in this process left

    def signal_in_2(self, batch):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, batch)

    monkeypatch.setattr(SimCLRTask, "step", signal_in_2)
    out = tmp_path / "out"
    try:
        rc = simclr_train.main(["--data", str(tmp_path / "images"), "--output-dir", str(out), "--backbone", "resnet18",
                                "--cifar-stem", "--proj-dim", "8", "--image-size", "16", "--batch-size", "4",
                                "--num-workers", "0", "--max-steps", "6", "--report-to", "none"])
    finally:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    assert rc == STOPPED_EXIT_CODE
    assert "stopped at step 2 by SIGTERM; resume with --resume latest" in capsys.readouterr().out
    assert [p.name for p in CheckpointManager(out / "checkpoints").complete()] == ["checkpoint-2"]
    assert signal.getsignal(signal.SIGTERM) == before  # the handler was given back


def test_two_processes_agree_when_only_one_gets_the_signal(data_dir: Path, tmp_path: Path):
    """torchrun, 2 gloo processes: SIGUSR1 to rank 1 alone. Both stop at the same step (the flag rides
    in the step's all-reduce) and write their parts of one complete checkpoint; the main process says so."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(ROOT)}
    env.pop("ACCELERATE_USE_CPU", None)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              str(ROOT / "train.py"), "--data-dir", str(data_dir), "--output-dir", str(out), *TINY,
              "--checkpoint-every", "2"]
    proc = subprocess.Popen([*launch, "--max-steps", "1000"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(out / "checkpoints" / "checkpoint-2", proc)
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        rank1 = [int(w) for w in workers if b"\0RANK=1\0" in b"\0" + Path(f"/proc/{w}/environ").read_bytes()]
        assert len(rank1) == 1, workers
        os.kill(rank1[0], signal.SIGUSR1)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # torchrun reports a worker's non-zero status as its own failure; what matters is the checkpoint.
    assert "exitcode  : 75" in stderr, stderr[-2000:]
    stopped = [line for line in stdout.splitlines() if line.startswith("stopped at step")]
    assert len(stopped) == 1 and "by a signal to another process" in stopped[0], stdout[-2000:]
    step = int(stopped[0].split()[3])
    latest = CheckpointManager(out / "checkpoints").latest()
    assert latest.name == f"checkpoint-{step}"
    assert (latest / "random_states_0.pkl").is_file() and (latest / "random_states_1.pkl").is_file()
    assert CheckpointManager.read_state(latest)["step"] == step
    # Both processes resume from it: the main process picks the checkpoint and tells the other.
    resumed = subprocess.run([*launch, "--max-steps", str(step + 1), "--resume", "latest"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.count(f"resumed from {latest} at step {step}") == 1

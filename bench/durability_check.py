#!/usr/bin/env python
"""Issue 22's "Done when" for training, as an operator would see it, with real ``python train.py`` runs.

    python bench/durability_check.py            # both checks; the tmpfs one needs root (mount)
    python bench/durability_check.py --skip-tmpfs

1. **SIGTERM**: a 300-step run (tiny CUT: ngf 4, 32 px crops, 5 + 4 random images, one thread) gets
   SIGTERM once its progress bar shows step 40; reported: the seconds from the signal to the exit,
   the exit status, the checkpoint it left, whether a traceback was printed; then ``--resume latest``
   runs it to the end and an uninterrupted run with the same seed does the same, and the two
   ``generator/model.safetensors`` are compared byte for byte.
2. **A full disk**: the same run with ``--checkpoint-every 5`` on a tmpfs sized for one checkpoint
   and a half; reported: the exit status and the error line, whether checkpoint-5 is whole, and
   whether a copy of the output folder elsewhere resumes to the end.

Prints what it sees; nothing here asserts (tests/training/test_preemption.py and test_disk_full.py do).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--load-size", "36", "--crop-size", "32", "--ngf", "4", "--ndf", "4", "--n-blocks", "2", "--num-patches", "16",
        "--netf-nc", "16", "--num-workers", "0", "--report-to", "none", "--threads", "1"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def train(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], env=ENV, capture_output=True, text=True)


def make_data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for domain, n in (("trainA", 5), ("trainB", 4)):
        (root / domain).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(root / domain / f"{i}.png")
    return root


def sigterm_check(work: Path, data: Path, steps: int, at: int) -> None:
    common = ["--data-dir", str(data), *TINY, "--max-steps", str(steps)]
    split, straight = work / "split", work / "straight"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *common, "--output-dir", str(split)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen, shown = b"", 0
    while shown < at:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        shown = max([int(m) for m in re.findall(rb"\| (\d+)/%d \[" % steps, seen)] or [0])
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    status = proc.wait()
    seconds = time.monotonic() - sent
    text = (seen + rest).decode(errors="replace")
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.startswith(("stopped", "saved check"))]
    checkpoints = sorted(p.name for p in (split / "checkpoints").iterdir()) if (split / "checkpoints").is_dir() else []
    print(f"SIGTERM at displayed step {shown} of {steps}: exit status {status} after {seconds:.2f} s; "
          f"traceback printed: {'Traceback' in text}; checkpoints: {checkpoints}")
    print("  " + "\n  ".join(lines))
    resumed = train(*common, "--output-dir", str(split), "--resume", "latest")
    whole = train(*common, "--output-dir", str(straight))
    a, b = (p / "generator" / "model.safetensors" for p in (split, straight))
    same = resumed.returncode == whole.returncode == 0 and a.read_bytes() == b.read_bytes()
    print(f"resume exit {resumed.returncode}, uninterrupted exit {whole.returncode}; generator bytes identical: {same}")


def tmpfs_check(work: Path, data: Path) -> None:
    common = ["--data-dir", str(data), *TINY, "--checkpoint-every", "5"]
    probe = train(*common, "--output-dir", str(work / "probe"), "--max-steps", "5")
    one = sum(p.stat().st_size for p in (work / "probe" / "checkpoints" / "checkpoint-5").rglob("*") if p.is_file())
    size = (one * 3 // 2 // 4096 + 1) * 4096
    disk = work / "tmpfs"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if probe.returncode or mounted.returncode:
        print(f"tmpfs check skipped: {mounted.stderr.strip() or probe.stderr[-300:]}")
        return
    try:
        run = train(*common, "--output-dir", str(disk / "run"), "--max-steps", "15")
        errors = [line for line in run.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
        left = sorted(p.name for p in (disk / "run" / "checkpoints").iterdir())
        print(f"tmpfs of {size} bytes, one checkpoint {one} bytes: exit {run.returncode}, traceback printed: "
              f"{'Traceback' in run.stderr}; checkpoints left: {left}")
        print("  " + "\n  ".join(errors))
        shutil.copytree(disk / "run", work / "elsewhere")
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
    resumed = train(*common, "--output-dir", str(work / "elsewhere"), "--max-steps", "15", "--resume", "latest")
    done = (work / "elsewhere" / "generator" / "model.safetensors").is_file()
    print(f"copied elsewhere, --resume latest: exit {resumed.returncode}, generator written: {done}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--at", type=int, default=40, help="send SIGTERM once the bar shows this step")
    p.add_argument("--skip-tmpfs", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cut-hf-durability-") as tmp:
        work = Path(tmp)
        data = make_data(work / "data")
        sigterm_check(work, data, args.steps, args.at)
        if not args.skip_tmpfs:
            tmpfs_check(work, data)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()

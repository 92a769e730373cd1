#!/usr/bin/env python
"""Sharded folder translation: ``cut-hf translate`` with 1 process against 2 processes.

    python bench/translate_bench.py                     # 48 images of 256 x 256, 2 rounds
    python bench/translate_bench.py --images 96 --rounds 3 --precision bf16

The default generator (ngf 64, 9 blocks, random weights, ``save_pretrained`` into a temporary
folder) translates a folder of smooth random 256 x 256 PNGs, once as one process and once as
``torchrun --nproc_per_node 2 -m cut_hf translate`` (gloo, one CPU each), every process with one
intra-op thread (``OMP_NUM_THREADS=1``) and the CLI's default ``--num-workers``. The two launches
alternate for ``--rounds`` rounds (each round writes into fresh output folders), so a drifting
load on a shared machine falls on both. Reported per launch: the wall time of the whole command
(start-up and model loading included) and the images/s of the CLI's own summary line (the
translation loop only). Issue 13's target: on a 2-core machine the 2-process wall time is at most
0.75x the 1-process one. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

if __package__ in (None, ""):  # run as `python bench/<script>.py`, beside bench/_script.py
    import _script

    _script.load_package()

from bench.common import load_average
from cut_hf import CUTGenerator, perf

SUMMARY = re.compile(r"translated (\d+) of (\d+).*?([0-9.]+) s, ([0-9.]+) images/s")


def make_images(folder: Path, count: int, size: int) -> None:
    """``count`` smooth random RGB PNGs (upsampled noise: photo-like file sizes and decode times)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        small = Image.fromarray(rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8))
        small.resize((size, size), Image.Resampling.BICUBIC).save(folder / f"img_{i:04d}.png")


def launch(processes: int, model: Path, inputs: Path, output: Path, precision: str) -> dict[str, float]:
    """Run the translate CLI with ``processes`` processes; returns wall seconds and the summary's figures."""
    cli = ["-m", "cut_hf", "translate", "--model", str(model), "--input", str(inputs), "--output", str(output),
           "--device", "cpu", "--precision", precision]
    cmd = [sys.executable, *(["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
                             if processes > 1 else []), *cli]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    found = SUMMARY.findall(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    translated, _total, seconds, rate = found[-1]
    return {"wall_s": wall, "translated": int(translated), "loop_s": float(seconds), "images_per_s": float(rate)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--images", type=int, default=48, help="images in the folder (default 48)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of 1 and 2 processes")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--ngf", type=int, default=64, help="generator width (tests shrink it)")
    p.add_argument("--n-blocks", type=int, default=9)
    args = p.parse_args(argv)
    machine = perf.machine_description()
    print(f"CPU: {machine['cpu']} | {machine['usable_cores']} usable cores | ISA {' '.join(machine['isa'])} | "
          f"torch {machine['torch']} | load {load_average()}", flush=True)
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        CUTGenerator(ngf=args.ngf, n_blocks=args.n_blocks).save_pretrained(root / "model")
        make_images(root / "in", args.images, args.size)
        for r in range(args.rounds):
            for n in (1, 2):
                res = launch(n, root / "model", root / "in", root / f"out_{n}_{r}", args.precision)
                if res["translated"] != args.images:
                    raise RuntimeError(f"{n} process(es) translated {res['translated']} of {args.images}")
                runs[n].append(res)
                print(f"round {r} {n} process(es): wall {res['wall_s']:.1f} s, loop {res['loop_s']:.1f} s, "
                      f"{res['images_per_s']:.2f} images/s | load {load_average()}", flush=True)
    wall = {n: statistics.median(x["wall_s"] for x in v) for n, v in runs.items()}
    rate = {n: statistics.median(x["images_per_s"] for x in v) for n, v in runs.items()}
    ratios = [b["wall_s"] / a["wall_s"] for a, b in zip(runs[1], runs[2], strict=True)]
    print(f"\n{args.images} images of {args.size} px, {args.precision}, 1 thread per process, median of {args.rounds}:")
    print("| processes | wall s | summary images/s |\n|---|---|---|")
    for n in (1, 2):
        print(f"| {n} | {wall[n]:.1f} | {rate[n]:.2f} |")
    verdict = "met" if statistics.median(ratios) <= 0.75 else "not met"
    print(f"2-process wall / 1-process wall: {statistics.median(ratios):.2f} (rounds: "
          f"{' '.join(f'{x:.2f}' for x in ratios)}); target <= 0.75: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""onnxruntime vs eager PyTorch: ``translate()`` time of the default generator on this CPU.

    python bench/export_bench.py [--sizes 256 1024] [--runs 3] [--threads 2]

The default CUTGenerator (ngf 64, 9 blocks, random weights) is exported to ONNX (fp32, traced at
64 x 64; the graph takes any size), then one RGB image per size is translated by
``translate(generator, image)`` and ``translate(OnnxGenerator(path), image)``. Each timing is the
median of ``--runs`` calls after one warm-up call (onnxruntime plans its kernels for each new
shape on the first run). Both run on ``--threads`` intra-op threads. The machine's load average
and ISA flags are printed with the table: on a shared machine the figures move with the load.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

if __package__ in (None, ""):  # run as `python bench/<script>.py`, beside bench/_script.py
    import _script

    _script.load_package()

from bench.common import load_average, timed
from cut_hf import CUTGenerator, Tiling, perf, translate
from cut_hf.translation.export import export_onnx
from cut_hf.translation.exported import OnnxGenerator

CPU = torch.device("cpu")
NEVER = Tiling(tile=0)  # whole images only: an exported graph cannot be tiled


def _median_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn, CPU) for _ in range(runs))


def _machine() -> str:
    m = perf.machine_description()
    return f"CPU: {m['cpu']}; load average {load_average()}; ISA: {' '.join(m['isa']) or '-'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    generator = CUTGenerator().eval()  # the default: ngf 64, 9 blocks
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(generator, Path(tmp) / "generator.onnx")
        runtime = OnnxGenerator(path, providers=["CPUExecutionProvider"], threads=args.threads)
        print(_machine())
        print(f"torch {torch.__version__}, threads {args.threads}, fp32, median of {args.runs} runs after a warm-up\n")
        print("| size | eager PyTorch (s) | onnxruntime (s) | speed-up | max grey-level difference |")
        print("|---|---|---|---|---|")
        rng = np.random.default_rng(0)
        for size in args.sizes:
            image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            eager = _median_seconds(functools.partial(translate, generator, image, tiling=NEVER), args.runs)
            onnx = _median_seconds(functools.partial(translate, runtime, image, tiling=NEVER), args.runs)
            a = np.asarray(translate(generator, image, tiling=NEVER), dtype=int)
            b = np.asarray(translate(runtime, image, tiling=NEVER), dtype=int)
            print(f"| {size} | {eager:.3f} | {onnx:.3f} | {eager / onnx:.2f}x | {np.abs(a - b).max()} |", flush=True)
        print("\n" + _machine())


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""int8 translation against fp32 eager and against the paper's path, with its fidelity to fp32.

    python bench/int8_bench.py                        # 256 and 1024 px, 5 rounds, the shipped model's fidelity
    python bench/int8_bench.py --sizes 256 --rounds 3 --no-shipped

Per size, one real photo (scikit-image's astronaut, resized to size x size) is translated by the
default ``CUTGenerator()`` (random weights, seed 0) three ways, alternating in one process after
one untimed call of each (the first int8 call quantises; its time is reported on its own):
``translate(g, photo, precision="fp32")``, ``translate(g, photo, precision="int8")`` and the paper
code's test path (:func:`bench.paper.paper_translate`, the official networks with the same weights).
The speed-ups are medians of the per-round ratios. Fidelity: PSNR (dB) of the int8 output against
the fp32 one for that photo, and for the shipped model (``models/mini-horse2zebra``, calibrated on
its four examples) on each example and on three 256 px photos. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

if __package__ in (None, ""):  # run as `python bench/int8_bench.py`, beside bench/_script.py
    import _script

    _script.load_package()

from bench.paper import official_reference, paper_translate
from cut_hf import CUTGenerator, load_generator, perf, translate
from cut_hf.translation.quantize import psnr

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "mini-horse2zebra"


def photo(name: str, short: int, square: bool = False) -> Image.Image:
    """A scikit-image photo, its shorter side resized to ``short`` (or squashed to a square)."""
    from skimage import data

    img = Image.fromarray(getattr(data, name)()).convert("RGB")
    scale = short / min(img.size)
    size = (short, short) if square else (round(img.width * scale), round(img.height * scale))
    return img.resize(size, Image.Resampling.BICUBIC)


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def speed(size: int, rounds: int) -> dict[str, Any]:
    """fp32, int8 and the paper path on one size x size photo, alternating; medians and ratios."""
    torch.manual_seed(0)
    generator = CUTGenerator().eval()
    net_g = official_reference().official_generator().eval()
    net_g.load_state_dict(generator.state_dict())
    image = photo("astronaut", size, square=True)
    ways = {"paper": lambda: paper_translate(net_g, image, torch.device("cpu")),
            "fp32": lambda: translate(generator, image, precision="fp32", device="cpu"),
            "int8": lambda: translate(generator, image, precision="int8", device="cpu")}
    first = {name: timed(fn) for name, fn in ways.items()}  # warm-up; int8's first call quantises
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, fn in ways.items():
            times[name].append(timed(fn))
    ratio = {f"{a}/{b}": statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
             for a, b in (("fp32", "int8"), ("paper", "int8"), ("paper", "fp32"))}
    fidelity = psnr(translate(generator, image, precision="fp32"), translate(generator, image, precision="int8"))
    return {"size": size, "first_s": first, "median_s": {k: statistics.median(v) for k, v in times.items()},
            "speedup": ratio, "psnr_int8_vs_fp32": fidelity}


def shipped_fidelity() -> dict[str, float]:
    """PSNR of the shipped model's int8 outputs (calibrated on its examples) against its fp32 outputs."""
    generator = load_generator(SHIPPED)
    examples = sorted(str(p) for p in (SHIPPED / "examples").glob("*.png"))
    images: dict[str, Any] = {Path(p).name: p for p in examples}
    images.update({f"{name} 256 px": photo(name, 256) for name in ("astronaut", "coffee", "chelsea")})
    return {name: psnr(translate(generator, img), translate(generator, img, precision="int8", calibration=examples))
            for name, img in images.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: perf.set_threads)")
    p.add_argument("--no-shipped", action="store_true", help="skip the shipped model's fidelity")
    args = p.parse_args(argv)
    threads = perf.set_threads(args.threads)
    m = perf.machine_description()
    print(f"CPU: {m['cpu']} | {m['usable_cores']} usable cores, {threads} threads | ISA {' '.join(m['isa'])} | "
          f"torch {m['torch']} | load {os.getloadavg()[0]:.2f}", flush=True)
    for size in args.sizes:
        r = speed(size, args.rounds)
        med, first = r["median_s"], r["first_s"]
        print(f"{size} px: median s paper {med['paper']:.3f}, fp32 {med['fp32']:.3f}, int8 {med['int8']:.3f} | "
              f"int8 speed-up over fp32 {r['speedup']['fp32/int8']:.2f}x, over the paper path "
              f"{r['speedup']['paper/int8']:.2f}x (fp32 over paper {r['speedup']['paper/fp32']:.2f}x) | "
              f"first int8 call {first['int8']:.1f} s | PSNR int8 vs fp32 {r['psnr_int8_vs_fp32']:.1f} dB | "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    if not args.no_shipped:
        scores = shipped_fidelity()
        print("shipped model, PSNR int8 vs fp32 (dB): " + ", ".join(f"{k} {v:.1f}" for k, v in scores.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

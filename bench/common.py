"""The run's configuration and what every section measures with: timing, memory, FLOPs, load."""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Config:
    """Sizes and repetitions of one benchmark run."""

    size: int = 256  # training image side
    steps: int = 3  # timed training steps per case (median reported)
    warmup: int = 1  # untimed steps first (compilation, allocator, oneDNN primitive caches)
    model_flags: tuple[str, ...] = ()  # extra train.py flags (the quick run shrinks the model)
    translate_sizes: tuple[int, ...] = (256, 1024)
    translate_reps: int = 3
    roofline_seconds: float = 3.0  # time spent per roofline measurement (at least 3 calls)
    roofline_max_call: float = 600.0  # skip a roofline layout whose single call would take longer
    budget: float = 1200.0  # seconds a case may take before it is shrunk or skipped
    isolate: bool = True  # one subprocess per case (honest peak memory per case)
    pair_rounds: int = 4  # interleaved plain/defaults step pairs in the paired comparison

    @classmethod
    def full(cls) -> Config:
        return cls()

    @classmethod
    def quick_cuda(cls) -> Config:
        """The GPU check: the paper's size and model (256 px, batch 1), few steps, one process."""
        return cls(steps=5, warmup=2, translate_sizes=(256, 1024), translate_reps=3, roofline_seconds=0.5,
                   budget=270.0, isolate=False, pair_rounds=2)

    @classmethod
    def quick(cls) -> Config:
        return cls(size=32, steps=2, warmup=1, model_flags=("--ngf", "8", "--ndf", "8", "--n-blocks", "2",
                                                            "--num-patches", "64", "--netf-nc", "32"),
                   translate_sizes=(32, 64), translate_reps=2, roofline_seconds=0.2, roofline_max_call=0.5, budget=6.0,
                   isolate=False, pair_rounds=2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summary(times: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(times), "min": min(times), "all": [round(t, 4) for t in times]}


def maxrss_mib() -> float:
    """Peak resident set of this process so far (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (matmuls and convolutions, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def memory_begin(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return maxrss_mib()


def memory_end(device: torch.device, base: float) -> dict[str, Any]:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return {"peak_mib": round(peak, 1), "step_mib": round(peak - base, 1), "kind": "cuda max_memory_allocated"}
    peak = maxrss_mib()
    return {"peak_mib": round(peak, 1), "step_mib": round(peak - base, 1), "kind": "ru_maxrss"}


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``fn``, the device's queue drained."""
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def time_calls(fn: Callable[[], Any], device: torch.device, seconds: float, max_calls: int = 50) -> list[float]:
    """Seconds of calls of ``fn`` after one warm-up call: at least 3 within ``seconds``, at least 1."""
    fn()  # warm-up: oneDNN builds its primitive on the first call
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while not times or (time.perf_counter() - start < seconds and len(times) < max_calls):
        times.append(timed(fn, device))
    return times


def alternate(a: Callable[[], Any], b: Callable[[], Any], device: torch.device, warmup: int,
              rounds: int) -> dict[str, Any]:
    """Time ``a`` and ``b`` in turn (a, b, a, b, ...) after ``warmup`` untimed calls of each; the
    speed-up of b over a is the median of the per-round ratios a/b.

    On a shared machine the load drifts over the minutes between two separately timed cases;
    calls made back to back see nearly the same load, so the per-round ratio is a steadier figure
    of the speed-up than the ratio of two medians.
    """
    for _ in range(warmup):
        timed(a, device)
        timed(b, device)
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(timed(a, device))
        tb.append(timed(b, device))
    ratios = [x / y for x, y in zip(ta, tb, strict=True)]
    return {"a": summary(ta), "b": summary(tb), "ratios": [round(r, 4) for r in ratios],
            "speedup": statistics.median(ratios)}

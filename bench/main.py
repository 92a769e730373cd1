"""Benchmark CUT training and inference against what this machine's own convolutions reach.

    python bench/bench.py                       # the full run (256x256; minutes to an hour on a CPU)
    python bench/bench.py --quick               # a tiny config, under a minute: a smoke check
    python bench/bench.py --json out.json       # also write every figure as JSON
    python bench/bench.py --variants grid       # every combination instead of one switch at a time
    python bench/bench.py --sections roofline,paper   # only the ratios to the paper path (p)
    python bench/bench.py --device cuda --quick # the GPU check (g): 256 px, under 5 minutes on one GPU

What it measures, in one run, on the current device:

(a) **roofline**: GFLOP/s of one plain 3x3 convolution, 256 -> 256 channels at 64x64, batch 1, in
    fp32 and bf16, in the contiguous (NCHW) and channels-last layouts; the best layout of each
    precision is the roofline. FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``.
(b) **training step**: ``CUTObjective.training_step`` exactly as ``train.py`` runs it (generator forward,
    D step, G+F step with their optimisers), each case a set of ``train.py`` flags that train's own
    parser and ``setup_training`` turn into models, fast paths, optimisers and objective (its defaults,
    never a copy of them), for CUT and FastCUT at 256x256, batch 1, default model. Seconds per
    step (median of several, warm-up excluded), FLOPs per step (counted by ``FlopCounterMode``),
    achieved GFLOP/s and its fraction of the roofline of the same precision.
(b') **paired**: the plain path and the fp32 defaults (CUT, FastCUT) step by step in turn in one
    process; the median of the per-round time ratios is the speed-up, steadier than a ratio of
    two cases timed minutes apart under a drifting load.
(c) **translate**: ``cut_hf.translate`` images/s for one 256x256 and one 1024x1024 RGB image.
(d) **peak memory**: every case runs in its own subprocess and reports its peak resident set
    (``ru_maxrss``) and the growth over the set after building the models (the step's working
    memory); on CUDA, ``torch.cuda.max_memory_allocated``.
(p) **paper path**: the baseline that stands for the paper's code, built from the independent
    re-implementation of the official networks and training step in ``tests/reference/official.py``
    (``OfficialCUTModel.optimize_parameters``: keys from a second encoder pass, official ops, NCHW,
    fp32; its test path: ToTensor + Normalize, G under ``no_grad``, ``tensor2im``). Each case (the CUT
    and FastCUT training step with train.py's defaults in fp32 and bf16; ``translate()`` at each
    translate size in fp32 and bf16) alternates with the paper path in one process; the speed-up
    is the median of the per-round ratios paper/ours. The machine line names the CPU flags.
(g) **GPU** (CUDA only): s/iter of CUT and FastCUT at 256 px, batch 1, fp32 and bf16, channels-last,
    eager, compiled, and compiled with CUDA graphs (``mode="reduce-overhead"``), against the paper's
    published 0.24 s/iter (CUT) and 0.15 (FastCUT); ``--quick`` keeps it under ``Config.quick_cuda``'s
    budget (cases past it are reported as skipped).
(e) **ops**: the single operations behind the fast-path defaults, each way: the official
    transposed-blur ``Upsample`` against bilinear interpolation, ``InstanceNorm2d`` + in-place ReLU
    through a view or not, and a 3x3 convolution's forward, input-gradient and weight-gradient
    passes in the contiguous and channels-last layouts.

FLOPs are counted after the timed steps, outside the memory window (under ``FlopCounterMode`` some
ops run decomposed and allocate more): on one more step, or on a replay of the timed steps from the
same RNG state where FastCUT's random flips change the work (a flipped step recomputes the PatchNCE keys).

Variants: precision fp32 | bf16 (autocast), channels-last on | off, ``torch.compile`` on | off,
PatchNCE key-feature reuse on | off, fast ops (``CUTGenerator(fast_ops=...)``) on | off. By default
each switch is measured on its own against the *plain* path (fp32, NCHW, eager, keys recomputed by
a second encoder pass, official ops, as the paper's code), then the *defaults* that ``train.py``
resolves on this machine, and compile on top of those; ``--variants grid`` runs all 32
combinations. A case whose predicted time exceeds ``--budget`` seconds (bf16 on a CPU without
native bf16 runs far slower than fp32; RESULTS.md has the figures) is measured at a smaller image size and
marked so, or skipped with its predicted time.

Timings on a shared machine are noisy: the load average is recorded before and after each case,
and min as well as median are kept. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import Config, load_average
from bench.ops import run_ops
from bench.report import fmt, print_report
from bench.roofline import roofline
from bench.runner import child_main
from bench.sections import (
    run_gpu_section,
    run_pairs_section,
    run_paper_section,
    run_train_section,
    run_translate_section,
)
from bench.train_step import resolved_defaults
from cut_hf import perf


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model and images, in-process: under a minute")
    p.add_argument("--json", dest="json_path", help="write the full report here")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--sections", default=None, help="comma-separated subset to run (roofline always runs: the "
                   "other sections' fractions need it; default on a CPU roofline,paper,train,pairs,translate,ops; on "
                   "CUDA roofline,gpu,paper,train,pairs,translate, with --quick roofline,gpu,translate)")
    p.add_argument("--variants", default="one-at-a-time", choices=["one-at-a-time", "grid"])
    p.add_argument("--only", default=None, help="comma-separated case names to run (as the table prints them)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile cases (each compiles "
                   "for minutes on a CPU)")
    p.add_argument("--size", type=int, help="training image size (default 256; quick 32)")
    p.add_argument("--steps", type=int, help="timed steps per training case (default 3)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 1)")
    p.add_argument("--translate-sizes", help="comma-separated image sides (default 256,1024)")
    p.add_argument("--budget", type=float, help="seconds a case may take before it is shrunk or skipped (default 1200)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: the usable cores)")
    p.add_argument("--in-process", action="store_true", help="no subprocess per case (memory figures then "
                   "are high-water marks of the whole run)")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_config(args: argparse.Namespace, device: torch.device, threads: int) -> Config:
    """The run's sizes and repetitions: the full or quick preset, then the flags that override it."""
    cfg = (Config.quick_cuda() if device.type == "cuda" else Config.quick()) if args.quick else Config.full()
    for name in ("size", "steps", "warmup", "budget"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.translate_sizes:
        cfg.translate_sizes = tuple(int(s) for s in args.translate_sizes.split(","))
    if args.in_process:
        cfg.isolate = False
    if args.threads and cfg.isolate:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # children set it from --threads too
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = perf.set_threads(args.threads)
    if args._child:
        return child_main(args._child)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = run_config(args, device, threads)
    default_sections = ("roofline,gpu,translate" if args.quick else "roofline,gpu,paper,train,pairs,translate") \
        if device.type == "cuda" else "roofline,paper,train,pairs,translate,ops"
    sections = set((args.sections or default_sections).split(","))
    report: dict[str, Any] = {
        "command": " ".join(["python bench/bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": perf.machine_description(), "device": str(device), "config": dataclasses.asdict(cfg),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(f"machine: {json.dumps(report['machine'])}", flush=True)

    def save() -> None:
        if args.json_path:
            Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json_path).write_text(json.dumps(report, indent=1))

    report["roofline"] = roof = roofline(device, cfg.roofline_seconds, cfg.roofline_max_call)
    save()
    print(f"roofline: fp32 {fmt(roof['fp32'], '.1f')} GFLOP/s, bf16 {fmt(roof['bf16'], '.1f')} GFLOP/s", flush=True)
    report["defaults"] = resolved_defaults(device) if sections & {"train", "pairs", "translate", "paper"} else {}
    # in the order of the original run: each section's figures are in the JSON as soon as it ends
    for name, run in (("train", run_train_section), ("gpu", run_gpu_section), ("paper", run_paper_section),
                      ("pairs", run_pairs_section)):
        if name in sections:
            run(report, cfg, device, args, save)
    if "ops" in sections:
        report["ops"] = run_ops(cfg, args.quick)
        save()
    if "translate" in sections:
        run_translate_section(report, cfg, device, args, save)

    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report["load_average_end"] = load_average()
    save()
    print_report(report)
    failed = [c["name"] for sec in ("train", "pairs", "translate") for c in report.get(sec, [])
              if "error" in c["result"]]
    if failed:
        print(f"failed cases: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0

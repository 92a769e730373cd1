#!/usr/bin/env python
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
    D step, G+F step with their optimisers), models and objective built as ``train.py`` builds them from
    its defaults, for CUT and FastCUT at 256x256, batch 1, default model. Seconds per
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
import resource
import inspect
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from cut_hf import perf  # noqa: E402

RESULT_TAG = "BENCH_RESULT "


# ------------------------------------------------------------------------------------- config
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

    def generator_kwargs(self) -> dict[str, Any]:
        """The CUTGenerator arguments that ``model_flags`` give (translate builds the generator itself)."""
        flags = dict(zip(self.model_flags[::2], self.model_flags[1::2]))
        kwargs: dict[str, Any] = {}
        if "--ngf" in flags:
            kwargs["ngf"] = int(flags["--ngf"])
        if "--n-blocks" in flags:
            kwargs["n_blocks"] = int(flags["--n-blocks"])
        return kwargs


# ------------------------------------------------------------------------------------ helpers
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


def memory_end(device: torch.device, base: float) -> dict[str, float]:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return {"peak_mib": round(peak, 1), "step_mib": round(peak - base, 1), "kind": "cuda max_memory_allocated"}
    peak = maxrss_mib()
    return {"peak_mib": round(peak, 1), "step_mib": round(peak - base, 1), "kind": "ru_maxrss"}


# ------------------------------------------------------------------------------------ roofline
ROOF_FLOPS = 2 * 256 * 256 * 9 * 64 * 64  # the roofline conv's multiply-adds x 2 (FlopCounterMode agrees)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def roofline_conv(device: torch.device, precision: str, layout: str, side: int = 64) -> Callable[[], torch.Tensor]:
    """One call of the roofline convolution: 3x3, 256 -> 256 channels, (1, 256, side, side), padding 1."""
    gen = torch.Generator().manual_seed(0)
    dtype, fmt = DTYPES[precision], LAYOUTS[layout]
    w = (torch.randn(256, 256, 3, 3, generator=gen) * 0.02).to(device, dtype).contiguous(memory_format=fmt)
    b = torch.zeros(256, device=device, dtype=dtype)
    x = torch.randn(1, 256, side, side, generator=gen).to(device, dtype).contiguous(memory_format=fmt)
    return lambda: torch.nn.functional.conv2d(x, w, b, padding=1)


def time_calls(fn: Callable[[], Any], device: torch.device, seconds: float, max_calls: int = 50) -> list[float]:
    """Seconds of calls of ``fn`` after one warm-up call: at least 3 within ``seconds``, at least 1."""
    fn()  # warm-up: oneDNN builds its primitive on the first call
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while not times or (time.perf_counter() - start < seconds and len(times) < max_calls):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def roofline(device: torch.device, seconds: float, max_call: float) -> dict[str, Any]:
    """GFLOP/s of the roofline conv per precision and layout; the best layout is the roofline.

    A probe on a 16x16 map predicts the cost first: layouts whose 64x64 call would take longer
    than ``max_call`` seconds (emulated bf16) are skipped and reported with the prediction.
    """
    out: dict[str, Any] = {"shape": "conv3x3 256->256, 1x256x64x64, padding 1", "cases": []}
    for precision in DTYPES:
        best, best_layout = 0.0, None
        for layout in LAYOUTS:
            probe = roofline_conv(device, precision, layout, side=16)
            predicted = statistics.median(time_calls(probe, device, 0.0, max_calls=1)) * 16  # 16x the pixels
            case: dict[str, Any] = {"precision": precision, "layout": layout, "load_before": load_average()}
            if predicted > max_call:
                case.update(skipped=f"predicted {predicted:.0f} s per call", predicted_s=round(predicted, 1))
                out["cases"].append(case)
                continue
            fn = roofline_conv(device, precision, layout)
            xm = torch.empty(1, 256, 64, 64, dtype=DTYPES[precision], device="meta")  # counted, not computed
            wm = torch.empty(256, 256, 3, 3, dtype=DTYPES[precision], device="meta")
            flops = count_flops(lambda: torch.nn.functional.conv2d(xm, wm, padding=1))
            s = summary(time_calls(fn, device, seconds))
            case.update(flops=flops, seconds=s, gflops=flops / s["median"] / 1e9, gflops_best=flops / s["min"] / 1e9,
                        load_after=load_average())
            if case["gflops"] > best:
                best, best_layout = case["gflops"], layout
            out["cases"].append(case)
        out[precision] = best or None  # GFLOP/s of the best layout (median time)
        out[f"{precision}_layout"] = best_layout
        out[f"{precision}_call_s"] = ROOF_FLOPS / best / 1e9 if best else None
    return out


def adjacent_roofline(case: dict[str, Any], device: torch.device, seconds: float) -> float | None:
    """The roofline conv's GFLOP/s measured now, in this process, with its threads (``case["roof_layout"]``).

    Each case measures it just before and after its own timing, so that its fraction of the
    roofline compares two figures taken under the same machine load (on a shared machine the
    load changes between the global roofline and a case minutes later).
    """
    layout = case.get("roof_layout")
    if not layout:
        return None
    times = time_calls(roofline_conv(device, case["precision"], layout), device, seconds, max_calls=10)
    return ROOF_FLOPS / statistics.median(times) / 1e9


# ---------------------------------------------------------------------------- training cases
def train_argv(case: dict[str, Any], cfg: Config, size: int) -> list[str]:
    """train.py flags of one case."""
    argv = ["--data-dir", "unused", "--mode", case["mode"], "--crop-size", str(size), "--load-size", str(size),
            "--mixed-precision", "no" if case["precision"] == "fp32" else case["precision"], "--report-to", "none",
            "--num-workers", "0", *cfg.model_flags]
    if not case["reuse"]:
        argv.append("--no-reuse-features")
    argv.append("--channels-last" if case["channels_last"] else "--no-channels-last")
    if case["compile"]:
        argv.append("--compile")
    if not case["fast_ops"]:
        argv.append("--no-fast-ops")
    return argv


def train_settings(case: dict[str, Any], cfg: Config, size: int) -> argparse.Namespace:
    """The model sizes and precision of one case: train.py's defaults, shrunk by ``cfg.model_flags``."""
    flags = dict(zip(cfg.model_flags[::2], cfg.model_flags[1::2]))
    sizes = {k: int(flags.get(f"--{k.replace('_', '-')}", d))
             for k, d in (("ngf", 64), ("ndf", 64), ("n_blocks", 9), ("num_patches", 256), ("netf_nc", 256))}
    return argparse.Namespace(**sizes, batch_size=1, crop_size=size, flip_equivariance=case["mode"] == "fastcut",
                              reuse_features=case["reuse"],
                              mixed_precision="no" if case["precision"] == "fp32" else case["precision"])


def run_train_case(case: dict[str, Any], cfg: Config, device: torch.device, size: int) -> dict[str, Any]:
    """Time ``CUTObjective.training_step`` for one variant; FLOPs by replaying the timed steps."""
    args, step = build_train_case(case, cfg, device, size)

    # FLOPs are counted after the timed steps and outside the memory window: under FlopCounterMode
    # some ops run decomposed and allocate more, which would set the peak. The count is constant per
    # step unless FastCUT's random flip decides whether the PatchNCE keys are recomputed (reuse on);
    # then the timed steps are replayed from their RNG state and each is counted.
    # Compiled graphs and FlopCounterMode do not mix: compiled cases take their eager twin's count.
    count = not case["compile"]
    replay = count and bool(args.flip_equivariance) and bool(args.reuse_features)
    roof_before = adjacent_roofline(case, device, cfg.roofline_seconds)
    base = memory_begin(device)
    warm = []
    for _ in range(cfg.warmup):
        t0 = time.perf_counter()
        step()
        sync(device)
        warm.append(time.perf_counter() - t0)
    rng = torch.get_rng_state()  # the timed steps' flips and patch draws
    times = []
    for _ in range(cfg.steps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    mem = memory_end(device, base)
    roof_after = adjacent_roofline(case, device, cfg.roofline_seconds)
    flops = []
    if replay:
        torch.set_rng_state(rng)
        flops = [count_flops(step) for _ in range(cfg.steps)]
    elif count:
        flops = [count_flops(step)]
    result: dict[str, Any] = {"seconds": summary(times), "warmup_s": [round(t, 3) for t in warm], "memory": mem,
                              "roofline_adjacent": [roof_before, roof_after]}
    if flops:
        result["flops"] = statistics.mean(flops)
        result["flops_per_step"] = flops
    return result


def build_train_case(case: dict[str, Any], cfg: Config, device: torch.device, size: int,
                     reset_state: bool | None = None) -> tuple[argparse.Namespace, Callable[[], None]]:
    """The objective of one case (as train.py builds it) and a fixed random batch: (settings, one step).

    ``reset_state`` (default: for in-process runs) drops Accelerate's process-wide state first, so
    that a case brings its own mixed precision; a paired run builds its second side without it.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from cut_hf import CUTGenerator, PatchDiscriminator, PatchSampler
    from cut_hf.objectives.cut import CUTObjective, CUTObjectiveConfig, build_optimizers

    args = train_settings(case, cfg, size)
    if not cfg.isolate if reset_state is None else reset_state:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=device.type == "cpu")
    if device.type == "cpu":  # as train.py's setup; process-wide, so a paper path in this process gets it too
        perf.keep_freed_memory()
    set_seed(0)
    # What train.py builds for these settings (its build_models and setup_training).
    generator = CUTGenerator(ngf=args.ngf, n_blocks=args.n_blocks, fast_ops=case["fast_ops"])
    discriminator = PatchDiscriminator(ndf=args.ndf)
    sampler = PatchSampler(generator.feature_channels(), num_patches=args.num_patches, nc=args.netf_nc)
    mode = case.get("compile_mode")  # e.g. "reduce-overhead": CUDA graphs on a GPU
    perf.training_fast_paths_(generator, discriminator, accelerator.device, case["channels_last"],
                              case["compile"] and not mode, args.mixed_precision)
    if case["compile"] and mode:
        perf.compile_generator(generator, mode=mode)
        discriminator.compile(mode=mode)
    fastcut = case["mode"] == "fastcut"
    config = CUTObjectiveConfig(lambda_nce=10.0 if fastcut else 1.0, nce_idt=not fastcut, flip_equivariance=fastcut,
                                num_patches=args.num_patches, reuse_features=case["reuse"])
    optimizers = build_optimizers(generator, discriminator, sampler, 2e-4, (0.5, 0.999))  # train.py's defaults
    objective, optimizers = CUTObjective.prepared(accelerator, generator, discriminator, sampler, config, *optimizers)
    gen = torch.Generator().manual_seed(1)
    batch = {k: (torch.rand(args.batch_size, 3, size, size, generator=gen) * 2 - 1) for k in ("A", "B")}

    def step() -> None:
        losses = objective.training_step(batch, optimizers, accelerator)
        float(losses["NCE"])  # wait for the device and keep the work from being optimised away

    return args, step


def run_pair_case(case: dict[str, Any], cfg: Config, device: torch.device, size: int) -> dict[str, Any]:
    """Alternate steps of two training variants in one process: A, B, A, B, ...

    On a shared machine the load drifts over the minutes between two separately timed cases;
    steps taken back to back see nearly the same load, so the per-round ratio A/B is a steadier
    figure of the speed-up than the ratio of two medians. Both variants must share a precision
    (one ``Accelerator`` per process); ``fast_ops``, a process-wide switch, is set before each step.
    """
    a, b = case["a"], case["b"]
    if a["precision"] != b["precision"]:
        raise ValueError("a paired comparison needs one precision for both variants")
    sides = [(a, build_train_case(a, cfg, device, size)[1]),
             (b, build_train_case(b, cfg, device, size, reset_state=False)[1])]  # B shares A's Accelerator state

    def step(side: tuple[dict[str, Any], Callable[[], None]]) -> float:
        variant, run_step = side  # each side built its generator with its own fast_ops
        t0 = time.perf_counter()
        run_step()
        sync(device)
        return time.perf_counter() - t0

    for _ in range(cfg.warmup):
        for side in sides:
            step(side)
    ta, tb = [], []
    for _ in range(cfg.pair_rounds):
        ta.append(step(sides[0]))
        tb.append(step(sides[1]))
    ratios = [x / y for x, y in zip(ta, tb)]
    return {"a": summary(ta), "b": summary(tb), "ratios": [round(r, 4) for r in ratios],
            "speedup": statistics.median(ratios)}


# ------------------------------------------------------------------ the paper path (baseline)
def official_reference() -> Any:
    """``tests/reference/official.py`` (an independent re-implementation of the official networks and
    training step), loaded from its path: bench/ is a folder of scripts and imports no test package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("official_reference", REPO / "tests" / "reference" / "official.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_paper_step(mode: str, cfg: Config, device: torch.device, size: int) -> Callable[[], None]:
    """One training step of the paper's code on a fixed random batch: the official networks, the
    official ``optimize_parameters`` order (keys from a second encoder pass), official ops, NCHW, fp32."""
    ref = official_reference()
    args = train_settings({"mode": mode, "reuse": False, "precision": "fp32"}, cfg, size)
    opt = ref.cut_options(mode, num_patches=args.num_patches)
    net_g = ref.official_generator(ngf=args.ngf, n_blocks=args.n_blocks).to(device)
    net_d = ref.official_discriminator(ndf=args.ndf).to(device)
    net_f = ref.PatchSampleF(use_mlp=True, nc=args.netf_nc).to(device)
    model = ref.OfficialCUTModel(net_g, net_d, net_f, opt)
    gen = torch.Generator().manual_seed(1)  # the batch build_train_case makes
    batch = {k: (torch.rand(1, 3, size, size, generator=gen) * 2 - 1).to(device) for k in ("A", "B")}
    model.data_dependent_initialize(batch)

    def step() -> None:
        model.optimize_parameters()
        float(torch.as_tensor(model.loss_NCE).detach())  # wait for the device
    return step


def paper_translate(net_g: torch.nn.Module, image: Any, device: torch.device) -> Any:
    """The paper code's test path for one PIL image: ToTensor + Normalize(0.5, 0.5), G under
    ``no_grad`` in fp32 NCHW, then ``tensor2im`` ((y + 1) / 2 * 255 as uint8)."""
    import numpy as np
    from PIL import Image

    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)[None].to(device)
    with torch.no_grad():
        y = net_g(x)
    arr = ((y[0].float().cpu().permute(1, 2, 0).numpy() + 1) / 2.0 * 255.0).astype(np.uint8)
    return Image.fromarray(arr)


def alternate(a: Callable[[], Any], b: Callable[[], Any], device: torch.device, warmup: int,
              rounds: int) -> dict[str, Any]:
    """Time ``a`` and ``b`` in turn (a, b, a, b, ...) after ``warmup`` untimed calls of each; the
    speed-up of b over a is the median of the per-round ratios a/b (steady under a drifting load)."""
    def timed(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    for _ in range(warmup):
        timed(a)
        timed(b)
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(timed(a))
        tb.append(timed(b))
    ratios = [x / y for x, y in zip(ta, tb)]
    return {"a": summary(ta), "b": summary(tb), "ratios": [round(r, 4) for r in ratios],
            "speedup": statistics.median(ratios)}


def run_paper_case(case: dict[str, Any], cfg: Config, device: torch.device, size: int) -> dict[str, Any]:
    """One case against the paper path, alternating in this process: a training step (``case["kind"]``
    ``train``, the case built as train.py builds it) or a ``translate()`` call of one RGB image."""
    if case["kind"] == "train":
        paper = build_paper_step(case["mode"], cfg, device, size)
        _, ours = build_train_case(case, cfg, device, size, reset_state=not cfg.isolate)
        return alternate(paper, ours, device, cfg.warmup, cfg.pair_rounds)
    import numpy as np
    from PIL import Image

    from cut_hf import CUTGenerator, translate

    kwargs = cfg.generator_kwargs()
    net_g = official_reference().official_generator(**kwargs).to(device).eval()
    generator = CUTGenerator(**kwargs).eval()  # the defaults: fast ops
    generator.load_state_dict(net_g.state_dict())  # same weights, same outputs within tolerance
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
    result = alternate(lambda: paper_translate(net_g, image, device),
                       lambda: translate(generator, image, precision=case["precision"], device=device),
                       device, cfg.warmup, cfg.translate_reps)
    diff = np.abs(np.asarray(paper_translate(net_g, image, device), dtype=int)
                  - np.asarray(translate(generator, image, precision=case["precision"], device=device), dtype=int))
    result["max_grey_level_difference"] = int(diff.max())
    return result


def paper_cases(cfg: Config, device: torch.device) -> list[dict[str, Any]]:
    """What is compared with the paper path: the training step of CUT and FastCUT with train.py's
    defaults in fp32 and bf16, and translate() at each translate size in fp32 and bf16."""
    cases: list[dict[str, Any]] = []
    for mode in ("cut", "fastcut"):
        for precision in ("fp32", "bf16"):
            cases.append({"name": f"{mode} train {precision}", "kind": "train", "mode": mode, "size": cfg.size,
                          **resolved_defaults(device, precision)})
    for size in cfg.translate_sizes:
        for precision in ("fp32", "bf16"):
            cases.append({"name": f"translate {precision}", "kind": "translate", "size": size,
                          "precision": precision})
    return cases


# --------------------------------------------------------------------------- translate cases
def run_translate_case(case: dict[str, Any], cfg: Config, device: torch.device, size: int) -> dict[str, Any]:
    """Images/s of ``cut_hf.translate`` on one RGB image of ``size`` x ``size``."""
    import numpy as np
    from PIL import Image

    from cut_hf import CUTGenerator, translate

    torch.manual_seed(0)
    generator = CUTGenerator(**cfg.generator_kwargs(), fast_ops=case["fast_ops"]).eval()
    if case["compile"]:
        perf.compile_generator(generator)
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)

    def call() -> None:
        translate(generator, image, precision=case["precision"], channels_last=case["channels_last"],
                  device=device)

    roof_before = adjacent_roofline(case, device, cfg.roofline_seconds)
    base = memory_begin(device)
    warm = []
    for _ in range(cfg.warmup):
        t0 = time.perf_counter()
        call()
        warm.append(time.perf_counter() - t0)
    times = []
    for _ in range(cfg.translate_reps):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    mem = memory_end(device, base)
    # counted after the timing: under FlopCounterMode some ops run decomposed and allocate more,
    # which would otherwise set the process's peak memory before translate ever ran
    # (a compiled generator is counted through an eager twin: the same FLOPs, and no recompilation)
    counted = CUTGenerator(**cfg.generator_kwargs()).eval() if case["compile"] else generator
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.inference_mode():
        flops = count_flops(lambda: counted(x))
    return {"seconds": summary(times), "warmup_s": [round(t, 3) for t in warm], "memory": mem,
            "flops": flops, "images_per_s": 1.0 / statistics.median(times),
            "roofline_adjacent": [roof_before, adjacent_roofline(case, device, cfg.roofline_seconds)]}


# ------------------------------------------------------------------------------- op cases
def op_cases(quick: bool) -> list[tuple[str, str, Callable[[], Callable[[], Any]]]]:
    """Micro-benchmarks behind the fast-path defaults: (name, variant, factory of one timed call).

    Each factory builds its tensors once; the call runs forward and backward (or one convolution
    pass) so that what the training step pays is compared, op by op.
    """
    from cut_hf.models.layers import InstanceNorm2d, Upsample

    side, ch = (16, 32) if quick else (64, 256)
    gen = torch.Generator().manual_seed(0)

    def upsample(fast: bool) -> Callable[[], Any]:
        up = Upsample(ch, fast=fast)
        x = torch.randn(1, ch, side, side, generator=gen, requires_grad=True)

        def call() -> None:
            up(x).sum().backward()
        return call

    def norm_relu(fast: bool) -> Callable[[], Any]:
        norm = InstanceNorm2d(ch, fast=fast)
        x = torch.randn(1, ch, 2 * side, 2 * side, generator=gen, requires_grad=True)

        def call() -> None:
            torch.relu_(norm(x * 1.0)).sum().backward()
        return call

    def conv_pass(layout: str, which: str) -> Callable[[], Any]:
        fmt = LAYOUTS[layout]
        x = torch.randn(1, ch, side, side, generator=gen).contiguous(memory_format=fmt)
        w = (torch.randn(ch, ch, 3, 3, generator=gen) * 0.02).contiguous(memory_format=fmt)
        gy = torch.randn(1, ch, side, side, generator=gen).contiguous(memory_format=fmt)
        mask = {"input grad": [True, False, False], "weight grad": [False, True, False]}.get(which)

        def call() -> Any:
            if mask is None:
                return torch.nn.functional.conv2d(x, w, padding=1)
            return torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                       mask)
        return call

    cases: list[tuple[str, str, Callable[[], Callable[[], Any]]]] = []
    for fast in (False, True):
        cases.append((f"Upsample x2 fwd+bwd {ch}ch {side}px", "bilinear" if fast else "official transposed blur",
                      lambda fast=fast: upsample(fast)))
    for fast in (False, True):
        cases.append((f"InstanceNorm+ReLU_ fwd+bwd {ch}ch {2 * side}px", "unsafe_view" if fast else "official view",
                      lambda fast=fast: norm_relu(fast)))
    for which in ("forward", "input grad", "weight grad"):
        for layout in LAYOUTS:
            cases.append((f"conv3x3 {which} {ch}ch {side}px fp32", layout,
                          lambda layout=layout, which=which: conv_pass(layout, which)))
    return cases


def run_ops(device: torch.device, cfg: Config, quick: bool) -> list[dict[str, Any]]:
    """Time every op case on the CPU, in this process (they are small and allocate little)."""
    out = []
    for name, variant, factory in op_cases(quick):
        s = summary(time_calls(factory(), torch.device("cpu"), cfg.roofline_seconds, max_calls=30))
        out.append({"name": name, "variant": variant, "seconds": s, "load": load_average()})
        print(f"op {name} [{variant}] {1e3 * s['median']:.2f} ms", flush=True)
    return out


# ---------------------------------------------------------------------------------- variants
def resolved_defaults(device: torch.device, precision: str | None = None) -> dict[str, Any]:
    """What ``train.py`` does when given no performance flags (but ``--mixed-precision``), on this device."""
    from cut_hf import CUTGenerator
    from cut_hf.objectives.cut import CUTObjectiveConfig

    precision = precision or "fp32"
    fast_ops = inspect.signature(CUTGenerator).parameters["fast_ops"].default
    return {"precision": precision, "channels_last": perf.channels_last_default(device, precision), "compile": False,
            "reuse": CUTObjectiveConfig().reuse_features, "fast_ops": bool(fast_ops)}


#: The paper code's path: fp32, NCHW, eager, PatchNCE keys from a second encoder pass, official ops.
PLAIN = {"precision": "fp32", "channels_last": False, "compile": False, "reuse": False, "fast_ops": False}


def train_cases(variants: str, defaults: dict[str, Any], defaults_bf16: dict[str, Any],
                quick: bool) -> list[dict[str, Any]]:
    """Training variants, each a dict with a ``name``; duplicates are merged (names joined)."""
    cases: list[dict[str, Any]] = []
    if variants == "grid":
        for precision in ("fp32", "bf16"):
            for cl in (False, True):
                for comp in (False, True):
                    for reuse in (False, True):
                        for fast in (False, True):
                            cases.append({"mode": "cut", "precision": precision, "channels_last": cl,
                                          "compile": comp, "reuse": reuse, "fast_ops": fast})
    else:
        one_at_a_time = [("plain", {}), ("+fast_ops", {"fast_ops": True}), ("+reuse", {"reuse": True}),
                         ("+channels_last", {"channels_last": True}),
                         ("+bf16", {"precision": "bf16"}),
                         ("+bf16+channels_last", {"precision": "bf16", "channels_last": True})]
        if quick:  # the smoke check: each switch once; no compile (its compile time alone is a minute)
            one_at_a_time = [v for v in one_at_a_time if v[0] != "+bf16"]
        for name, change in one_at_a_time:
            cases.append({"name": name, "mode": "cut", **PLAIN, **change})
        cases.append({"name": "defaults", "mode": "cut", **defaults})
        if not quick:
            # compile on top of the defaults: on the plain path (official transposed-blur Upsample)
            # inductor fails in replication_pad2d_backward's meta kernel (torch 2.14, bench/RESULTS.md)
            cases.append({"name": "defaults+compile", "mode": "cut", **defaults, "compile": True})
        cases.append({"name": "defaults+bf16", "mode": "cut", **defaults_bf16})
        cases.append({"name": "fastcut plain", "mode": "fastcut", **PLAIN})
        cases.append({"name": "fastcut defaults", "mode": "fastcut", **defaults})
    return merge_duplicates(cases)


def translate_cases(sizes: tuple[int, ...], quick: bool) -> list[dict[str, Any]]:
    """translate() variants per size: official ops, then fast ops in each layout and precision."""
    cases = []
    for size in sizes:
        base = {"size": size, "precision": "fp32", "channels_last": False, "compile": False}
        cases.append({"name": "fp32 plain", **base, "fast_ops": False})
        for precision in ("fp32", "bf16"):
            for cl in (False, True):
                cases.append({"name": f"{precision} fast_ops{' channels_last' if cl else ''}", **base,
                              "precision": precision, "channels_last": cl, "fast_ops": True})
        if not quick and size == sizes[0]:
            # compile in the contiguous layout only: translate's channels-last path swaps the norms on a
            # structural copy, which would bypass the compiled graph
            cases.append({"name": "fp32 fast_ops compile", **base, "fast_ops": True, "compile": True})
    return cases


def pair_cases(defaults: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Paired comparisons (name, a, b): the plain path against the fp32 defaults, CUT and FastCUT."""
    fp32 = {**defaults, "precision": "fp32"}
    return [("plain -> defaults", {"mode": "cut", **PLAIN}, {"mode": "cut", **fp32}),
            ("fastcut plain -> defaults", {"mode": "fastcut", **PLAIN}, {"mode": "fastcut", **fp32})]


def merge_duplicates(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[tuple, dict[str, Any]] = {}
    for c in cases:
        key = tuple(sorted((k, v) for k, v in c.items() if k != "name"))
        if key in out:
            out[key]["name"] += f" = {c.get('name', '')}"
        else:
            out[key] = dict(c, name=c.get("name") or label(c))
    return list(out.values())


def label(case: dict[str, Any]) -> str:
    return " ".join([case["mode"], case["precision"], "CL" if case["channels_last"] else "NCHW",
                     "compile" if case["compile"] else "eager", "reuse" if case["reuse"] else "recompute",
                     "fast" if case["fast_ops"] else "official"])


# -------------------------------------------------------------------------- running a case
def run_case(kind: str, case: dict[str, Any], cfg: Config, device: torch.device, size: int) -> dict[str, Any]:
    """Run one case here or in a fresh subprocess; returns its result dict (or an ``error``)."""
    load_before = load_average()
    t0 = time.perf_counter()
    if cfg.isolate:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", json.dumps(
            {"kind": kind, "case": case, "cfg": dataclasses.asdict(cfg), "device": str(device), "size": size})]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            result = {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
        else:
            result = json.loads(lines[-1][len(RESULT_TAG):])
    else:
        try:
            result = CHILD_RUNNERS[kind](case, cfg, device, size)
        except Exception as e:  # a failed case is reported, the others still run
            result = {"error": f"{type(e).__name__}: {e}"}
    result.update(load_before=load_before, load_after=load_average(), wall_s=round(time.perf_counter() - t0, 1))
    return result


CHILD_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {"train": run_train_case, "pair": run_pair_case,
                                                          "translate": run_translate_case, "paper": run_paper_case}


def child_main(payload: str) -> int:
    spec = json.loads(payload)
    cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["cfg"].items()})
    result = CHILD_RUNNERS[spec["kind"]](spec["case"], cfg, torch.device(spec["device"]), spec["size"])
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------- the budget
STATIC_FLOPS = {"cut": 1.45e12, "fastcut": 0.72e12}  # per training step at 256x256 (refined once measured)


def planned_size(predicted_at: Callable[[int], float], size: int, budget: float, minimum: int = 32) -> int | None:
    """The largest of size, size/2, ... (>= minimum, multiples of 4) whose predicted time fits."""
    while size >= minimum:
        if predicted_at(size) <= budget:
            return size
        size = size // 2 // 4 * 4
    return None


def rate_for(roof: dict[str, Any], precision: str, channels_last: bool) -> float | None:
    """The roofline GFLOP/s of a precision in a layout (what an emulated bf16 case can hope for)."""
    layout = "channels_last" if channels_last else "contiguous"
    for c in roof["cases"]:
        if c["precision"] == precision and c["layout"] == layout:
            if "gflops" in c:
                return c["gflops"]
            if "predicted_s" in c:  # skipped: its predicted rate
                return 4.83e9 / c["predicted_s"] / 1e9
    return None


# ----------------------------------------------------------------------------------- report
def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}"


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"\nmachine: {m['cpu']} | {m['usable_cores']} usable cores | ISA {' '.join(m['isa']) or '-'} | "
          f"AVX-512 {'yes' if m['avx512'] else 'no'} | AMX {'yes' if m['amx'] else 'no'} | oneDNN bf16 "
          f"{'yes' if m['onednn_bf16'] else 'no (emulated)'} | torch {m['torch']} | {m['torch_threads']} threads"
          + (f" | {m['cuda_device']}" if m.get("cuda_device") else "") + f" | device {report['device']}")
    print(f"command: {report['command']}")
    roof = report["roofline"]
    print(f"\n(a) roofline: {roof['shape']}  (roof%: of this roofline; adj%: of the same conv timed in the "
          "case's own process just before and after it, under the same load)")
    print(f"  {'precision':9s} {'layout':14s} {'GFLOP/s':>9s} {'best':>9s} {'load':>5s}")
    for c in roof["cases"]:
        if "skipped" in c:
            print(f"  {c['precision']:9s} {c['layout']:14s} skipped: {c['skipped']}")
        else:
            print(f"  {c['precision']:9s} {c['layout']:14s} {c['gflops']:9.1f} {c['gflops_best']:9.1f} "
                  f"{fmt(c['load_before'], '.1f'):>5s}")
    print(f"  roofline: fp32 {fmt(roof['fp32'], '.1f')} GFLOP/s, bf16 {fmt(roof['bf16'], '.1f')} GFLOP/s")
    if report.get("train"):
        print(f"\n(b) training step (CUTObjective.training_step, batch 1; median of {report['config']['steps']} steps)")
        print(f"  {'case':32s} {'size':>4s} {'s/step':>8s} {'min':>8s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'roof%':>6s} "
              f"{'adj%':>5s} {'peakMiB':>8s} {'stepMiB':>8s} {'load':>5s}")
        for c in report["train"]:
            _print_row(c, c.get("gflops"))
    if report.get("gpu"):
        print_gpu(report)
    if report.get("paper"):
        print_paper(report)
    if report.get("pairs"):
        print(f"\n(b') paired: the two variants' steps alternate in one process ({report['config']['pair_rounds']} "
              "rounds after warm-up); speed-up = median of the per-round time ratios a/b")
        print(f"  {'pair':32s} {'size':>4s} {'a s/step':>9s} {'b s/step':>9s} {'speed-up':>9s}  ratios")
        for c in report["pairs"]:
            r = c["result"]
            if "error" in r:
                print(f"  {c['name']:32s} {c['size']:4d} {r['error']}")
                continue
            print(f"  {c['name']:32s} {c['size']:4d} {r['a']['median']:9.3f} {r['b']['median']:9.3f} "
                  f"{r['speedup']:9.2f}  {' '.join(f'{x:.2f}' for x in r['ratios'])}")
    if report.get("translate"):
        print("\n(c) translate (cut_hf.translate, one RGB image per call)")
        print(f"  {'case':32s} {'size':>4s} {'img/s':>8s} {'s/img':>8s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'roof%':>6s} "
              f"{'adj%':>5s} {'peakMiB':>8s} {'stepMiB':>8s} {'load':>5s}")
        for c in report["translate"]:
            _print_row(c, c.get("gflops"), images=True)
    if report.get("ops"):
        print("\n(e) ops behind the defaults (CPU, fp32; forward+backward unless named; median ms)")
        for c in report["ops"]:
            print(f"  {c['name']:42s} {c['variant']:26s} {1e3 * c['seconds']['median']:9.2f}")
    print()


def _print_row(c: dict[str, Any], gflops: float | None, images: bool = False) -> None:
    r = c["result"]
    name = c["name"][:32]
    if "skipped" in r or "error" in r:
        print(f"  {name:32s} {'-':>4s} {r.get('skipped') or r.get('error')}")
        return
    s = r["seconds"]
    first = r["images_per_s"] if images else s["median"]
    second = s["median"] if images else s["min"]
    gfl = r.get("flops")
    print(f"  {name:32s} {c['size']:4d} {first:8.3f} {second:8.3f} {fmt(gfl / 1e9 if gfl else None, '.4g'):>7s} "
          f"{fmt(gflops, '.1f'):>8s} {pct(c.get('roofline_fraction')):>6s} {pct(c.get('roofline_fraction_adjacent')):>5s} "
          f"{r['memory']['peak_mib']:8.0f} {r['memory']['step_mib']:8.0f} {fmt(r.get('load_before'), '.1f'):>5s}")


def adjacent_layout(roof: dict[str, Any], precision: str, cfg: Config) -> str | None:
    """The roofline layout a case re-times next to itself, or None where one call is too slow for that."""
    call = roof.get(f"{precision}_call_s")
    return roof.get(f"{precision}_layout") if call and call <= cfg.roofline_seconds / 2 else None


def fractions(entry: dict[str, Any], gflops: float, roof: dict[str, Any]) -> None:
    """Achieved GFLOP/s as a fraction of the run's roofline and of the case's adjacent roofline."""
    entry["gflops"] = gflops
    roof_p = roof.get(entry["precision"])
    entry["roofline_fraction"] = gflops / roof_p if roof_p else None
    adjacent = [a for a in entry["result"].get("roofline_adjacent") or [] if a]
    entry["roofline_adjacent"] = statistics.mean(adjacent) if adjacent else None
    entry["roofline_fraction_adjacent"] = gflops / entry["roofline_adjacent"] if adjacent else None


def selected(name: str, only: str | None) -> bool:
    """Whether a case named ``name`` (merged names are joined by " = ") is among ``--only``."""
    return not only or bool(set(name.split(" = ")) & {n.strip() for n in only.split(",")})


#: The paper's published training speed (s/iter, 256 px, batch 1, on its GPU): CUT and FastCUT.
PAPER_S_PER_ITER = {"cut": 0.24, "fastcut": 0.15}


def gpu_cases() -> list[dict[str, Any]]:
    """The GPU check's training cases: CUT and FastCUT, fp32 and bf16, channels-last, eager, compiled,
    and compiled with CUDA graphs (``mode="reduce-overhead"``), most informative first."""
    cases = []
    for variant, comp, mode in (("eager", False, None), ("compiled", True, None),
                                ("compiled+cudagraphs", True, "reduce-overhead")):
        for precision in ("bf16", "fp32"):
            for cut_mode in ("cut", "fastcut"):
                cases.append({"name": f"{cut_mode} {precision} {variant}", "mode": cut_mode, "precision": precision,
                              "channels_last": True, "compile": comp, "compile_mode": mode, "reuse": True,
                              "fast_ops": True})
    return cases


def run_gpu_section(report: dict[str, Any], cfg: Config, device: torch.device, args: argparse.Namespace) -> None:
    """(g): s/iter of each :func:`gpu_cases` case at ``cfg.size`` against the paper's published figure;
    cases left when ``cfg.budget`` seconds have passed are reported as skipped (the check stays short)."""
    report["gpu"] = []
    start = time.perf_counter()
    for case in gpu_cases():
        if not selected(case["name"], args.only):
            continue
        entry = {**case, "size": cfg.size, "paper_s_per_iter": PAPER_S_PER_ITER[case["mode"]]}
        print(f"gpu {case['name']} ...", end=" ", flush=True)
        if time.perf_counter() - start > cfg.budget:
            entry["result"] = {"skipped": f"over the check's {cfg.budget:.0f} s budget"}
        else:
            entry["result"] = run_case("train", case, cfg, device, cfg.size)
        r = entry["result"]
        report["gpu"].append(entry)
        print(r.get("error") or r.get("skipped") or f"{r['seconds']['median']:.4f} s/iter", flush=True)


def print_gpu(report: dict[str, Any]) -> None:
    """The (g) table: s/iter against the paper's published s/iter (ratio > 1: faster than the paper)."""
    print(f"\n(g) GPU training step, {report['config']['size']} px, batch 1, channels-last (median of "
          f"{report['config']['steps']} steps after {report['config']['warmup']} warm-up / compile steps)")
    print(f"  {'case':32s} {'s/iter':>8s} {'paper':>6s} {'paper/ours':>10s} {'peakMiB':>8s}")

    def row(c: dict[str, Any], r: dict[str, Any]) -> str:
        s = r["seconds"]["median"]
        return (f"  {c['name']:32s} {s:8.4f} {c['paper_s_per_iter']:6.2f} {c['paper_s_per_iter'] / s:10.2f} "
                f"{r['memory']['peak_mib']:8.0f}")
    print_rows(report["gpu"], "seconds", row)


def print_rows(entries: list[dict[str, Any]], done_key: str, row: Callable[[dict[str, Any], dict[str, Any]], str]) -> None:
    """One line per entry: ``row(entry, result)`` where the result has ``done_key``, else its error or skip."""
    for c in entries:
        r = c["result"]
        print(row(c, r) if done_key in r else f"  {c['name']:24s} {r.get('error') or r.get('skipped')}")


def run_paper_section(report: dict[str, Any], cfg: Config, device: torch.device, args: argparse.Namespace) -> None:
    """(p): every case of :func:`paper_cases` alternating with the paper path, one process per case."""
    report["paper"] = []
    for case in paper_cases(cfg, device):
        if not selected(case["name"], args.only):
            continue
        entry = dict(case)
        print(f"paper {case['name']} {case['size']} ...", end=" ", flush=True)
        if perf.emulated_bf16(case["precision"], device) and not args.quick:
            entry["result"] = {"skipped": "emulated bf16 (no native bf16 on this CPU; bench/RESULTS.md)"}
        else:
            entry["result"] = run_case("paper", case, cfg, device, case["size"])
        r = entry["result"]
        report["paper"].append(entry)
        print(r.get("error") or r.get("skipped") or f"x{r['speedup']:.2f} (ratios {r['ratios']})", flush=True)
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(report, indent=1))


def print_paper(report: dict[str, Any]) -> None:
    """The (p) table: each case's time against the paper path's, alternating in one process."""
    print("\n(p) against the paper path (official networks and step order, official ops, NCHW, fp32, keys "
          "recomputed), alternating in one process; speed-up = median of the per-round ratios paper/ours")
    print(f"  {'case':24s} {'size':>4s} {'paper s':>8s} {'ours s':>8s} {'speed-up':>9s}  ratios")

    def row(c: dict[str, Any], r: dict[str, Any]) -> str:
        extra = f"  (max grey-level difference {r['max_grey_level_difference']})" if "max_grey_level_difference" in r else ""
        return (f"  {c['name']:24s} {c['size']:4d} {r['a']['median']:8.3f} {r['b']['median']:8.3f} "
                f"{r['speedup']:9.2f}  {' '.join(f'{x:.2f}' for x in r['ratios'])}{extra}")
    print_rows(report["paper"], "speedup", row)


# ------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = perf.set_threads(args.threads)
    if args._child:
        return child_main(args._child)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    cfg = (Config.quick_cuda() if cuda else Config.quick()) if args.quick else Config.full()
    for name in ("size", "steps", "warmup", "budget"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.translate_sizes:
        cfg.translate_sizes = tuple(int(s) for s in args.translate_sizes.split(","))
    if args.in_process:
        cfg.isolate = False
    if args.threads and cfg.isolate:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # children set it from --threads too
    default_sections = ("roofline,gpu,translate" if args.quick else "roofline,gpu,paper,train,pairs,translate") \
        if cuda else "roofline,paper,train,pairs,translate,ops"
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

    report["roofline"] = roofline(device, cfg.roofline_seconds, cfg.roofline_max_call)
    save()
    roof = report["roofline"]
    print(f"roofline: fp32 {fmt(roof['fp32'], '.1f')} GFLOP/s, bf16 {fmt(roof['bf16'], '.1f')} GFLOP/s", flush=True)
    defaults = resolved_defaults(device) if sections & {"train", "pairs", "translate", "paper"} else {}
    report["defaults"] = defaults

    if "train" in sections:
        report["train"] = []
        measured: dict[tuple[str, bool], tuple[int, float]] = {}  # (mode, reuse) -> (size, flops)
        report["defaults_bf16"] = resolved_defaults(device, "bf16")
        for case in train_cases(args.variants, defaults, report["defaults_bf16"], args.quick):
            if not selected(case["name"], args.only) or (args.no_compile and case["compile"]):
                continue
            rate = rate_for(roof, case["precision"], case["channels_last"]) or roof.get(case["precision"])
            width = cfg.generator_kwargs().get("ngf", 64) / 64  # FLOPs grow with the width squared
            size_ref, flops_ref = measured.get((case["mode"], case["reuse"]),
                                               (256, STATIC_FLOPS[case["mode"]] * width**2))
            n = cfg.steps + cfg.warmup

            def predicted(s: int) -> float:
                return n * flops_ref * (s / size_ref) ** 2 / (0.3 * rate * 1e9) if rate else 0.0

            size = planned_size(predicted, cfg.size, cfg.budget, minimum=min(32, cfg.size))
            case["roof_layout"] = adjacent_layout(roof, case["precision"], cfg)
            entry = {**case, "size": size}
            print(f"train {case['name']} ...", end=" ", flush=True)
            if size is None:
                entry["result"] = {"skipped": f"predicted {predicted(cfg.size):.0f} s at {cfg.size} px "
                                              f"(budget {cfg.budget:.0f} s)"}
            else:
                entry["result"] = run_case("train", case, cfg, device, size)
                if size != cfg.size:
                    entry["note"] = f"shrunk from {cfg.size} px to fit the {cfg.budget:.0f} s budget"
            r = entry["result"]
            if "flops" in r and not case["compile"]:
                measured.setdefault((case["mode"], case["reuse"]), (size, r["flops"]))
            report["train"].append(entry)
            print(r.get("error") or r.get("skipped") or f"{r['seconds']['median']:.3f} s/step", flush=True)
            save()
        for entry in report["train"]:  # compiled cases take the FLOPs of their eager twin
            r = entry["result"]
            if "seconds" not in r:
                continue
            if "flops" not in r:
                twin = [e["result"].get("flops") for e in report["train"] if "flops" in e["result"] and not e["compile"]
                        and all(e[k] == entry[k] for k in ("mode", "reuse", "fast_ops", "size"))]
                if twin:
                    r["flops"] = twin[0]
                    r["flops_from"] = "the eager case of the same mode, size, reuse and ops"
            if r.get("flops"):
                fractions(entry, r["flops"] / r["seconds"]["median"] / 1e9, roof)
        save()

    if "gpu" in sections:
        run_gpu_section(report, cfg, device, args)
        save()
    if "paper" in sections:
        run_paper_section(report, cfg, device, args)

    if "pairs" in sections:
        report["pairs"] = []
        sizes = {e["name"].split(" = ")[0]: e["size"] for e in report.get("train", [])}
        for name, a, b in pair_cases(defaults):
            if not selected(name, args.only):
                continue
            size = sizes.get("plain") or cfg.size  # where the plain step fitted the budget
            print(f"pair {name} ...", end=" ", flush=True)
            entry = {"name": name, "a": a, "b": b, "size": size,
                     "result": run_case("pair", {"a": a, "b": b}, cfg, device, size)}
            r = entry["result"]
            report["pairs"].append(entry)
            print(r.get("error") or f"x{r['speedup']:.2f} (ratios {r['ratios']})", flush=True)
            save()

    if "ops" in sections:
        report["ops"] = run_ops(device, cfg, args.quick)
        save()

    if "translate" in sections:
        report["translate"] = []
        for case in translate_cases(cfg.translate_sizes, args.quick):
            if not selected(case["name"], args.only) or (args.no_compile and case["compile"]):
                continue
            rate = rate_for(roof, case["precision"], case["channels_last"]) or roof.get(case["precision"])
            flops_est = 1.28e11 * (case["size"] / 256) ** 2 * (cfg.generator_kwargs().get("ngf", 64) / 64) ** 2

            def predicted_t(s: int) -> float:
                return (cfg.warmup + cfg.translate_reps) * flops_est * (s / case["size"]) ** 2 / (0.3 * rate * 1e9)

            case["roof_layout"] = adjacent_layout(roof, case["precision"], cfg)
            entry = dict(case)
            print(f"translate {case['size']} {case['name']} ...", end=" ", flush=True)
            if rate and predicted_t(case["size"]) > cfg.budget:
                entry["result"] = {"skipped": f"predicted {predicted_t(case['size']):.0f} s (budget {cfg.budget:.0f} s)"}
            else:
                entry["result"] = run_case("translate", case, cfg, device, case["size"])
            r = entry["result"]
            if "flops" in r:
                fractions(entry, r["flops"] * r["images_per_s"] / 1e9, roof)
            report["translate"].append(entry)
            print(r.get("error") or r.get("skipped") or f"{r['images_per_s']:.3f} images/s", flush=True)
            save()

    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report["load_average_end"] = load_average()
    save()
    print_report(report)
    failed = [c["name"] for sec in ("train", "pairs", "translate") for c in report.get(sec, []) if "error" in c["result"]]
    if failed:
        print(f"failed cases: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

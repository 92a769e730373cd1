"""(c) ``cut_hf.translate`` images/s on one RGB image, train.py's generator in each layout and precision."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from bench.common import Config, count_flops, memory_begin, memory_end, summary, timed
from bench.roofline import adjacent_roofline
from bench.train_step import model_config
from cut_hf import perf

#: FLOPs of one forward pass of train.py's generator on a 256x256 image (a planning estimate).
FORWARD_FLOPS_256 = 1.28e11


def run_translate_case(case: dict[str, Any], cfg: Config, device: torch.device, size: int) -> dict[str, Any]:
    """Images/s of ``cut_hf.translate`` on one RGB image of ``size`` x ``size``."""
    import numpy as np
    from PIL import Image

    from cut_hf import translate
    from cut_hf.cli.train import build_models

    torch.manual_seed(0)
    generator = build_models(model_config(cfg, fast_ops=case["fast_ops"]))[0].eval()
    if case["compile"]:
        perf.compile_generator(generator)
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)

    def call() -> None:
        translate(generator, image, precision=case["precision"], channels_last=case["channels_last"],
                  device=device)

    roof_before = adjacent_roofline(case, device, cfg.roofline_seconds)
    base = memory_begin(device)
    warm = [timed(call, device) for _ in range(cfg.warmup)]
    times = [timed(call, device) for _ in range(cfg.translate_reps)]
    mem = memory_end(device, base)
    # counted after the timing: under FlopCounterMode some ops run decomposed and allocate more,
    # which would otherwise set the process's peak memory before translate ever ran
    # (a compiled generator is counted through an eager twin: the same FLOPs, and no recompilation)
    counted = build_models(model_config(cfg))[0].eval() if case["compile"] else generator
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.inference_mode():
        flops = count_flops(lambda: counted(x))
    return {"seconds": summary(times), "warmup_s": [round(t, 3) for t in warm], "memory": mem,
            "flops": flops, "images_per_s": 1.0 / statistics.median(times),
            "roofline_adjacent": [roof_before, adjacent_roofline(case, device, cfg.roofline_seconds)]}


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

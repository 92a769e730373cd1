#!/usr/bin/env python
"""Where one CUT training step spends its time: ``torch.profiler`` over the training step as ``train.py`` builds it.

    python bench/profile_step.py                      # the defaults, 256x256, 2 profiled steps
    python bench/profile_step.py --plain --size 128   # the paper code's path
    python bench/profile_step.py --top 30 --trace step.json   # also a Chrome trace

The bench (``bench/bench.py``) says how fast a step is against the roofline convolution; this
says why: self CPU time per ATen op, its share of the step, the FLOPs the profiler attributes to
it and their rate, and the convolutions grouped by shape (the 3-channel 7x7 stem and head and
the discriminator's 4x4 stride-2 layers run far below the 256-channel 3x3 convolution the
roofline times). Numbers are for this machine; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

if __package__ in (None, ""):  # run as `python bench/<script>.py`, beside bench/_script.py
    import _script

    _script.load_package()

from bench.common import Config, time_calls
from bench.roofline import ROOF_FLOPS, roofline_conv
from bench.train_step import PLAIN, build_train_case, resolved_defaults
from cut_hf import perf

CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
            "aten::_slow_conv2d_backward", "aten::slow_conv_transpose2d", "aten::_nnpack_spatial_convolution",
            "aten::convolution_backward_overrideable")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--plain", action="store_true", help="the plain path (official ops, keys recomputed)")
    p.add_argument("--mode", default="cut", choices=["cut", "fastcut"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="the defaults' precision (not with --plain)")
    p.add_argument("--steps", type=int, default=2, help="profiled steps (after one warm-up step)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--top", type=int, default=20, help="ops listed")
    p.add_argument("--trace", help="also write a Chrome trace here")
    args = p.parse_args(argv)
    perf.set_threads(args.threads)
    device = torch.device("cpu")
    defaults = resolved_defaults(device, args.precision)
    case = dict(PLAIN if args.plain else defaults, mode=args.mode)
    _, step = build_train_case(case, Config.full(), device, args.size)

    step()  # warm-up: oneDNN primitive caches, allocator
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = (time.perf_counter() - t0) / args.steps
    if args.trace:
        prof.export_chrome_trace(args.trace)

    events = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in events)
    print(f"{case}\n{args.size}x{args.size}, {torch.get_num_threads()} threads: {wall:.2f} s/step wall under the "
          f"profiler ({total_self / 1e6 / args.steps:.2f} s of op self time recorded per step)\n")
    print(f"{'op':42s} {'self s/step':>11s} {'share':>6s}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"{e.key[:42]:42s} {e.self_cpu_time_total / 1e6 / args.steps:11.3f} "
              f"{100 * e.self_cpu_time_total / total_self:5.1f}%")

    # the convolutions against the roofline conv timed now, and what everything else costs
    conv_time = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS) / 1e6 / args.steps
    flops = collections.Counter()
    with FlopCounterMode(display=False) as counter:
        step()
    for op, n in counter.get_flop_counts()["Global"].items():
        flops["conv" if "convolution" in str(op) else "other"] += n
    roof_fn = roofline_conv(device, case["precision"], "channels_last" if case["channels_last"] else "contiguous")
    roof = ROOF_FLOPS / min(time_calls(roof_fn, device, 2.0, max_calls=10)) / 1e9
    conv_rate = flops["conv"] / conv_time / 1e9
    print(f"\nconvolution passes: {conv_time:.2f} s/step for {flops['conv'] / 1e9:.0f} GFLOP = "
          f"{conv_rate:.1f} GFLOP/s, "
          f"{100 * conv_rate / roof:.0f}% of the roofline conv timed now ({roof:.1f} GFLOP/s, best of 10); "
          f"everything else: {total_self / 1e6 / args.steps - conv_time:.2f} s/step "
          f"({100 * (1 - conv_time * 1e6 * args.steps / total_self):.0f}% of the op time; matmul FLOPs "
          f"{flops['other'] / 1e9:.1f} GFLOP)")

    # convolutions by shape: which ones run far below the roofline
    by_shape: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key not in CONV_OPS or not e.input_shapes:
            continue
        shapes = [s for s in e.input_shapes[:3] if s]
        key = f"{e.key.split('::')[1][:20]:20s} {' '.join('x'.join(map(str, s)) for s in shapes)}"
        by_shape[key][0] += e.self_cpu_time_total / 1e6 / args.steps
        if e.key == "aten::convolution_backward" and len(shapes) == 3:
            grad_out, _inp, weight = shapes  # input and weight gradients: 2x the forward multiply-adds x 2
            by_shape[key][1] += 4 * math.prod(grad_out) * math.prod(weight[1:]) / 1e9 * e.count / args.steps
    print(f"\n{'convolution pass: op, shapes (grad_out/input, input, weight)':64s} {'s/step':>7s} {'~GFLOP/s':>8s}")
    for key, (s, gflop) in sorted(by_shape.items(), key=lambda kv: -kv[1][0])[: args.top]:
        rate = f"{gflop / s:8.1f}" if gflop and s else f"{'':8s}"
        print(f"{key[:64]:64s} {s:7.3f} {rate}")
    print("(~GFLOP/s of a backward pass assumes both input and weight gradients; the first layer has no input "
          "gradient, so its rate is overstated 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""(e) The single operations behind the fast-path defaults, each way (CPU, fp32)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from bench.common import Config, load_average, summary, time_calls
from bench.roofline import LAYOUTS


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
                      functools.partial(upsample, fast)))
    for fast in (False, True):
        cases.append((f"InstanceNorm+ReLU_ fwd+bwd {ch}ch {2 * side}px", "unsafe_view" if fast else "official view",
                      functools.partial(norm_relu, fast)))
    for which in ("forward", "input grad", "weight grad"):
        for layout in LAYOUTS:
            cases.append((f"conv3x3 {which} {ch}ch {side}px fp32", layout,
                          functools.partial(conv_pass, layout, which)))
    return cases


def run_ops(cfg: Config, quick: bool) -> list[dict[str, Any]]:
    """Time every op case on the CPU, in this process (they are small and allocate little)."""
    out = []
    for name, variant, factory in op_cases(quick):
        s = summary(time_calls(factory(), torch.device("cpu"), cfg.roofline_seconds, max_calls=30))
        out.append({"name": name, "variant": variant, "seconds": s, "load": load_average()})
        print(f"op {name} [{variant}] {1e3 * s['median']:.2f} ms", flush=True)
    return out



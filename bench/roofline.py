"""(a) The roofline: GFLOP/s of one plain 3x3 convolution, the yardstick of every other figure."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from typing import Any

import torch

from bench.common import Config, count_flops, load_average, summary, time_calls

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
            flops = count_flops(functools.partial(torch.nn.functional.conv2d, xm, wm, padding=1))
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

"""Each section's loop over its cases: ``--only``, the time budget, one result entry per case, the JSON
report saved after each (a long run that is stopped keeps what it measured)."""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.common import Config
from bench.paper import paper_cases
from bench.roofline import adjacent_layout, fractions, rate_for
from bench.runner import run_case
from bench.train_step import (
    PAPER_S_PER_ITER,
    STATIC_FLOPS,
    gpu_cases,
    model_width,
    pair_cases,
    planned_size,
    resolved_defaults,
    train_cases,
)
from bench.translate import FORWARD_FLOPS_256, translate_cases
from cut_hf import perf

Save = Callable[[], None]


def selected(name: str, only: str | None) -> bool:
    """Whether a case named ``name`` (merged names are joined by " = ") is among ``--only``."""
    return not only or bool(set(name.split(" = ")) & {n.strip() for n in only.split(",")})


def predicted_seconds(size: int, steps: int, flops_ref: float, size_ref: int, rate: float | None) -> float:
    """Seconds of ``steps`` steps at ``size`` px, from ``flops_ref`` FLOPs per step at ``size_ref`` px and
    30% of the roofline's ``rate`` GFLOP/s (0 when there is no rate to go by)."""
    return steps * flops_ref * (size / size_ref) ** 2 / (0.3 * rate * 1e9) if rate else 0.0


def run_train_section(report: dict[str, Any], cfg: Config, device: torch.device, args: argparse.Namespace,
                      save: Save) -> None:
    """(b): every training variant at ``cfg.size``, or smaller where its predicted time is over the budget."""
    roof, defaults = report["roofline"], report["defaults"]
    report["train"] = []
    measured: dict[tuple[str, bool], tuple[int, float]] = {}  # (mode, reuse) -> (size, flops)
    report["defaults_bf16"] = resolved_defaults(device, "bf16")
    width = model_width(cfg)
    for case in train_cases(args.variants, defaults, report["defaults_bf16"], args.quick):
        if not selected(case["name"], args.only) or (args.no_compile and case["compile"]):
            continue
        rate = rate_for(roof, case["precision"], case["channels_last"]) or roof.get(case["precision"])
        size_ref, flops_ref = measured.get((case["mode"], case["reuse"]),
                                           (256, STATIC_FLOPS[case["mode"]] * width**2))
        predicted = functools.partial(predicted_seconds, steps=cfg.steps + cfg.warmup, flops_ref=flops_ref,
                                      size_ref=size_ref, rate=rate)
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
        if "flops" in r and not case["compile"] and size is not None:
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


def run_gpu_section(report: dict[str, Any], cfg: Config, device: torch.device, args: argparse.Namespace,
                    save: Save) -> None:
    """(g): s/iter of each :func:`~bench.train_step.gpu_cases` case at ``cfg.size`` against the paper's
    published figure; cases left when ``cfg.budget`` seconds have passed are reported as skipped."""
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
    save()


def run_paper_section(report: dict[str, Any], cfg: Config, device: torch.device, args: argparse.Namespace,
                      save: Save) -> None:
    """(p): every case of :func:`~bench.paper.paper_cases` alternating with the paper path, one process per case."""
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
        save()


def run_pairs_section(report: dict[str, Any], cfg: Config, device: torch.device, args: argparse.Namespace,
                      save: Save) -> None:
    """(b'): the plain path against the fp32 defaults, steps alternating, at the size the plain step fitted."""
    report["pairs"] = []
    sizes = {e["name"].split(" = ")[0]: e["size"] for e in report.get("train", [])}
    for name, a, b in pair_cases(report["defaults"]):
        if not selected(name, args.only):
            continue
        size = sizes.get("plain") or cfg.size  # where the plain step fitted the budget
        print(f"pair {name} ...", end=" ", flush=True)
        entry: dict[str, Any] = {"name": name, "a": a, "b": b, "size": size,
                 "result": run_case("pair", {"a": a, "b": b}, cfg, device, size)}
        r = entry["result"]
        report["pairs"].append(entry)
        print(r.get("error") or f"x{r['speedup']:.2f} (ratios {r['ratios']})", flush=True)
        save()


def run_translate_section(report: dict[str, Any], cfg: Config, device: torch.device, args: argparse.Namespace,
                          save: Save) -> None:
    """(c): every translate() variant at each size, skipped where its predicted time is over the budget."""
    roof = report["roofline"]
    report["translate"] = []
    width = model_width(cfg)
    for case in translate_cases(cfg.translate_sizes, args.quick):
        if not selected(case["name"], args.only) or (args.no_compile and case["compile"]):
            continue
        rate = rate_for(roof, case["precision"], case["channels_last"]) or roof.get(case["precision"])
        flops_est = FORWARD_FLOPS_256 * (case["size"] / 256) ** 2 * width**2
        predicted = (cfg.warmup + cfg.translate_reps) * flops_est / (0.3 * rate * 1e9) if rate else 0.0
        case["roof_layout"] = adjacent_layout(roof, case["precision"], cfg)
        entry = dict(case)
        print(f"translate {case['size']} {case['name']} ...", end=" ", flush=True)
        if predicted > cfg.budget:
            entry["result"] = {"skipped": f"predicted {predicted:.0f} s (budget {cfg.budget:.0f} s)"}
        else:
            entry["result"] = run_case("translate", case, cfg, device, case["size"])
        r = entry["result"]
        if "flops" in r:
            fractions(entry, r["flops"] * r["images_per_s"] / 1e9, roof)
        report["translate"].append(entry)
        print(r.get("error") or r.get("skipped") or f"{r['images_per_s']:.3f} images/s", flush=True)
        save()

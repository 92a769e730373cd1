"""Running one case: here, or in a fresh ``python -m bench`` subprocess (an honest peak memory per case)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.common import REPO, Config, load_average
from bench.paper import run_paper_case
from bench.train_step import run_pair_case, run_train_case
from bench.translate import run_translate_case

RESULT_TAG = "BENCH_RESULT "

#: What runs a case of each kind: (case, cfg, device, size) -> its result dict.
CHILD_RUNNERS: dict[str, Callable[[dict[str, Any], Config, torch.device, int], dict[str, Any]]] = {
    "train": run_train_case, "pair": run_pair_case, "translate": run_translate_case, "paper": run_paper_case}


def run_case(kind: str, case: dict[str, Any], cfg: Config, device: torch.device, size: int) -> dict[str, Any]:
    """Run one case here or in a fresh subprocess; returns its result dict (or an ``error``)."""
    load_before = load_average()
    t0 = time.perf_counter()
    result: dict[str, Any]
    if cfg.isolate:
        cmd = [sys.executable, "-m", "bench", "--_child", json.dumps(
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
        except Exception as e:  # noqa: BLE001 - a failed case is reported, the others still run
            result = {"error": f"{type(e).__name__}: {e}"}
    result.update(load_before=load_before, load_after=load_average(), wall_s=round(time.perf_counter() - t0, 1))
    return result


def child_main(payload: str) -> int:
    """The subprocess side of :func:`run_case`: run the case, print its result on one tagged line."""
    spec = json.loads(payload)
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["cfg"].items()}
    cfg = Config(**values)
    result = CHILD_RUNNERS[spec["kind"]](spec["case"], cfg, torch.device(spec["device"]), spec["size"])
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0

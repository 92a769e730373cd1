"""bench/bench.py --quick as a smoke check: it runs the real training step and translate end to end
and reports consistent figures. No timing is asserted (CI machines are shared and noisy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_bench_runs_and_reports_every_section(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for heading in ("(a) roofline", "(b) training step", "(c) translate", "machine:"):
        assert heading in proc.stdout
    report = json.loads(out.read_text())

    machine = report["machine"]
    assert machine["usable_cores"] >= 1 and machine["torch"] == __import__("torch").__version__
    assert isinstance(machine["avx512"], bool) and isinstance(machine["onednn_bf16"], bool)

    roof = report["roofline"]
    fp32 = [c for c in roof["cases"] if c["precision"] == "fp32"]
    assert {c["layout"] for c in fp32} == {"contiguous", "channels_last"}
    # 2 * 256 * 256 * 9 * 64 * 64 multiply-adds of the 3x3 conv, counted by FlopCounterMode
    assert all(c["flops"] == 2 * 256 * 256 * 9 * 64 * 64 for c in fp32)
    assert roof["fp32"] == max(c["gflops"] for c in fp32) > 0

    train = {c["name"].split(" = ")[0]: c for c in report["train"]}
    assert {"plain", "+fast_ops", "+reuse", "+channels_last", "fastcut plain"} <= set(train)
    for case in report["train"]:
        r = case["result"]
        assert "error" not in r, (case["name"], r)
        if "skipped" in r:
            continue
        assert r["seconds"]["median"] > 0 and len(r["seconds"]["all"]) == report["config"]["steps"]
        assert r["flops"] > 0 and r["memory"]["peak_mib"] > 0
        if roof[case["precision"]]:  # the quick run skips the slow emulated-bf16 roofline
            assert 0 < case["roofline_fraction"]
    # FLOPs are counted, not timed, so they can be checked exactly: reusing the forward pass's
    # features as PatchNCE keys saves the two key encoder passes; FastCUT (no identity loss) costs less.
    plain, reuse = train["plain"]["result"]["flops"], train["+reuse"]["result"]["flops"]
    assert reuse < plain
    # the fast Upsample is an interpolation, not a (counted) depthwise transposed convolution
    assert 0.98 * plain < train["+fast_ops"]["result"]["flops"] < plain
    assert train["fastcut plain"]["result"]["flops"] < plain

    pairs = {c["name"]: c["result"] for c in report["pairs"]}
    pair = pairs["plain -> defaults"]
    assert "error" not in pair, pair
    assert len(pair["ratios"]) == report["config"]["pair_rounds"] and pair["speedup"] > 0
    assert pair["a"]["median"] > 0 and pair["b"]["median"] > 0
    assert "(b') paired" in proc.stdout

    ops = {(c["name"].split()[0], c["variant"]) for c in report["ops"]}
    assert {("Upsample", "bilinear"), ("Upsample", "official transposed blur"), ("conv3x3", "channels_last")} <= ops
    assert all(c["seconds"]["median"] > 0 for c in report["ops"]) and "(e) ops" in proc.stdout

    sizes = {c["size"] for c in report["translate"]}
    assert sizes == set(report["config"]["translate_sizes"])
    for case in report["translate"]:
        r = case["result"]
        assert "error" not in r, (case["name"], r)
        if "skipped" not in r:
            assert r["images_per_s"] > 0 and r["flops"] > 0

    paper = {(c["name"], c["size"]): c["result"] for c in report["paper"]}
    assert {("cut train fp32", 32), ("fastcut train bf16", 32), ("translate fp32", 64)} <= set(paper)
    for name, r in paper.items():
        assert "error" not in r, (name, r)
        if "skipped" not in r:
            assert r["speedup"] > 0 and len(r["ratios"]) >= 1 and r["a"]["median"] > 0
    assert "(p) against the paper path" in proc.stdout


def test_gpu_check_is_prepared_at_the_papers_size_and_its_section_runs_here(tmp_path):
    from bench.common import Config
    from bench.train_step import gpu_cases

    cfg = Config.quick_cuda()
    assert cfg.size == 256 and not cfg.model_flags and cfg.budget < 300  # the paper's size and model
    names = {c["name"] for c in gpu_cases()}
    assert {"cut fp32 eager", "fastcut bf16 compiled", "cut bf16 compiled+cudagraphs"} <= names
    # the (g) section itself, on the CPU with the tiny config (CUDA graphs and timing need a GPU)
    out = tmp_path / "gpu.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--device", "cpu", "--threads",
                           "1", "--sections", "roofline,gpu", "--only", "cut fp32 eager,fastcut fp32 eager",
                           "--json", str(out)], capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gpu = json.loads(out.read_text())["gpu"]
    assert [c["name"] for c in gpu] == ["cut fp32 eager", "fastcut fp32 eager"]
    assert all(c["result"]["seconds"]["median"] > 0 and c["paper_s_per_iter"] in (0.24, 0.15) for c in gpu)
    assert "(g) GPU training step" in proc.stdout

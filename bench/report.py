"""The printed tables of a run (the JSON report holds every figure; this is its human-readable form)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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
          f"{fmt(gflops, '.1f'):>8s} {pct(c.get('roofline_fraction')):>6s} "
          f"{pct(c.get('roofline_fraction_adjacent')):>5s} "
          f"{r['memory']['peak_mib']:8.0f} {r['memory']['step_mib']:8.0f} {fmt(r.get('load_before'), '.1f'):>5s}")


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


def print_rows(entries: list[dict[str, Any]], done_key: str,
               row: Callable[[dict[str, Any], dict[str, Any]], str]) -> None:
    """One line per entry: ``row(entry, result)`` where the result has ``done_key``, else its error or skip."""
    for c in entries:
        r = c["result"]
        print(row(c, r) if done_key in r else f"  {c['name']:24s} {r.get('error') or r.get('skipped')}")


def print_paper(report: dict[str, Any]) -> None:
    """The (p) table: each case's time against the paper path's, alternating in one process."""
    print("\n(p) against the paper path (official networks and step order, official ops, NCHW, fp32, keys "
          "recomputed), alternating in one process; speed-up = median of the per-round ratios paper/ours")
    print(f"  {'case':24s} {'size':>4s} {'paper s':>8s} {'ours s':>8s} {'speed-up':>9s}  ratios")

    def row(c: dict[str, Any], r: dict[str, Any]) -> str:
        diff = r.get("max_grey_level_difference")
        extra = f"  (max grey-level difference {diff})" if diff is not None else ""
        return (f"  {c['name']:24s} {c['size']:4d} {r['a']['median']:8.3f} {r['b']['median']:8.3f} "
                f"{r['speedup']:9.2f}  {' '.join(f'{x:.2f}' for x in r['ratios'])}{extra}")
    print_rows(report["paper"], "speedup", row)



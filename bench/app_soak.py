#!/usr/bin/env python
"""Soak the demo app: N translations against a running ``python app.py``; memory, open files and cache.

    python bench/app_soak.py                              # 300 translations, --cache-minutes 1, 150 s wait
    python bench/app_soak.py --requests 50 --wait 0 --cache-minutes 0

Starts ``app.py`` (the shipped model, one torch thread) on a free port of 127.0.0.1 with a fresh
``GRADIO_TEMP_DIR``, then sends ``--requests`` translations of small uploads through gradio_client,
one at a time, each a new 96 x 96 PNG (a new file for Gradio's cache, as distinct visitors' photos
are). Measured from outside the server: its resident memory (RSS), its open file descriptors
(/proc/PID/fd) and the size of its Gradio cache folder (bytes, files, folders), after start-up,
after 20 requests, after the last one and ``--wait`` seconds after the last one. The issue's
targets (issue 22): memory after all requests within 100 MB of memory after 20, and with
``--cache-minutes 1`` the cache 150 s after the last request under a fifth of what it held.
Prints one JSON object; nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folder_stats(root: Path) -> dict[str, int]:
    """Bytes, files and folders under ``root``."""
    files = folders = size = 0
    for _, dirs, names in os.walk(root):
        folders += len(dirs)
        files += len(names)
    for p in root.rglob("*"):
        if p.is_file():
            size += p.stat().st_size
    return {"bytes": size, "files": files, "folders": folders}


def process_stats(pid: int) -> dict[str, float]:
    """Resident memory (MB) and open file descriptors of process ``pid``."""
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return {"rss_mb": round(rss_kb / 1024, 1), "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}


def snapshot(pid: int, cache: Path, label: str, t0: float) -> dict[str, object]:
    seconds = round(time.monotonic() - t0, 1)
    return {"when": label, "seconds": seconds, **process_stats(pid), "cache": folder_stats(cache)}


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode} before serving")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"app.py not serving after {timeout} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--cache-minutes", type=float, default=1.0)
    p.add_argument("--wait", type=float, default=150.0, help="seconds to wait after the last request")
    p.add_argument("--size", type=int, default=96, help="upload side in px")
    args = p.parse_args()

    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="cut-hf-soak-"))
    cache, uploads, downloads = work / "gradio", work / "uploads", work / "downloads"
    for d in (cache, uploads, downloads):
        d.mkdir()
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--host", "127.0.0.1",
                             "--threads", "1", "--cache-minutes", str(args.cache_minutes)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, proc)
        client = Client(url, verbose=False, download_files=str(downloads))
        rng = np.random.default_rng(0)
        rows = [snapshot(proc.pid, cache, "started", t0)]
        request_seconds = []
        for i in range(1, args.requests + 1):
            path = uploads / f"upload_{i}.png"
            small = rng.integers(0, 256, (args.size // 8, args.size // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((args.size, args.size), Image.BILINEAR).save(path)
            start = time.monotonic()
            client.predict(handle_file(str(path)), "original", "fp32", api_name="/translate")
            request_seconds.append(time.monotonic() - start)
            path.unlink()
            for f in downloads.rglob("*"):  # the client's copies of the results: not the server's cache
                if f.is_file():
                    f.unlink()
            if i == 20 or i == args.requests:
                rows.append(snapshot(proc.pid, cache, f"after {i} requests", t0))
        if args.wait:
            time.sleep(args.wait)
            rows.append(snapshot(proc.pid, cache, f"{args.wait:.0f} s after the last request", t0))
        print(json.dumps({"requests": args.requests, "cache_minutes": args.cache_minutes,
                          "mean_request_s": round(sum(request_seconds) / len(request_seconds), 3),
                          "load_average": os.getloadavg(), "snapshots": rows}, indent=1))
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()

"""Mutation check: apply each one-line mistake of :mod:`tests.mutation.mutants` to a scratch copy of
the repository and run the few tests that name the feature; a mutant is *killed* when they fail.

    python -m tests.mutation.run                 # every mutant (47 min on the shared 2-core box, load 12-15)
    python -m tests.mutation.run -k nce -k tile  # mutants whose id contains "nce" or "tile"
    python -m tests.mutation.run --list          # ids and test selections, nothing run

Not part of the CI run (too slow); ``tests/mutation/test_mutants_apply.py`` checks, fast, that every
mutant still applies (its original text occurs exactly once in its file). The scratch copy holds the
tracked and untracked-but-not-ignored files of the working tree, so uncommitted tests count; the
working tree itself is never written. Each selection runs once unmutated first (``--no-baseline`` to
skip): a mutant whose selection fails unmutated is reported as ``broken``, not killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.mutation.mutants import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]


def scratch_copy(dest: Path) -> Path:
    """The working tree's tracked and untracked-but-not-ignored files, copied under ``dest``."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def run_tests(tree: Path, selection: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """Run ``pytest -x`` on ``selection`` in ``tree``: ("pass" | "fail" | "timeout" | "error", seconds, tail)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc: a mutant written within the same second must not hit a stale one
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *selection]
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, ""
    seconds = time.monotonic() - start
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    # pytest: 0 passed, 1 tests failed, 2 interrupted (collection error), 4 usage error, 5 nothing collected
    status = {0: "pass", 1: "fail", 2: "fail"}.get(done.returncode, "error")
    return status, seconds, tail


def apply(tree: Path, mutant: Mutant) -> str:
    """Write ``mutant`` into ``tree``; returns the original text of the file (to restore it)."""
    path = tree / mutant.path
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise ValueError(f"{mutant.id}: original text found {text.count(mutant.old)} times in {mutant.path}")
    path.write_text(text.replace(mutant.old, mutant.new))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", action="append", default=[], help="only mutants whose id contains this (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per test run (a timeout counts as killed)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of each selection")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.k or any(k in m.id for k in args.k)]
    if args.list:
        for m in mutants:
            print(f"{m.id:45s} {' '.join(m.tests)}")
        return 0
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cut-hf-mutants-") as tmp:
        tree = scratch_copy(Path(tmp))
        baseline: dict[tuple[str, ...], str] = {}
        if not args.no_baseline:
            for selection in dict.fromkeys(m.tests for m in mutants):
                baseline[selection], seconds, tail = run_tests(tree, selection, args.timeout)
                print(f"baseline {baseline[selection]:7s} {seconds:5.1f}s  {' '.join(selection)}", flush=True)
                if baseline[selection] != "pass":
                    print("   ", tail.replace("\n", "\n    "))
        for m in mutants:
            if baseline.get(m.tests, "pass") != "pass":
                status, seconds, tail = "broken", 0.0, "the selection fails unmutated"
            else:
                original = apply(tree, m)
                try:
                    status, seconds, tail = run_tests(tree, m.tests, args.timeout)
                finally:
                    (tree / m.path).write_text(original)
                status = {"pass": "SURVIVED", "fail": "killed", "timeout": "killed (timeout)"}.get(status, status)
            results.append(dict(id=m.id, status=status, seconds=round(seconds, 1), tests=list(m.tests), why=m.why))
            print(f"{status:16s} {seconds:5.1f}s  {m.id}", flush=True)
    killed = sum(r["status"].startswith("killed") for r in results)
    counted = sum(r["status"].startswith(("killed", "SURVIVED")) for r in results)
    print(f"\nmutation score: {killed}/{counted} killed ({100 * killed / max(counted, 1):.1f}%)")
    for r in results:
        if not r["status"].startswith("killed"):
            print(f"  {r['status']}: {r['id']} ({' '.join(r['tests'])})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if killed == counted else 1


if __name__ == "__main__":
    sys.exit(main())

"""Shared tiny fixtures. Tests run offline (no Hub access) and on CPU, with fixed seeds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported by anything

import pytest
import torch

# Tests use tiny tensors: one thread is as fast, and on a shared 2-core CI box several threads
# per process spin against each other (measured: 84 s -> 21 s for tests/models/test_generator.py).
torch.set_num_threads(int(os.environ.get("CUT_HF_TEST_THREADS", "1")))

# A generator small enough to run a forward pass in milliseconds, but with every layer type.
TINY_G = dict(ngf=4, n_blocks=2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same RNG state, so failures reproduce."""
    torch.manual_seed(0)


@pytest.fixture
def tiny_generator():
    from cut_hf import CUTGenerator

    return CUTGenerator(**TINY_G).eval()


@pytest.fixture
def images() -> torch.Tensor:
    """Two 32x32 RGB images in [-1, 1], the generator's input range."""
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture
def hub_offline(monkeypatch):
    """Force huggingface_hub's offline mode for one test, whatever the environment says."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tmpfs(tmp_path: Path):
    """``mount(size_bytes) -> Path``: a small tmpfs of its own (a real full disk); unmounted after the
    test. Skips the test where mounting is not allowed (not root, no mount command, a container)."""
    point = tmp_path / "tmpfs"
    point.mkdir()
    mounted = []

    def mount(size: int) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for p in mounted:
        subprocess.run(["umount", str(p)], capture_output=True)

"""A checkpoint written before the reorganisation (issue 11) still resumes, and continues exactly.

``tests/fixtures/old_layout_run`` was written by the train.py of commit 26ad111 (CPU, fp32):
``output/`` is its run of 2 steps with ``checkpoints/checkpoint_0`` (the old ``checkpoint_<index>``
name), and ``expected_generator_step4.safetensors`` is the generator the same code saved after
``--resume latest --max-steps 4`` from it (crossing the epoch boundary, where the lr drops).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from cut_hf import CUTGenerator

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "old_layout_run"
FLAGS = ["--load-size", "36", "--crop-size", "32", "--ngf", "4", "--ndf", "4", "--n-blocks", "2",
         "--num-patches", "16", "--netf-nc", "16", "--num-workers", "0", "--n-epochs", "1", "--n-epochs-decay", "1",
         "--report-to", "none", "--cpu"]


def test_old_checkpoint_resumes_to_the_same_weights(tmp_path: Path):
    out = tmp_path / "output"
    shutil.copytree(FIXTURE / "output", out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "train.py"), "--data-dir", str(FIXTURE / "data"), "--output-dir", str(out),
           *FLAGS, "--max-steps", "4", "--checkpoint-every", "0", "--resume", "latest"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr and "checkpoint_0" in result.stdout + result.stderr
    got = load_file(out / "generator" / "model.safetensors")
    expected = load_file(FIXTURE / "expected_generator_step4.safetensors")
    assert got.keys() == expected.keys()
    # Compared by output, not weight by weight: a conv bias followed by instance norm has a zero
    # gradient up to rounding, which Adam scales to +-lr, so those biases differ with the thread
    # count and the CPU while the translation they feed does not.
    generator = CUTGenerator.from_pretrained(out / "generator", strict=True).eval()
    reference = CUTGenerator(**json.loads((out / "generator" / "config.json").read_text())).eval()
    reference.load_state_dict(expected, strict=True)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(generator(x), reference(x), rtol=1e-4, atol=1e-4)
    for k in expected:
        if not k.endswith(".bias"):
            torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")

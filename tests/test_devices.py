"""One device choice (issue 20, point 7): CUDA, then MPS / XPU (torch.accelerator), then the CPU, for
translate(), cut-hf translate, cut-hf evaluate, SimCLR evaluation and the app, which says which it uses."""

from __future__ import annotations

import types

import pytest
import torch

from cut_hf import perf


@pytest.fixture
def only(monkeypatch):
    """Pretend this machine has exactly ``kind`` ("cuda", "mps", "xpu" or "cpu") as accelerator."""

    def machine(kind: str) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: kind == "cuda")
        monkeypatch.setattr(torch.accelerator, "is_available", lambda: kind != "cpu")
        monkeypatch.setattr(torch.accelerator, "current_accelerator",
                            lambda *a, **k: None if kind == "cpu" else torch.device(kind))

    return machine


@pytest.mark.parametrize("kind", ["cuda", "mps", "xpu", "cpu"])
def test_default_device_prefers_cuda_then_other_accelerators_then_cpu(only, kind):
    only(kind)
    assert perf.default_device() == torch.device(kind)


def test_every_place_that_picks_a_device_asks_perf(only, monkeypatch, tiny_generator):
    from cut_hf.demo import translation as demo
    from cut_hf.translation import folders, pipeline

    only("mps")
    assert pipeline.resolve_device(None, tiny_generator) == torch.device("mps")  # translate()'s choice
    assert demo.translation_device() == "mps"
    assert "Translating on **mps**" in demo.device_line()
    one_process = types.SimpleNamespace(num_processes=1, device=torch.device("mps"))
    assert folders.job_device(one_process) == torch.device("mps")  # cut-hf translate, not launched
    launched = types.SimpleNamespace(num_processes=2, device=torch.device("cuda", 1))
    assert folders.job_device(launched) == torch.device("cuda", 1)  # a launch keeps its per-process device
    only("cpu")
    assert "Translating on **cpu** (no GPU found" in demo.device_line()



def test_evaluate_loads_the_model_on_the_default_device(monkeypatch, tiny_generator, tmp_path):
    import inspect

    from cut_hf.cli import evaluate
    from cut_hf.evaluation import simclr

    tiny_generator.save_pretrained(tmp_path / "g")
    monkeypatch.setattr(evaluate, "default_device", lambda: torch.device("meta"))  # a device any machine has
    assert next(evaluate._load_model(str(tmp_path / "g"), None).parameters()).device.type == "meta"
    source = inspect.getsource(simclr.evaluate)  # SimCLR's evaluation: the same function, no device given
    assert "default_device()" in source and "cuda.is_available()" not in source

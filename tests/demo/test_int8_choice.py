"""The app offers int8 only where it is faster (cut_hf.perf.fast_int8), as it warns about emulated bf16."""

from __future__ import annotations

import pytest

import cut_hf.demo.translation as tab
from cut_hf import perf


@pytest.mark.parametrize("flags, expected", [({"avx2", "fma"}, False), ({"avx2", "avx512_vnni"}, True),
                                             ({"avx_vnni"}, True), ({"amx_int8"}, True)])
def test_fast_int8_needs_8_bit_dot_products(monkeypatch, flags, expected) -> None:
    monkeypatch.setattr(perf, "cpu_flags", lambda: flags)
    monkeypatch.setattr(perf, "find_spec", lambda name: object())  # the int8 packages, installed or not
    assert perf.fast_int8("cpu") is expected
    assert perf.fast_int8("cuda") is False


def test_fast_int8_needs_openvino(monkeypatch) -> None:
    monkeypatch.setattr(perf, "cpu_flags", lambda: {"avx512_vnni"})
    monkeypatch.setattr(perf, "find_spec", lambda name: None if name == "openvino" else object())
    assert perf.fast_int8("cpu") is False


@pytest.mark.parametrize("fast", [True, False])
def test_the_precision_choice_offers_int8_only_where_it_helps(monkeypatch, fast) -> None:
    monkeypatch.setattr(tab, "fast_int8", lambda device: fast)
    assert ("int8" in tab.precisions_available()) is fast
    assert tab.precisions_available()[:2] == ["fp32", "bf16"]


def test_the_tab_translates_in_int8_calibrated_on_the_model_examples(tmp_path, monkeypatch) -> None:
    pytest.importorskip("openvino")
    import torch
    from PIL import Image

    from cut_hf import CUTGenerator
    from cut_hf.demo.models import load_demo_model
    from cut_hf.translation import quantize
    from tests.helpers import make_images, sharpen

    torch.manual_seed(0)
    sharpen(CUTGenerator(ngf=4, n_blocks=1)).save_pretrained(tmp_path / "model")
    make_images(tmp_path / "model" / "examples", 2, size=(32, 32))
    monkeypatch.setattr(tab, "fast_int8", lambda device: True)
    seen = []
    real = quantize.quantize_to_file
    monkeypatch.setattr(quantize, "quantize_to_file",
                        lambda g, path, cal, **kw: seen.append(cal) or real(g, path, cal, **kw))
    model = load_demo_model(str(tmp_path / "model"))
    res = tab.run_translation(model, Image.new("RGB", (40, 36), (90, 120, 60)), precision="int8")
    assert res.precision == "int8" and res.after.size == (40, 36)
    assert seen == [tmp_path / "model" / "examples"]  # the model's own examples set the 8-bit ranges

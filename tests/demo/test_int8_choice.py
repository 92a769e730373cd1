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

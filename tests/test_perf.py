"""cut_hf.perf and the exact fast equivalents in cut_hf.models.layers: same numbers, fewer copies."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cut_hf import CUTGenerator, perf
from cut_hf.models import layers
from cut_hf.models.layers import InstanceNorm2d, Upsample


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 8, 16, 16), (1, 4, 1, 3)])
def test_upsample_fast_path_is_the_official_transposed_blur(shape):
    torch.manual_seed(0)
    up = Upsample(shape[1]).double()
    assert up.bilinear
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    fast, ref = up(x), up.transposed_blur(x2)
    assert fast.shape == ref.shape == (shape[0], shape[1], 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    fast.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-12)


def test_upsample_fast_path_keeps_channels_last_and_other_filters_keep_the_convolution():
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    assert Upsample(4)(x).is_contiguous(memory_format=torch.channels_last)
    odd = Upsample(4, filt_size=3)  # not the bilinear case: the official computation runs
    assert not odd.bilinear
    torch.testing.assert_close(odd(x), odd.transposed_blur(x), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 16, 4, 4), (3, 2, 9, 2)])
def test_instance_norm_is_bit_identical_and_not_a_view(shape):
    torch.manual_seed(1)
    x = torch.randn(*shape, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    ref = nn.ReLU(True)(nn.InstanceNorm2d(shape[1])(x * 2))  # the official norm -> in-place ReLU
    ours = nn.ReLU(True)(InstanceNorm2d(shape[1])(x2 * 2))
    assert torch.equal(ours, ref)
    # The official output is a view, so the in-place ReLU is rebuilt through the view (AsStrided /
    # CopySlices backward); ours is a plain ReLU.
    assert type(ref.grad_fn).__name__ in ("AsStridedBackward0", "CopySlices")
    assert type(ours.grad_fn).__name__ == "ReluBackward0"
    g = torch.randn_like(ref)
    ref.backward(g)
    ours.backward(g)
    assert torch.equal(x.grad, x2.grad)


def test_instance_norm_variants_take_the_parent_path():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 4, 4)
    for kwargs in (dict(affine=True), dict(track_running_stats=True)):
        ours, ref = InstanceNorm2d(3, **kwargs), nn.InstanceNorm2d(3, **kwargs)
        ours.load_state_dict(ref.state_dict())
        assert torch.equal(ours(x), ref(x))
    unbatched = torch.randn(3, 4, 4)
    assert torch.equal(InstanceNorm2d(3)(unbatched), nn.InstanceNorm2d(3)(unbatched))
    assert isinstance(layers.norm_layer("instance", 3), nn.InstanceNorm2d)
    assert layers.norm_layer("instance", 3).state_dict() == {}


def test_fast_ops_are_chosen_at_construction_and_change_the_path_not_the_result():
    torch.manual_seed(3)
    g = CUTGenerator(ngf=4, n_blocks=2)
    official = CUTGenerator(ngf=4, n_blocks=2, fast_ops=False)
    official.load_state_dict(g.state_dict())
    assert g.fast_ops and not official.fast_ops
    assert all(m.fast for m in g.modules() if isinstance(m, (layers.Upsample, InstanceNorm2d)))
    assert not any(m.fast for m in official.modules() if isinstance(m, (layers.Upsample, InstanceNorm2d)))
    x = torch.rand(2, 3, 20, 28) * 2 - 1
    ref = official(x)
    assert type(official.model[2](official.model[1](official.model[0](x))).grad_fn).__name__ != "ReluBackward0"
    torch.testing.assert_close(g(x), ref, rtol=0, atol=1e-6)
    assert not hasattr(layers, "FAST_OPS") and not hasattr(perf, "set_fast_ops")  # no process-wide switch


def test_emulated_bf16_means_bf16_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(perf, "native_bf16", lambda device="cpu": False)
    assert perf.emulated_bf16("bf16", "cpu") is True
    assert perf.emulated_bf16("fp32", "cpu") is False and perf.emulated_bf16("no", "cpu") is False
    assert perf.emulated_bf16("bf16", "cuda") is False  # a GPU's bf16 is not this CPU note's business
    monkeypatch.setattr(perf, "native_bf16", lambda device="cpu": True)
    assert perf.emulated_bf16("bf16", "cpu") is False


def test_channels_last_default_follows_the_isa(monkeypatch):
    assert perf.channels_last_default("cuda") is True
    monkeypatch.setattr(perf, "cpu_flags", lambda: {"avx2", "fma"})
    assert perf.channels_last_default("cpu") is False
    assert perf.channels_last_default("cpu", "no") is False
    monkeypatch.setattr(perf, "native_bf16", lambda device="cpu": False)
    assert perf.channels_last_default("cpu", "bf16") is True  # emulated bf16: NHWC forward is far faster
    monkeypatch.setattr(perf, "native_bf16", lambda device="cpu": True)
    assert perf.channels_last_default("cpu", "bf16") is False
    monkeypatch.setattr(perf, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert perf.channels_last_default("cpu") is True


def test_training_fast_paths_convert_and_report():
    from cut_hf import PatchDiscriminator

    g, d = CUTGenerator(ngf=4, n_blocks=1), PatchDiscriminator(ndf=4, n_layers=1)
    applied = perf.training_fast_paths_(g, d, "cpu", channels_last=True, compile=False)
    assert applied == {"channels_last": True, "compile": False}
    assert g.model[1].weight.is_contiguous(memory_format=torch.channels_last)
    assert d.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    # a channels-last weight makes the output channels-last without converting the input
    assert g(torch.rand(1, 3, 16, 16)).is_contiguous(memory_format=torch.channels_last)
    assert perf.training_fast_paths_(g, d, "cpu", channels_last=False)["channels_last"] is False


def test_autocast_threads_and_machine_description():
    from cut_hf import precision

    with precision.autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with precision.autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        precision.autocast_dtype("fp8")
    with pytest.raises(ValueError, match="threads"):
        perf.set_threads(0)
    before = torch.get_num_threads()
    try:
        assert perf.set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    desc = perf.machine_description()
    for key in ("cpu", "usable_cores", "isa", "avx512", "amx", "onednn_bf16", "torch", "torch_threads"):
        assert key in desc
    assert isinstance(perf.native_bf16("cpu"), bool)
    assert desc["usable_cores"] >= 1


def test_train_flags_for_the_fast_paths(monkeypatch):

    import cut_hf.cli.train as train

    args = train.parse_args(["--data-dir", "x"])
    assert args.channels_last is None and args.compile is False and args.fast_ops is True
    args = train.parse_args(["--data-dir", "x", "--channels-last", "--compile", "--no-fast-ops"])
    assert args.channels_last is True and args.compile is True and args.fast_ops is False
    assert train.parse_args(["--data-dir", "x", "--no-channels-last"]).channels_last is False
    assert train.build_models(args)[0].fast_ops is False  # --no-fast-ops builds the official layers


def test_default_workers_never_exceed_the_usable_cores(monkeypatch):
    from cut_hf.data import unpaired as data

    monkeypatch.setattr(data, "usable_cores", lambda: 2)
    assert data.default_num_workers() == 2 and data.default_num_workers(1) == 1
    monkeypatch.setattr(data, "usable_cores", lambda: 16)
    assert data.default_num_workers() == 4


def test_keep_freed_memory_takes_glibc_settings_where_there_is_glibc():
    import platform
    import subprocess
    import sys

    # in a child process: the setting is process-wide and would outlive this test
    code = ("import torch; from cut_hf import perf; kept = perf.keep_freed_memory(); "
            "x = torch.empty(64 << 20, dtype=torch.uint8); x.fill_(1); print(kept, int(x[-1]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    kept, last = out.stdout.split()
    assert last == "1" and kept in ("True", "False")
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert kept == "True"

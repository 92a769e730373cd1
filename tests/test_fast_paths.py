"""The layout- and dtype-keeping fast paths (issue 12) against the plain path, within stated tolerances.

- Padding under autocast runs in the input's dtype: bit-identical to padding in float32 and casting.
- Bilinear ``Upsample`` under autocast runs in the input's dtype: within one bf16 rounding of the
  float32 result (what the next convolution would have rounded it to).
- ``InstanceNorm2d`` on a channels-last map stays channels-last: equal to ``nn.InstanceNorm2d`` up to
  float32 rounding (another summation order), forward and backward.
- Whole generators and ``translate()``: channels-last fp32 equals contiguous fp32 up to float32
  rounding (at most 1 grey level after 8-bit conversion); bf16 with the fast paths equals bf16
  through the plain modules to bf16 precision.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from cut_hf import CUTGenerator, PatchDiscriminator, translate
from cut_hf.translation.inference import Runner, StatsInstanceNorm, layout_keeping
from cut_hf.models import layers
from cut_hf.perf import native_bf16
from tests.helpers import sharpen
from tests.reference import official

CL = torch.channels_last
needs_bf16 = pytest.mark.skipif(not native_bf16("cpu"), reason="bf16 is emulated on this CPU (slow)")


def test_reflection_pad_keeps_dtype_and_layout_under_autocast_and_is_exact():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 5).to(torch.bfloat16).contiguous(memory_format=CL)
    pad = layers.ReflectionPad2d(2)
    assert isinstance(pad, nn.ReflectionPad2d) and pad.state_dict() == {}
    with torch.autocast("cpu", torch.bfloat16):
        ours, plain = pad(x), nn.ReflectionPad2d(2)(x)
    assert plain.dtype == torch.float32  # what CPU autocast does to padding
    assert ours.dtype == torch.bfloat16 and ours.is_contiguous(memory_format=CL)
    assert torch.equal(ours.float(), plain)


def test_upsample_keeps_bf16_under_autocast_within_one_rounding():
    torch.manual_seed(1)
    x = torch.randn(1, 8, 6, 7).to(torch.bfloat16).contiguous(memory_format=CL)
    up = layers.Upsample(8)
    with torch.autocast("cpu", torch.bfloat16):
        ours = up(x)
    # The reference: the paper's transposed-convolution Upsample, in float64, of the same bf16 values.
    ref = official.Upsample(8).double()(x.double()).float()
    assert ours.dtype == torch.bfloat16 and ours.is_contiguous(memory_format=CL)
    torch.testing.assert_close(ours.float(), ref, rtol=2**-8, atol=1e-6)  # one bf16 rounding (2^-9) and then some


@pytest.mark.parametrize("batch", [1, 3])
def test_instance_norm_keeps_channels_last_and_matches_the_plain_norm(batch):
    torch.manual_seed(2)
    x = torch.randn(batch, 16, 9, 7, dtype=torch.float32)
    x_cl = x.detach().contiguous(memory_format=CL).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ours = torch.relu(layers.InstanceNorm2d(16)(x_cl * 2))
    ref = torch.relu(nn.InstanceNorm2d(16)(x_ref * 2))
    assert ours.is_contiguous(memory_format=CL)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    ours.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x_cl.grad, x_ref.grad, rtol=1e-4, atol=1e-5)


def _pair(fast: bool = True) -> tuple[CUTGenerator, CUTGenerator]:
    """A generator with the fast ops and one with the official ops, the same weights at He scale
    (outputs O(1), std ~0.5: at the paper's init they are within 0.09 of zero and any change hides)."""
    torch.manual_seed(3)
    g = sharpen(CUTGenerator(ngf=8, n_blocks=2)).eval()
    plain = CUTGenerator(ngf=8, n_blocks=2, fast_ops=False).eval()
    plain.load_state_dict(g.state_dict())
    return g, plain


def test_channels_last_generator_and_discriminator_match_contiguous_in_fp32():
    g, plain = _pair()
    d = PatchDiscriminator(ndf=8)
    x = torch.rand(2, 3, 32, 40) * 2 - 1
    ref_g, ref_d = plain(x), d(x)
    g.to(memory_format=CL)
    d.to(memory_format=CL)
    out_g, out_d = g(x.contiguous(memory_format=CL)), d(x.contiguous(memory_format=CL))
    assert out_g.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out_g, ref_g, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_d, ref_d, rtol=1e-4, atol=1e-5)


@needs_bf16
def test_bf16_fast_path_stays_bf16_channels_last_and_matches_the_plain_modules():
    g, plain = _pair()
    g.to(memory_format=CL)
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).contiguous(memory_format=CL)
    seen = []
    g.model[7].pad.register_forward_hook(lambda m, i, o: seen.append(o))  # the first Downsample's pad
    with torch.inference_mode():
        exact = plain(x)  # float32
        with torch.autocast("cpu", torch.bfloat16):
            ours, ref = g(x), plain(x)
    assert seen[0].dtype == torch.bfloat16 and seen[0].is_contiguous(memory_format=CL)
    # Both bf16 runs round at different places. The tolerance is bf16's own error: the fast path may
    # differ from the plain bf16 run by no more than twice as much as that run differs from float32
    # (measured: mean 0.008 against 0.010, max 0.06 against 0.07; nearest-neighbour instead of
    # bilinear up-sampling: mean 0.27, max 1.5).
    noise, diff = (ref.float() - exact).abs(), (ours.float() - ref.float()).abs()
    assert exact.std() > 0.3  # outputs vary: a wrong layer cannot hide near zero
    assert diff.mean() < 2 * noise.mean() and diff.max() < 2 * noise.max()


def test_translate_channels_last_fp32_equals_contiguous_and_keeps_the_norms():
    g, _ = _pair()
    runner = Runner(torch.device("cpu"), "fp32", channels_last=True)
    kept = layout_keeping(g, runner)
    assert not any(isinstance(m, StatsInstanceNorm) for m in kept.modules())  # the fast norm keeps the layout
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (36, 44, 3), dtype=np.uint8))
    a = np.asarray(translate(g, image, channels_last=True), dtype=int)
    b = np.asarray(translate(g, image, channels_last=False), dtype=int)
    assert np.abs(a - b).max() <= 1


def test_downsample_pools_in_bf16_and_match_the_blur_convolution():
    torch.manual_seed(4)
    ds = layers.Downsample(8)
    for shape in ((2, 8, 12, 10), (1, 8, 9, 7)):  # even and odd sides
        x = torch.randn(*shape).contiguous(memory_format=CL)
        ref = ds(x)  # float32: the depthwise convolution
        xb = x.to(torch.bfloat16).requires_grad_()
        ours = ds(xb)
        assert ours.dtype == torch.bfloat16 and ours.shape == ref.shape
        assert ours.is_contiguous(memory_format=CL)
        # the same blur of the bf16-rounded input, within two bf16 roundings (inputs ~N(0, 1): the
        # first pool's values reach ~3, whose bf16 half-ulp is 2**-7)
        torch.testing.assert_close(ours.float(), ds(xb.detach().float()), rtol=2**-7, atol=2**-6)
        ours.float().sum().backward()
        assert xb.grad is not None and xb.grad.shape == xb.shape
    assert not layers.Downsample(8, fast=False).fast
    plain = layers.Downsample(8, fast=False)
    xb = torch.randn(1, 8, 10, 10).to(torch.bfloat16)
    torch.testing.assert_close(plain(xb), torch.nn.functional.conv2d(plain.pad(xb), plain.filt.to(xb.dtype),
                                                                     stride=2, groups=8), rtol=0, atol=0)

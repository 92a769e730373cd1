"""PatchDiscriminator: the official 70x70 PatchGAN layout and equality with the official network."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from cut_hf import PatchDiscriminator
from tests.helpers import assert_close_to, sharpen
from tests.reference.official import official_discriminator

BLUR_DOWN = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


def layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def meta_discriminator(**kwargs) -> PatchDiscriminator:
    with torch.device("meta"):
        return PatchDiscriminator(**kwargs)


def test_default_discriminator_has_the_official_keys():
    # conv 4x4 (stride 1) + LeakyReLU + blur-pool, twice more with norm, then two stride-1 convs.
    assert layout(meta_discriminator()) == [
        ("model.0.weight", (64, 3, 4, 4)), ("model.0.bias", (64,)), ("model.2.filt", (64, 1, 3, 3)),
        ("model.3.weight", (128, 64, 4, 4)), ("model.3.bias", (128,)), ("model.6.filt", (128, 1, 3, 3)),
        ("model.7.weight", (256, 128, 4, 4)), ("model.7.bias", (256,)), ("model.10.filt", (256, 1, 3, 3)),
        ("model.11.weight", (512, 256, 4, 4)), ("model.11.bias", (512,)),
        ("model.14.weight", (1, 512, 4, 4)), ("model.14.bias", (1,))]
    d = meta_discriminator()
    assert sorted(k for k, _ in d.named_buffers()) == ["model.10.filt", "model.2.filt", "model.6.filt"]
    by_hand = (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512) * 16 + 64 + 128 + 256 + 512 + 1
    assert sum(p.numel() for p in d.parameters()) == by_hand == 2_764_737


def test_discriminator_without_antialiasing_has_the_pix2pix_layout():
    d = meta_discriminator(antialias=False)
    assert layout(d) == [
        ("model.0.weight", (64, 3, 4, 4)), ("model.0.bias", (64,)), ("model.2.weight", (128, 64, 4, 4)),
        ("model.2.bias", (128,)), ("model.5.weight", (256, 128, 4, 4)), ("model.5.bias", (256,)),
        ("model.8.weight", (512, 256, 4, 4)), ("model.8.bias", (512,)),
        ("model.11.weight", (1, 512, 4, 4)), ("model.11.bias", (1,))]
    assert [m.stride for m in d.modules() if isinstance(m, nn.Conv2d)] == [(2, 2)] * 3 + [(1, 1)] * 2


def test_patch_map_of_a_256_image_is_30x30():
    # The 70x70 PatchGAN gives 30x30 logits on 256x256 images, anti-aliased or not.
    for antialias in (True, False):
        d = meta_discriminator(antialias=antialias)
        assert d(torch.empty(2, 3, 256, 256, device="meta")).shape == (2, 1, 30, 30)


@pytest.mark.parametrize("kwargs", [
    dict(), dict(antialias=False), dict(n_layers=2), dict(n_layers=4), dict(norm="batch"), dict(norm="none"),
    dict(input_nc=1)])
def test_discriminator_equals_the_official(kwargs):
    # At the paper's init a norm-free network's output is ~1e-10: weights at He scale (sharpen) make
    # it O(1), so a changed slope, layer or norm shows far above float32 rounding (rel 1e-5).
    cfg = dict(ndf=4, **kwargs)
    ref = sharpen(official_discriminator(**cfg, seed=2)).eval()
    ours = PatchDiscriminator(**cfg).eval()
    assert layout(ours) == layout(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(2, cfg.get("input_nc", 3), 64, 64) * 2 - 1
    with torch.no_grad():
        assert_close_to(ours(x), ref(x), rel=1e-5)


def test_init_is_xavier_gain_002_zero_bias_and_binomial_blur():
    torch.manual_seed(0)
    d = PatchDiscriminator()
    for name, m in d.named_modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight.detach()
            fan_in, fan_out = w.shape[1] * 16, w.shape[0] * 16
            expected = 0.02 * math.sqrt(2.0 / (fan_in + fan_out))
            assert abs(w.std().item() / expected - 1) < max(4 / math.sqrt(2 * w.numel()), 0.02), name
            assert torch.count_nonzero(m.bias) == 0, name
    for key in ("model.2.filt", "model.6.filt", "model.10.filt"):
        filt = d.state_dict()[key]
        assert torch.equal(filt, BLUR_DOWN.expand_as(filt)), key


def test_bad_norm_is_refused():
    with pytest.raises(ValueError, match="norm"):
        PatchDiscriminator(ndf=4, norm="layer")

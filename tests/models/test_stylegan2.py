"""SinCUT's StyleGAN2 networks: the official layout, equality with the official networks, PatchNCE interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cut_hf import PatchSampler, StyleGAN2Discriminator, StyleGAN2Generator, Tiling, translate
from tests.reference.official_sincut import StyleGAN2Discriminator as OfficialD
from tests.reference.official_sincut import StyleGAN2Generator as OfficialG


def layout(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero biases (they start at zero) so that the equality tests see them; noise weights stay 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def test_default_generator_has_the_39_official_keys_and_3_068_404_parameters():
    g = StyleGAN2Generator()
    keys = layout(g)
    assert len(keys) == 39 and n_params(g) == 3_068_404
    # ngf 10 at 64 px: 80 channels at 64 px, 160 at 32 px; written out by hand for a few keys.
    assert keys[:9] == [
        ("encoder.convs.1.0.weight", (80, 3, 1, 1)), ("encoder.convs.1.1.bias", (1, 80, 1, 1)),
        ("encoder.convs.2.conv1.0.weight", (80, 80, 3, 3)), ("encoder.convs.2.conv1.1.bias", (1, 80, 1, 1)),
        ("encoder.convs.2.conv2.0.kernel", (4, 4)), ("encoder.convs.2.conv2.1.weight", (160, 80, 3, 3)),
        ("encoder.convs.2.conv2.2.bias", (1, 160, 1, 1)), ("encoder.convs.2.skip.0.kernel", (4, 4)),
        ("encoder.convs.2.skip.1.weight", (160, 80, 1, 1))]
    assert keys[-6:] == [
        ("decoder.convs.3.conv.weight", (1, 80, 160, 3, 3)), ("decoder.convs.3.conv.blur.kernel", (4, 4)),
        ("decoder.convs.3.noise.weight", (1,)), ("decoder.convs.3.activate.bias", (1, 80, 1, 1)),
        ("decoder.convs.4.0.weight", (3, 80, 1, 1)), ("decoder.convs.4.1.bias", (1, 3, 1, 1))]
    assert layout(OfficialG()) == keys


def test_default_discriminator_has_the_36_official_keys_and_5_885_473_parameters():
    d = StyleGAN2Discriminator()
    keys = layout(d)
    assert len(keys) == 36 and n_params(d) == 5_885_473
    assert keys[:2] == [("convs.0.0.weight", (32, 3, 1, 1)), ("convs.0.1.bias", (1, 32, 1, 1))]
    assert ("convs.4.skip.1.weight", (384, 256, 1, 1)) in keys
    assert keys[-6:] == [
        ("final_conv.0.weight", (384, 384, 3, 3)), ("final_conv.1.bias", (1, 384, 1, 1)),
        ("final_linear.0.weight", (384, 6144)), ("final_linear.0.bias", (384,)),
        ("final_linear.1.weight", (1, 384)), ("final_linear.1.bias", (1,))]
    assert layout(OfficialD()) == keys


def test_crop_128_ngf_8_layouts_match_the_official():
    g, d = StyleGAN2Generator(ngf=8, crop_size=128), StyleGAN2Discriminator(ndf=8, crop_size=128)
    assert layout(g) == layout(OfficialG(ngf=8, crop_size=128)) and len(layout(g)) == 39
    assert layout(d) == layout(OfficialD(ndf=8, crop_size=128)) and len(layout(d)) == 43
    assert (n_params(g), n_params(d)) == (491_620, 5_892_881)
    assert g.feature_channels() == [3, 64, 64]


@pytest.mark.parametrize("kwargs", [{}, {"ngf": 8, "crop_size": 32, "num_downsampling": 2, "n_blocks": 2}])
def test_generator_equals_the_official_with_copied_weights(kwargs):
    torch.manual_seed(0)
    ours = perturbed(StyleGAN2Generator(nce_layers=(0, 1, 2), **kwargs))
    official = OfficialG(**kwargs)
    official.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        ref_out, ref_feats = official(x, [0, 1, 2])
        out, feats = ours.forward_with_features(x)
        assert torch.allclose(ours(x), ref_out, atol=1e-5) and torch.allclose(out, ref_out, atol=1e-5)
        for f, r, e in zip(feats, ref_feats, ours.encode(x)):
            assert torch.allclose(f, r, atol=1e-5) and torch.equal(f, e)


def test_discriminator_equals_the_official_with_copied_weights():
    torch.manual_seed(0)
    ours = perturbed(StyleGAN2Discriminator())
    official = OfficialD()
    official.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        y = ours(x)
        assert y.shape == (3, 1) and torch.allclose(y, official(x), atol=1e-5)
    with pytest.raises(ValueError, match="64 x 64"):
        ours(torch.zeros(1, 3, 32, 32))


def test_encode_features_and_patch_sampler():
    g = StyleGAN2Generator()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        feats = g.encode(x)
    assert [tuple(f.shape) for f in feats] == [(2, 3, 64, 64), (2, 160, 32, 32), (2, 160, 32, 32)]
    assert torch.equal(feats[0], x)  # layer 0 is the input itself
    assert g.feature_channels() == [3, 160, 160] and g.nce_layers == (0, 2, 4)
    sampler = PatchSampler.for_generator(g, num_patches=1)
    samples, ids = sampler(feats)
    assert [tuple(s.shape) for s in samples] == [(2, 256)] * 3 and all(i.numel() == 1 for i in ids)
    with pytest.raises(ValueError, match="out of range"):
        StyleGAN2Generator(nce_layers=(0, 6))


def test_save_and_strict_reload_give_identical_outputs(tmp_path):
    torch.manual_seed(0)
    g = perturbed(StyleGAN2Generator(ngf=4, crop_size=32, nce_layers=(0, 3)))
    d = perturbed(StyleGAN2Discriminator(ndf=4, crop_size=32))
    g.save_pretrained(tmp_path / "g")
    d.save_pretrained(tmp_path / "d")
    g2 = StyleGAN2Generator.from_pretrained(tmp_path / "g")
    d2 = StyleGAN2Discriminator.from_pretrained(tmp_path / "d")
    assert g2.nce_layers == (0, 3) and g2.crop_size == 32
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(g(x), g2(x)) and torch.equal(d(x), d2(x))
    assert "SinCUT" in (tmp_path / "g" / "README.md").read_text()


def test_runs_on_the_cpu_without_a_style_and_never_calls_cuda(monkeypatch):
    def no_cuda(*args, **kwargs):
        raise AssertionError(".cuda() called")

    monkeypatch.setattr(torch.Tensor, "cuda", no_cuda)
    g, d = StyleGAN2Generator(ngf=4, crop_size=32), StyleGAN2Discriminator(ndf=4, crop_size=32)
    y = g(torch.zeros(1, 3, 32, 32))
    assert y.shape == (1, 3, 32, 32) and d(y).shape == (1, 1)


def test_sizes_translate_whole_images_and_tiles_exactly():
    assert StyleGAN2Generator().size_multiple == 2
    assert StyleGAN2Generator(num_downsampling=2).size_multiple == 4
    torch.manual_seed(0)
    g = perturbed(StyleGAN2Generator(ngf=4, crop_size=32))
    with torch.no_grad():
        assert g(torch.zeros(1, 3, 37, 51)).shape == (1, 3, 36, 50)  # odd sides lose a row
    for h, w in [(37, 50), (64, 96)]:
        assert translate(g, torch.rand(3, h, w) * 2 - 1).size == (w, h)
    # No normalisation layers and a receptive field under the default 64 px margin: tiles are exact.
    x = torch.rand(3, 200, 136) * 2 - 1
    whole, tiled = (np.asarray(translate(g, x, tiling=Tiling(tile=t))) for t in (0, 128))
    assert np.array_equal(whole, tiled)

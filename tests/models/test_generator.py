"""CUTGenerator: the official state-dict layout, equality with the official network, encode, init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from cut_hf import CUTGenerator
from tests.helpers import sharpen
from tests.reference.official import official_generator

# --- the layout table of DESIGN.md, written out by hand -------------------------------------
BLUR_DOWN = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
BLUR_UP = torch.tensor([[1.0, 3.0, 3.0, 1.0], [3.0, 9.0, 9.0, 3.0], [3.0, 9.0, 9.0, 3.0], [1.0, 3.0, 3.0, 1.0]]) / 64 * 4


def official_keys(n_blocks: int = 9, ngf: int = 64) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of the anti-aliased official resnet generator, in state-dict order.

    0-3 pad, conv 7x7, norm, relu | 4-7 conv, norm, relu, Downsample | 8-11 the same |
    12..12+n-1 ResnetBlocks (conv_block.1, .5) | Upsample, conv, norm, relu (twice) | pad, conv 7x7, tanh.
    """
    c1, c2, c4 = ngf, 2 * ngf, 4 * ngf
    keys = [("model.1.weight", (c1, 3, 7, 7)), ("model.1.bias", (c1,)),
            ("model.4.weight", (c2, c1, 3, 3)), ("model.4.bias", (c2,)), ("model.7.filt", (c2, 1, 3, 3)),
            ("model.8.weight", (c4, c2, 3, 3)), ("model.8.bias", (c4,)), ("model.11.filt", (c4, 1, 3, 3))]
    for b in range(12, 12 + n_blocks):
        for conv in (1, 5):
            keys += [(f"model.{b}.conv_block.{conv}.weight", (c4, c4, 3, 3)), (f"model.{b}.conv_block.{conv}.bias", (c4,))]
    up = 12 + n_blocks
    keys += [(f"model.{up}.filt", (c4, 1, 4, 4)), (f"model.{up + 1}.weight", (c2, c4, 3, 3)), (f"model.{up + 1}.bias", (c2,)),
             (f"model.{up + 4}.filt", (c2, 1, 4, 4)), (f"model.{up + 5}.weight", (c1, c2, 3, 3)),
             (f"model.{up + 5}.bias", (c1,)), (f"model.{up + 9}.weight", (3, c1, 7, 7)), (f"model.{up + 9}.bias", (3,))]
    return keys


def layout(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def meta_generator(**kwargs) -> CUTGenerator:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return CUTGenerator(**kwargs)


def test_default_generator_has_the_52_official_keys():
    expected = official_keys(9)
    assert len(expected) == 52
    # Spelled out once for the default, so the helper above cannot hide a systematic slip.
    assert expected[:8] == [
        ("model.1.weight", (64, 3, 7, 7)), ("model.1.bias", (64,)), ("model.4.weight", (128, 64, 3, 3)),
        ("model.4.bias", (128,)), ("model.7.filt", (128, 1, 3, 3)), ("model.8.weight", (256, 128, 3, 3)),
        ("model.8.bias", (256,)), ("model.11.filt", (256, 1, 3, 3))]
    assert ("model.12.conv_block.1.weight", (256, 256, 3, 3)) in expected
    assert ("model.20.conv_block.5.bias", (256,)) in expected
    assert expected[-8:] == [
        ("model.21.filt", (256, 1, 4, 4)), ("model.22.weight", (128, 256, 3, 3)), ("model.22.bias", (128,)),
        ("model.25.filt", (128, 1, 4, 4)), ("model.26.weight", (64, 128, 3, 3)), ("model.26.bias", (64,)),
        ("model.30.weight", (3, 64, 7, 7)), ("model.30.bias", (3,))]
    g = meta_generator()
    assert layout(g) == expected
    assert sorted(k for k, _ in g.named_buffers()) == ["model.11.filt", "model.21.filt", "model.25.filt", "model.7.filt"]
    assert len(g.model) == 32


@pytest.mark.parametrize("n_blocks, n_keys", [(6, 40), (4, 32)])
def test_fewer_blocks_keep_the_official_layout(n_blocks, n_keys):
    g = meta_generator(n_blocks=n_blocks)
    assert layout(g) == official_keys(n_blocks)
    assert len(g.state_dict()) == n_keys
    assert f"model.{12 + n_blocks}.filt" in g.state_dict()  # the first Upsample right after the trunk


def test_generator_without_antialiasing_has_the_cyclegan_layout():
    g = meta_generator(antialias=False, antialias_up=False)
    c = 256
    expected = [("model.1.weight", (64, 3, 7, 7)), ("model.1.bias", (64,)),
                ("model.4.weight", (128, 64, 3, 3)), ("model.4.bias", (128,)),  # stride-2 convs, no blur
                ("model.7.weight", (256, 128, 3, 3)), ("model.7.bias", (256,))]
    for b in range(10, 19):
        for conv in (1, 5):
            expected += [(f"model.{b}.conv_block.{conv}.weight", (c, c, 3, 3)), (f"model.{b}.conv_block.{conv}.bias", (c,))]
    expected += [("model.19.weight", (256, 128, 3, 3)), ("model.19.bias", (128,)),  # ConvTranspose2d: (in, out, k, k)
                 ("model.22.weight", (128, 64, 3, 3)), ("model.22.bias", (64,)),
                 ("model.26.weight", (3, 64, 7, 7)), ("model.26.bias", (3,))]
    assert layout(g) == expected
    assert not list(g.named_buffers())
    assert isinstance(g.model[19], nn.ConvTranspose2d) and g.model[4].stride == (2, 2)


def test_default_parameter_count_is_the_official_11_378_179():
    # conv7 3->64, conv3 64->128, conv3 128->256, 18 conv3 256->256, conv3 256->128, 128->64, conv7 64->3
    by_hand = (3 * 64 * 49 + 64) + (64 * 128 * 9 + 128) + (128 * 256 * 9 + 256) + 18 * (256 * 256 * 9 + 256) \
        + (256 * 128 * 9 + 128) + (128 * 64 * 9 + 64) + (64 * 3 * 49 + 3)
    assert by_hand == 11_378_179
    assert sum(p.numel() for p in meta_generator().parameters()) == by_hand


def test_dropout_and_batch_norm_layouts_match_the_official():
    for kwargs in (dict(dropout=True), dict(norm="batch"), dict(norm="none")):
        ours = layout(meta_generator(ngf=4, n_blocks=2, **kwargs))
        theirs = layout(official_generator(ngf=4, n_blocks=2, **kwargs))
        assert ours == theirs, kwargs
    assert "model.12.conv_block.6.weight" in dict(layout(meta_generator(ngf=4, n_blocks=2, dropout=True)))
    assert "model.1.bias" not in dict(layout(meta_generator(ngf=4, n_blocks=2, norm="batch")))


# --- numerical equality with the official network ------------------------------------------
NCE_LAYERS = [0, 4, 8, 12, 16]


@pytest.mark.parametrize("antialias, antialias_up, n_blocks", [
    (True, True, 9), (True, True, 4), (False, False, 6), (True, False, 6), (False, True, 4)])
def test_forward_and_encode_equal_the_official_generator(antialias, antialias_up, n_blocks, images):
    cfg = dict(ngf=4, n_blocks=n_blocks, antialias=antialias, antialias_up=antialias_up)
    ref = official_generator(**cfg, seed=3).eval()
    ours = CUTGenerator(**cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        ref_out = ref(images)
        ref_encode_only = ref(images, NCE_LAYERS, encode_only=True)
        ref_full_out, ref_feats = ref(images, NCE_LAYERS)
        out = ours(images)
        feats = ours.encode(images)
        out2, feats2 = ours.forward_with_features(images)
    assert out.shape == images.shape
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-6)
    torch.testing.assert_close(out2, ref_full_out, rtol=0, atol=1e-6)
    assert len(feats) == len(feats2) == len(ref_feats) == 5
    for f, f2, r in zip(feats, feats2, ref_feats):
        assert f.shape == r.shape
        torch.testing.assert_close(f, r, rtol=0, atol=1e-6)
        torch.testing.assert_close(f2, r, rtol=0, atol=1e-6)
    # encode_only agrees too, except where the original skips the in-place ReLU after a last
    # layer that is a norm (16 with 4 blocks and stride-2 convs): see CUTGenerator.encode.
    last_is_norm = isinstance(ours.model[16], nn.InstanceNorm2d)
    assert last_is_norm == (n_blocks == 4 and not antialias)
    for f, r in zip(feats[:4] if last_is_norm else feats, ref_encode_only):
        torch.testing.assert_close(f, r, rtol=0, atol=1e-6)


def test_gradients_equal_the_official_generator(images):
    ref = official_generator(ngf=4, n_blocks=2, seed=5)
    ours = CUTGenerator(ngf=4, n_blocks=2)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref(images).square().mean().backward()
    ours(images).square().mean().backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-8, msg=name)


def test_official_state_dict_loads_strictly_into_the_default_generator():
    with torch.device("meta"):  # full size, but shapes only: the check is names, shapes and buffers
        ref = official_generator()
        ours = CUTGenerator()
    result = ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


# --- encode ----------------------------------------------------------------------------------
def test_encode_stops_after_the_last_requested_layer(images):
    g = CUTGenerator(ngf=4, n_blocks=5).eval()  # layer 16 is the 5th ResnetBlock
    called: list[int] = []
    for i, layer in enumerate(g.model):
        layer.register_forward_hook(lambda *_, i=i: called.append(i))
    feats = g.encode(images, layers=[4, 0])
    assert called == [0, 1, 2, 3, 4]  # nothing after layer 4 ran
    assert [f.shape[1] for f in feats] == [3, 8]  # index order, whatever order was asked
    called.clear()
    g.encode(images)
    assert called == list(range(17))  # default nce_layers end at 16: the decoder never runs
    called.clear()
    g.encode(images, layers=[2])
    assert called == [0, 1, 2, 3]  # a norm's in-place ReLU runs too (official semantics)
    called.clear()
    assert g.encode(images, layers=[]) == [] and called == []


def test_forward_with_features_equals_forward_plus_encode(tiny_generator, images):
    with torch.no_grad():
        out, feats = tiny_generator.forward_with_features(images)
        assert torch.equal(out, tiny_generator(images))
        for a, b in zip(feats, tiny_generator.encode(images), strict=True):
            assert torch.equal(a, b)


def test_encode_follows_the_official_inplace_relu_semantics(tiny_generator, images):
    # Layer 2 is a norm and layer 3 an in-place ReLU, which overwrites the stored feature: the
    # official code returns the ReLU's output there (official netF weights expect exactly that).
    # We do so even when the norm is the last layer asked for, so encode == forward_with_features.
    ref = official_generator(ngf=4, n_blocks=2).eval()
    ref.load_state_dict(tiny_generator.state_dict())
    with torch.no_grad():
        after_relu = tiny_generator.model[:4](images)
        (feat,) = tiny_generator.encode(images, layers=[2])
        _, (again,) = tiny_generator.forward_with_features(images, layers=[2])
        official, _ = ref(images, [2, 4], encode_only=True)
        official_full = ref(images, [2])[1][0]
    assert (after_relu >= 0).all()
    for t in (feat, again, official, official_full):
        assert torch.equal(t, after_relu)


def test_encode_rejects_layers_out_of_range(tiny_generator, images):
    n = len(tiny_generator.model)
    with pytest.raises(ValueError, match="out of range"):
        tiny_generator.encode(images, layers=[0, n])
    with pytest.raises(ValueError, match="out of range"):
        tiny_generator.forward_with_features(images, layers=[-1])
    with pytest.raises(ValueError, match="out of range"):
        CUTGenerator(ngf=4, n_blocks=2, nce_layers=(0, 99))


def test_feature_channels_match_encode(tiny_generator, images):
    feats = tiny_generator.encode(images)
    assert tiny_generator.feature_channels() == [f.shape[1] for f in feats] == [3, 8, 16, 16, 8]
    assert meta_generator().feature_channels() == [3, 128, 256, 256, 256]


def test_output_is_tanh_range_and_size_preserved(tiny_generator):
    # Weights at He scale, so the last layer's input spans the whole tanh (at the paper's init it stays
    # within ~0.01 of zero, where tanh, hardtanh and the identity agree): the output must be tanh of
    # the last convolution's output, not merely bounded by 1.
    g = sharpen(tiny_generator)
    x = torch.rand(1, 3, 36, 20) * 2 - 1  # multiples of 4, not square
    with torch.no_grad():
        y, pre = g(x), g.model[:-1](x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert pre.abs().max() > 2 and (pre.abs() < 0.5).float().mean() > 0.1  # both the saturated and the linear part
    torch.testing.assert_close(y, torch.tanh(pre), rtol=0, atol=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="norm"):
        CUTGenerator(ngf=4, n_blocks=1, norm="group")
    with pytest.raises(ValueError, match="n_blocks"):
        CUTGenerator(ngf=4, n_blocks=-1)


# --- initialisation ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_generator() -> CUTGenerator:
    torch.manual_seed(0)
    return CUTGenerator()


def test_init_is_xavier_normal_gain_002_with_zero_bias(default_generator):
    for name, m in default_generator.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        w = m.weight.detach()
        receptive = w[0, 0].numel()
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        expected_std = 0.02 * math.sqrt(2.0 / (fan_in + fan_out))
        rel = 4 / math.sqrt(2 * w.numel())  # ~4 standard errors of a sample std
        assert abs(w.std().item() / expected_std - 1) < max(rel, 0.02), name
        assert abs(w.mean().item()) < 4 * expected_std / math.sqrt(w.numel()), name
        # Normal, not uniform with the same std (Xavier-uniform stops at 1.73 std): 4.55% beyond 2 std.
        beyond = (w.abs() > 2 * expected_std).float().mean().item()
        assert abs(beyond - 0.0455) < 4 * math.sqrt(0.0455 / w.numel()) + 0.002, name
        assert torch.count_nonzero(m.bias) == 0, name


def test_init_of_batch_norm_scales_is_normal_1_002():
    torch.manual_seed(0)
    g = CUTGenerator(ngf=16, n_blocks=4, norm="batch")
    scales = torch.cat([m.weight.detach() for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    shifts = torch.cat([m.bias.detach() for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(scales.mean().item() - 1) < 4 * 0.02 / math.sqrt(scales.numel())  # N(1, 0.02), as the paper's init
    assert abs(scales.std().item() / 0.02 - 1) < 4 / math.sqrt(2 * scales.numel())
    assert torch.count_nonzero(shifts) == 0


def test_init_leaves_the_blur_filters_binomial(default_generator):
    sd = default_generator.state_dict()
    for key, filt in [("model.7.filt", BLUR_DOWN), ("model.11.filt", BLUR_DOWN),
                      ("model.21.filt", BLUR_UP), ("model.25.filt", BLUR_UP)]:
        assert torch.equal(sd[key], filt.expand_as(sd[key])), key


def test_init_is_seeded():
    torch.manual_seed(7)
    a = CUTGenerator(ngf=4, n_blocks=1).state_dict()
    torch.manual_seed(7)
    b = CUTGenerator(ngf=4, n_blocks=1).state_dict()
    torch.manual_seed(8)
    c = CUTGenerator(ngf=4, n_blocks=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.1.weight"], c["model.1.weight"])

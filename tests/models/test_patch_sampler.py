"""PatchSampler (the official netF): keys, equality with the official PatchSampleF, sampling rules."""

from __future__ import annotations

import pytest
import torch

from cut_hf import CUTGenerator, PatchSampler, nce_channels
from tests.reference.official import PatchSampleF


def feature_maps(channels=(3, 8, 16), size=(12, 10), batch=2, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, *size, generator=g) for c in channels]


def test_default_sampler_has_the_official_keys():
    with torch.device("meta"):
        sampler = PatchSampler()
    expected = []
    for i, c in enumerate([3, 128, 256, 256, 256]):
        expected += [(f"mlp_{i}.0.weight", (256, c)), (f"mlp_{i}.0.bias", (256,)),
                     (f"mlp_{i}.2.weight", (256, 256)), (f"mlp_{i}.2.bias", (256,))]
    assert [(k, tuple(v.shape)) for k, v in sampler.state_dict().items()] == expected


def test_channels_from_a_generator_config_or_instance():
    assert nce_channels({}) == [3, 128, 256, 256, 256]
    assert nce_channels(dict(ngf=8, n_blocks=9, input_nc=1)) == [1, 16, 32, 32, 32]
    g = CUTGenerator(ngf=4, n_blocks=2, nce_layers=(0, 4, 8))
    sampler = PatchSampler.for_generator(g, num_patches=32, nc=16)
    assert sampler.in_channels == [3, 8, 16] and sampler.num_patches == 32 and sampler.nc == 16
    feats, _ = sampler(g.encode(torch.rand(1, 3, 16, 16)))
    assert [f.shape for f in feats] == [(32, 16)] * 3


@pytest.mark.parametrize("use_mlp", [True, False])
def test_sampler_equals_the_official_patch_sample_f(use_mlp):
    feats = feature_maps()
    ref = PatchSampleF(use_mlp=use_mlp, nc=8)
    torch.manual_seed(1)
    ref_out, ref_ids = ref(feats, num_patches=20)  # builds its MLPs lazily, then samples
    ours = PatchSampler([3, 8, 16], num_patches=20, nc=8, use_mlp=use_mlp)
    ours.load_state_dict(ref.state_dict(), strict=True)
    out, ids = ours(feats, patch_ids=ref_ids)
    for o, r, i, ri in zip(out, ref_out, ids, ref_ids, strict=True):
        assert o.shape == r.shape == (2 * 20, 8 if use_mlp else r.shape[1])
        torch.testing.assert_close(o, r, rtol=0, atol=1e-6)
        assert torch.equal(i, ri)
    # Translated-image features are sampled at the ids drawn for the source image, as in CUT.
    feats_q = feature_maps(seed=5)
    ref_q, _ = ref(feats_q, num_patches=20, patch_ids=ref_ids)
    out_q, _ = ours(feats_q, patch_ids=ids)
    for o, r in zip(out_q, ref_q):
        torch.testing.assert_close(o, r, rtol=0, atol=1e-6)


def test_samples_are_image_major_mlp_projections_at_the_ids():
    feats = feature_maps()
    sampler = PatchSampler([3, 8, 16], num_patches=7, nc=8)
    out, ids = sampler(feats)
    for layer, (feat, o, idx) in enumerate(zip(feats, out, ids)):
        b, _, h, w = feat.shape
        assert idx.shape == (7,) and len(set(idx.tolist())) == 7 and int(idx.max()) < h * w
        for img in range(b):
            for s, loc in enumerate(idx.tolist()):
                y, x = divmod(loc, w)  # locations are row-major over (H, W)
                z = sampler.mlp(layer)(feat[img, :, y, x])
                torch.testing.assert_close(o[img * 7 + s], z / (z.norm() + 1e-7), rtol=1e-5, atol=1e-6)
        # Unit length up to the eps of 1e-7 added to the norm (MLP outputs are ~1e-4 at init).
        torch.testing.assert_close(o.norm(dim=1), torch.ones(b * 7), rtol=0, atol=5e-3)


def test_patch_ids_reproduce_and_the_generator_seeds_them():
    feats = feature_maps()
    sampler = PatchSampler([3, 8, 16], num_patches=10, nc=8)
    a, ids = sampler(feats, generator=torch.Generator().manual_seed(3))
    b, ids_b = sampler(feats, generator=torch.Generator().manual_seed(3))
    c, ids_c = sampler(feats, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(ids, ids_b))
    assert not all(torch.equal(x, y) for x, y in zip(ids, ids_c))
    again, ids_again = sampler(feats, patch_ids=ids)
    assert all(torch.equal(x, y) for x, y in zip(a, again))
    assert all(torch.equal(x, y) for x, y in zip(ids, ids_again))


def test_num_patches_is_capped_by_the_map_size_and_overridable():
    feats = feature_maps(size=(3, 3))
    sampler = PatchSampler([3, 8, 16], num_patches=256, nc=8)
    out, ids = sampler(feats)
    assert [o.shape[0] for o in out] == [2 * 9] * 3 and [len(i) for i in ids] == [9] * 3
    out, ids = sampler(feats, num_patches=4)
    assert [o.shape[0] for o in out] == [8] * 3


def test_num_patches_zero_returns_whole_normalised_maps():
    feats = feature_maps()
    sampler = PatchSampler([3, 8, 16], nc=32)  # 32 hidden units: an all-zero ReLU layer is unlikely
    maps, ids = sampler(feats, num_patches=0)
    for feat, m, i in zip(feats, maps, ids):
        b, _, h, w = feat.shape
        assert m.shape == (b, 32, h, w)
        # Each location is normalised over channels (the original normalised over locations here,
        # which made its whole-map mode unusable); it equals sampling every location in order.
        torch.testing.assert_close(m.norm(dim=1), torch.ones(b, h, w), rtol=0, atol=5e-3)
        assert torch.equal(i, torch.arange(h * w))
    every, _ = sampler(feats, patch_ids=ids)
    for m, e in zip(maps, every):
        b, c, h, w = m.shape
        torch.testing.assert_close(m.permute(0, 2, 3, 1).reshape(-1, c), e, rtol=0, atol=1e-6)


def test_init_is_xavier_gain_002_zero_bias():
    torch.manual_seed(0)
    sampler = PatchSampler()
    w = sampler.mlp_4[2].weight.detach()  # 256 x 256: std 0.02 * sqrt(2 / 512)
    assert abs(w.std().item() / (0.02 * (2 / 512) ** 0.5) - 1) < 0.02
    assert all(torch.count_nonzero(m.bias) == 0 for m in sampler.modules() if isinstance(m, torch.nn.Linear))


def test_bad_inputs_are_refused():
    sampler = PatchSampler([3, 8, 16], nc=8)
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        sampler(feature_maps()[:2])
    with pytest.raises(ValueError, match="channels"):
        sampler(feature_maps(channels=(3, 8, 12)))

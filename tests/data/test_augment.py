"""SimCLRAugment: the paper's statistics, seeding, reporting and replay of the sampled parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from cut_hf import SimCLRAugment
from cut_hf.data.augment import PRESETS, ViewParams, blur_kernel_size, to_rgb_tensor

DRAWS = 3000  # parameter draws only (no pixels): milliseconds each


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A 48x40 RGB image with structure in every channel."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    arr[:, :24, 0] = 250  # a red left half makes crops and flips visible
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def draws() -> list[ViewParams]:
    aug = SimCLRAugment(size=32)
    g = torch.Generator().manual_seed(123)
    return [aug.sample_params(300, 400, g) for _ in range(DRAWS)]


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags)


def _close(rate: float, p: float) -> bool:
    """Within 4.5 binomial standard deviations over DRAWS draws (false alarm rate ~1e-5)."""
    return abs(rate - p) <= 4.5 * (p * (1 - p) / DRAWS) ** 0.5


def test_crop_areas_and_aspect_ratios_follow_the_paper(draws):
    areas = np.array([p.crop_area_fraction for p in draws])
    assert areas.min() >= 0.08 and areas.max() <= 1.0
    # Area is drawn uniformly in [0.08, 1] before the box is fitted: the bulk spans the whole range.
    assert np.quantile(areas, 0.1) < 0.3 and np.quantile(areas, 0.9) > 0.7
    ratios = np.array([p.crop[3] / p.crop[2] for p in draws])  # width / height
    fitted = areas < 0.99  # the fallback (whole image) keeps the image's own ratio
    assert ratios[fitted].min() > 3 / 4 * 0.9 and ratios[fitted].max() < 4 / 3 * 1.1
    for p in draws[:500]:
        top, left, h, w = p.crop
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400


def test_operation_rates_match_the_paper(draws):
    assert _close(_rate([p.flip for p in draws]), 0.5)
    assert _close(_rate([p.jitter for p in draws]), 0.8)
    assert _close(_rate([p.grayscale for p in draws]), 0.2)
    assert _close(_rate([p.blur for p in draws]), 0.5)


def test_jitter_blur_parameters_in_range_and_order_random(draws):
    orders = set()
    for p in draws:
        if not p.jitter:
            assert p.jitter_ops == []
            continue
        names = [n for n, _ in p.jitter_ops]
        assert sorted(names) == sorted(["brightness", "contrast", "saturation", "hue"])  # each once
        orders.add(tuple(names))
        for name, f in p.jitter_ops:
            if name == "hue":
                assert -0.2 <= f <= 0.2
            else:
                assert 0.2 <= f <= 1.8  # 1 -+ 0.8 s with s = 1
        if p.blur:
            assert 0.1 <= p.sigma <= 2.0 and p.kernel_size == 3
        else:
            assert p.sigma is None
    assert len(orders) == 24  # all 4! orders occur: the order is random, as the paper's


def test_blur_kernel_is_ten_percent_of_the_side_and_odd():
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(32) == 3
    assert blur_kernel_size(96) % 2 == 1
    assert SimCLRAugment(size=224).kernel_size == 23


def test_same_seed_same_views_other_seed_other_views(photo):
    a = SimCLRAugment(size=24, seed=7)(photo)
    b = SimCLRAugment(size=24, seed=7)(photo)
    c = SimCLRAugment(size=24, seed=8)(photo)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])  # the two views are independent draws
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    aug = SimCLRAugment(size=24)
    d, e = aug(photo, generator=g1), aug(photo, generator=g2)
    assert torch.equal(d[0], e[0]) and torch.equal(d[1], e[1])


def test_global_rng_is_never_used(photo):
    state = torch.get_rng_state()
    aug = SimCLRAugment(size=24, seed=0)
    for _ in range(5):
        aug(photo)
    assert torch.equal(torch.get_rng_state(), state)


def test_reported_params_replay_to_the_identical_view(photo):
    aug = SimCLRAugment(size=24, seed=11)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        (v1, v2), (p1, p2) = aug(photo, generator=g, return_params=True)
        restored = ViewParams.from_dict(json.loads(json.dumps(p1.to_dict())))  # as the app would store it
        assert restored == p1
        assert torch.equal(aug.apply(photo, restored), v1)
        assert torch.equal(aug.apply(photo, p2), v2)


def test_views_are_float_rgb_in_unit_range_and_grayscale_is_gray(photo):
    aug = SimCLRAugment(size=24, seed=0)
    g = torch.Generator().manual_seed(5)
    seen_gray = False
    for _ in range(30):
        view, p = aug.view(photo, g)
        assert view.shape == (3, 24, 24) and view.dtype == torch.float32
        assert 0.0 <= float(view.min()) and float(view.max()) <= 1.0
        if p.grayscale:
            seen_gray = True
            assert torch.allclose(view[0], view[1]) and torch.allclose(view[1], view[2])
    assert seen_gray


def test_crop_and_flip_move_the_pixels_they_report(photo):
    """A crop inside the red half is red; flipping it mirrors the columns."""
    aug = SimCLRAugment(size=16, jitter=False, grayscale=False, blur=False)
    inside = ViewParams(source_size=(40, 48), crop=(5, 2, 20, 20))
    v = aug.apply(photo, inside)
    assert float(v[0].min()) > 0.9  # red channel of the red half
    flipped = aug.apply(photo, ViewParams(source_size=(40, 48), crop=(5, 14, 20, 20), flip=True))
    plain = aug.apply(photo, ViewParams(source_size=(40, 48), crop=(5, 14, 20, 20)))
    assert torch.equal(flipped, TF.horizontal_flip(plain))
    assert float(plain[0, :, :5].mean()) > float(plain[0, :, -5:].mean())  # red on the left before the flip


def test_jitter_factors_are_applied_in_the_reported_order(photo):
    aug = SimCLRAugment(size=16, grayscale=False, blur=False)
    base = ViewParams(source_size=(40, 48), crop=(0, 0, 40, 48), jitter=True)
    ops = [("brightness", 1.5), ("contrast", 0.5), ("saturation", 0.3), ("hue", 0.1)]
    a = aug.apply(photo, ViewParams(**{**base.__dict__, "jitter_ops": ops}))
    b = aug.apply(photo, ViewParams(**{**base.__dict__, "jitter_ops": ops[::-1]}))
    assert not torch.allclose(a, b, atol=1e-3)  # the order matters, so it must be reported
    x = aug.apply(photo, base)  # no ops: the resized crop
    for name, f in ops:
        x = getattr(TF, f"adjust_{name}")(x, f)
    assert torch.equal(a, x)


def test_cifar_preset_and_per_operation_controls():
    cifar = SimCLRAugment.from_preset("cifar", seed=0)
    assert PRESETS["cifar"]["jitter_strength"] == 0.5
    assert cifar.size == 32 and cifar.blur is False
    assert (cifar.brightness, cifar.contrast, cifar.saturation, cifar.hue) == pytest.approx((0.4, 0.4, 0.4, 0.1))
    g = torch.Generator().manual_seed(0)
    ps = [cifar.sample_params(40, 40, g) for _ in range(500)]
    assert not any(p.blur for p in ps)
    assert all(0.6 <= f <= 1.4 for p in ps for n, f in p.jitter_ops if n != "hue")

    off = SimCLRAugment(size=16, crop=False, flip=False, jitter=False, grayscale=False, blur=False)
    ps = [off.sample_params(30, 50, g) for _ in range(50)]
    assert all(p.crop == (0, 10, 30, 30) and not (p.flip or p.jitter or p.grayscale or p.blur) for p in ps)

    custom = SimCLRAugment(size=16, crop_scale=(0.5, 0.6), jitter_p=1.0, grayscale_p=1.0, blur_p=1.0,
                           blur_sigma=(1.0, 1.5), hue=0.0, jitter_strength=0.25)
    ps = [custom.sample_params(100, 100, g) for _ in range(200)]
    assert all(0.5 <= p.crop_area_fraction <= 0.6 for p in ps)
    assert all(p.jitter and p.grayscale and p.blur and 1.0 <= p.sigma <= 1.5 for p in ps)
    assert all([n for n, _ in p.jitter_ops].count("hue") == 0 and len(p.jitter_ops) == 3 for p in ps)
    assert all(0.8 <= f <= 1.2 for p in ps for _, f in p.jitter_ops)
    assert custom.config()["crop_scale"] == [0.5, 0.6]


@pytest.mark.parametrize("kwargs", [dict(flip_p=1.5), dict(crop_scale=(0.9, 0.1)), dict(hue=0.7),
                                    dict(jitter_strength=-1), dict(size=0), dict(interpolation="lanczos3"),
                                    dict(blur_sigma=(2.0, 1.0))])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        SimCLRAugment(**kwargs)


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="preset"):
        SimCLRAugment.from_preset("imagenet21k")


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16"])
def test_any_pil_mode_gives_rgb_views(mode):
    img = Image.new("RGB", (20, 18), (200, 40, 10)).convert(mode)
    v1, v2 = SimCLRAugment(size=12, seed=0)(img)
    assert v1.shape == v2.shape == (3, 12, 12)
    assert 0.0 <= float(v1.min()) and float(v1.max()) <= 1.0


def test_tensor_and_array_inputs():
    u8 = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8)
    assert torch.equal(to_rgb_tensor(u8), u8)  # uint8 stays uint8 until the views are cut
    assert to_rgb_tensor(np.zeros((20, 20), np.uint8)).shape == (3, 20, 20)
    v, _ = SimCLRAugment(size=8, seed=0)(u8.float() / 255)
    assert v.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        to_rgb_tensor(torch.zeros(5, 8, 8))
    with pytest.raises(TypeError):
        to_rgb_tensor("not an image")
    with pytest.raises(ValueError, match="sampled for"):
        SimCLRAugment(size=8).apply(u8, ViewParams(source_size=(10, 10), crop=(0, 0, 5, 5)))

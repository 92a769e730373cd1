"""cut_hf.data.sources and cut_hf.data.unpaired: sources, the paper's preprocessing, unpaired sampling across processes, bad files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers import make_images
from PIL import Image

from cut_hf.data.sources import DataError, FolderImages, check_enough_images, load_domains
from cut_hf.data.unpaired import (
    Preprocess,
    UnpairedImageDataset,
    UnpairedSampler,
    collate,
    make_dataloader,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "mode, size_hw, expected_hw",
    [
        ("resize_and_crop", (40, 60), (32, 32)),  # load 36x36 -> crop 32
        ("crop", (40, 60), (32, 32)),
        ("crop", (20, 60), (32, 32)),  # too small to crop: scaled up first
        ("scale_width", (40, 60), (32, 36)),  # width -> 36, height max(36*40/60=24, crop 32) = 32
        ("scale_width", (90, 60), (56, 36)),  # height 36*90/60 = 54 -> snapped like the original: round(13.5) * 4
        ("scale_width_and_crop", (90, 60), (32, 32)),
        ("none", (43, 51), (44, 52)),  # only snapped to multiples of 4
    ],
)
def test_preprocess_modes_sizes(mode, size_hw, expected_hw):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size_hw, 3), dtype=np.uint8))
    x = Preprocess(mode, load_size=36, crop_size=32)(img, gen())
    h, w = expected_hw
    assert x.shape == (3, h, w) and x.dtype == torch.float32
    assert x.shape[1] % 4 == 0 and x.shape[2] % 4 == 0
    assert -1.0 <= x.min() and x.max() <= 1.0 and x.min() < -0.5 and x.max() > 0.5


def test_preprocess_matches_pil_resize_then_crop_and_flip():
    """resize_and_crop is PIL bicubic resize to load x load, a crop, an optional flip, scaled to [-1, 1]."""
    arr = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    resized = np.asarray(img.resize((36, 36), Image.BICUBIC)).astype(np.float32)
    pre = Preprocess("resize_and_crop", 36, 32, flip=False)
    x = pre(img, gen(3))
    g = gen(3)  # replay the draws: x offset, then y offset
    ox, oy = int(torch.randint(0, 5, (), generator=g)), int(torch.randint(0, 5, (), generator=g))
    expected = torch.from_numpy(resized[oy:oy + 32, ox:ox + 32]).permute(2, 0, 1) / 127.5 - 1
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
    # Finetune epochs load at the crop size: the whole image resized, nothing cropped.
    whole = torch.from_numpy(np.asarray(img.resize((32, 32), Image.BICUBIC)).astype(np.float32)).permute(2, 0, 1)
    torch.testing.assert_close(pre(img, gen(3), finetune=True), whole / 127.5 - 1, atol=1e-6, rtol=0)


def test_flip_is_random_and_switchable():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    plain = Preprocess("none", 32, 32, flip=False)(img, gen())
    flips = [Preprocess("none", 32, 32, flip=True)(img, gen(s)) for s in range(40)]
    n_flipped = sum(torch.equal(f, plain.flip(2)) for f in flips)
    n_plain = sum(torch.equal(f, plain) for f in flips)
    assert n_flipped + n_plain == 40 and 8 <= n_flipped <= 32


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "PA", "CMYK", "I;16", "I", "F", "1"])
@pytest.mark.parametrize("channels", [1, 3])
def test_any_mode_becomes_input_nc_channels(mode, channels):
    rgb = Image.fromarray(np.random.default_rng(3).integers(0, 256, (36, 36, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
    elif mode == "I":
        img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.int32) * 257)
    elif mode == "F":
        img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.float32) / 255)
    elif mode == "PA":
        img = rgb.convert("P").convert("PA")
    else:
        img = rgb.convert(mode)
    x = Preprocess("none", 36, 36, flip=False, channels=channels)(img, gen())
    assert x.shape == (channels, 36, 36)
    if mode in ("I;16", "I", "F"):  # high bit depth rescaled, not clipped at 255 (all white)
        expected = torch.from_numpy(np.asarray(rgb.convert("L")).astype(np.float32)) / 127.5 - 1
        torch.testing.assert_close(x[0], expected, atol=2 / 255 + 1e-6, rtol=0)


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    x = Preprocess("none", 8, 8, flip=False)(img, gen())
    assert torch.equal(x, torch.ones(3, 8, 8))


def test_exif_orientation_is_applied(tmp_path: Path):
    img = Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8))  # 60 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    loaded = FolderImages(tmp_path).load(0)
    assert loaded.size == (40, 60)


def test_bad_preprocess_settings():
    with pytest.raises(DataError, match="--preprocess"):
        Preprocess("zoom")
    with pytest.raises(DataError, match="larger than --load-size"):
        Preprocess("resize_and_crop", load_size=32, crop_size=64)


# ----------------------------------------------------------------------------- sources and errors


def test_data_dir_layout_and_errors(tmp_path: Path):
    root = tmp_path / "d"
    with pytest.raises(DataError, match="does not exist"):
        load_domains(data_dir=str(root))
    make_images(root / "trainA", 3)
    with pytest.raises(DataError, match="trainB.*official layout"):
        load_domains(data_dir=str(root))
    (root / "trainB").mkdir()
    (root / "trainB" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="domain B .* holds no images"):
        load_domains(data_dir=str(root))
    make_images(root / "trainB" / "nested", 2, prefix="b")  # found recursively, sorted
    a, b = load_domains(data_dir=str(root))
    assert len(a) == 3 and [b.name(i) for i in range(len(b))] == ["nested/b_0.png", "nested/b_1.png"]
    make_images(root / "testA", 1)
    make_images(root / "testB", 1)
    ta, tb = load_domains(data_dir=str(root), phase="test")
    assert len(ta) == len(tb) == 1


def test_domain_folders_and_source_errors(tmp_path: Path):
    make_images(tmp_path / "horses", 2)
    make_images(tmp_path / "zebras", 3)
    a, b = load_domains(domain_a=str(tmp_path / "horses"), domain_b=str(tmp_path / "zebras"))
    assert (len(a), len(b)) == (2, 3)
    with pytest.raises(DataError, match="together"):
        load_domains(domain_a=str(tmp_path / "horses"))
    with pytest.raises(DataError, match="exactly one way"):
        load_domains()
    with pytest.raises(DataError, match="exactly one way"):
        load_domains(data_dir=str(tmp_path), dataset="x/y")
    with pytest.raises(DataError, match="domain A folder .* does not exist"):
        load_domains(domain_a=str(tmp_path / "cats"), domain_b=str(tmp_path / "zebras"))


def test_enough_images_for_a_batch(tmp_path: Path):
    make_images(tmp_path / "a", 3)
    make_images(tmp_path / "b", 1)
    a, b = FolderImages(tmp_path / "a"), FolderImages(tmp_path / "b")
    check_enough_images(a, b, batch_size=1, num_processes=3)
    with pytest.raises(DataError, match="domain B .* 1 image\\(s\\), fewer than one batch of 2"):
        check_enough_images(a, b, batch_size=2)
    with pytest.raises(DataError, match="fewer than one batch of 1 for each of 4 processes"):
        check_enough_images(a, b, batch_size=1, num_processes=4)


def test_hf_dataset_save_to_disk_and_imagefolder(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    a = make_images(tmp_path / "imgs" / "a", 3, prefix="a")
    b = make_images(tmp_path / "imgs" / "b", 2, prefix="b")
    feats = datasets.Features({"imageA": datasets.Image(), "imageB": datasets.Image()})
    ds = datasets.Dataset.from_dict({"imageA": [str(p) for p in a], "imageB": [str(p) for p in b] + [None]},
                                    features=feats)
    ds.save_to_disk(str(tmp_path / "disk"))
    ia, ib = load_domains(dataset=str(tmp_path / "disk"), column_a="imageA", column_b="imageB")
    assert (len(ia), len(ib)) == (3, 2)  # the missing B entry is not an image
    assert np.array_equal(np.asarray(ib.load(1)), np.asarray(Image.open(b[1])))
    with pytest.raises(DataError, match="no column 'photo'"):
        load_domains(dataset=str(tmp_path / "disk"), column_a="photo")
    # A local imagefolder with two image columns (metadata *_file_name), as many Hub datasets are.
    folder = tmp_path / "imagefolder" / "train"
    folder.mkdir(parents=True)
    rows = []
    for i in range(3):
        Image.open(a[i]).save(folder / f"a{i}.png")
        Image.open(b[i % 2]).save(folder / f"b{i}.png")
        rows.append({"imageA_file_name": f"a{i}.png", "imageB_file_name": f"b{i}.png"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    fa, fb = load_domains(dataset=str(tmp_path / "imagefolder"), column_a="imageA", column_b="imageB")
    assert (len(fa), len(fb)) == (3, 3)
    assert fa.load(2).size == (44, 40)
    with pytest.raises(DataError, match="split"):
        load_domains(dataset=str(tmp_path / "imagefolder"), split="validation")


# ----------------------------------------------------------------------------- dataset and sampler


def _dataset(tmp_path: Path, n_a=5, n_b=3, seed=0) -> UnpairedImageDataset:
    a, b = FolderImages(tmp_path / "A"), FolderImages(tmp_path / "B")
    return UnpairedImageDataset(a, b, Preprocess("resize_and_crop", 36, 32), seed=seed, finetune_from_epoch=2)


@pytest.fixture
def two_domains(tmp_path: Path) -> Path:
    make_images(tmp_path / "A", 5, prefix="a", seed=1)
    make_images(tmp_path / "B", 3, prefix="b", seed=2)
    return tmp_path


def test_items_are_a_function_of_seed_epoch_index(two_domains: Path):
    ds = _dataset(two_domains)
    assert len(ds) == 5  # max(|A|, |B|)
    x, y = ds[(0, 3)], _dataset(two_domains)[(0, 3)]
    assert x["A_name"] == "a_3.png" and torch.equal(x["A"], y["A"]) and torch.equal(x["B"], y["B"])
    assert x["B_name"] == y["B_name"] and x["skipped"] == ""
    later = [ds[(e, 3)] for e in range(1, 5)]
    assert all(it["A_name"] == "a_3.png" for it in later)  # the same A image ...
    assert sum(torch.equal(it["A"], x["A"]) for it in later) < 3  # ... with new crops and flips
    # B is drawn at random, independently of A: over many items every B shows up with every A.
    pairs = {(ds[(e, i)]["A_name"], ds[(e, i)]["B_name"]) for e in range(30) for i in range(5)}
    assert len(pairs) == 15
    assert _dataset(two_domains, seed=1)[(0, 3)]["B"].shape == x["B"].shape


def test_sampler_shards_an_epoch_across_processes():
    samplers = [UnpairedSampler(10, batch_size=2, num_replicas=2, rank=r, seed=7) for r in range(2)]
    assert all(s.batches_per_epoch == 2 and len(s) == 4 for s in samplers)  # 10 // (2 * 2); tail dropped
    for epoch in (0, 1):
        parts = []
        for s in samplers:
            s.set_epoch(epoch)
            parts.append([i for _, i in s])
        assert len(parts[0]) == len(parts[1]) == 4 and not set(parts[0]) & set(parts[1])
    s = samplers[0]
    s.set_epoch(0)
    e0 = [i for _, i in s]
    s.set_epoch(1)
    assert e0 != [i for _, i in s]  # reshuffled every epoch
    s.set_epoch(0, start_batch=1)  # resume after one batch: the rest of the same order
    assert [i for _, i in s] == e0[2:] and len(s) == 2
    with pytest.raises(ValueError):
        UnpairedSampler(10, 1, num_replicas=2, rank=2)


def test_loader_batches_and_leaves_global_rng_alone(two_domains: Path):
    ds = _dataset(two_domains)
    sampler = UnpairedSampler(len(ds), batch_size=2, seed=0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    batches = list(make_dataloader(ds, sampler))
    assert torch.equal(torch.get_rng_state(), before)
    assert len(batches) == 2 and batches[0]["A"].shape == (2, 3, 32, 32) and len(batches[0]["A_name"]) == 2


def test_finetune_epochs_load_at_crop_size(two_domains: Path):
    ds = _dataset(two_domains)  # finetune_from_epoch=2: the paper's decay phase loads at crop size
    img = Image.open(two_domains / "A" / "a_1.png").convert("RGB").resize((32, 32), Image.BICUBIC)
    whole = torch.from_numpy(np.asarray(img).astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
    item = ds[(2, 1)]["A"]
    assert torch.allclose(item, whole, atol=1e-6) or torch.allclose(item, whole.flip(2), atol=1e-6)


def test_unreadable_files_are_skipped_with_a_warning(two_domains: Path, caplog):
    (two_domains / "A" / "a_2.png").write_bytes(b"garbage, not a png")
    good = (two_domains / "A" / "a_3.png").read_bytes()
    (two_domains / "A" / "a_3.png").write_bytes(good[: len(good) // 3])  # truncated
    ds = _dataset(two_domains)
    with caplog.at_level(logging.WARNING, logger="cut_hf.data.sources"):
        item = ds[(0, 2)]
    assert item["A_name"] == "a_4.png" and item["skipped"].split("\n") == ["a_2.png", "a_3.png"]
    assert "skipping unreadable image a_2.png" in caplog.text and "a_3.png" in caplog.text
    for name in ("a_0.png", "a_1.png", "a_4.png"):
        (two_domains / "A" / name).write_bytes(b"")
    with pytest.raises(DataError, match="no readable image"):
        _dataset(two_domains)[(0, 0)]


def test_mixed_sizes_in_a_batch_give_a_clear_error():
    items = [{"A": torch.zeros(3, 32, 32), "B": torch.zeros(3, 32, 32)},
             {"A": torch.zeros(3, 32, 36), "B": torch.zeros(3, 32, 32)}]
    with pytest.raises(DataError, match="--batch-size 1"):
        collate(items)

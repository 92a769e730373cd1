"""SinCUT's zoom-and-patch sampling: one zoom per minibatch, different cells, sizes, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from cut_hf.data.sources import DataError
from cut_hf.data.unpaired import collate, make_dataloader
from cut_hf.data.single_image import (
    EPOCH_CROPS,
    SingleImageDataset,
    SingleImageSampler,
    ZoomAndPatch,
    load_single_images,
)
from tests.reference.official_sincut import patch_box

CROP = 16


def noise_image(w: int, h: int, seed: int) -> Image.Image:
    """Random pixels: every crop of its zoomed versions can be located exactly."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def dataset(batch_size: int = 4, seed: int = 0, flip: bool = False, size_a=(96, 80)) -> SingleImageDataset:
    return SingleImageDataset((noise_image(*size_a, 1), "a.png"), (noise_image(64, 112, 2), "b.png"), batch_size,
                              ZoomAndPatch(CROP, 3.0, flip), seed=seed)


def locate(crop: torch.Tensor, image: Image.Image) -> tuple[int, int] | None:
    """(x, y) of the top-left corner where ``crop`` (C, c, c in [-1, 1]) lies in ``image``, or None."""
    target = np.round((crop.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    windows = sliding_window_view(np.asarray(image), target.shape, axis=(0, 1, 2))[:, :, 0]  # (H', W', c, c, C)
    hits = np.argwhere((windows == target).all(axis=(2, 3, 4)))
    return (int(hits[0][1]), int(hits[0][0])) if len(hits) else None


def test_the_crops_of_a_minibatch_share_one_zoom_and_take_different_cells():
    ds = dataset(batch_size=4)
    zooms, checked = set(), 0
    for batch in range(6):
        for domain, role in ((0, "A"), (1, "B")):
            zoomed, _ = ds.zoom(domain, 0, batch)
            cells = []
            for slot in range(4):
                where = locate(ds[(0, batch, slot)][role], zoomed)
                assert where is not None, "a crop is not a piece of its minibatch's zoomed image"
                cells.append((where[0] // CROP, where[1] // CROP))
            cols, rows = ZoomAndPatch(CROP).grid(*zoomed.size)
            if cols * rows >= 4:
                assert len(set(cells)) == 4, f"two crops of one minibatch share a grid cell: {cells}"
                checked += 1
            zooms.add((domain, zoomed.size))
    assert len(zooms) > 2, "the zoom should change from one minibatch to the next"
    assert checked >= 3


def test_zoomed_sizes_stay_in_range_and_never_below_the_crop():
    geometry = ZoomAndPatch(64, 3.0)
    rng = torch.Generator().manual_seed(0)
    sizes = np.array([geometry.zoomed_size(900, 600, rng) for _ in range(300)])
    assert sizes[:, 0].min() >= 300 and sizes[:, 0].max() <= 900 and sizes[:, 1].min() >= 200
    assert sizes[:, 0].max() - sizes[:, 0].min() > 400  # the range is used
    assert np.corrcoef(sizes[:, 0], sizes[:, 1])[0, 1] < 0.3  # width and height zoom independently
    small = geometry.zoomed_size(50, 70, rng)
    assert small[0] == 64 and 64 <= small[1] <= 70


def test_boxes_follow_the_official_grid_numbering():
    geometry = ZoomAndPatch(CROP)
    for cell in range(12):
        rng = torch.Generator().manual_seed(cell)
        box = geometry.box(70, 53, cell, rng)
        rng = torch.Generator().manual_seed(cell)
        start_x = int(torch.randint(70 - 4 * CROP + 1, (), generator=rng))  # 4 columns, 3 rows of cells
        start_y = int(torch.randint(53 - 3 * CROP + 1, (), generator=rng))
        assert box == patch_box(70, 53, cell, CROP, start_x, start_y)


def test_small_images_and_big_batches_still_give_crops():
    ds = dataset(batch_size=6, size_a=(12, 10))  # A is smaller than a crop: zoomed up to it: one cell, repeated
    items = [ds[(0, 0, s)] for s in range(6)]
    assert all(it["A"].shape == (3, CROP, CROP) and it["B"].shape == (3, CROP, CROP) for it in items)
    assert all(-1 <= float(it["A"].min()) and float(it["A"].max()) <= 1 for it in items)
    assert ds.zoom(0, 0, 0)[0].size == (CROP, CROP)


def test_batches_are_reproducible_for_a_seed_and_differ_across_seeds():
    a, b, c = (collate([dataset(seed=seed, flip=True)[(1, 5, s)] for s in range(4)]) for seed in (3, 3, 4))
    assert torch.equal(a["A"], b["A"]) and torch.equal(a["B"], b["B"])
    assert not torch.equal(a["A"], c["A"])
    assert a["A_name"] == ["a.png"] * 4 and a["skipped"] == [""] * 4


def test_sampler_deals_whole_minibatches_to_processes_and_resumes():
    assert SingleImageSampler(16).batches_per_epoch == EPOCH_CROPS // 16
    samplers = [SingleImageSampler(4, num_replicas=2, rank=r, epoch_crops=40) for r in range(2)]
    keys = [list(s) for s in samplers]
    assert all(len(k) == 5 * 4 for k in keys)
    batches = [{b for _, b, _ in k} for k in keys]
    assert batches[0].isdisjoint(batches[1]) and batches[0] | batches[1] == set(range(10))
    assert keys[0][:4] == [(0, 0, s) for s in range(4)]  # one batch number, slots in order
    samplers[0].set_epoch(2, start_batch=3)
    assert list(samplers[0]) == [(2, b, s) for b in (6, 8) for s in range(4)] and len(samplers[0]) == 8
    with pytest.raises(DataError):
        SingleImageSampler(16, num_replicas=2, epoch_crops=20)


def test_dataloader_yields_one_zoom_per_minibatch():
    ds = dataset(batch_size=4)
    sampler = SingleImageSampler(4, epoch_crops=12)
    batches = list(make_dataloader(ds, sampler))
    assert len(batches) == 3 and all(b["A"].shape == (4, 3, CROP, CROP) for b in batches)
    for i, b in enumerate(batches):
        zoomed, _ = ds.zoom(0, 0, i)
        assert all(locate(crop, zoomed) is not None for crop in b["A"])
    # Workers get whole minibatches and seed from the batch number: the same batches as in-process.
    with_workers = list(make_dataloader(dataset(batch_size=4), sampler, num_workers=2))
    assert len(with_workers) == len(batches) == 3  # zip alone would pass an empty loader
    for a, b in zip(batches, with_workers, strict=True):
        assert torch.equal(a["A"], b["A"]) and torch.equal(a["B"], b["B"])


def test_load_single_images_from_files_and_the_official_folder(tmp_path):
    for sub, seed in (("trainA", 1), ("trainB", 2)):
        (tmp_path / sub).mkdir()
        noise_image(40, 30, seed).save(tmp_path / sub / f"{sub}.png")
    (a, name_a), (b, name_b) = load_single_images(data_dir=tmp_path)
    assert (a.size, name_a, name_b) == ((40, 30), "trainA.png", "trainB.png")
    (a2, name), _ = load_single_images(tmp_path / "trainA" / "trainA.png", tmp_path / "trainB" / "trainB.png")
    assert name == "trainA.png" and np.array_equal(np.asarray(a), np.asarray(a2))
    noise_image(40, 30, 3).save(tmp_path / "trainB" / "more.png")
    with pytest.raises(DataError, match="exactly one image"):
        load_single_images(data_dir=tmp_path)
    with pytest.raises(DataError, match="two images"):
        load_single_images(tmp_path / "trainA" / "trainA.png")

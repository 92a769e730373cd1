"""SinCUT's data: crops of one image per domain, by the paper's zoom-and-patch sampling.

For each minibatch and domain one random zoom is drawn: the image's width and height are scaled by
two independent factors in [1 / random_scale_max, 1] (never below the crop size). A grid of
crop-size cells is laid over the zoomed image at a random offset, and every crop of the minibatch
takes a different cell (a random permutation of the cells; cells repeat only when the zoomed
image has fewer cells than the batch has crops), so the contrastive negatives of one minibatch,
which are the other crops, come from different places. Each crop is flipped with p 0.5. An
"epoch" is 100,000 crops, as in the official ``SingleImageDataset``.

The items are keyed ``(epoch, batch, slot)``: :class:`SingleImageSampler` hands out whole
minibatches (all slots of one batch number, in order), so the ``DataLoader`` of
:func:`cut_hf.data.unpaired.make_dataloader` gives each minibatch to one worker, and processes take
different batch numbers. Every random draw comes from a generator seeded by the seed, the epoch,
the batch number (and the slot), never from the global RNG: a batch is the same in whichever
worker, process or resumed run makes it.

The official code draws the zoom per dataset index and tiles it over ``batch_size`` consecutive
indices, which its shuffling ``DataLoader`` then separates; here the zoom is shared by the crops of
a minibatch, as the code's comment intends.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import Dataset

from cut_hf.data.sources import DataError, load_domains
from cut_hf.data.unpaired import UnpairedSampler, to_channels
from cut_hf.data.unpaired import item_generator as _seeded
from cut_hf.images import ImageLoadError, open_image

#: Crops in one SinCUT "epoch" (the official ``SingleImageDataset.__len__``).
EPOCH_CROPS = 100_000


@dataclass(frozen=True)
class ZoomAndPatch:
    """The zoom-and-patch geometry: ``crop_size`` crops of an image zoomed by up to ``1 / random_scale_max``.

    Args:
        crop_size: side of the square crops, a multiple of 4.
        random_scale_max: the strongest zoom out (3 in the paper: sides scaled by 1/3 ... 1).
        flip: flip each crop horizontally with probability 0.5.
    """

    crop_size: int = 64
    random_scale_max: float = 3.0
    flip: bool = True

    def __post_init__(self) -> None:
        if self.crop_size < 4 or self.crop_size % 4:
            raise DataError(f"--crop-size must be a multiple of 4, got {self.crop_size}")
        if self.random_scale_max < 1:
            raise DataError(f"random_scale_max must be >= 1, got {self.random_scale_max}")

    def zoomed_size(self, width: int, height: int, rng: torch.Generator) -> tuple[int, int]:
        """(w, h) of one zoom: each side times its own factor in [1 / random_scale_max, 1], >= crop."""
        low = 1.0 / self.random_scale_max
        fw, fh = (low + (1.0 - low) * torch.rand(2, generator=rng, dtype=torch.float64)).tolist()
        return (round(max(self.crop_size, width * fw)), round(max(self.crop_size, height * fh)))

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """Cells (columns, rows) of crop size that fit in a zoomed image of ``width`` x ``height``."""
        return width // self.crop_size, height // self.crop_size

    def cell_order(self, width: int, height: int, batch_size: int, rng: torch.Generator) -> list[int]:
        """A cell index for each crop of a minibatch: random permutations of the cells, concatenated."""
        cols, rows = self.grid(width, height)
        n = cols * rows
        perms = [torch.randperm(n, generator=rng) for _ in range(math.ceil(batch_size / n))]
        return torch.cat(perms)[:batch_size].tolist()

    def box(self, width: int, height: int, cell: int, rng: torch.Generator) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of cell ``cell`` of a grid placed at a random offset.

        Cells are numbered column-major (``cell // rows`` is the column), as the official ``__patch``;
        the grid's offset is drawn in [0, the room the whole cells leave] for each crop.
        """
        c = self.crop_size
        cols, rows = self.grid(width, height)
        start_x = int(torch.randint(width - cols * c + 1, (), generator=rng))
        start_y = int(torch.randint(height - rows * c + 1, (), generator=rng))
        cell %= cols * rows
        x, y = start_x + (cell // rows) * c, start_y + (cell % rows) * c
        return x, y, x + c, y + c


def load_single_images(
    image_a: str | os.PathLike | None = None,
    image_b: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> tuple[tuple[Image.Image, str], tuple[Image.Image, str]]:
    """((image, name), (image, name)) of the two domains: ``image_a`` and ``image_b``, or the one
    image in each of ``data_dir/trainA`` and ``data_dir/trainB`` (the official layout)."""
    if data_dir is not None and (image_a is not None or image_b is not None):
        raise DataError("give the two images either as --image-a/--image-b or as --data-dir, not both")
    if data_dir is not None:
        domains = load_domains(data_dir=str(data_dir))
        for role, images in zip("AB", domains, strict=True):
            if len(images) != 1:
                raise DataError(f"SinCUT needs exactly one image in domain {role} ({images.description}), "
                                f"found {len(images)}")
        a, b = domains
        return (a.load(0), a.name(0)), (b.load(0), b.name(0))
    if image_a is None or image_b is None:
        raise DataError("SinCUT needs two images: --image-a A.jpg --image-b B.jpg (or --data-dir D)")
    out = []
    for path in (image_a, image_b):
        try:
            out.append((open_image(path), Path(path).name))
        except (ImageLoadError, OSError) as err:
            raise DataError(f"cannot read {str(path)!r}: {err}") from err
    return out[0], out[1]


class SingleImageDataset(Dataset):
    """Items ``(epoch, batch, slot)`` -> ``{"A", "B", "A_name", "B_name", "skipped"}``, one crop each.

    ``A`` is (C_a, crop, crop) and ``B`` (C_b, crop, crop), both in [-1, 1]; ``skipped`` is always
    empty (the images were read up front). The keys ``"A_name"``/``"B_name"``/``"skipped"`` are
    those of :class:`cut_hf.data.unpaired.UnpairedImageDataset`, so the training loop reads both alike.

    Args:
        image_a, image_b: ``(PIL image, name)`` of each domain, e.g. from :func:`load_single_images`.
        batch_size: crops per minibatch (the crops that share a zoom and take different cells).
        geometry: the crop size, the zoom range and flips.
        seed: base seed of every random choice.
        channels_a, channels_b: channels the images are converted to (1 L, 3 RGB, ...).
    """

    def __init__(
        self,
        image_a: tuple[Image.Image, str],
        image_b: tuple[Image.Image, str],
        batch_size: int,
        geometry: ZoomAndPatch = ZoomAndPatch(),
        seed: int = 0,
        channels_a: int = 3,
        channels_b: int = 3,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"--batch-size must be >= 1, got {batch_size}")
        self.images = (to_channels(image_a[0], channels_a), to_channels(image_b[0], channels_b))
        self.names = (image_a[1], image_b[1])
        self.batch_size, self.geometry, self.seed = batch_size, geometry, seed
        self._zoomed: dict[int, tuple[tuple[int, int], Image.Image, list[int]]] = {}  # domain -> last zoom

    def __len__(self) -> int:
        return EPOCH_CROPS

    def zoom(self, domain: int, epoch: int, batch: int) -> tuple[Image.Image, list[int]]:
        """The zoomed image of ``domain`` (0 A, 1 B) for a minibatch and the cell of each of its crops.

        Kept for the last minibatch asked for, so its crops resize the image once.
        """
        cached = self._zoomed.get(domain)
        if cached is not None and cached[0] == (epoch, batch):
            return cached[1], cached[2]
        rng = _seeded(self.seed, epoch, batch, salt=domain)
        img = self.images[domain]
        w, h = self.geometry.zoomed_size(*img.size, rng)
        zoomed = img.resize((w, h), Image.Resampling.BILINEAR)  # as the official __random_zoom
        cells = self.geometry.cell_order(w, h, self.batch_size, rng)
        self._zoomed[domain] = ((epoch, batch), zoomed, cells)
        return zoomed, cells

    def crop(self, domain: int, epoch: int, batch: int, slot: int) -> torch.Tensor:
        """Crop ``slot`` of a minibatch of ``domain``: (C, crop, crop) in [-1, 1]."""
        zoomed, cells = self.zoom(domain, epoch, batch)
        rng = _seeded(self.seed, epoch, batch, salt=2 + 2 * slot + domain)
        img = zoomed.crop(self.geometry.box(*zoomed.size, cells[slot], rng))
        if self.geometry.flip and bool(torch.rand((), generator=rng) < 0.5):
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return TF.to_dtype(TF.to_image(img), torch.float32, scale=True) * 2.0 - 1.0

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        epoch, batch, slot = key
        if not 0 <= slot < self.batch_size:
            raise IndexError(f"slot {slot} is not in a minibatch of {self.batch_size}")
        return {"A": self.crop(0, epoch, batch, slot), "B": self.crop(1, epoch, batch, slot),
                "A_name": self.names[0], "B_name": self.names[1], "skipped": ""}


class SingleImageSampler(UnpairedSampler):
    """Deals out whole minibatches ``(epoch, batch, slot)`` of a SinCUT epoch to one of several processes.

    An epoch has ``epoch_crops // batch_size`` minibatches; process r takes batch numbers r, r + R,
    ..., and the tail that does not give every process the same count is dropped (DDP needs equal
    step counts). Use with ``make_dataloader`` (its ``batch_size`` is this sampler's), which then
    yields exactly one minibatch per batch number. ``batches_per_epoch``, ``set_epoch(epoch,
    start_batch)`` (resuming mid-epoch) and ``len()`` are those of :class:`cut_hf.data.unpaired.UnpairedSampler`
    over ``epoch_crops`` items; the batch contents are random already, so the order is not shuffled.
    """

    def __init__(self, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 epoch_crops: int = EPOCH_CROPS) -> None:
        if epoch_crops < batch_size * num_replicas:
            raise DataError(f"an epoch of {epoch_crops} crops is less than one batch of {batch_size} "
                            f"for each of {num_replicas} processes")
        super().__init__(epoch_crops, batch_size, num_replicas, rank, seed, shuffle=False)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for i in range(self.start_batch, self.batches_per_epoch):
            batch = i * self.num_replicas + self.rank
            for slot in range(self.batch_size):
                yield (self.epoch, batch, slot)

"""Unpaired image data for CUT training: image folders or 🤗 datasets, preprocessed like the paper's code.

Three ways to name the two domains (see :func:`load_domains`; the image lists are in :mod:`cut_hf.data.sources`):

* ``--data-dir D`` with the official layout ``D/trainA``, ``D/trainB`` (and ``testA``/``testB``);
* ``--domain-a DIR --domain-b DIR``;
* ``--dataset ID_OR_PATH --column-a imageA --column-b imageB [--split train]`` through 🤗 datasets
  (a Hub id, a local ``save_to_disk`` folder, or any folder ``datasets.load_dataset`` reads).

Sampling follows the official ``UnalignedDataset``: an epoch has max(|A|, |B|) items, item i takes
A[i % |A|] (items shuffled per epoch) and a B image drawn at random, independently of A.

Every random choice for an item (the B draw, crop positions, flips) comes from a generator seeded
by ``(seed, epoch, index)``, never from the global RNG. An item is therefore the same whichever
process, worker or resumed run loads it, which is what makes ``--resume`` bit-exact and lets
several processes share an epoch without overlap (:class:`UnpairedSampler` deals out indices).

Files that cannot be decoded are skipped with a warning (the next readable image takes their
place) and reported in the batch under ``"skipped"`` so that the training loop can count them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision.transforms import InterpolationMode

from cut_hf.data.sources import DataError, ImageList, load_readable
from cut_hf.images import to_channels as images_to_channels
from cut_hf.perf import usable_cores

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


# ----------------------------------------------------------------------------- pixels


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL image as an 8-bit image of ``channels`` channels (1 ``L``, 3 ``RGB``; 2 and 4 keep alpha).

    The conversion is :func:`cut_hf.images.to_channels`, shared with inference: 16/32-bit images are
    rescaled (not clipped), transparency is composited on white, palettes and CMYK become RGB.
    EXIF orientation is applied when the file is opened (:func:`cut_hf.images.open_image`).
    """
    try:
        return images_to_channels(img, channels)
    except ValueError as e:  # an unsupported channel count or an unconvertible mode
        raise DataError(str(e)) from e


@dataclass(frozen=True)
class Preprocess:
    """The paper code's ``get_transform`` for training, with its random choices drawn from ``rng``.

    Modes (``--preprocess``): ``resize_and_crop`` resizes to load x load then crops crop x crop at
    random (the default, 286 -> 256); ``crop`` only crops; ``scale_width`` scales the width to
    ``load_size`` (height kept >= crop); ``scale_width_and_crop`` then crops; ``none`` keeps the
    image. Sides are then snapped to multiples of 4 (the generator's two downsamplings need it),
    flipped horizontally with p 0.5 unless ``flip=False``, and scaled to [-1, 1].

    In the learning-rate decay epochs the official code loads at the crop size (no resize-crop
    augmentation while fine-tuning); ``__call__(..., finetune=True)`` does the same.
    """

    mode: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    channels: int = 3

    def __post_init__(self) -> None:
        if self.mode not in PREPROCESS_MODES:
            raise DataError(f"--preprocess must be one of {PREPROCESS_MODES}, got {self.mode!r}")
        if self.load_size < 4 or self.crop_size < 4:
            raise DataError(f"--load-size and --crop-size must be >= 4, got {self.load_size}, {self.crop_size}")
        if "crop" in self.mode and "resize" in self.mode and self.crop_size > self.load_size:
            raise DataError(f"--crop-size {self.crop_size} is larger than --load-size {self.load_size}")

    def __call__(self, img: Image.Image, rng: torch.Generator, finetune: bool = False) -> torch.Tensor:
        """(C, H, W) float tensor in [-1, 1] from a PIL image; H and W are multiples of 4."""
        img = to_channels(img, self.channels)
        load = self.crop_size if finetune else self.load_size
        if self.mode == "resize_and_crop":
            img = TF.resize(img, [load, load], interpolation=InterpolationMode.BICUBIC)
        elif "scale_width" in self.mode:
            w, h = img.size
            if not (w == load and h >= self.crop_size):
                img = TF.resize(img, [int(max(load * h / w, self.crop_size)), load],
                                interpolation=InterpolationMode.BICUBIC)
        if "crop" in self.mode:
            img = self._random_crop(img, rng)
        img = _snap_to_multiple(img, 4)
        if self.flip and bool(torch.rand((), generator=rng) < 0.5):
            img = TF.horizontal_flip(img)
        x = TF.to_dtype(TF.to_image(img), torch.float32, scale=True)  # (C, H, W) in [0, 1]
        return x * 2.0 - 1.0

    def _random_crop(self, img: Image.Image, rng: torch.Generator) -> Image.Image:
        w, h = img.size
        c = self.crop_size
        if w < c or h < c:
            # The original errors here (mode "crop" on a small image); scaling up keeps the run going.
            scale = c / min(w, h)
            w, h = max(c, round(w * scale)), max(c, round(h * scale))
            img = TF.resize(img, [h, w], interpolation=InterpolationMode.BICUBIC)
        x = int(torch.randint(0, w - c + 1, (), generator=rng))
        y = int(torch.randint(0, h - c + 1, (), generator=rng))
        return TF.crop(img, y, x, c, c)


def _snap_to_multiple(img: Image.Image, base: int) -> Image.Image:
    """Resize (bicubic) so both sides are the nearest multiples of ``base``, like ``__make_power_2``."""
    w, h = img.size
    nw, nh = max(base, int(round(w / base) * base)), max(base, int(round(h / base) * base))
    if (nw, nh) == (w, h):
        return img
    return TF.resize(img, [nh, nw], interpolation=InterpolationMode.BICUBIC)


# ----------------------------------------------------------------------------- dataset and sampler


def item_generator(seed: int, epoch: int, index: int, salt: int = 0) -> torch.Generator:
    """A generator for one item, seeded from (seed, epoch, index) alone."""
    mixed = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index, salt]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(mixed[0]) << 32 | int(mixed[1]))


class UnpairedImageDataset(Dataset):
    """Items ``(epoch, index)`` -> ``{"A", "B", "A_name", "B_name", "skipped"}``.

    ``A`` is (C_a, H, W) and ``B`` is (C_b, H, W), both in [-1, 1]. ``skipped`` names the unreadable
    files that were passed over to make this item (newline separated, empty when none).

    Args:
        images_a, images_b: the two domains.
        preprocess_a, preprocess_b: transforms for each domain (B may need other channels).
        seed: base seed of every random choice.
        finetune_from_epoch: epochs >= this load at the crop size (the paper code's decay phase);
            ``None`` never does.
    """

    def __init__(
        self,
        images_a: ImageList,
        images_b: ImageList,
        preprocess_a: Preprocess,
        preprocess_b: Preprocess | None = None,
        seed: int = 0,
        finetune_from_epoch: int | None = None,
    ) -> None:
        self.images_a, self.images_b = images_a, images_b
        self.preprocess_a, self.preprocess_b = preprocess_a, preprocess_b or preprocess_a
        self.seed, self.finetune_from_epoch = seed, finetune_from_epoch
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return max(len(self.images_a), len(self.images_b))

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        rng = item_generator(self.seed, epoch, index)
        finetune = self.finetune_from_epoch is not None and epoch >= self.finetune_from_epoch
        skipped: list[str] = []
        # A in order (the sampler shuffles indices), B at random: the pair is never fixed.
        a_img, a_name = self._load(self.images_a, index % len(self.images_a), skipped, lambda i: i + 1)
        b_first = int(torch.randint(len(self.images_b), (), generator=rng))
        b_img, b_name = self._load(self.images_b, b_first, skipped,
                                   lambda i: int(torch.randint(len(self.images_b), (), generator=rng)))
        return {
            "A": self.preprocess_a(a_img, rng, finetune),
            "B": self.preprocess_b(b_img, rng, finetune),
            "A_name": a_name,
            "B_name": b_name,
            "skipped": "\n".join(skipped),
        }

    def _load(self, images: ImageList, i: int, skipped: list[str],
              next_index: Callable[[int], int]) -> tuple[Image.Image, str]:
        img, i = load_readable(images, i, next_index, skipped, self._warned)
        return img, images.name(i)


class UnpairedSampler(Sampler[tuple[int, ...]]):  # (epoch, index) items; SinCUT's sampler adds a third int
    """Deals out ``(epoch, index)`` items of one epoch to one of several processes, in whole batches.

    Each epoch is a fresh permutation of all indices (seeded by ``seed`` and the epoch, the same on
    every process); process r takes items r, r + R, r + 2R, ... of it, so processes never overlap.
    The tail that does not fill a batch on every process is dropped, so all processes take the same
    number of steps (a requirement of DDP). ``set_epoch(epoch, start_batch)`` resumes mid-epoch.
    """

    def __init__(self, length: int, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.length, self.batch_size = length, batch_size
        self.num_replicas, self.rank, self.seed, self.shuffle = num_replicas, rank, seed, shuffle
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        """Batches each process takes in a full epoch."""
        return self.length // (self.batch_size * self.num_replicas)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        if self.shuffle:
            g = item_generator(self.seed, self.epoch, 0, salt=1)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        used = self.batches_per_epoch * self.batch_size * self.num_replicas
        mine = order[self.rank:used:self.num_replicas]
        for index in mine[self.start_batch * self.batch_size:]:
            yield (self.epoch, index)


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` with a clear message when images of one batch differ in size."""
    try:
        return default_collate(list(items))
    except RuntimeError as e:
        sizes = sorted({tuple(it["A"].shape[1:]) for it in items} | {tuple(it["B"].shape[1:]) for it in items})
        raise DataError(f"images of different sizes in one batch {sizes}: with --preprocess scale_width or "
                        "none use --batch-size 1, or crop to a fixed size") from e


def default_num_workers(wanted: int = 4, processes_per_machine: int = 1, spare: int = 0) -> int:
    """DataLoader workers per process: ``wanted``, but never more than this process's share of the
    usable cores (``processes_per_machine`` share them) less ``spare`` cores kept for the main
    process's own work; more workers than cores make PyTorch warn that the loader might freeze."""
    return max(0, min(wanted, usable_cores() // max(1, processes_per_machine) - spare))


def make_dataloader(dataset: Dataset, sampler: UnpairedSampler, num_workers: int = 0, pin_memory: bool = False,
                    collate_fn: Callable[[list[Any]], Any] | None = None) -> DataLoader:
    """A DataLoader of whole batches over ``sampler`` that never touches the global RNG.

    The loader gets its own ``torch.Generator``: otherwise each new iterator draws its worker base
    seed from the global RNG, which would shift every later random draw after a resume.
    ``collate_fn`` defaults to :func:`collate` (CUT's items); SimCLR's pass ``default_collate``.
    """
    return DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn or collate,
        drop_last=True,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(sampler.seed),
        persistent_workers=False,
    )

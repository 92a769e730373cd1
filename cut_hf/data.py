"""Unpaired image data for CUT training: image folders or 🤗 datasets, preprocessed like the paper's code.

Three ways to name the two domains (see :func:`load_domains`):

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

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision.transforms import InterpolationMode

from .images import ImageLoadError, open_image
from .images import to_channels as images_to_channels

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")


class DataError(ValueError):
    """The training data cannot be used; the message says why and what to do."""


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


# ----------------------------------------------------------------------------- image lists


class ImageList:
    """An ordered collection of images of one domain; ``load(i)`` may raise on a bad file."""

    description: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int) -> Image.Image:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError


class FolderImages(ImageList):
    """Image files found (recursively, sorted) under a folder, as the official ``make_dataset``."""

    def __init__(self, folder: str | os.PathLike, role: str = "") -> None:
        self.folder = Path(folder).expanduser()
        what = f"{role} folder" if role else "folder"
        if not self.folder.exists():
            raise DataError(f"{what} {str(self.folder)!r} does not exist")
        if not self.folder.is_dir():
            raise DataError(f"{what} {str(self.folder)!r} is not a directory")
        self.paths = sorted(
            p for p in self.folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file()
        )
        self.description = str(self.folder)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        return open_image(self.paths[i])  # decoded now: a truncated file fails here, inside the caller's try

    def name(self, i: int) -> str:
        return str(self.paths[i].relative_to(self.folder))


class DatasetColumnImages(ImageList):
    """The non-empty entries of one column of a 🤗 ``datasets.Dataset`` (Image feature or file paths).

    The column is read undecoded (bytes and paths), so a corrupt image is met by :meth:`load`,
    where it can be skipped, instead of crashing inside ``datasets``.
    """

    def __init__(self, dataset: Any, column: str, label: str) -> None:
        import datasets  # a training dependency only

        if column not in dataset.column_names:
            raise DataError(f"{label} has no column {column!r}; its columns are {dataset.column_names}")
        feature = dataset.features[column]
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        self.dataset = dataset.select_columns([column])
        self.column = column
        valid = self.dataset.with_format("arrow")[column].is_valid()  # rows with an image (A and B may differ in length)
        self.rows = np.flatnonzero(np.asarray(valid.to_numpy(zero_copy_only=False), dtype=bool))
        self.description = f"{label} column {column!r}"
        self._label = label

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int) -> Image.Image:
        value = self.dataset[int(self.rows[i])][self.column]
        if isinstance(value, dict):  # the undecoded Image feature: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if not isinstance(value, (bytes, str, os.PathLike, Image.Image)):
            raise ImageLoadError(f"{self.name(i)}: a {type(value).__name__}, not an image")
        return open_image(value)

    def name(self, i: int) -> str:
        return f"{self._label}/{self.column}/{int(self.rows[i])}"


def load_domains(
    data_dir: str | None = None,
    domain_a: str | None = None,
    domain_b: str | None = None,
    dataset: str | None = None,
    column_a: str = "imageA",
    column_b: str = "imageB",
    split: str = "train",
    phase: str = "train",
) -> tuple[ImageList, ImageList]:
    """The two domains' images from exactly one of the three sources; raises :class:`DataError`.

    ``phase`` picks ``trainA``/``trainB`` or ``testA``/``testB`` under ``data_dir``.
    """
    given = [name for name, v in (("--data-dir", data_dir), ("--domain-a/--domain-b", domain_a or domain_b),
                                  ("--dataset", dataset)) if v]
    if len(given) != 1:
        raise DataError("give the training data in exactly one way: --data-dir D (with trainA/ and trainB/), "
                        f"--domain-a DIR --domain-b DIR, or --dataset ID --column-a A --column-b B (got {given or 'none'})")
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataError(f"--data-dir {str(root)!r} does not exist or is not a directory")
        for sub in (f"{phase}A", f"{phase}B"):
            if not (root / sub).is_dir():
                raise DataError(f"{str(root / sub)!r} not found: --data-dir expects the official layout "
                                f"{phase}A/ and {phase}B/ (found: {sorted(p.name for p in root.iterdir())})")
        images_a, images_b = FolderImages(root / f"{phase}A", "domain A"), FolderImages(root / f"{phase}B", "domain B")
    elif domain_a or domain_b:
        if not (domain_a and domain_b):
            raise DataError("--domain-a and --domain-b must be given together")
        images_a, images_b = FolderImages(domain_a, "domain A"), FolderImages(domain_b, "domain B")
    else:
        ds = open_hf_dataset(dataset, split)
        images_a = DatasetColumnImages(ds, column_a, f"{dataset}[{split}]")
        images_b = DatasetColumnImages(ds, column_b, f"{dataset}[{split}]")
    for role, images in (("A", images_a), ("B", images_b)):
        if len(images) == 0:
            raise DataError(f"domain {role} ({images.description}) holds no images "
                            f"(looked for files ending in {', '.join(IMG_EXTENSIONS)})")
    return images_a, images_b


def open_hf_dataset(name_or_path: str, split: str) -> Any:
    """A split of a 🤗 dataset: a ``save_to_disk`` folder, a local folder or a Hub id."""
    import datasets

    path = Path(name_or_path).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path) if path.exists() else name_or_path, split=split)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        raise DataError(f"could not open dataset {name_or_path!r} (split {split!r}): {e}") from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"dataset {name_or_path!r} has no split {split!r}; it has {list(ds)}")
        ds = ds[split]
    return ds


def check_enough_images(images_a: ImageList, images_b: ImageList, batch_size: int, num_processes: int = 1) -> None:
    """Stop before training when a domain cannot fill one batch, or the epoch one batch per process."""
    for role, images in (("A", images_a), ("B", images_b)):
        if len(images) < batch_size:
            raise DataError(f"domain {role} ({images.description}) has {len(images)} image(s), "
                            f"fewer than one batch of {batch_size}")
    epoch = max(len(images_a), len(images_b))
    if epoch < batch_size * num_processes:
        raise DataError(f"an epoch has {epoch} items, fewer than one batch of {batch_size} for each of "
                        f"{num_processes} processes; lower --batch-size or use fewer processes")


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

    def _load(self, images: ImageList, i: int, skipped: list[str], next_index) -> tuple[Image.Image, str]:
        """Load image i, or the next readable one (``next_index``), noting the files that failed."""
        for _ in range(max(4 * len(images), 16)):
            i = i % len(images)
            try:
                return images.load(i), images.name(i)
            except (ImageLoadError, OSError, UnidentifiedImageError, ValueError, SyntaxError,
                    Image.DecompressionBombError) as e:
                name = images.name(i)
                skipped.append(name)
                if name not in self._warned:
                    self._warned.add(name)
                    logger.warning("skipping unreadable image %s: %s", name, e)
                i = next_index(i)
        raise DataError(f"no readable image found in {images.description} after many tries; are all files corrupt?")


class UnpairedSampler(Sampler):
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

    def __iter__(self) -> Iterator[tuple[int, int]]:
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


def make_dataloader(dataset: UnpairedImageDataset, sampler: UnpairedSampler, num_workers: int = 0,
                    pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ``sampler`` that never touches the global RNG.

    The loader gets its own ``torch.Generator``: otherwise each new iterator draws its worker base
    seed from the global RNG, which would shift every later random draw after a resume.
    """
    return DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=True,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(sampler.seed),
        persistent_workers=False,
    )

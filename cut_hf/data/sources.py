"""Where training images come from: image folders and 🤗 dataset columns, read one image at a time.

An :class:`ImageList` loads image i on request, so an unreadable file is met where the caller can
skip it (:func:`load_readable`); :func:`load_domains` gives the two domains of unpaired training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from cut_hf.errors import one_line
from cut_hf.images import IMAGE_EXTENSIONS, ImageLoadError, find_images, open_image

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """The training data cannot be used; the message says why and what to do."""


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
    """Image files found (recursively, sorted) under a folder: :func:`cut_hf.images.find_images`."""

    def __init__(self, folder: str | os.PathLike, role: str = "") -> None:
        self.folder = Path(folder).expanduser()
        what = f"{role} folder" if role else "folder"
        if not self.folder.exists():
            raise DataError(f"{what} {str(self.folder)!r} does not exist")
        if not self.folder.is_dir():
            raise DataError(f"{what} {str(self.folder)!r} is not a directory")
        self.paths = find_images(self.folder)
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
        # rows with an image (A and B may differ in length)
        valid = self.dataset.with_format("arrow")[column].is_valid()
        self.rows = np.flatnonzero(np.asarray(valid.to_numpy(zero_copy_only=False), dtype=bool))
        self.description = f"{label} column {column!r}"
        self._label = label

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int) -> Image.Image:
        return open_image(image_source(self.dataset[int(self.rows[i])][self.column], self.name(i)))

    def name(self, i: int) -> str:
        return f"{self._label}/{self.column}/{int(self.rows[i])}"


def image_source(value: Any, name: str) -> bytes | str | os.PathLike | Image.Image:
    """What :func:`~cut_hf.images.open_image` reads from a dataset cell: the bytes or path of an
    undecoded Image feature (``{"bytes": ..., "path": ...}``), a path, or an image; else ImageLoadError."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if not isinstance(value, (bytes, str, os.PathLike, Image.Image)):
        raise ImageLoadError(f"{name}: a {type(value).__name__}, not an image")
    return value


def load_domains(
    data_dir: str | None = None,
    domain_a: str | None = None,
    domain_b: str | None = None,
    dataset: str | None = None,
    column_a: str = "imageA",
    column_b: str = "imageB",
    split: str = "train",
    phase: str = "train",
    dataset_a: str | None = None,
    dataset_b: str | None = None,
    dataset_config: str | None = None,
    revision: str | None = None,
) -> tuple[ImageList, ImageList]:
    """The two domains' images from exactly one of the four sources; raises :class:`DataError`.

    ``phase`` picks ``trainA``/``trainB`` or ``testA``/``testB`` under ``data_dir``; ``dataset_a`` and
    ``dataset_b`` are one 🤗 dataset per domain (``column_a`` of the first, ``column_b`` of the
    second); ``dataset_config``, ``split`` and ``revision`` apply to every dataset opened.
    """
    images_a: ImageList
    images_b: ImageList
    check_one_source(data_dir, domain_a, domain_b, dataset, dataset_a, dataset_b)
    if dataset_a and dataset_b:  # check_one_source refused one without the other
        images_a = DatasetColumnImages(open_hf_dataset(dataset_a, split, dataset_config, revision), column_a,
                                       f"{dataset_a}[{split}]")
        images_b = DatasetColumnImages(open_hf_dataset(dataset_b, split, dataset_config, revision), column_b,
                                       f"{dataset_b}[{split}]")
        check_not_empty(images_a, images_b)
        return images_a, images_b
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
        assert dataset is not None  # exactly one source was given
        ds = open_hf_dataset(dataset, split, dataset_config, revision)
        images_a = DatasetColumnImages(ds, column_a, f"{dataset}[{split}]")
        images_b = DatasetColumnImages(ds, column_b, f"{dataset}[{split}]")
    check_not_empty(images_a, images_b)
    return images_a, images_b


def check_one_source(data_dir: str | None, domain_a: str | None, domain_b: str | None, dataset: str | None,
                     dataset_a: str | None = None, dataset_b: str | None = None) -> None:
    """Raise :class:`DataError` unless exactly one way of giving the two domains is used, completely."""
    given = [name for name, v in (("--data-dir", data_dir), ("--domain-a/--domain-b", domain_a or domain_b),
                                  ("--dataset", dataset), ("--dataset-a/--dataset-b", dataset_a or dataset_b)) if v]
    if len(given) != 1:
        raise DataError("give the training data in exactly one way: --data-dir D (with trainA/ and trainB/), "
                        "--domain-a DIR --domain-b DIR, --dataset ID --column-a A --column-b B, or "
                        f"--dataset-a ID --dataset-b ID (got {given or 'none'})")
    if (dataset_a or dataset_b) and not (dataset_a and dataset_b):
        raise DataError("--dataset-a and --dataset-b must be given together")


def check_not_empty(images_a: ImageList, images_b: ImageList) -> None:
    for role, images in (("A", images_a), ("B", images_b)):
        if len(images) == 0:
            raise DataError(f"domain {role} ({images.description}) holds no images "
                            f"(looked for files ending in {', '.join(sorted(IMAGE_EXTENSIONS))})")


def is_saved_to_disk(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def is_hub_id(name: str | None) -> bool:
    """Whether ``name`` names a Hub dataset or model (``user/name`` or ``name``), not a local path."""
    return bool(name) and not Path(str(name)).expanduser().exists() and not str(name).startswith((".", "/", "~")) \
        and str(name).count("/") <= 1


def open_hf_dataset(name_or_path: str, split: str, config: str | None = None, revision: str | None = None) -> Any:
    """A split of a 🤗 dataset: a ``save_to_disk`` folder, a local folder or a Hub id (its
    ``config`` and ``revision`` where given)."""
    import datasets

    path = Path(name_or_path).expanduser()
    try:
        if is_saved_to_disk(path):
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path) if path.exists() else name_or_path, config, split=split,
                                       revision=revision)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        raise DataError(f"could not open dataset {name_or_path!r} (split {split!r}): {one_line(e)}") from e
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"dataset {name_or_path!r} has no split {split!r}; it has {list(ds)}")
        ds = ds[split]
    return ds


def check_readable(images: ImageList, what: str) -> None:
    """Stop before training when not one image of ``images`` can be read (all corrupt): a
    :class:`DataError` naming ``what`` and the first file's problem, instead of a DataLoader
    worker's traceback after the run's folders were made. Reads images until one decodes (one
    read for a healthy source)."""
    first = ""
    for i in range(len(images)):
        try:
            images.load(i)
            return
        except UNREADABLE as e:
            first = first or f"{images.name(i)}: {one_line(e)}"
    raise DataError(f"{what} ({images.description}) has no readable image: all {len(images)} file(s) fail to "
                    f"decode (first: {first})")


def check_enough_images(images_a: ImageList, images_b: ImageList, batch_size: int, num_processes: int = 1) -> None:
    """Stop before training when a domain has no readable image or cannot fill one batch, or the
    epoch cannot give one batch per process."""
    for role, images in (("A", images_a), ("B", images_b)):
        check_readable(images, f"domain {role}")
        if len(images) < batch_size:
            raise DataError(f"domain {role} ({images.description}) has {len(images)} image(s), "
                            f"fewer than one batch of {batch_size}")
    epoch = max(len(images_a), len(images_b))
    if epoch < batch_size * num_processes:
        raise DataError(f"an epoch has {epoch} items, fewer than one batch of {batch_size} for each of "
                        f"{num_processes} processes; lower --batch-size or use fewer processes")


#: What a file that cannot be decoded raises on the way to a training image.
UNREADABLE = (ImageLoadError, OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_readable(images: ImageList, i: int, next_index: Callable[[int], int], skipped: list[str],
                  warned: set[str], convert: Callable[[Image.Image], Image.Image] | None = None,
                  ) -> tuple[Image.Image, int]:
    """Image i of ``images`` (after ``convert``), or the next readable one by ``next_index``.

    The names of the files that failed are appended to ``skipped`` (the loop counts them) and
    logged once per name (``warned``); returns the image and its index. Raises :class:`DataError`
    when no readable image is met after many tries.
    """
    for _ in range(max(4 * len(images), 16)):
        i = i % len(images)
        try:
            img = images.load(i)
            return (convert(img) if convert is not None else img), i
        except UNREADABLE as e:
            name = images.name(i)
            skipped.append(name)
            if name not in warned:
                warned.add(name)
                logger.warning("skipping unreadable image %s: %s", name, e)
            i = next_index(i)
    raise DataError(f"no readable image found in {images.description} after many tries; are all files corrupt?")

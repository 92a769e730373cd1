"""Unpaired training from streamed 🤗 datasets (``--streaming``): rows are read as training needs them.

Each domain is a stream of one column (:class:`StreamedDomain`): the process's own part of the
dataset (``datasets.distributed.split_dataset_by_node``: whole shards when their number divides
among the processes, else every n-th row), shuffled through a buffer of ``buffer_size`` rows, read
again with a new shuffle when it runs out. :class:`StreamedUnpairedDataset` pairs the two streams
row by row into the same items as :class:`~cut_hf.data.unpaired.UnpairedImageDataset` (the same
preprocessing, the same per-item random choices) and stands in for the sampler in the runtime.

A stream has no length to divide into epochs, so an epoch is a fixed number of batches (``train.py``
spreads ``--max-steps`` over the schedule's epochs) and every process takes the same number of
steps. Resuming is exact: the streams are read again from the start, without decoding images,
up to the row the checkpoint had reached (unless rows were skipped as unreadable before it: then
the position is off by that many rows). That re-reading costs time (and downloads) in proportion
to the rows trained on so far.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader

from cut_hf.data.sources import UNREADABLE, DataError, image_source, is_saved_to_disk, open_hf_dataset
from cut_hf.data.unpaired import Preprocess, collate, item_generator
from cut_hf.errors import one_line
from cut_hf.images import open_image

logger = logging.getLogger(__name__)

#: Rows a stream keeps in its shuffle buffer by default (``--shuffle-buffer``).
SHUFFLE_BUFFER = 1000
#: Shards a local ``save_to_disk`` dataset is cut into when it is streamed (so processes can share them).
LOCAL_SHARDS = 8


def open_stream(name_or_path: str, split: str, config: str | None = None, revision: str | None = None) -> Any:
    """A split of a 🤗 dataset as an ``IterableDataset``: a Hub id or local folder streamed by
    ``load_dataset(streaming=True)``, or a ``save_to_disk`` folder read in :data:`LOCAL_SHARDS` shards."""
    import datasets

    path = Path(name_or_path).expanduser()
    if is_saved_to_disk(path):
        ds = open_hf_dataset(name_or_path, split)
        return ds.to_iterable_dataset(num_shards=max(1, min(LOCAL_SHARDS, len(ds))))
    try:
        return datasets.load_dataset(str(path) if path.exists() else name_or_path, config, split=split,
                                     revision=revision, streaming=True)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds; training stops with one line
        raise DataError(f"cannot stream dataset {name_or_path!r} (split {split!r}): {one_line(e)}") from None


class StreamedDomain:
    """The rows of one column of a stream that belong to process ``rank`` of ``world``, endlessly.

    Images are read undecoded (bytes or paths): skipping rows on resume costs no decoding, and a
    corrupt image is met where it can be skipped.
    """

    def __init__(self, stream: Any, column: str, label: str, rank: int = 0, world: int = 1, seed: int = 0,
                 buffer_size: int = SHUFFLE_BUFFER) -> None:
        import datasets
        from datasets.distributed import split_dataset_by_node

        features = stream.features
        if features is not None and column not in features:
            raise DataError(f"{label} has no column {column!r}; its columns are {list(features)}")
        stream = stream.select_columns([column])
        if features is not None and isinstance(features[column], datasets.Image):
            stream = stream.cast_column(column, datasets.Image(decode=False))
        self.stream = split_dataset_by_node(stream, rank=rank, world_size=world).shuffle(seed=seed,
                                                                                          buffer_size=buffer_size)
        self.column, self.label, self.description = column, label, f"{label} column {column!r} (streamed)"

    def rows(self, start: int = 0) -> Iterator[tuple[str, Any]]:
        """(name, cell) of every non-empty row from position ``start`` on; pass p is shuffled anew."""
        position, passes = 0, 0
        while True:
            self.stream.set_epoch(passes)  # a new shuffle of shards and buffer on every pass
            seen = 0
            for n, row in enumerate(self.stream):
                value = row.get(self.column) if isinstance(row, dict) else None
                if value is None:  # a shorter column of a two-column dataset
                    continue
                seen += 1
                if position >= start:
                    yield f"{self.label}/{self.column}/pass{passes}/row{n}", value
                position += 1
            if not seen:
                raise DataError(f"{self.description} holds no images for this process")
            passes += 1


class StreamedUnpairedDataset(torch.utils.data.IterableDataset):
    """Items ``{"A", "B", "A_name", "B_name", "skipped"}`` from two streamed domains, in epochs of
    ``batches_per_epoch`` batches; also the runtime's sampler (``set_epoch``, ``batch_size``).

    Item ``index`` of ``epoch`` takes the next row of each stream and draws its crops and flips
    from ``(seed, epoch, index)``, as the map-style dataset does.
    """

    def __init__(self, domain_a: StreamedDomain, domain_b: StreamedDomain, preprocess_a: Preprocess,
                 preprocess_b: Preprocess, batch_size: int, batches_per_epoch: int, seed: int = 0,
                 finetune_from_epoch: int | None = None) -> None:
        self.domain_a, self.domain_b = domain_a, domain_b
        self.preprocess_a, self.preprocess_b = preprocess_a, preprocess_b
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.seed, self.finetune_from_epoch = seed, finetune_from_epoch
        self.epoch, self.start_batch = 0, 0
        self._warned: set[str] = set()

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        per_epoch = self.batches_per_epoch * self.batch_size
        first = self.start_batch * self.batch_size
        position = self.epoch * per_epoch + first  # rows of each stream trained on before this item
        rows_a, rows_b = self.domain_a.rows(position), self.domain_b.rows(position)
        finetune = self.finetune_from_epoch is not None and self.epoch >= self.finetune_from_epoch
        for index in range(first, per_epoch):
            rng = item_generator(self.seed, self.epoch, index)
            skipped: list[str] = []
            a_img, a_name = self._next_readable(rows_a, skipped)
            b_img, b_name = self._next_readable(rows_b, skipped)
            yield {"A": self.preprocess_a(a_img, rng, finetune), "B": self.preprocess_b(b_img, rng, finetune),
                   "A_name": a_name, "B_name": b_name, "skipped": "\n".join(skipped)}

    def _next_readable(self, rows: Iterator[tuple[str, Any]], skipped: list[str]) -> tuple[Image.Image, str]:
        """The next row that decodes; the names of those that did not go to ``skipped``."""
        for _ in range(1000):
            name, value = next(rows)
            try:
                return open_image(image_source(value, name)), name
            except UNREADABLE as e:
                skipped.append(name)
                if name not in self._warned:
                    self._warned.add(name)
                    logger.warning("skipping unreadable image %s: %s", name, e)
        raise DataError("no readable image in 1000 streamed rows; are all of them corrupt?")


def make_stream_loader(dataset: StreamedUnpairedDataset, pin_memory: bool = False) -> DataLoader:
    """Whole batches of ``dataset``, read in the training process (DataLoader workers would each
    read the whole stream again). Its own ``torch.Generator`` keeps each new iterator from drawing
    on the global RNG, which would shift every later random draw after a resume."""
    return DataLoader(dataset, batch_size=dataset.batch_size, num_workers=0, collate_fn=collate, drop_last=True,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(dataset.seed))

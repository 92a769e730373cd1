"""Translate a column of a 🤗 dataset: the same rows out, with a translated image column added.

The engine is :mod:`cut_hf.translation.folders` (sharding, DataLoader workers, progress, summary); this
module reads images from a dataset column (a ``datasets.Dataset``, or a streamed
``IterableDataset``) and writes the result with ``save_to_disk``.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from PIL import Image

from cut_hf.images import ImageLoadError, ImageSource, load_image, pil_to_uint8
from cut_hf.translation.folders import (
    BatchOptions,
    Decoded,
    Progress,
    Reader,
    Summary,
    Writer,
    gather_summary,
    job_device,
    job_state,
    translated,
)
from cut_hf.translation.pipeline import io_channels

if TYPE_CHECKING:  # imported when a job runs: `import cut_hf` stays free of 🤗 datasets and Accelerate
    import datasets
    from accelerate import PartialState


class ColumnSource:
    """Input ``key`` of a dataset job: the image in ``column`` of row ``key``."""

    def __init__(self, dataset: datasets.Dataset, column: str) -> None:
        self.dataset, self.column = dataset.select_columns([column]), column  # decode only this column

    def __call__(self, key: int) -> ImageSource:
        value = self.dataset[key][self.column]
        if isinstance(value, dict):  # an undecoded Image feature: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if value is None:
            raise ImageLoadError(f"row {key}: no image in column {self.column!r}")
        return value


def _png(image: Image.Image | None) -> dict | None:
    """An image as the 🤗 datasets ``Image`` feature stores it (PNG bytes); None stays None."""
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _translated_column(generator: nn.Module, dataset: datasets.Dataset, column: str, keys: list[int], out_column: str,
                       options: BatchOptions, device: torch.device, progress: Progress, summary: Summary,
                       cache_dir: Path) -> datasets.Dataset:
    """The translated images of rows ``keys`` as a one-column dataset in row order, written to
    ``cache_dir`` as they come (Arrow on disk: a process's results need not fit in memory)."""
    import datasets

    features = datasets.Features({"key": datasets.Value("int64"), out_column: datasets.Image()})
    if not keys:
        return datasets.Dataset.from_dict({out_column: []}, features=datasets.Features({out_column: datasets.Image()}))
    reader = Reader(keys, ColumnSource(dataset, column), io_channels(generator)[0], options.max_pixels)

    def rows() -> Iterator[dict]:
        writer: Writer[int] = Writer(options.num_workers)  # PNG encoding in threads, in arrival order
        for item, image in translated(generator, reader, options, device, progress, summary):
            yield from ({"key": k, out_column: png} for k, png, _ in writer.submit(item.key, _png, image))
        yield from ({"key": k, out_column: png} for k, png, _ in writer.drain())

    # A fresh fingerprint: never reuse a cached result, and never hash the model to make one.
    done = datasets.Dataset.from_generator(rows, features=features, cache_dir=str(cache_dir),
                                           fingerprint=uuid.uuid4().hex)
    got = done["key"][:]  # arrival order: equal sizes were batched together
    if sorted(got) != keys:
        raise RuntimeError(f"rows {sorted(set(keys) - set(got))[:10]} were not translated")
    return done.select(sorted(range(len(got)), key=got.__getitem__)).remove_columns("key")  # row order


def translate_dataset(
    generator: nn.Module, dataset: datasets.Dataset, column: str, output_dir: str | os.PathLike, options: BatchOptions,
    output_column: str | None = None, device: torch.device | None = None, state: PartialState | None = None,
) -> tuple[datasets.Dataset | None, Summary]:
    """Translate the images in ``column`` of a 🤗 ``datasets.Dataset`` into ``output_column``
    (default ``<column>_translated``; rows whose image cannot be read get None), keep every other
    column, and ``save_to_disk`` the result to ``output_dir``.

    Sharded like :func:`~cut_hf.translation.folders.translate_files`: each process saves its rows in a
    hidden folder beside ``output_dir`` (shared by the processes), the main process joins them in
    order. Returns the saved dataset (main process; None on the others) and the job's summary.
    """
    import datasets

    state, start = state or job_state(), time.perf_counter()
    output_dir, output_column = Path(output_dir), output_column or f"{column}_translated"
    work = output_dir.parent / f".{output_dir.name}.shards"
    progress, summary = Progress(len(dataset), state.is_main_process), Summary()
    with state.split_between_processes(list(range(len(dataset)))) as mine:
        new = _translated_column(generator, dataset, column, list(mine), output_column, options,
                                 device or job_device(state), progress, summary, work / f"cache-{state.process_index}")
        shard = datasets.concatenate_datasets([dataset.select(mine), new], axis=1)
    return _finish(shard, summary, start, progress, output_dir, work, state)


def _finish(shard: datasets.Dataset, summary: Summary, start: float, progress: Progress, output_dir: Path, work: Path,
            state: PartialState) -> tuple[datasets.Dataset | None, Summary]:
    """Join the processes' shards in process order into ``output_dir`` (main process), clean up, and
    return (the saved dataset on the main process, else None; the whole job's summary)."""
    import datasets

    summary.seconds = time.perf_counter() - start
    total = gather_summary(summary, state)
    progress.close(total.inputs)
    if state.num_processes > 1:
        shard.save_to_disk(str(work / f"{state.process_index:05d}"))
        state.wait_for_everyone()
    if state.is_main_process:
        if state.num_processes > 1:
            shard = datasets.concatenate_datasets(
                [datasets.load_from_disk(str(work / f"{i:05d}")) for i in range(state.num_processes)])
        shard.save_to_disk(str(output_dir))
        shutil.rmtree(work, ignore_errors=True)
    state.wait_for_everyone()
    return (datasets.load_from_disk(str(output_dir)) if state.is_main_process else None), total


def open_stream(name: str, split: str = "train") -> datasets.IterableDataset:
    """A split of a 🤗 dataset (Hub id or local folder) as a stream: rows are read as they are
    needed, nothing is downloaded first. Raises ValueError (one line) when it cannot be opened or
    does not declare its features (the output needs them)."""
    import datasets

    try:
        stream = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds; the CLI prints one line
        raise ValueError(f"cannot stream dataset {name!r} (split {split!r}): {str(err).splitlines()[0]}") from None
    if stream.features is None:
        raise ValueError(f"the stream of {name!r} does not declare its features; run without --streaming")
    return stream


class StreamReader(torch.utils.data.IterableDataset):
    """Rows of a streamed (iterable) dataset as :class:`Decoded` inputs that carry their row; in
    DataLoader workers the stream's shards are spread over the workers by 🤗 datasets itself."""

    def __init__(self, stream: datasets.IterableDataset, column: str, channels: int, max_pixels: int | None) -> None:
        import datasets

        self.stream = stream.cast_column(column, datasets.Image(decode=False))  # bytes pass through as they are
        self.column, self.channels, self.max_pixels = column, channels, max_pixels

    def __iter__(self) -> Iterator[Decoded]:
        for i, row in enumerate(self.stream):
            value = row[self.column] or {}
            try:
                source = value.get("bytes") or value.get("path")
                if source is None:
                    raise ImageLoadError(f"row {i}: no image in column {self.column!r}")
                image = pil_to_uint8(load_image(source, self.channels, max_pixels=self.max_pixels))
                yield Decoded(i, image, row=row)
            except ImageLoadError as err:
                yield Decoded(i, error=str(err), row=row)


def translate_stream(
    generator: nn.Module, stream: datasets.IterableDataset, column: str, output_dir: str | os.PathLike,
    options: BatchOptions, output_column: str | None = None, device: torch.device | None = None,
    state: PartialState | None = None,
) -> tuple[datasets.Dataset | None, Summary]:
    """:func:`translate_dataset` for a streamed ``datasets.IterableDataset`` (a Hub id read without
    downloading it first). Each process reads its part (``split_dataset_by_node``); rows come out in
    the order they were translated (equal sizes batched together), not in the stream's order."""
    import datasets
    from datasets.distributed import split_dataset_by_node

    state, start = state or job_state(), time.perf_counter()
    output_dir, output_column = Path(output_dir), output_column or f"{column}_translated"
    work = output_dir.parent / f".{output_dir.name}.shards"
    if stream.features is None:
        raise ValueError("the streamed dataset does not declare its features; load it without streaming")
    features = datasets.Features({**stream.features, output_column: datasets.Image()})
    mine = split_dataset_by_node(stream, state.process_index, state.num_processes)
    reader = StreamReader(mine, column, io_channels(generator)[0], options.max_pixels)
    progress, summary = Progress(None, state.is_main_process), Summary()

    def rows() -> Iterator[dict]:
        writer: Writer[Decoded] = Writer(options.num_workers)
        for item, image in translated(generator, reader, options, device or job_device(state), progress, summary):
            yield from ({**(it.row or {}), output_column: png} for it, png, _ in writer.submit(item, _png, image))
        yield from ({**(it.row or {}), output_column: png} for it, png, _ in writer.drain())

    shard = datasets.Dataset.from_generator(rows, features=features, fingerprint=uuid.uuid4().hex,
                                            cache_dir=str(work / f"cache-{state.process_index}"))
    return _finish(shard, summary, start, progress, output_dir, work, state)

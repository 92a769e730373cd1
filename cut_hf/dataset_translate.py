"""Translate a column of a 🤗 dataset: the same rows out, with a translated image column added.

The engine is :mod:`cut_hf.batch_translate` (sharding, DataLoader workers, progress, summary); this
module reads images from a dataset column and writes the result with ``save_to_disk``.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image

from .batch_translate import (
    BatchOptions, Progress, Reader, Summary, gather_summary, job_device, job_state, translate_shard,
)
from .images import ImageLoadError
from .pipeline import io_channels


class ColumnSource:
    """Input ``key`` of a dataset job: the image in ``column`` of row ``key``."""

    def __init__(self, dataset: object, column: str) -> None:
        self.dataset, self.column = dataset.select_columns([column]), column  # decode only this column

    def __call__(self, key: int) -> object:
        value = self.dataset[key][self.column]
        if isinstance(value, dict):  # an undecoded Image feature: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if value is None:
            raise ImageLoadError(f"row {key}: no image in column {self.column!r}")
        return value


def _png(image: Image.Image) -> dict:
    """An image as the 🤗 datasets ``Image`` feature stores it: PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def translate_dataset(
    generator: nn.Module, dataset: object, column: str, output_dir: str | os.PathLike, options: BatchOptions,
    output_column: str | None = None, device: torch.device | None = None, state: object | None = None,
) -> tuple[object | None, Summary]:
    """Translate the images in ``column`` of a 🤗 ``datasets.Dataset`` into ``output_column``
    (default ``<column>_translated``; rows whose image cannot be read get None), keep every other
    column, and ``save_to_disk`` the result to ``output_dir``.

    Sharded like :func:`translate_files`: each process saves its rows next to ``output_dir`` (the
    folder must be shared by the processes), the main process joins them in order. Returns the
    saved dataset (main process; None on the others) and the whole job's summary.
    """
    import datasets

    state, start = state or job_state(), time.perf_counter()
    output_dir, output_column = Path(output_dir), output_column or f"{column}_translated"
    progress = Progress(len(dataset), state.is_main_process)
    with state.split_between_processes(list(range(len(dataset)))) as mine:
        reader = Reader(mine, ColumnSource(dataset, column), io_channels(generator)[0], options.max_pixels)
        with ThreadPoolExecutor(max_workers=max(1, options.num_workers)) as pool:
            encoded: dict[int, Future] = {}
            summary = translate_shard(generator, reader, options, device or job_device(state),
                                      lambda key, image: encoded.__setitem__(key, pool.submit(_png, image)), progress)
        values = [encoded[k].result() if k in encoded else None for k in mine]
        shard = dataset.select(mine).add_column(output_column, values, feature=datasets.Image())
    summary.seconds = time.perf_counter() - start
    total = gather_summary(summary, state)
    progress.close(total.translated + total.skipped + total.failed)
    if state.num_processes == 1:
        shard.save_to_disk(str(output_dir))
        return datasets.load_from_disk(str(output_dir)), total
    shards = output_dir.parent / f".{output_dir.name}.shards"
    shard.save_to_disk(str(shards / f"{state.process_index:05d}"))
    state.wait_for_everyone()
    joined = None
    if state.is_main_process:
        parts = [datasets.load_from_disk(str(shards / f"{i:05d}")) for i in range(state.num_processes)]
        datasets.concatenate_datasets(parts).save_to_disk(str(output_dir))
        shutil.rmtree(shards, ignore_errors=True)
        joined = datasets.load_from_disk(str(output_dir))
    state.wait_for_everyone()
    return joined, total

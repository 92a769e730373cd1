"""Translate many images: sharded over processes, decoded in DataLoader workers, resumable.

The engine behind ``cut-hf translate``; :func:`cut_hf.translation.pipeline.translate` does each batch.

- **Sharding**: under ``torchrun`` or ``accelerate launch`` every process sees the same ordered list
  of inputs and takes its own contiguous slice (Accelerate's ``split_between_processes``), so each
  input is translated exactly once, each process on its own device.
- **Overlap**: DataLoader workers check existing outputs and decode inputs while the model runs;
  equal sizes are grouped into batches as they arrive (a bounded buffer, no header pass over the
  input); a thread pool encodes and writes results.
- **Resume**: an output that exists and reads back whole is not recomputed (``overwrite`` redoes
  it). Outputs are written to a hidden ``.NAME.partial`` file in the same folder and renamed into
  place, so a killed run leaves no half-written output under the real name; a rerun deletes the
  leftover partial file and translates that input again.
- **Full disks**: an output that cannot be written because the disk or quota is full stops the job
  with :class:`~cut_hf.errors.DiskFullError` (the folder, about how much the rest needs); what was
  written stays, and the same command continues from there once there is space.
- **Datasets**: :mod:`cut_hf.translation.datasets` runs the same engine over a 🤗 dataset's column.
"""

from __future__ import annotations

import collections
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cut_hf.errors import DiskFullError, is_disk_full
from cut_hf.images import DEFAULT_MAX_PIXELS, ImageLoadError, ImageSource, load_image, pil_to_uint8
from cut_hf.perf import default_device
from cut_hf.translation.pipeline import Tiling, io_channels, translate, will_tile

if TYPE_CHECKING:  # imported when a job starts: a plain translate() call never needs Accelerate
    from accelerate import PartialState

Key = TypeVar("Key")

# Each job of a launch counts its progress under its own key of the shared store (see Progress).
_JOB_IDS = itertools.count()


@dataclass(frozen=True)
class BatchOptions:
    """How a batch job runs: :func:`~cut_hf.translation.pipeline.translate`'s arguments plus the job's own."""

    size: int | None = None
    keep_size: bool = True
    batch_size: int = 8
    precision: str = "fp32"
    calibration: object = None  # int8: translate()'s calibration images
    tiling: Tiling = field(default_factory=Tiling)
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    num_workers: int = 0
    overwrite: bool = False
    ext: str = ".png"


@dataclass
class Summary:
    """What a job (or one process's share of it) did, in the words of its per-input lines: every
    input is translated, already there (its output exists: resume), unreadable, or failed (it could
    not be translated or its output not written). Each unreadable or failed input gets a line that
    starts with that word."""

    translated: int = 0
    already_there: int = 0
    unreadable: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.translated / self.seconds if self.seconds > 0 else 0.0

    @property
    def inputs(self) -> int:
        """Inputs met, whatever became of them."""
        return self.translated + self.already_there + self.unreadable + self.failed

    @classmethod
    def merged(cls, parts: Sequence[Summary]) -> Summary:
        """The whole job from its processes' parts (they ran at the same time: the longest counts)."""
        return cls(sum(p.translated for p in parts), sum(p.already_there for p in parts),
                   sum(p.unreadable for p in parts), sum(p.failed for p in parts),
                   max((p.seconds for p in parts), default=0.0))

    def line(self, total: int, where: str) -> str:
        """One line for people: counts (in the per-input lines' words) and speed."""
        return (f"translated {self.translated} of {total} image(s) into {where}; {self.already_there} already there, "
                f"{self.unreadable} unreadable, {self.failed} failed; {self.seconds:.1f} s, "
                f"{self.images_per_second:.2f} images/s")


# -------------------------------------------------------------------------------------- outputs
def partial_path(target: Path) -> Path:
    """Where ``target`` is written before it is renamed into place (same folder: rename is atomic)."""
    return target.with_name(f".{target.name}.partial")


def output_complete(target: Path) -> bool:
    """Whether ``target`` exists and its file reads back as a whole image (not a truncated one)."""
    try:
        with Image.open(target) as im:
            im.load()
        return True
    except Image.DecompressionBombError:  # a whole header; too big for Pillow to check the rest
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def write_atomic(image: Image.Image, target: Path, ext: str | None = None) -> None:
    """Save ``image`` as ``target`` via a partial file and ``os.replace``: never half a file under its name."""
    ext = (ext or target.suffix).lower()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    try:
        fmt = Image.registered_extensions()[ext]  # Pillow's table: no extension list of our own
        image.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------- reading
class Decoded(NamedTuple):
    """One input as a worker hands it over: the image (C, H, W) uint8, or why there is none."""

    key: int
    image: torch.Tensor | None = None
    error: str | None = None
    skip: bool = False  # its output is already there
    row: dict | None = None  # a streamed dataset row: the columns that go out with the result


class FileSource:
    """Input ``key`` of a folder job: a file path (picklable, for DataLoader workers)."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)

    def __call__(self, key: int) -> ImageSource:
        return self.files[key]


class Reader(Dataset):
    """Checks and decodes the inputs ``keys`` (in DataLoader workers when there are any)."""

    def __init__(self, keys: Sequence[int], source: Callable[[int], ImageSource], channels: int,
                 max_pixels: int | None, targets: Sequence[Path] | None = None, overwrite: bool = False) -> None:
        self.keys, self.source, self.channels, self.max_pixels = list(keys), source, channels, max_pixels
        self.targets, self.overwrite = targets, overwrite

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Decoded:
        key = self.keys[i]
        if self.targets is not None:
            target = self.targets[key]
            if not self.overwrite and output_complete(target):
                return Decoded(key, skip=True)
            partial_path(target).unlink(missing_ok=True)  # left by a killed run
        try:
            source = self.source(key)
            return Decoded(key, pil_to_uint8(load_image(source, self.channels, max_pixels=self.max_pixels)))
        except ImageLoadError as err:
            return Decoded(key, error=str(err))


def _keep(item: Decoded) -> Decoded:
    return item  # no collation: workers hand over one input at a time


def size_batches(items: Iterator[Decoded], batch_size: int, alone: Callable[[int, int], bool],
                 buffered: int = 64) -> Iterator[list[Decoded]]:
    """Batches of equal-size images in arrival order; ``alone(h, w)`` sizes (tiled) go one by one.

    Inputs already there and unreadable ones come out as batches of one. At most ``buffered`` images wait for
    company; then the fullest group goes, so memory stays bounded on folders of many sizes.
    """
    groups: dict[tuple[int, int], list[Decoded]] = {}
    waiting = 0
    for item in items:
        if item.image is None or alone(*item.image.shape[-2:]):
            yield [item]
            continue
        group = groups.setdefault((item.image.shape[-2], item.image.shape[-1]), [])
        group.append(item)
        waiting += 1
        if len(group) == batch_size or waiting >= buffered:
            fullest = max(groups, key=lambda k: len(groups[k]))
            waiting -= len(groups[fullest])
            yield groups.pop(fullest)
    yield from (group for group in groups.values() if group)


# -------------------------------------------------------------------------------------- progress
class Progress:
    """The main process's bar: images of the whole job (other processes report through the
    process group's key-value store when there is one), and a tile bar for tiled images."""

    def __init__(self, total: int | None, show: bool) -> None:
        self.bar = tqdm(total=total, unit="img", desc="translate", file=sys.stderr, disable=not show)
        self.tile_bar: tqdm | None = None
        self.show = show
        self.store = _job_store()
        self.key = f"cut_hf_translate_done_{next(_JOB_IDS)}"

    def images(self, n: int) -> None:
        if self.store is not None:
            done = self.store.add(self.key, n)  # the whole job's count so far
            self.bar.update(max(0, done - self.bar.n))
        else:
            self.bar.update(n)

    def tiles(self, done: int, total: int) -> None:
        if not self.show:
            return
        if self.tile_bar is None:
            self.tile_bar = tqdm(total=total, unit="tile", desc="tiles", file=sys.stderr, leave=False)
        self.tile_bar.update(done - self.tile_bar.n)
        if done >= total:
            self.tile_bar.close()
            self.tile_bar = None

    def write(self, message: str) -> None:
        self.bar.write(message, file=sys.stderr)

    def close(self, done: int | None = None) -> None:
        """Close the bars; ``done``: the whole job's final count (known after the processes met)."""
        if done is not None:
            self.bar.update(max(0, done - self.bar.n))
        self.bar.close()


def _job_store() -> torch.distributed.Store | None:
    """The key-value store every process of the job shares (None when running alone)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    try:
        return torch.distributed.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError):  # pragma: no cover - a backend without a store
        return None


# -------------------------------------------------------------------------------------- the job
def _run_batch(generator: nn.Module, batch: list[Decoded], options: BatchOptions, device: torch.device,
               progress: Progress, tiled: bool) -> list[Image.Image | None]:
    """Translate one batch of equal-size inputs; None for each that failed (reported)."""
    try:
        out = translate(
            generator, [item.image for item in batch if item.image is not None], size=options.size,
            keep_size=options.keep_size, batch_size=options.batch_size, device=device, precision=options.precision,
            calibration=options.calibration, tiling=options.tiling,
            max_pixels=None, progress=progress.tiles if tiled else None,
        )
        return list(out) if isinstance(out, list) else [out]  # a list in, a list out
    except (RuntimeError, ValueError) as err:  # e.g. out of memory: report, go on with the rest
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        progress.write(f"failed: input(s) {[i.key for i in batch]}: cannot translate: {reason}")
        return [None] * len(batch)


def translated(
    generator: nn.Module, reader: Dataset, options: BatchOptions, device: torch.device, progress: Progress,
    summary: Summary,
) -> Iterator[tuple[Decoded, Image.Image | None]]:
    """Translate one process's inputs (``reader``: map-style or iterable, giving :class:`Decoded`):
    ``(input, image)`` each, ``(input, None)`` for one that was unreadable or failed (those already
    there yield nothing); ``summary`` counts as it goes."""
    # batch_size=None: collate_fn gets one item, not a list (torch annotates only the batching case)
    loader = DataLoader(reader, batch_size=None, num_workers=options.num_workers,
                        collate_fn=_keep)  # type: ignore[arg-type]
    alone = lambda h, w: will_tile(h, w, options.tiling, options.size)  # noqa: E731
    for batch in size_batches(iter(loader), options.batch_size, alone, buffered=8 * options.batch_size):
        if batch[0].skip:
            summary.already_there += 1
        elif batch[0].image is None:
            progress.write(f"unreadable: {batch[0].error}")
            summary.unreadable += 1
            yield batch[0], None
        else:
            tiled = batch[0].image is not None and alone(*batch[0].image.shape[-2:])
            results = _run_batch(generator, batch, options, device, progress, tiled)
            summary.translated += sum(r is not None for r in results)
            summary.failed += sum(r is None for r in results)
            yield from zip(batch, results, strict=True)
        progress.images(len(batch))


class Writer(Generic[Key]):
    """Runs ``fn(*args)`` per result in a thread pool (PIL encodes outside the GIL), with at most
    ``4 * threads`` results waiting, so memory stays bounded when writing is the slow part."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads))
        self.pending: collections.deque[tuple[Key, Future]] = collections.deque()
        self.limit = 4 * max(1, threads)

    def submit(self, key: Key, fn: Callable, *args: object) -> Iterator[tuple[Key, object, BaseException | None]]:
        """Queue one; yields ``(key, result, error)`` of the oldest ones while too many wait."""
        self.pending.append((key, self.pool.submit(fn, *args)))
        while len(self.pending) > self.limit:
            yield self._finish()

    def drain(self) -> Iterator[tuple[Key, object, BaseException | None]]:
        """``(key, result, error)`` of everything still queued, in order; then the pool stops."""
        while self.pending:
            yield self._finish()
        self.pool.shutdown()

    def _finish(self) -> tuple[Key, object, BaseException | None]:
        key, future = self.pending.popleft()
        error = future.exception()
        return key, (None if error else future.result()), error


def _disk_full(target: Path, left: int, written: list[int]) -> DiskFullError:
    """The error for a full disk at ``target`` with ``left`` outputs to go; ``written``: (count, bytes) so far."""
    needed = written[1] * left // written[0] if written[0] else None
    return DiskFullError(f"{target.name} ({left} output(s) to go)", target.parent, needed,
                         f"the {written[0]} written stay; free space and rerun the same command to continue")


def job_state(cpu: bool | None = None) -> PartialState:
    """Accelerate's ``PartialState`` of this launch (one process when not launched).

    ``cpu``: run every process on the CPU (gloo); ``None``: when there is no accelerator. Without it
    Accelerate would not join ``torchrun``'s CPU processes into one job, and each would do it all.
    Raises RuntimeError when the launch's process count and Accelerate's disagree.
    """
    from accelerate import PartialState  # imported here: a plain translate() call never needs it

    state = PartialState(cpu=not torch.accelerator.is_available() if cpu is None else cpu)
    launched = int(os.environ.get("WORLD_SIZE", state.num_processes))
    if launched != state.num_processes:
        raise RuntimeError(f"the launcher started {launched} processes but Accelerate joined {state.num_processes}: "
                           "each would translate every input")
    return state


def job_device(state: PartialState) -> torch.device:
    """This process's device in the launch: ``cuda:<local rank>`` and the like, or the CPU; one
    process alone takes :func:`cut_hf.perf.default_device` (CUDA, then MPS / XPU, then the CPU)."""
    if state.num_processes == 1 and state.device.type != "cpu":
        return default_device()
    device = torch.device(state.device)
    return torch.device("cpu") if device.type == "cpu" else device  # Accelerate may say cpu:0


def gather_summary(summary: Summary, state: PartialState) -> Summary:
    """The whole job's summary (every process calls this)."""
    if state.num_processes == 1:
        return summary
    from accelerate.utils import gather_object

    return Summary.merged([Summary(**part) for part in gather_object([asdict(summary)])])


def translate_files(
    generator: nn.Module, files: Sequence[Path], targets: Sequence[Path], options: BatchOptions,
    device: torch.device | None = None, state: PartialState | None = None,
) -> Summary:
    """Translate ``files[i]`` into ``targets[i]``, sharded over the processes of ``state``
    (Accelerate's ``PartialState``; default: the current launch). Returns the whole job's summary
    on every process; failures are counted and reported, not raised, except a full disk: then
    :class:`~cut_hf.errors.DiskFullError` once the outputs already queued are written or dropped."""
    state, start = state or job_state(), time.perf_counter()
    progress, summary = Progress(len(files), state.is_main_process), Summary()
    writer: Writer[int] = Writer(options.num_workers)
    written = [0, 0]  # outputs written by this process, their bytes: the estimate of what the rest needs

    def count(done: Iterator[tuple[int, object, BaseException | None]]) -> None:
        for key, _, error in done:
            if error is None:
                written[0] += 1
                written[1] += targets[key].stat().st_size
                continue
            summary.translated, summary.failed = summary.translated - 1, summary.failed + 1
            if is_disk_full(error, targets[key].parent):
                raise _disk_full(targets[key], len(mine) - summary.already_there - written[0], written)
            progress.write(f"failed: {files[key]}: cannot write {targets[key]}: {error}")

    with state.split_between_processes(list(range(len(files)))) as mine:
        reader = Reader(mine, FileSource(files), io_channels(generator)[0], options.max_pixels, targets,
                        options.overwrite)
        try:
            for item, image in translated(generator, reader, options, device or job_device(state), progress, summary):
                if image is not None:
                    count(writer.submit(item.key, write_atomic, image, targets[item.key], options.ext))
            count(writer.drain())
        except DiskFullError:
            for _ in writer.drain():  # the writes under way end (each removes its partial file if it fails)
                pass
            progress.close()
            raise
    summary.seconds = time.perf_counter() - start
    total = gather_summary(summary, state)
    progress.close(total.inputs)
    return total

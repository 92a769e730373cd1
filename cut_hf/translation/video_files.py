"""Translate many video files: whole videos shared out over processes, resumable, atomic.

The video half of ``cut-hf translate`` (:mod:`cut_hf.translation.folders` is the image half):

- **Sharding**: under ``torchrun`` or ``accelerate launch`` every process takes its own contiguous
  slice of the ordered list of videos (Accelerate's ``split_between_processes``): a video is never
  split, so its statistics and noise stay those of the whole clip.
- **Resume**: an output that exists and opens as a video is kept (``overwrite`` redoes it).
  :func:`~cut_hf.translation.video.translate_video` writes a hidden ``.NAME.partial`` file and
  renames it into place when complete; a rerun deletes a partial file a killed run left behind.
- **Progress**: the main process shows a bar in frames for each of its videos.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from cut_hf.translation.folders import BatchOptions, Summary, gather_summary, job_device, job_state, partial_path
from cut_hf.translation.video import DEFAULT_CRF, VideoLoadError, translate_video, video_info

__all__ = ["VideoOptions", "translate_video_files", "video_complete", "video_line"]


@dataclass(frozen=True)
class VideoOptions:
    """How each video is translated, beyond the options it shares with images (:class:`BatchOptions`)."""

    temporal: str = "clip"
    crf: int = DEFAULT_CRF
    seed: int = 0


def video_complete(target: Path) -> bool:
    """Whether ``target`` exists and opens as a video with frames (a finished output)."""
    if not target.is_file():
        return False
    try:
        _, _, _, frames, seconds = video_info(target)
        return frames > 0 or seconds > 0
    except VideoLoadError:
        return False


def _frame_bar(name: str, show: bool) -> tqdm:
    return tqdm(total=None, unit="frame", desc=name, file=sys.stderr, disable=not show, leave=False)


def _one(generator: nn.Module, source: Path, target: Path, options: BatchOptions, video: VideoOptions,
         device: torch.device, show: bool) -> tuple[int, str | None]:
    """Translate one video: (frames, None), or (0, "unreadable: why") / (0, "failed: why")."""
    bar = _frame_bar(source.name, show)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = translate_video(generator, source, target, temporal=video.temporal, size=options.size,
                                 batch_size=options.batch_size, device=device, precision=options.precision,
                                 tiling=options.tiling, seed=video.seed, crf=video.crf, max_pixels=options.max_pixels,
                                 progress=progress)
        return report.frames, None
    except VideoLoadError as err:
        return 0, f"unreadable: {str(err).splitlines()[0]}"
    except (ValueError, RuntimeError) as err:  # unwritable, out of memory: go on with the rest
        return 0, f"failed: {source}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    finally:
        bar.close()


def translate_video_files(
    generator: nn.Module, files: Sequence[Path], targets: Sequence[Path], options: BatchOptions,
    video: VideoOptions = VideoOptions(), device: torch.device | None = None,
    state: Any = None,
) -> tuple[Summary, int]:
    """Translate ``files[i]`` into ``targets[i]``, whole videos per process of ``state`` (Accelerate's
    ``PartialState``; default: the current launch). Returns the whole job's summary (counted in
    videos) and frames translated, on every process; failures are reported, not raised."""
    state, start = state or job_state(), time.perf_counter()
    summary, frames = Summary(), 0
    show = state.is_main_process
    with state.split_between_processes(list(range(len(files)))) as mine:
        for key in mine:
            target = targets[key]
            if not options.overwrite and video_complete(target):
                summary.already_there += 1
                continue
            partial_path(target).unlink(missing_ok=True)  # left by a killed run
            done, error = _one(generator, files[key], target, options, video, device or job_device(state), show)
            if error is None:
                summary.translated, frames = summary.translated + 1, frames + done
            else:  # one line that starts with the word the summary counts it under
                if error.startswith("unreadable"):
                    summary.unreadable += 1
                else:
                    summary.failed += 1
                tqdm.write(error, file=sys.stderr)
    summary.seconds = time.perf_counter() - start
    total = gather_summary(summary, state)
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        frames = sum(gather_object([frames]))
    return total, frames


def video_line(summary: Summary, frames: int, total: int, where: str) -> str:
    """One line for people: videos counted as :meth:`Summary.line` counts images; frames and their speed."""
    speed = frames / summary.seconds if summary.seconds > 0 else 0.0
    return (f"translated {summary.translated} of {total} video(s) into {where}; {summary.already_there} already "
            f"there, {summary.unreadable} unreadable, {summary.failed} failed; {frames} frames in "
            f"{summary.seconds:.1f} s, {speed:.2f} frames/s")

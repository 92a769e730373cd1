"""The Video tab's work: check an upload against the app's limits, translate it with
:func:`cut_hf.translation.video.translate_video`, describe what was done.

A public page must bound what a stranger's video costs: its duration, its frame size (after the
chosen resolution) and so its frame count are checked from the header before any frame is
decoded, and ``app.py`` runs one video job at a time in a concurrency group of its own.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cut_hf.demo.errors import DemoError
from cut_hf.demo.models import DemoModel
from cut_hf.demo.translation import parse_resolution, precisions_available, translation_device
from cut_hf.demo.uploads import upload_path
from cut_hf.translation.pipeline import resized_shape
from cut_hf.translation.video import TEMPORAL, VideoLoadError, VideoReport, translate_video, video_info

#: The tab's limits: seconds of video, and pixels per frame as translated (640 x 480).
VIDEO_MAX_SECONDS = 10.0
VIDEO_MAX_PIXELS = 640 * 480
#: The example clip, made by ``scripts/build_demo_dataset.py --clip`` (a horse crossing the ground).
EXAMPLE_CLIP = Path(__file__).resolve().parents[2] / "models" / "mini-horse2zebra" / "examples" / "horse_crossing.mp4"

#: Translated videos wait in one folder until Gradio has copied them into its own cache; older ones
#: than this are deleted by the next video job, so the folder holds a few files, not every result.
OUTPUT_KEEP_SECONDS = 600.0

_TEMPORAL_TEXT = {"clip": "norm statistics of the whole clip", "window": "statistics of a sliding window",
                  "frame": "each frame's own statistics (the paper; colours may pulse)"}


@dataclass(frozen=True)
class VideoLimits:
    """What one upload may cost: ``seconds`` of video and ``pixels`` per translated frame."""

    seconds: float = VIDEO_MAX_SECONDS
    pixels: int = VIDEO_MAX_PIXELS


def _checked(path: str, name: str, side: int | None, limits: VideoLimits) -> None:
    """Refuse, in one line, a video that is unreadable, too long or too large for this app."""
    try:
        width, height, rate, frames, seconds = video_info(path)
    except VideoLoadError:
        raise DemoError(f"{name} could not be read as a video") from None
    seconds = max(seconds, frames / float(rate)) if rate else seconds
    if seconds > limits.seconds:
        raise DemoError(f"{name} is {seconds:.1f} s long, over this app's limit of {limits.seconds:g} s: trim it first")
    h, w = (height, width) if side is None else resized_shape(height, width, side)
    if w * h > limits.pixels:
        raise DemoError(f"{name} has {w}x{h} frames, over this app's limit of {limits.pixels:,} pixels per frame: "
                        "choose a smaller resolution")


def _output_path(stem: str, folder: Path | None = None, now: float | None = None) -> Path:
    """A fresh path for a translated video in ``folder`` (default: one per machine under the temporary
    folder), after deleting the outputs left there more than :data:`OUTPUT_KEEP_SECONDS` ago."""
    folder = folder or Path(tempfile.gettempdir()) / "cut-hf-video-outputs"
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time() if now is None else now
    for old in folder.glob("*.mp4"):
        with contextlib.suppress(OSError):  # another job may have taken it already
            if now - old.stat().st_mtime > OUTPUT_KEEP_SECONDS:
                old.unlink()
    return folder / f"{stem}_{uuid.uuid4().hex[:8]}_translated.mp4"


def run_video(model: DemoModel, upload: Any, resolution: str | int | None = "original", precision: str = "fp32",
              temporal: str = "clip", limits: VideoLimits = VideoLimits(),
              progress: Callable[[int, int], None] | None = None) -> tuple[str, VideoReport]:
    """Translate an uploaded video; returns (path of the translated mp4, its report)."""
    path = upload_path(upload)
    if path is None:
        raise DemoError("no video: upload one (or pick the example) first")
    orig = upload.get("orig_name") if isinstance(upload, dict) else None
    name = repr(orig or Path(path).name)
    if temporal not in TEMPORAL:
        raise DemoError(f"temporal must be one of {', '.join(TEMPORAL)}, got {temporal!r}")
    if precision not in precisions_available():
        raise DemoError(f"precision must be one of {', '.join(precisions_available())}, got {precision!r}")
    side = parse_resolution(resolution)
    _checked(path, name, side, limits)
    out = _output_path(Path(path).stem)
    try:
        report = translate_video(model.generator, path, out, temporal=temporal, size=side, precision=precision,
                                 device=translation_device(), progress=progress)
    except VideoLoadError:
        raise DemoError(f"{name} could not be read as a video") from None
    except ValueError as err:
        raise DemoError(str(err).splitlines()[0]) from None
    return str(out), report


def describe(report: VideoReport) -> str:
    """One Markdown line: frames, speed, size, precision and device, and the statistics used."""
    w, h = report.size
    audio = " · audio copied" if report.audio else ""
    return (f"**{report.frames} frames in {report.seconds:.2f} s** ({report.frames_per_second:.1f} frames/s) · "
            f"{w}×{h} px at {report.fps:g} fps · {report.precision} on {report.device} · "
            f"{_TEMPORAL_TEXT[report.temporal]}{audio}")

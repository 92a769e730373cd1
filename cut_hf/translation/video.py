"""Translate a video file into another, frame-consistently: :func:`translate_video`.

Frame by frame, CUT's instance norms take new statistics on every frame, so colours pulse as
things move in and out of view. Here the norms use statistics of the *clip* instead, recorded and
frozen with the machinery tiling uses (:func:`~cut_hf.translation.inference.norm_stats`,
:func:`~cut_hf.translation.inference.freeze_norms`); ``temporal=`` names the choice:

- ``"clip"`` (default): one set of statistics from ``stats_frames`` frames spread over the whole
  clip, pooled as if they were pieces of one image, within ``stats_pixels`` (whole frames when
  they fit, else the same full-resolution crops of each, as ``tile_stats="crops"``).
- ``"window"``: statistics of a sliding window of ``window`` frames, taken every ``window // 2``
  frames and blended linearly in between, for long clips whose lighting changes.
- ``"frame"``: each frame's own statistics, as the paper (and :func:`translate` on each frame).

SinCUT's noise is drawn once per clip from ``seed`` (:class:`~cut_hf.models.stylegan2_layers.FixedNoise`).
Decoding and encoding are PyAV's (its own FFmpeg), streamed: the clip is read twice (statistics,
then translation), and memory holds a batch of frames (``"window"``: a window), never the clip.
Audio packets are copied into the output unchanged (remuxed, not re-encoded).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn as nn

from cut_hf.images import DEFAULT_MAX_PIXELS, check_pixels
from cut_hf.models.stylegan2_layers import FixedNoise, NoiseInjection
from cut_hf.perf import channels_last_default
from cut_hf.precision import check_inference_precision
from cut_hf.translation.folders import partial_path
from cut_hf.translation.inference import (
    DEFAULT_MAX_WHOLE_PIXELS,
    Runner,
    Tiling,
    freeze_norms,
    layout_keeping,
    norm_stats,
    pad,
    resize,
    run_tiled,
    run_whole,
    swap_modules,
)
from cut_hf.translation.pipeline import exported_limits, io_channels, prepared, resized_shape, resolve_device
from cut_hf.translation.quantize import MAX_CALIBRATION_IMAGES, int8_generator, size_class
from cut_hf.translation.video_io import (
    DEFAULT_CRF,
    FORMATS,
    VIDEO_EXTENSIONS,
    Encoder,
    VideoLoadError,
    decoded,
    find_videos,
    open_video,
    read_frames,
    video_info,
)

__all__ = ["TEMPORAL", "VIDEO_EXTENSIONS", "VideoLoadError", "VideoReport", "find_videos", "fixed_noise",
           "read_frames", "translate_video", "video_info"]

#: The ``temporal=`` choices: statistics of the clip, of a sliding window, or of each frame.
TEMPORAL = ("clip", "window", "frame")
#: Frames sampled over the clip (or a window) for its statistics.
DEFAULT_STATS_FRAMES = 16
#: Frames of the sliding window of ``temporal="window"``.
DEFAULT_WINDOW = 48
Stats = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class VideoReport:
    """What :func:`translate_video` did: ``frames`` written in ``seconds``, at ``fps`` and ``size``
    (width, height), in ``precision`` on ``device``, with ``temporal`` statistics; ``audio``: an
    audio stream was copied; ``tiled``: frames ran in tiles."""

    frames: int
    seconds: float
    fps: float
    size: tuple[int, int]
    precision: str
    device: str
    temporal: str
    audio: bool
    tiled: bool

    @property
    def frames_per_second(self) -> float:
        """Translation speed (decode, statistics, translation and encode all counted)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------------------------- statistics
def _spread(items: Sequence, n: int) -> list:
    """``n`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] if n > 1 else items[len(items) // 2] for i in range(n)]


class _Sampler:
    """Keeps an evenly spread sample of a stream of unknown length in bounded memory: every
    ``stride``-th item, the stride doubling (and every other kept item going) when ``2 n`` are held."""

    def __init__(self, n: int) -> None:
        self.n, self.stride, self.seen = n, 1, 0
        self.kept: list = []

    def add(self, item: object) -> None:
        if self.seen % self.stride == 0:
            self.kept.append(item)
            if len(self.kept) >= 2 * self.n:
                self.kept, self.stride = self.kept[::2], self.stride * 2
        self.seen += 1


@dataclass(frozen=True)
class _StatsPlan:
    """How statistics are taken: the working size, the frames and pixels they come from, the runner."""

    shape: tuple[int, int]
    frames: int
    pixels: int
    sample: str
    runner: Runner

    def take(self, model: nn.Module, frames: Sequence[torch.Tensor]) -> Stats:
        x = torch.stack([_at(f, self.shape) for f in _spread(frames, self.frames)])
        return norm_stats(model, pad(x)[0], self.pixels, self.runner, self.sample)  # pooled over the frames


def _at(frame: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A decoded frame at the working size (uint8 kept when no resizing is needed)."""
    return frame if tuple(frame.shape[-2:]) == shape else resize(frame, shape)


def _clip_stats(model: nn.Module, frames: Iterator[torch.Tensor], plan: _StatsPlan) -> tuple[Stats, int]:
    """One set of statistics for the clip, and its frame count."""
    sampler = _Sampler(plan.frames)
    for frame in frames:
        sampler.add(frame)
    if not sampler.seen:
        raise VideoLoadError("the video has no frames")
    return plan.take(model, sampler.kept), sampler.seen


def _window_stats(model: nn.Module, frames: Iterator[torch.Tensor], plan: _StatsPlan,
                  window: int) -> tuple[list[Stats], int, int]:
    """Statistics of windows centred every ``hop`` frames (anchor ``a`` at frame ``a * hop``), the hop
    and the frame count; holds one window of frames."""
    hop, half = max(1, window // 2), window // 2
    held: deque[tuple[int, torch.Tensor]] = deque()
    anchors: list[Stats] = []
    count = 0
    for i, frame in enumerate(frames):
        held.append((i, frame))
        count = i + 1
        while held and held[-1][0] >= len(anchors) * hop + half - 1:  # anchor's window complete
            anchors.append(_anchor(model, held, len(anchors) * hop, half, plan))
        while held and held[0][0] < len(anchors) * hop - half:
            held.popleft()
    if not count:
        raise VideoLoadError("the video has no frames")
    while len(anchors) < (count - 1) // hop + 2:  # the last frames blend towards an anchor past the end
        anchors.append(_anchor(model, held, len(anchors) * hop, half, plan))
    return anchors, hop, count


def _anchor(model: nn.Module, held: deque, centre: int, half: int, plan: _StatsPlan) -> Stats:
    frames = [f for i, f in held if centre - half <= i < centre + half] or [held[-1][1]]
    return plan.take(model, frames)


def _blend(anchors: list[Stats], hop: int, indices: range) -> Stats:
    """Per-frame statistics (B, C, 1, 1) linearly between the two anchors around each frame."""
    out: Stats = {}
    for name in anchors[0]:
        means, vars_ = [], []
        for i in indices:
            a, t = divmod(i, hop)
            lo, hi = anchors[min(a, len(anchors) - 1)][name], anchors[min(a + 1, len(anchors) - 1)][name]
            w = t / hop
            means.append(lo[0] * (1 - w) + hi[0] * w)
            vars_.append(lo[1] * (1 - w) + hi[1] * w)
        out[name] = (torch.cat(means), torch.cat(vars_))
    return out


# ------------------------------------------------------------------------------------------ noise
def fixed_noise(generator: nn.Module, seed: int = 0) -> nn.Module:
    """``generator`` itself, or for a SinCUT generator a copy (sharing its weights) whose noise is
    drawn once from ``seed``: the same for every frame, and the same result for the same seed."""
    layers = [m for m in generator.modules() if isinstance(m, NoiseInjection)]
    if not layers:
        return generator
    index = {id(m): i for i, m in enumerate(layers)}
    return swap_modules(generator, lambda m: isinstance(m, NoiseInjection),
                        lambda name, m: FixedNoise(m, seed * 1000 + index[id(m)]))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- the call
@dataclass
class _Work:
    """One call's frame translation: model, runner, tiling and the statistics to use."""

    model: nn.Module
    runner: Runner
    tiling: Tiling | None  # None: whole frames
    out_channels: int
    temporal: str
    clip: Stats | None = None
    anchors: list[Stats] | None = None
    hop: int = 1

    def __call__(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Translate frames ``start, start + 1, ...`` (B, C, H, W) -> uint8 (B, C', H, W)."""
        stats = self.clip
        if self.anchors is not None:
            stats = _blend(self.anchors, self.hop, range(start, start + len(x)))
        if self.tiling is not None:  # one frame at a time, with its own slice of the statistics
            y = torch.cat([run_tiled(self.model, x[i : i + 1], self.out_channels, self.tiling, self.runner,
                                     stats=None if stats is None else _frame_stats(stats, i)) for i in range(len(x))])
        else:
            model = layout_keeping(self.model, self.runner) if stats is None else freeze_norms(self.model, stats)
            y = run_whole(model, x, self.runner)
        return ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _frame_stats(stats: Stats, i: int) -> Stats:
    """Frame ``i``'s statistics (1, C, 1, 1) from per-frame (B, C, 1, 1) or shared (1, C, 1, 1) ones."""
    return {k: (m[min(i, len(m) - 1)][None], v[min(i, len(v) - 1)][None]) for k, (m, v) in stats.items()}


def translate_video(
    generator: nn.Module,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    temporal: str = "clip",
    size: int | None = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    tiling: Tiling | None = None,
    stats_frames: int = DEFAULT_STATS_FRAMES,
    stats_pixels: int = DEFAULT_MAX_WHOLE_PIXELS,
    window: int = DEFAULT_WINDOW,
    seed: int = 0,
    codec: str | None = None,
    crf: int = DEFAULT_CRF,
    format: str | None = None,  # FFmpeg's word for the container
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> VideoReport:
    """Translate the video file ``src`` into ``dst``: same frame count, frame rate and size (or
    ``size``: the shorter side, snapped to a multiple of 4), the audio copied unchanged.

    Args:
        generator: as for :func:`~cut_hf.translate` (left as found). Exported graphs (no norm
            modules to freeze) run only with ``temporal="frame"``.
        temporal: ``"clip"``, ``"window"`` or ``"frame"`` (see the module's docstring).
        size, batch_size, device, precision, tiling: as for :func:`~cut_hf.translate` (frames run
            ``batch_size`` at a time; large frames in tiles, with the clip's statistics). ``"int8"``
            quantises the generator on frames of the clip and runs with ``temporal="frame"`` only.
        stats_frames, stats_pixels: frames sampled for the statistics and their pixel budget.
        window: frames of the sliding window (``temporal="window"``).
        seed: SinCUT's noise, drawn once per clip.
        codec, crf: the video codec (default from ``dst``'s extension: H.264 in yuv420p; VP9 for
            ``.webm``; GIF) and its constant rate factor.
        format: the container when ``dst``'s extension does not tell (e.g. ``"mp4"``).
        max_pixels: refuse frames larger than this (before ``size``).
        progress: ``progress(frames done, frame count)`` after every batch.

    Raises VideoLoadError for an unreadable ``src`` and ValueError for bad arguments; ``dst`` is
    only created once the input has been read.
    """
    if temporal not in TEMPORAL:
        raise ValueError(f"temporal must be one of {', '.join(TEMPORAL)}, got {temporal!r}")
    if batch_size < 1 or stats_frames < 1 or window < 2:
        raise ValueError(f"batch_size and stats_frames must be >= 1 and window >= 2, got {batch_size}, "
                         f"{stats_frames}, {window}")
    if temporal != "frame" and (precision == "int8" or not getattr(generator, "tileable", True)):
        what = "precision 'int8' (a quantised graph)" if precision == "int8" else type(generator).__name__
        raise ValueError(f"{what} has no norm modules to freeze for the clip's statistics: use temporal='frame'")
    dev = resolve_device("cpu" if precision == "int8" and device is None else device, generator)
    check_inference_precision(precision, dev)
    width, height, rate, _, _ = video_info(src)
    check_pixels(width, height, max_pixels, f"video {str(src)!r}")
    shape = (height, width)
    if size is not None:
        h2, w2 = resized_shape(height, width, size)
        shape = (h2 // 2 * 2, w2 // 2 * 2)  # even sides: what yuv420p can hold
    out_channels = io_channels(generator)[1]
    if precision == "int8":  # the quantised graph stands in for the generator, calibrated on frames of this clip
        generator = int8_generator(generator, _calibration(src, shape), size_class(*shape))
    run_precision = "fp32" if precision == "int8" else precision  # float32 around int8's convolutions
    tiling, cl = exported_limits(generator, tiling or Tiling(), channels_last_default(dev, run_precision))
    runner = Runner(dev, run_precision, cl)
    tiled = tiling.applies_to(*shape)
    plan = _StatsPlan(shape, stats_frames, stats_pixels, "crops", runner)
    start = time.perf_counter()
    with prepared(generator, dev) as model, torch.inference_mode():
        model = fixed_noise(model, seed)
        work = _Work(model, runner, tiling if tiled else None, out_channels, temporal)
        frames = _prepass(work, src, plan, window)
        count, audio = _encode(work, src, Path(dst), format, shape, rate, codec, crf, frames, batch_size, progress)
    return VideoReport(count, time.perf_counter() - start, float(rate), (shape[1], shape[0]), precision, str(dev),
                       temporal, audio, tiled)


def _calibration(src: str | os.PathLike, shape: tuple[int, int]) -> list[torch.Tensor]:
    """Frames spread over the clip, at the working size, to calibrate an int8 graph on."""
    sampler = _Sampler(MAX_CALIBRATION_IMAGES)
    for frame in read_frames(src):
        sampler.add(frame)
    return [_at(f, shape) for f in _spread(sampler.kept, MAX_CALIBRATION_IMAGES)]


def _prepass(work: _Work, src: str | os.PathLike, plan: _StatsPlan, window: int) -> int:
    """The first read of the clip: its statistics (into ``work``) and its frame count (0: unknown)."""
    if work.temporal == "frame":
        return video_info(src)[3]
    container = open_video(src)
    try:
        frames = (f for f, _ in decoded(container))
        if work.temporal == "clip":
            work.clip, count = _clip_stats(work.model, frames, plan)  # type: ignore[arg-type]
        else:
            work.anchors, work.hop, count = _window_stats(work.model, frames, plan, window)  # type: ignore[arg-type]
        return count
    finally:
        container.close()


def _encode(work: _Work, src: str | os.PathLike, dst: Path, fmt: str | None, shape: tuple[int, int], rate: Fraction,
            codec: str | None, crf: int, total: int, batch_size: int,
            progress: Callable[[int, int], None] | None) -> tuple[int, bool]:
    """The second read: translate frames in batches, encode them into ``dst`` (written as a partial
    file, renamed into place when complete), copy the audio packets; returns (frames, audio copied)."""
    container = open_video(src)
    try:
        audio = container.streams.audio[0] if container.streams.audio else None
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = partial_path(dst)
        out = Encoder(tmp, dst, fmt or FORMATS.get(dst.suffix.lower(), "mp4"), shape, rate, codec, crf, audio)
        try:
            done, batch = 0, []
            for frame, packet in decoded(container, audio=audio is not None):
                if packet is not None:
                    out.packet(packet)
                    continue
                batch.append(_at(frame, shape))  # type: ignore[arg-type]
                if len(batch) == batch_size:
                    done = _flush(work, out, batch, done, total, progress)
            done = _flush(work, out, batch, done, total, progress)
            out.close()
            os.replace(tmp, dst)
        except BaseException:
            out.abandon()
            tmp.unlink(missing_ok=True)
            raise
        return done, audio is not None
    finally:
        container.close()


def _flush(work: _Work, out: Encoder, batch: list[torch.Tensor], done: int, total: int,
           progress: Callable[[int, int], None] | None) -> int:
    if not batch:
        return done
    out.frames(work(torch.stack(batch), done))
    done += len(batch)
    batch.clear()
    if progress is not None:
        progress(done, max(total, done))
    return done

"""Video files through PyAV (its own FFmpeg): open, read frames, write frames, copy audio packets.

Used by :mod:`cut_hf.translation.video`; ``av`` is imported only when a video is opened, so the
rest of cut-hf runs without it. Frames are (3, H, W) uint8 tensors; outputs are H.264 in yuv420p
(VP9 for ``.webm``, GIF for ``.gif``) at a constant frame rate, audio packets remuxed unchanged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from cut_hf.images import ImageLoadError, find_images

__all__ = ["CODECS", "DEFAULT_CRF", "FORMATS", "VIDEO_EXTENSIONS", "Encoder", "VideoLoadError", "decoded",
           "find_videos", "open_video", "read_frames", "video_info"]

#: File extensions read as videos (an animated ``.gif`` is a video to :func:`translate_video`).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif"})
#: Codec and pixel format per output container; H.264 everywhere it can go.
CODECS = {".webm": ("libvpx-vp9", "yuv420p"), ".gif": ("gif", "rgb8")}
#: FFmpeg's container names of the extensions (output files are first written under a partial name).
FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
           ".gif": "gif"}
DEFAULT_CODEC = ("libx264", "yuv420p")
#: H.264's constant rate factor: 18 is visually close to lossless and keeps texture.
DEFAULT_CRF = 18


class VideoLoadError(ImageLoadError):
    """A video that cannot be read (missing, not a video, no video stream); the message names it."""


# ---------------------------------------------------------------------------------------- reading
def open_video(src: str | os.PathLike) -> Any:
    """A PyAV container of ``src`` with at least one video stream; VideoLoadError (one line) otherwise."""
    import av  # PyAV: only video work needs it

    try:
        container = av.open(str(src))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoLoadError(f"cannot read video {str(src)!r}: {str(err).splitlines()[0]}") from None
    if not container.streams.video:
        container.close()
        raise VideoLoadError(f"cannot read video {str(src)!r}: it has no video stream")
    return container


def video_info(src: str | os.PathLike) -> tuple[int, int, Fraction, int, float]:
    """(width, height, frame rate, frame count (0: not in the header), duration in seconds) of a video file."""
    container = open_video(src)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        seconds = float(container.duration / 1_000_000) if container.duration else (stream.frames / float(rate))
        return stream.width, stream.height, Fraction(rate), stream.frames, seconds
    finally:
        container.close()


def decoded(container: Any, audio: bool = False) -> Iterator[tuple[torch.Tensor | None, Any]]:
    """Demux in file order: ``(frame (3, H, W) uint8, None)`` per video frame, ``(None, packet)`` per
    audio packet when ``audio``. A damaged stream ends the clip where it breaks."""
    import av

    streams = [container.streams.video[0], *(container.streams.audio[:1] if audio else [])]
    try:
        for packet in container.demux(*streams):
            if packet.stream.type == "audio":
                if packet.dts is not None:  # the flush packet at the end carries nothing
                    yield None, packet
                continue
            for frame in packet.decode():
                yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1), None
    except av.error.InvalidDataError:
        return


def read_frames(src: str | os.PathLike) -> Iterator[torch.Tensor]:
    """The frames of a video file, (3, H, W) uint8 each, streamed."""
    container = open_video(src)
    try:
        for frame, _ in decoded(container):
            yield frame  # type: ignore[misc]
    finally:
        container.close()


def find_videos(root: str | os.PathLike) -> list[Path]:
    """Video files under ``root`` (recursively, sorted; the rules of :func:`~cut_hf.images.find_images`)."""
    return find_images(root, extensions=VIDEO_EXTENSIONS)


# ---------------------------------------------------------------------------------------- writing
class Encoder:
    """The output file: a video stream (codec from the extension, ``crf``) and a copy of the input's audio."""

    def __init__(self, path: Path, dst: Path, fmt: str, shape: tuple[int, int], rate: Fraction, codec: str | None,
                 crf: int, audio: Any) -> None:
        import av

        name, pix_fmt = CODECS.get(dst.suffix.lower(), DEFAULT_CODEC) if codec is None else (codec, "yuv420p")
        height, width = shape
        if pix_fmt == "yuv420p" and (width % 2 or height % 2):
            raise ValueError(f"{width}x{height} frames cannot be written as {name} in yuv420p (odd side): give size=")
        self.video: Any
        try:
            self.container: Any = av.open(str(path), "w", format=fmt)
        except (av.error.FFmpegError, ValueError) as err:
            raise ValueError(f"cannot write {dst.name}: {str(err).splitlines()[0]}") from None
        try:
            self.video = self.container.add_stream(name, rate=rate)
            self.video.width, self.video.height, self.video.pix_fmt = width, height, pix_fmt
            if name in ("libx264", "libx265", "libvpx-vp9"):
                self.video.options = {"crf": str(crf), **({"b": "0"} if name == "libvpx-vp9" else {})}
            self.audio = self.container.add_stream_from_template(audio) if audio is not None else None
        except (av.error.FFmpegError, ValueError) as err:
            self.container.close()
            reason = str(err).splitlines()[0]
            raise ValueError(f"cannot write {dst.suffix or fmt} with codec {name}: {reason}") from None
        self.count = 0

    def frames(self, images: torch.Tensor) -> None:
        """Encode (B, 3, H, W) uint8 frames."""
        import av

        for image in images:
            frame = av.VideoFrame.from_ndarray(image.permute(1, 2, 0).contiguous().numpy(), format="rgb24")
            frame.pts, self.count = self.count, self.count + 1
            self.container.mux(self.video.encode(frame))

    def packet(self, packet: Any) -> None:
        packet.stream = self.audio
        self.container.mux(packet)

    def close(self) -> None:
        self.container.mux(self.video.encode(None))  # flush the encoder's delayed frames
        self.container.close()

    def abandon(self) -> None:
        """Close without finishing (the partial file is deleted by the caller)."""
        import av

        with contextlib.suppress(av.error.FFmpegError):
            self.container.close()

#!/usr/bin/env python
"""Video translation: frames/s at 256 px and 720p, and flicker against frame-by-frame translation.

    python bench/video_bench.py                        # speed: 256 px and 1280 x 720; flicker: both cases
    python bench/video_bench.py --sections flicker     # only the flicker figures (seconds)

**speed**: the default generator (ngf 64, 9 blocks, random weights) through
:func:`cut_hf.translation.video.translate_video` on a short synthetic clip per size (a smooth random
background with a disc crossing it, H.264), ``temporal="clip"`` and ``"frame"``; frames/s counts
everything: both reads of the clip, the statistics pass, translation and encoding. 720p frames run
whole (0.92 Mpx is under the 1 Mpx tiling threshold).

**flicker** (:mod:`cut_hf.evaluation.flicker`, over the input's still pixels): (1) the test's case, a
random 6-block generator (output layer x30) on a 128 x 96 clip whose block crosses a still texture,
still bands 16 rows at the top and bottom; (2) the shipped demo model on the app's example clip
(``horse_crossing.mp4``), still pixels found by :func:`~cut_hf.evaluation.flicker.still_mask`. Each
with ``translate()`` on every frame (no codec), and ``translate_video`` with each ``temporal``.
Nothing here asserts a speed; tests/translation/test_video.py asserts the flicker ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cut_hf import CUTGenerator, load_generator, perf, translate
from cut_hf.evaluation.flicker import flicker, still_mask
from cut_hf.translation.video import TEMPORAL, read_frames, translate_video

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "models" / "mini-horse2zebra" / "examples" / "horse_crossing.mp4"


def write_clip(path: Path, width: int, height: int, frames: int, fps: int = 12, block: bool = False,
               seed: int = 0) -> Path:
    """A synthetic clip: a still background (smooth noise, or 4 px random squares with ``block``) and a
    shape crossing it from left to right (a disc, or a yellow block over the middle third)."""
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    if block:
        background = rng.integers(0, 256, (height // 4, width // 4, 3)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
    else:
        small = Image.fromarray(rng.integers(0, 256, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8))
        background = np.asarray(small.resize((width, height), Image.BICUBIC))
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.options = width, height, "yuv420p", {"crf": "10"}
        for i in range(frames):
            image = background.copy()
            t = i / max(1, frames - 1)
            if block:
                x = int(-width // 2 + t * 1.5 * width)
                image[height // 3 : 2 * height // 3, max(0, x) : max(0, x + width // 2)] = (250, 240, 20)
            else:
                cx, r = -height / 3 + t * (width + 2 * height / 3), height / 3
                image[(yy - height / 2) ** 2 + (xx - cx) ** 2 < r * r] = (250, 240, 20)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def speed(tmp: Path, sizes: list[tuple[int, int, int]], precision: str) -> None:
    torch.manual_seed(0)
    g = CUTGenerator()  # the paper's default: ngf 64, 9 blocks
    print("\n## speed (default generator, ngf 64, 9 blocks)")
    print("| size | frames | temporal | seconds | frames/s |\n|---|---|---|---|---|")
    for width, height, frames in sizes:
        clip = write_clip(tmp / f"speed_{height}.mp4", width, height, frames)
        for temporal in ("clip", "frame"):
            start = time.perf_counter()
            report = translate_video(g, clip, tmp / f"out_{height}_{temporal}.mp4", temporal=temporal,
                                     precision=precision, batch_size=2)
            wall = time.perf_counter() - start
            print(f"| {width}x{height} | {report.frames} | {temporal} | {wall:.1f} | {report.frames / wall:.3f} |",
                  flush=True)


def _flicker_rows(name: str, g: torch.nn.Module, clip: Path, mask: torch.Tensor, tmp: Path) -> None:
    frames = list(read_frames(clip))
    alone = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in translate(g, frames)]
    base = flicker(alone, mask)
    print(f"| {name} | translate() per frame | {base.mean_spread:.3f} | {base.still_change:.3f} | 1.00 |")
    for temporal in TEMPORAL:
        out = tmp / f"{clip.stem}_{temporal}.mp4"
        translate_video(g, clip, out, temporal=temporal, window=12)
        f = flicker(read_frames(out), mask)
        print(f"| {name} | video, {temporal} | {f.mean_spread:.3f} | {f.still_change:.3f} | "
              f"{f.mean_spread / base.mean_spread:.2f} |", flush=True)


def flicker_section(tmp: Path) -> None:
    print("\n## flicker (0-255 units, over still pixels; ratio: mean-colour spread / translate()'s)")
    print("| case | how | mean-colour spread | still-pixel change | ratio |\n|---|---|---|---|---|")
    torch.manual_seed(0)
    g = CUTGenerator(ngf=8, n_blocks=6)
    last = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(30)
    clip = write_clip(tmp / "test_case.mp4", 128, 96, 36, block=True)
    bands = torch.zeros(96, 128, dtype=torch.bool)
    bands[:16], bands[-16:] = True, True
    _flicker_rows("random 6 blocks, 128x96 test clip, bands", g, clip, bands, tmp)
    if EXAMPLE.is_file():
        shipped = load_generator(str(ROOT / "models" / "mini-horse2zebra"))
        _flicker_rows("shipped model, horse_crossing.mp4, still_mask", shipped, EXAMPLE,
                      still_mask(read_frames(EXAMPLE)), tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="speed,flicker", help="comma-separated: speed, flicker")
    p.add_argument("--frames-256", type=int, default=12, help="frames of the 256 x 256 clip")
    p.add_argument("--frames-720", type=int, default=4, help="frames of the 1280 x 720 clip")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = p.parse_args(argv)
    machine = perf.machine_description()
    print(f"CPU: {machine['cpu']} | {machine['usable_cores']} usable cores | ISA {' '.join(machine['isa'])} | "
          f"torch {machine['torch']} | threads {torch.get_num_threads()} | load {os.getloadavg()[0]:.2f}", flush=True)
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if "flicker" in sections:
            flicker_section(Path(tmp))
        if "speed" in sections:
            speed(Path(tmp), [(256, 256, args.frames_256), (1280, 720, args.frames_720)], args.precision)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

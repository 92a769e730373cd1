#!/usr/bin/env python
"""Build "mini horse2zebra": an offline unpaired dataset from images that ship with scikit-image.

Domain A: plain horses (chestnut, bay, dun coats) standing on grass or gravel.
Domain B: zebra-striped horses on the same kinds of ground.

The horse is scikit-image's silhouette (``skimage.data.horse()``), placed with a random flip,
small rotation, scale and position; the ground is a random crop of ``skimage.data.grass()`` or
``skimage.data.gravel()``, tinted and colour-jittered. Stripes are drawn in the silhouette's own
frame (across the body, around the legs) so they follow the pose. Everything is rendered at
``supersample`` times the output size and box-filtered down, so edges and stripes are anti-aliased.

Writes the official CUT layout plus masks (for the demo model's IoU / background scores)::

    OUT/trainA/*.png  OUT/trainB/*.png  OUT/testA/*.png  OUT/testB/*.png
    OUT/masks/trainA/*.png ...          (same file names, 255 = horse)

Usage::

    python scripts/build_demo_dataset.py --output datasets/mini-horse2zebra            # ~1000 images, seconds
    python scripts/build_demo_dataset.py --output /tmp/tiny --size 32 --n-train 8 --n-test 4
    python scripts/build_demo_dataset.py --clip models/mini-horse2zebra/examples/horse_crossing.mp4  # the app's video
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("trainA", "trainB", "testA", "testB")

# Coat colours of domain A (RGB, 0-255): chestnut, bay, dark bay, dun.
COATS = np.array([[150, 78, 38], [112, 62, 32], [72, 42, 26], [176, 124, 74]], dtype=np.float32)
# Side of the ground's crop from the 512 px texture, in texture pixels (see --ground-crop).
GROUND_CROP = (160, 400)
# Ground tints (RGB multipliers of the grey texture): grass is green, gravel grey-brown.
GROUNDS = {"grass": np.array([95, 140, 58], np.float32), "gravel": np.array([150, 140, 124], np.float32)}


@dataclass(frozen=True)
class SceneParams:
    """What one scene sampled; written to ``params.json`` so a scene can be inspected or redrawn."""

    domain: str
    ground: str
    flip: bool
    angle_deg: float
    width_frac: float
    center: tuple[float, float]
    stripe_period: float


@lru_cache(maxsize=1)
def horse_silhouette() -> np.ndarray:
    """scikit-image's horse as float32 (328, 400), 1 = horse (the file stores the horse as False)."""
    from skimage import data

    return (~data.horse()).astype(np.float32)


@cache
def ground_texture(name: str) -> np.ndarray:
    """A grey ground texture from scikit-image, float32 (512, 512), normalised to mean 0.5."""
    from skimage import data

    tex = getattr(data, name)().astype(np.float32) / 255.0
    return np.clip(tex - tex.mean() + 0.5, 0.0, 1.0)


@lru_cache(maxsize=1)
def _silhouette_box() -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of the horse in the silhouette image."""
    ys, xs = np.nonzero(horse_silhouette() > 0.5)
    return float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())


@lru_cache(maxsize=1)
def _silhouette_image() -> Image.Image:
    """The silhouette as an 8-bit PIL image (255 = horse), for fast affine resampling."""
    return Image.fromarray((horse_silhouette() * 255).astype(np.uint8), "L")


@lru_cache(maxsize=4)
def _pixel_centres(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates of the pixel centres of an n x n canvas, float32 (n, n) each."""
    qy, qx = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    return qy, qx


def _render_ground(rng: np.random.Generator, n: int, name: str, crop: tuple[int, int] = GROUND_CROP) -> np.ndarray:
    """A random crop of a ground texture, tinted and lit: float32 (n, n, 3) in [0, 1].

    ``crop`` is the range of the crop's side in texture pixels (of 512): the larger, the finer the
    ground's grain in the picture."""
    tex = ground_texture(name)
    side = int(rng.integers(*crop))
    y0, x0 = (int(v) for v in rng.integers(0, tex.shape[0] - side, size=2))
    patch = Image.fromarray(tex[y0:y0 + side, x0:x0 + side]).resize((n, n), Image.BILINEAR)
    grey = np.asarray(patch, dtype=np.float32)
    contrast = rng.uniform(0.7, 1.2)
    grey = 0.5 + (grey - 0.5) * contrast
    # Brightness and a little hue jitter of the tint (per channel, kept small: no pink gravel).
    tint = GROUNDS[name] * np.float32(rng.uniform(0.8, 1.2)) * rng.uniform(0.93, 1.07, size=3).astype(np.float32)
    # Soft lighting gradient across the scene, so grounds differ in more than texture.
    yy, xx = _pixel_centres(n)
    gx, gy = rng.uniform(-0.2, 0.2, size=2).astype(np.float32)
    light = 1.0 + (gx / n) * (xx - n / 2) + (gy / n) * (yy - n / 2)
    return np.clip(grey[..., None] * (2.0 / 255.0) * tint * light[..., None], 0.0, 1.0)


def _stripes(u: np.ndarray, v: np.ndarray, period: float, phase: float) -> np.ndarray:
    """Zebra pattern in the silhouette's frame (u right, v down, pixels of the 400x328 original).

    Returns darkness in [0, 1] (1 = black stripe). Body and neck: wavy stripes across the body
    (constant u, bent by a sine of v); legs (below the belly, v > ~195): rings around the leg.
    """
    body = np.sin(2 * np.pi * (u + 14.0 * np.sin(2 * np.pi * v / 150.0 + phase)) / period)
    legs = np.sin(2 * np.pi * v / (0.7 * period))
    w_legs = 0.5 + 0.5 * np.tanh((v - 195.0) / 8.0)  # smooth hand-over at the belly line
    s = (1 - w_legs) * body + w_legs * legs
    return 0.5 + 0.5 * np.tanh(4.0 * s)  # near-binary, still smooth for anti-aliasing


def render_scene(
    rng: np.random.Generator, domain: str, size: int = 64, supersample: int = 3,
    ground_crop: tuple[int, int] = GROUND_CROP, centre_x: float | None = None,
) -> tuple[Image.Image, np.ndarray, SceneParams]:
    """Draw one scene.

    Args:
        rng: the random generator (the only source of randomness).
        domain: ``"A"`` (plain horse) or ``"B"`` (zebra-striped horse).
        size: output side in pixels.
        supersample: render at ``size * supersample`` and box-filter down (anti-aliasing).
        ground_crop: range of the side (texture pixels) of the ground's crop, see ``--ground-crop``.
        centre_x: put the horse's centre here (a fraction of the width; outside [0, 1] it is partly
            or wholly out of view) instead of where ``rng`` says; every draw is still made, so the
            same ``rng`` state gives the same scene with the horse moved (:func:`render_clip`).

    Returns:
        ``(image, mask, params)``: RGB image (size, size), bool mask (size, size) with True on the
        horse (alpha > 0.5), and the sampled parameters.
    """
    if domain not in ("A", "B"):
        raise ValueError(f"domain must be 'A' or 'B', got {domain!r}")
    n = size * supersample
    x0, x1, y0, y1 = _silhouette_box()
    c0 = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)
    half = np.array([(x1 - x0) / 2, (y1 - y0) / 2], np.float32)

    ground = str(rng.choice(sorted(GROUNDS)))
    flip = bool(rng.random() < 0.5)
    angle = float(rng.uniform(-12.0, 12.0))
    width_frac = float(rng.uniform(0.6, 0.9))
    scale = width_frac * n / (2 * half[0])
    theta = np.deg2rad(angle)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    # Half extents of the rotated, scaled box: the centre is drawn so the horse stays in view.
    ext = scale * np.array([abs(cos) * half[0] + abs(sin) * half[1], abs(sin) * half[0] + abs(cos) * half[1]])
    margin = 0.02 * n
    centre = np.array([rng.uniform(min(ext[i] + margin, n / 2), max(n - ext[i] - margin, n / 2)) for i in (0, 1)])
    if centre_x is not None:
        centre[0] = centre_x * n

    # Inverse map: output pixel q -> silhouette frame p = c0 + F R(-theta) (q - centre) / scale,
    # written as one affine (u, v) = M (qx, qy, 1): PIL samples the silhouette with it, and the
    # stripes are evaluated at the same (u, v), so pattern and outline move together.
    fu = np.float32(-1.0 if flip else 1.0)
    mu = (fu * cos / scale, fu * sin / scale, fu * (-cos * centre[0] - sin * centre[1]) / scale + c0[0])
    mv = (-sin / scale, cos / scale, (sin * centre[0] - cos * centre[1]) / scale + c0[1])
    qy, qx = _pixel_centres(n)
    u = (mu[0] * qx + mu[1] * qy + mu[2]).astype(np.float32)
    v = (mv[0] * qx + mv[1] * qy + mv[2]).astype(np.float32)
    affine = tuple(float(m) for m in (*mu, *mv))
    alpha = np.asarray(_silhouette_image().transform((n, n), Image.Transform.AFFINE, affine,
                                                     resample=Image.Resampling.BILINEAR),
                       dtype=np.float32) / 255.0

    # Shading in the horse's frame: lighter back, darker belly and legs.
    shade = (1.12 - 0.35 * np.clip((v - y0) / (y1 - y0), 0, 1))[..., None]
    period = float(rng.uniform(42.0, 54.0))
    if domain == "A":
        coat = COATS[rng.integers(len(COATS))] * rng.uniform(0.88, 1.12, size=3).astype(np.float32) / 255.0
        fg = np.clip(coat[None, None, :] * shade, 0, 1)
    else:
        dark = _stripes(u, v, period, float(rng.uniform(0, 2 * np.pi)))[..., None]
        white, black = np.float32(rng.uniform(0.85, 0.96)), np.float32(rng.uniform(0.05, 0.14))
        fg = np.clip((white * (1 - dark) + black * dark) * (0.85 + 0.15 * shade), 0, 1)
        fg = np.repeat(fg, 3, axis=2) if fg.shape[2] == 1 else fg

    bg = _render_ground(rng, n, ground, ground_crop)
    img = bg * (1 - alpha[..., None]) + fg * alpha[..., None]
    # Global colour jitter: brightness and saturation.
    img = img * np.float32(rng.uniform(0.9, 1.1))
    grey = img.mean(axis=2, keepdims=True)
    img = np.clip(grey + (img - grey) * np.float32(rng.uniform(0.8, 1.2)), 0, 1)

    # Box-filter down to the output size (PIL's reduce is a box filter, and fast).
    image = Image.fromarray((img * 255 + 0.5).astype(np.uint8), "RGB").reduce(supersample)
    alpha_small = Image.fromarray((alpha * 255 + 0.5).astype(np.uint8), "L").reduce(supersample)
    params = SceneParams(domain, ground, flip, round(angle, 2), round(width_frac, 3),
                         (round(float(centre[0]) / supersample, 2), round(float(centre[1]) / supersample, 2)),
                         round(period, 2))
    return image, np.asarray(alpha_small) >= 128, params


def build(output: str | Path, size: int = 64, n_train: int = 400, n_test: int = 50, seed: int = 0,
          ground_crop: tuple[int, int] = GROUND_CROP) -> dict:
    """Write the dataset under ``output`` and return a summary (also written to ``OUT/params.json``).

    Each split has its own seeded stream (``seed`` + split index), so growing one split leaves the
    images of the others unchanged.
    """
    out = Path(output)
    counts = {"trainA": n_train, "trainB": n_train, "testA": n_test, "testB": n_test}
    summary: dict = {"size": size, "seed": seed, "ground_crop": list(ground_crop), "counts": counts, "scenes": {}}
    for k, split in enumerate(SPLITS):
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / "masks" / split).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, k])
        scenes = []
        for i in range(counts[split]):
            image, mask, params = render_scene(rng, split[-1], size, ground_crop=ground_crop)
            name = f"{split}_{i:04d}.png"
            image.save(out / split / name)
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(out / "masks" / split / name)
            scenes.append({"file": name, **params.__dict__})
        summary["scenes"][split] = scenes
    (out / "params.json").write_text(json.dumps(summary, indent=1))
    return summary


def render_clip(
    path: str | Path, frames: int = 36, fps: int = 12, size: int = 64, seed: int = 3, crf: int = 20
) -> Path:
    """The app's example video: one scene of domain A whose horse walks in from the left and out at
    the right over a still ground, ``frames`` frames at ``fps`` (H.264, yuv420p), no audio."""
    import av  # only the clip needs PyAV

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.options = size, size, "yuv420p", {"crf": str(crf)}
        for i in range(frames):
            x = -0.5 + 2.0 * i / max(1, frames - 1)  # centre from half a width left of view to half right
            image, _, _ = render_scene(np.random.default_rng(seed), "A", size, centre_x=x)  # same draws each frame
            frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="datasets/mini-horse2zebra", help="dataset folder to write")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (multiple of 4 for training)")
    parser.add_argument("--n-train", type=int, default=400, help="training images per domain")
    parser.add_argument("--n-test", type=int, default=50, help="test images per domain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ground-crop", type=int, nargs=2, default=list(GROUND_CROP), metavar=("MIN", "MAX"),
                        help="side of the ground texture's crop, in texture pixels (of 512): smaller is coarser grain")
    parser.add_argument("--clip", metavar="PATH", help="write the app's example video here instead of a dataset")
    args = parser.parse_args(argv)
    if args.clip:
        print(f"wrote {render_clip(args.clip, seed=args.seed if args.seed else 3)}")
        return 0
    if args.size < 16 or args.n_train < 1 or args.n_test < 1:
        parser.error("need --size >= 16 and at least one image per split")
    if not 8 <= args.ground_crop[0] < args.ground_crop[1] <= 512:
        parser.error("--ground-crop needs 8 <= MIN < MAX <= 512")
    start = time.perf_counter()
    summary = build(args.output, args.size, args.n_train, args.n_test, args.seed, tuple(args.ground_crop))
    total = sum(summary["counts"].values())
    print(f"wrote {total} images of {args.size}x{args.size} to {args.output} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Build a small labelled image dataset for SimCLR, offline, from images that ship with installed packages.

``--source photos`` (the default): "skimage-crops", CIFAR-like 32x32 crops of scikit-image's bundled
photographs and textures (astronaut, brick, camera, cat, coffee, coins, grass, gravel, Hubble deep
field, immunohistochemistry, moon, motorcycle, retina, rocket, ...), labelled by the photograph they
come from. Train and test crops come from disjoint parts of each photograph (a vertical cut at
``--train-fraction`` of the width: train left, test right), so no test pixel was ever seen in
training: the label asks "which scene / texture is this?", not "which pixels are these?".

``--source digits``: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), upscaled
to ``--size`` (bicubic) as RGB, split per class.

Writes the layout ``cut_hf.evaluation.simclr`` reads and ``cut-hf train --task simclr`` trains on (labels
are ignored there; the class subfolders are simply searched recursively)::

    OUT/train/<class>/*.png   OUT/test/<class>/*.png   OUT/info.json

Usage::

    python scripts/build_simclr_dataset.py --output datasets/simclr-photos            # 15 x (96 + 32) crops, seconds
    python scripts/build_simclr_dataset.py --output datasets/simclr-digits --source digits
    python scripts/build_simclr_dataset.py --output /tmp/tiny --per-class-train 4 --per-class-test 2 --classes 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cut_hf.cli.help import HelpFormatter

# scikit-image's bundled images (no download): name -> loader name in skimage.data. Small or
# synthetic ones (page, text, chessboard, logo, horse silhouette, phantom) are left out.
PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "coffee", "coins", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry", "moon", "motorcycle", "retina", "rocket")


def load_photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a bundled scikit-image picture."""
    from skimage import data

    if name == "motorcycle":
        img = data.stereo_motorcycle()[0]  # the left view; the right one would be a near copy
    else:
        img = getattr(data, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def random_crops(region: np.ndarray, n: int, size: int, rng: np.random.Generator,
                 min_side: float, max_side: float) -> list[Image.Image]:
    """n square crops of a random side in [min_side, max_side] x the region's shorter side, resized to size."""
    h, w = region.shape[:2]
    pil = Image.fromarray(region)
    out = []
    for _ in range(n):
        side = round(rng.uniform(min_side, max_side) * min(h, w))
        side = max(size // 2, min(side, h, w))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = pil.crop((left, top, left + side, top + side))
        out.append(crop.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None))
    return out


def build_photos(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, dict[str, list[Image.Image]]]:
    """{split: {class: images}} of crops; train from the left part of each photo, test from the right."""
    splits: dict[str, dict[str, list[Image.Image]]] = {"train": {}, "test": {}}
    for name in PHOTOS[: args.classes]:
        img = load_photo(name)
        cut = round(img.shape[1] * args.train_fraction)
        left, right = img[:, :cut], img[:, cut:]
        splits["train"][name] = random_crops(left, args.per_class_train, args.size, rng, args.min_side, args.max_side)
        splits["test"][name] = random_crops(right, args.per_class_test, args.size, rng, args.min_side, args.max_side)
    return splits


def build_digits(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, dict[str, list[Image.Image]]]:
    """{split: {class: images}} of upscaled digits, split per class at random."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    splits: dict[str, dict[str, list[Image.Image]]] = {"train": {}, "test": {}}
    for label in range(min(10, args.classes)):
        imgs = digits.images[digits.target == label]  # (n, 8, 8) in 0..16
        order = rng.permutation(len(imgs))
        n_test = args.per_class_test
        chosen = {"test": order[:n_test], "train": order[n_test:n_test + args.per_class_train]}
        for split, idx in chosen.items():
            pics = []
            for i in idx:
                gray = Image.fromarray((imgs[i] * (255.0 / 16.0)).round().astype(np.uint8))
                pics.append(gray.resize((args.size, args.size), Image.Resampling.BICUBIC).convert("RGB"))
            splits[split][f"digit_{label}"] = pics
    return splits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--output", required=True, help="folder to create (replaced if it holds a previous build)")
    p.add_argument("--source", default="photos", choices=["photos", "digits"])
    p.add_argument("--size", type=int, default=32, help="side of the square images")
    p.add_argument("--classes", type=int, default=len(PHOTOS), help="use the first N classes")
    p.add_argument("--per-class-train", type=int, default=96, help="training images per class")
    p.add_argument("--per-class-test", type=int, default=32, help="test images per class")
    p.add_argument("--train-fraction", type=float, default=0.7,
                   help="photos: share of the width the train crops come from")
    p.add_argument("--min-side", type=float, default=0.15,
                   help="photos: smallest crop side, x the region's shorter side")
    p.add_argument("--max-side", type=float, default=0.4, help="photos: largest crop side")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.classes < 2 or args.size < 8 or args.per_class_train < 1 or args.per_class_test < 1:
        p.error("need --classes >= 2, --size >= 8 and at least one train and one test image per class")
    if not 0.2 <= args.train_fraction <= 0.9 or not 0 < args.min_side <= args.max_side <= 1:
        p.error("--train-fraction must be in [0.2, 0.9] and 0 < --min-side <= --max-side <= 1")

    t0 = time.time()
    rng = np.random.default_rng(args.seed)
    splits = build_photos(args, rng) if args.source == "photos" else build_digits(args, rng)
    out = Path(args.output)
    if out.exists():
        if not (out / "info.json").is_file():
            print(f"error: {out} exists and is not a dataset built by this script; choose another --output",
                  file=sys.stderr)
            return 1
        shutil.rmtree(out)
    counts = {}
    for split, classes in splits.items():
        for name, pics in classes.items():
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, pic in enumerate(pics):
                pic.save(folder / f"{name}_{i:04d}.png")
            counts.setdefault(split, {})[name] = len(pics)
    info = {"source": args.source, "size": args.size, "seed": args.seed, "counts": counts,
            "command": "python scripts/build_simclr_dataset.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.source == "photos":
        info.update(train_fraction=args.train_fraction, crop_side=[args.min_side, args.max_side],
                    split="train crops from the left part of each photo, test crops from the right part")
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    n_train = sum(counts["train"].values())
    n_test = sum(counts["test"].values())
    print(f"wrote {out}: {n_train} train + {n_test} test images, {len(counts['train'])} classes, "
          f"{args.size}x{args.size} ({time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

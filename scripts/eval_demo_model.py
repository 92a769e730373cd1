#!/usr/bin/env python
"""Score a generator on the mini horse2zebra test split, against the identity mapping.

What a good horse -> zebra translation does on this data: keep the horse's silhouette, put
stripes on it, leave the ground alone. Three scores measure that, with the known masks that
``scripts/build_demo_dataset.py`` writes:

- **mask IoU** (silhouette kept): the output is segmented by a pixel classifier (gradient-boosted
  trees on colour and local-texture features, 3 classes: ground / plain horse / striped horse)
  fitted on *training* images of both domains with their masks; IoU of the predicted horse
  (plain or striped) with the input's true mask.
- **striped fraction** (stripes present): the share of the true horse pixels (mask eroded by
  1 px) that the same classifier calls *striped horse* (rather than plain horse or ground). Its value on
  real domain-B test images is the reference.
- **stripe energy**: mean absolute band-pass luminance (|L - blur(L)|) inside the eroded mask, a
  classifier-free check; again with the real domain-B value beside it.
- **background PSNR** (ground kept): PSNR between output and input outside the mask dilated by
  2 px (the identity scores infinity by definition).

The identity mapping (output = input) is the baseline: it keeps silhouette and ground perfectly
and adds no stripes; a translator should come close to it on the first and last scores and close
to the domain-B reference on the stripe scores.

Usage::

    python scripts/eval_demo_model.py --model models/mini-horse2zebra --data datasets/mini-horse2zebra
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

GROUND, PLAIN, STRIPED = 0, 1, 2


# ------------------------------------------------------------------------------------ features
def pixel_features(image: np.ndarray) -> np.ndarray:
    """Per-pixel features of an RGB image (H, W, 3) uint8 -> (H * W, 12) float32: colour, saturation,
    luminance, 5x5 mean colour, local luminance std at 3 and 7 px, band-pass energy, 5x5 saturation."""
    img = image.astype(np.float32) / 255.0
    lum = img.mean(axis=2)
    sat = img.max(axis=2) - img.min(axis=2)
    mean5 = ndimage.uniform_filter(img, size=(5, 5, 1))

    def local_std(x: np.ndarray, size: int) -> np.ndarray:
        m = ndimage.uniform_filter(x, size)
        return np.sqrt(np.maximum(ndimage.uniform_filter(x * x, size) - m * m, 0.0))

    band = ndimage.uniform_filter(np.abs(lum - ndimage.gaussian_filter(lum, 1.0)), 5)
    feats = [img[..., 0], img[..., 1], img[..., 2], sat, lum, mean5[..., 0], mean5[..., 1], mean5[..., 2],
             local_std(lum, 3), local_std(lum, 7), band, ndimage.uniform_filter(sat, 5)]
    return np.stack(feats, axis=-1).reshape(-1, len(feats))


def stripe_energy(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean |L - gaussian(L, 1)| inside the mask eroded by 1 px (0-1 luminance units)."""
    lum = image.astype(np.float32).mean(axis=2) / 255.0
    inner = ndimage.binary_erosion(mask, iterations=1)
    if not inner.any():
        return float("nan")
    return float(np.abs(lum - ndimage.gaussian_filter(lum, 1.0))[inner].mean())


def background_psnr(output: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, 8-bit peak) outside the mask dilated by 2 px; inf when identical there."""
    outside = ~ndimage.binary_dilation(mask, iterations=2)
    diff = output.astype(np.float64)[outside] - reference.astype(np.float64)[outside]
    mse = float((diff ** 2).mean()) if diff.size else 0.0
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# ----------------------------------------------------------------------------------- segmenter
def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) >= 128


def fit_segmenter(data: Path, n_images: int = 80, pixels_per_image: int = 1500, seed: int = 0):
    """A 3-class pixel classifier (ground / plain horse / striped horse) fitted on training images
    of both domains and their masks. Returns a fitted scikit-learn classifier."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for domain, horse in (("A", PLAIN), ("B", STRIPED)):
        files = sorted((data / f"train{domain}").glob("*.png"))[:n_images]
        if not files:
            raise FileNotFoundError(f"no training images in {data / f'train{domain}'}: build the dataset first")
        for f in files:
            img, mask = _load(f), _mask(data / "masks" / f"train{domain}" / f.name)
            feats = pixel_features(img)
            labels = np.where(mask.reshape(-1), horse, GROUND)
            # Balance horse and ground pixels: horses cover only ~20% of an image.
            idx_h = np.flatnonzero(labels != GROUND)
            idx_g = np.flatnonzero(labels == GROUND)
            k = pixels_per_image // 2
            idx = np.concatenate([rng.choice(idx_h, min(k, len(idx_h)), replace=False),
                                  rng.choice(idx_g, min(k, len(idx_g)), replace=False)])
            xs.append(feats[idx])
            ys.append(labels[idx])
    clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=seed)
    clf.fit(np.concatenate(xs), np.concatenate(ys))
    return clf


def segment(clf, image: np.ndarray) -> np.ndarray:
    """Class probabilities per pixel, (H, W, 3), smoothed over 3x3 (segmentations are blobs)."""
    h, w, _ = image.shape
    prob = clf.predict_proba(pixel_features(image)).reshape(h, w, -1)
    return ndimage.uniform_filter(prob, size=(3, 3, 1))


# ------------------------------------------------------------------------------------- scoring
@dataclass
class Scores:
    """Means over the test images (and standard deviations)."""

    mask_iou: tuple[float, float]
    striped_fraction: tuple[float, float]
    stripe_energy: tuple[float, float]
    background_psnr: tuple[float, float]

    def as_dict(self) -> dict:
        return {k: {"mean": round(v[0], 4), "std": round(v[1], 4)} for k, v in self.__dict__.items()}


def score_images(clf, outputs: list[np.ndarray], inputs: list[np.ndarray], masks: list[np.ndarray]) -> Scores:
    """Scores of ``outputs`` given the ``inputs`` they came from and the inputs' true masks."""
    ious, striped, energy, psnr = [], [], [], []
    for out, inp, mask in zip(outputs, inputs, masks, strict=True):
        prob = segment(clf, out)
        horse = prob[..., PLAIN] + prob[..., STRIPED] > prob[..., GROUND]
        ious.append(iou(horse, mask))
        inner = ndimage.binary_erosion(mask, iterations=1)
        label = prob.argmax(axis=-1)  # (H, W) in {GROUND, PLAIN, STRIPED}
        striped.append(float((label == STRIPED)[inner].mean()) if inner.any() else float("nan"))
        energy.append(stripe_energy(out, mask))
        psnr.append(background_psnr(out, inp, mask))

    def stats(values: list[float]) -> tuple[float, float]:
        arr = np.asarray(values, dtype=np.float64)
        if np.isinf(arr).all():
            return float("inf"), 0.0
        arr = arr[np.isfinite(arr)]
        return float(arr.mean()), float(arr.std())

    return Scores(stats(ious), stats(striped), stats(energy), stats(psnr))


def before_after_figure(inputs: list[np.ndarray], outputs: list[np.ndarray], path: str | Path, columns: int = 6,
                        zoom: int = 3) -> Path:
    """A two-row picture, inputs above and translations below, enlarged ``zoom`` times (nearest)."""
    from PIL import ImageDraw

    from cut_hf.demo.render import font

    n = min(columns, len(inputs))
    h, w, _ = inputs[0].shape
    gap, label = 4, 18
    fig = Image.new("RGB", (n * w * zoom + (n - 1) * gap, label + 2 * h * zoom + gap), "white")
    for i in range(n):
        for row, img in enumerate((inputs[i], outputs[i])):
            tile = Image.fromarray(img).resize((w * zoom, h * zoom), Image.NEAREST)
            fig.paste(tile, (i * (w * zoom + gap), label + row * (h * zoom + gap)))
    ImageDraw.Draw(fig).text((2, 2), "test inputs (top) and the shipped model's translations (bottom)",
                             fill="black", font=font(13))
    fig.save(path)
    return Path(path)


def evaluate(model: str, data: Path, limit: int | None = None, seed: int = 0, figure: str | None = None) -> dict:
    """Scores of the model, the identity mapping and the real domain-B test images (the reference)."""
    from cut_hf import load_generator
    from cut_hf.translation.pipeline import translate

    start = time.perf_counter()
    files_a = sorted((data / "testA").glob("*.png"))[:limit]
    files_b = sorted((data / "testB").glob("*.png"))[:limit]
    if not files_a or not files_b:
        raise FileNotFoundError(f"no test images in {data}/testA or testB")
    generator = load_generator(model)
    inputs = [_load(f) for f in files_a]
    masks = [_mask(data / "masks" / "testA" / f.name) for f in files_a]
    outputs = [np.asarray(im) for im in translate(generator, [Image.fromarray(x) for x in inputs], device="cpu")]
    if figure:
        before_after_figure(inputs, outputs, figure)
    refs = [_load(f) for f in files_b]
    ref_masks = [_mask(data / "masks" / "testB" / f.name) for f in files_b]
    # One OpenMP thread for the trees: the work is small, and on a shared CPU several threads
    # spin against each other (measured: 41 s -> 2.6 s for a small fit on a busy 2-core machine).
    with threadpool_limits(limits=1, user_api="openmp"):
        clf = fit_segmenter(data, seed=seed)
        result = {
            "model": str(model),
            "data": str(data),
            "test_images": len(inputs),
            "model_scores": score_images(clf, outputs, inputs, masks).as_dict(),
            "identity_scores": score_images(clf, inputs, inputs, masks).as_dict(),
            "domain_b_reference": score_images(clf, refs, refs, ref_masks).as_dict(),
        }
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["domain_b_reference"].pop("background_psnr")  # real B images have no input to compare with
    return result


def markdown_table(result: dict) -> str:
    """The scores as a Markdown table (mean ± std over the test images)."""
    def cell(d: dict, key: str, fmt: str) -> str:
        if key not in d:
            return "—"
        m, s = d[key]["mean"], d[key]["std"]
        return "∞" if math.isinf(m) else f"{m:{fmt}} ± {s:{fmt}}"

    rows = [("horse mask IoU ↑ (silhouette kept)", "mask_iou", ".3f"),
            ("striped fraction of the horse ↑", "striped_fraction", ".3f"),
            ("stripe energy inside the mask", "stripe_energy", ".4f"),
            ("background PSNR, dB ↑ (ground kept)", "background_psnr", ".1f")]
    lines = ["| score | model | identity | real zebras (testB) |", "|---|---|---|---|"]
    for name, key, fmt in rows:
        lines.append(f"| {name} | {cell(result['model_scores'], key, fmt)} | "
                     f"{cell(result['identity_scores'], key, fmt)} | {cell(result['domain_b_reference'], key, fmt)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/mini-horse2zebra", help="generator folder or Hub id")
    parser.add_argument("--data", default="datasets/mini-horse2zebra",
                        help="dataset folder (built with scripts/build_demo_dataset.py if missing)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N test images")
    parser.add_argument("--json", default=None, help="also write the scores to this file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", default=None, help="save a before/after picture of the first test images here")
    args = parser.parse_args(argv)
    data = Path(args.data)
    if not (data / "testA").is_dir():
        import importlib.util

        spec = importlib.util.spec_from_file_location("build_demo_dataset", Path(__file__).resolve().parent /
                                                      "build_demo_dataset.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # a sibling script, loaded from its path
        build = module.build

        print(f"building the dataset in {data} ...")
        build(data)
    try:
        result = evaluate(args.model, data, args.limit, args.seed, args.figure)
    except Exception as err:  # one line for the CLI
        from cut_hf import ModelLoadError

        if isinstance(err, (ModelLoadError, FileNotFoundError)):
            print(f"error: {err}", file=sys.stderr)
            return 1
        raise
    print(markdown_table(result))
    print(f"({result['test_images']} test images, {result['seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure a CUT generator the way the paper did: translate a test folder, then FID / KID against
the target domain's test folder (and PSNR / SSIM / LPIPS against ground truth with ``--paired``).

``python -m cut_hf.evaluate --model ID_OR_DIR --input testA --reference testB [--output DIR]
[--size 256] [--batch-size 8] [--paired] [--inception-weights PATH] [--json PATH]``

The paper's protocol, as in the official ``test.py`` + pytorch-fid: every test image is converted to
RGB and resized to 256x256 (bicubic; the test options set load_size = crop_size = 256, so nothing
is cropped), translated, saved losslessly, and FID is computed between all translated images and
all images of the other domain's test folder with the 2048-d pool3 features of the FID Inception-v3.
``--size 0`` keeps native sizes instead. In training, :func:`evaluate_folders` is the same code.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from PIL import Image

from .images import ImageLoadError, load_image

from .metrics import (
    MetricsUnavailable,
    TinyFeatureExtractor,
    extract_features,
    fid_kid,
    inception_feature_extractor,
    lpips_available,
    paired_metrics,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
# How many input images are held in memory at once (translated, measured, then dropped).
CHUNK = 64

__all__ = ["EvaluationError", "list_images", "evaluate_folders", "main"]


class EvaluationError(RuntimeError):
    """The evaluation cannot run (missing or empty folder, nothing readable); one-line message."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name. Raises :class:`EvaluationError`."""
    path = Path(folder).expanduser()
    if not path.exists():
        raise EvaluationError(f"folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise EvaluationError(f"{str(path)!r} is not a folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise EvaluationError(f"folder {str(path)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _open_rgb(path: Path, size: int | None) -> Image.Image:
    """RGB image, EXIF orientation applied, resized to ``size`` x ``size`` (bicubic) if given, as the
    official test loader (``Image.open(p).convert('RGB')`` then ``Resize([256, 256], BICUBIC)``).
    Raises :class:`~cut_hf.images.ImageLoadError` for unreadable files."""
    rgb = load_image(path, 3)
    if size and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return rgb


def _load_all(paths: Sequence[Path], size: int | None, skipped: list[dict[str, str]]) -> list[tuple[Path, Image.Image]]:
    """Readable images of ``paths``; unreadable ones are recorded in ``skipped`` and left out."""
    out = []
    for p in paths:
        try:
            out.append((p, _open_rgb(p, size)))
        except ImageLoadError as err:
            reason = " ".join(str(err).split())[:160]
            print(f"warning: skipping unreadable image {p}: {reason}", file=sys.stderr)
            skipped.append({"file": str(p), "reason": reason})
    return out


def _to_uint8(image: Image.Image) -> torch.Tensor:
    """PIL image -> (3, H, W) uint8 tensor (grayscale outputs repeated to RGB for the feature net)."""
    rgb = image.convert("RGB")
    return torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(rgb.height, rgb.width, 3).permute(2, 0, 1)


def _equal_size_batches(images: Sequence[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Stacks of consecutive equal-size images, at most ``batch_size`` each."""
    batch: list[torch.Tensor] = []
    for im in images:
        if batch and (len(batch) == batch_size or im.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(im)
    if batch:
        yield torch.stack(batch)


def _features(extractor: nn.Module, images: Sequence[torch.Tensor], batch_size: int) -> torch.Tensor:
    return torch.cat([extract_features(extractor, b) for b in _equal_size_batches(images, batch_size)])


def _chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _extractor_name(extractor: nn.Module) -> str:
    if type(extractor).__name__ == "NoTrainInceptionV3":
        return "inception-v3-compat (FID Inception-v3, 2048-d pool3, torchmetrics + torch-fidelity)"
    return f"custom: {type(extractor).__name__}"


def _reference_features(
    reference_dir: Path, extractor: nn.Module, size: int | None, batch_size: int, skipped: list[dict[str, str]]
) -> torch.Tensor:
    feats = []
    for chunk in _chunks(list_images(reference_dir), CHUNK):
        images = [_to_uint8(im) for _, im in _load_all(chunk, size, skipped)]
        if images:
            feats.append(_features(extractor, images, batch_size))
    if not feats:
        raise EvaluationError(f"no readable image in the reference folder {str(reference_dir)!r}")
    return torch.cat(feats)


def evaluate_folders(
    generator: nn.Module,
    input_dir: str | Path,
    reference_dir: str | Path,
    feature_extractor: nn.Module | None = None,
    *,
    output_dir: str | Path | None = None,
    size: int | None = 256,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    paired: bool = False,
    inception_weights: str | Path | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    cache: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Translate ``input_dir`` with ``generator`` and measure the outputs against ``reference_dir``.

    Args:
        generator: a CUTGenerator (unwrapped from DDP/Accelerate). Put in eval mode for the run and
            restored to its previous mode afterwards.
        input_dir: source-domain test images (e.g. ``testA``).
        reference_dir: target-domain test images (e.g. ``testB``); with ``paired``, the ground
            truth of each input under the same file name (any extension).
        feature_extractor: module mapping uint8 (B, 3, H, W) to (B, d) features; ``None`` uses the
            FID Inception-v3 (``inception_weights`` or torch.hub's copy).
        output_dir: save the translated images there as ``<input stem>.png``.
        size: resize inputs and references to ``size`` x ``size`` (bicubic) as the paper's test
            loader; ``None`` or 0 keeps native sizes.
        batch_size: images per generator / feature-extractor batch.
        device: where to translate; ``None`` keeps the generator's device.
        precision: ``fp32`` | ``bf16`` | ``fp16``, passed to :func:`cut_hf.pipeline.translate`.
        paired: also compute per-pair PSNR / SSIM (and LPIPS if its weights are cached).
        inception_weights: a local copy of the FID Inception weights (offline use).
        kid_subsets, kid_subset_size, seed: KID's subset sampling.
        cache: a dict kept by the caller across calls (training: every ``--eval-every``) that holds
            the default Inception and the reference features, so they are computed once.
        progress: show a tqdm bar over the input images.

    Returns:
        JSON-ready dict: ``fid``, ``kid_mean``, ``kid_std``, ``kid_subsets``, ``kid_subset_size``,
        ``num_translated``, ``num_reference``, ``skipped`` (unreadable files), ``size``,
        ``feature_extractor``, ``feature_dim``, ``seconds`` and, with ``paired``, ``paired``
        (``pairs``, mean ``psnr`` / ``ssim`` / ``lpips`` or ``lpips_note``).

    Raises:
        EvaluationError: missing / empty folders, nothing readable, no pairs.
        MetricsUnavailable: no Inception weights (offline) or no torch-fidelity.
    """
    from .pipeline import translate  # imported here: the pipeline imports models, not the reverse

    t_start = time.perf_counter()
    size = size or None
    input_dir, reference_dir = Path(input_dir), Path(reference_dir)
    inputs = list_images(input_dir)
    refs = list_images(reference_dir)  # checked before any slow work
    cache = {} if cache is None else cache

    if feature_extractor is None:
        key = f"inception:{inception_weights}"
        if key not in cache:
            cache[key] = inception_feature_extractor(inception_weights)
        feature_extractor = cache[key]
    extractor_name = _extractor_name(feature_extractor)
    if device is not None:
        feature_extractor = feature_extractor.to(device)

    skipped: list[dict[str, str]] = []
    t0 = time.perf_counter()
    ref_key = f"ref:{reference_dir.resolve()}:{size}:{id(feature_extractor)}"
    if ref_key in cache:
        ref_feats, ref_skipped = cache[ref_key]
    else:
        ref_skipped = []
        ref_feats = _reference_features(reference_dir, feature_extractor, size, batch_size, ref_skipped)
        cache[ref_key] = (ref_feats, ref_skipped)
    skipped += ref_skipped
    t_ref = time.perf_counter() - t0

    pairs_by_stem: dict[str, Path] = {}
    lpips_net, lpips_note = None, None
    if paired:
        pairs_by_stem = {p.stem: p for p in refs}
        if not any(p.stem in pairs_by_stem for p in inputs):
            raise EvaluationError(f"--paired: no file name of {str(input_dir)!r} appears in {str(reference_dir)!r}")
        ok, lpips_note = lpips_available()
        if ok:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            # sync_on_compute=False: this process holds every pair (see cut_hf.metrics.fid_kid)
            lpips_net = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True,
                                                              sync_on_compute=False).eval()
            lpips_note = None

    was_training = generator.training
    generator.eval()
    fake_feats: list[torch.Tensor] = []
    per_pair: dict[str, list[float]] = {}
    unmatched: list[str] = []
    t_translate = t_feat = 0.0
    out_dir = Path(output_dir) if output_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(inputs), desc="translate", unit="img")
    try:
        for chunk in _chunks(inputs, CHUNK):
            loaded = _load_all(chunk, size, skipped)
            if not loaded:
                continue
            t0 = time.perf_counter()
            outputs = translate(generator, [im for _, im in loaded], batch_size=batch_size, device=device,
                                precision=precision)
            t_translate += time.perf_counter() - t0
            if out_dir is not None:
                for (path, _), out in zip(loaded, outputs, strict=True):
                    out.save(out_dir / f"{path.stem}.png")
            t0 = time.perf_counter()
            out_u8 = [_to_uint8(out) for out in outputs]
            fake_feats.append(_features(feature_extractor, out_u8, batch_size))
            if paired:
                outs, gts = [], []
                for (path, _), img in zip(loaded, out_u8, strict=True):
                    partner = pairs_by_stem.get(path.stem)
                    if partner is None:
                        unmatched.append(path.name)
                        continue
                    try:
                        gt = _to_uint8(_open_rgb(partner, size))
                    except ImageLoadError as err:
                        skipped.append({"file": str(partner), "reason": str(err)})
                        unmatched.append(path.name)
                        continue
                    if gt.shape != img.shape:
                        raise EvaluationError(
                            f"--paired: {path.name} translates to {tuple(img.shape[1:])} but its ground truth "
                            f"{partner.name} is {tuple(gt.shape[1:])}; pass --size to compare at one size")
                    outs.append(img.float() / 255)
                    gts.append(gt.float() / 255)
                for k, v in paired_metrics(outs, gts, lpips=lpips_net).items():
                    per_pair.setdefault(k, []).extend(v)
            t_feat += time.perf_counter() - t0
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
        generator.train(was_training)

    if not fake_feats:
        raise EvaluationError(f"no readable image in the input folder {str(input_dir)!r}")
    fakes = torch.cat(fake_feats)
    t0 = time.perf_counter()
    result: dict[str, Any] = fid_kid(ref_feats, fakes, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
                                     seed=seed)
    t_stats = time.perf_counter() - t0
    result.update(
        num_translated=len(fakes),
        num_reference=len(ref_feats),
        skipped=skipped,
        size=size,
        feature_extractor=extractor_name,
        feature_dim=int(fakes.shape[1]),
    )
    if paired:
        n = len(per_pair.get("psnr", []))
        summary: dict[str, Any] = {"pairs": n}
        for k, v in per_pair.items():
            summary[k] = sum(v) / len(v) if v else None
        if lpips_net is None:
            summary["lpips"] = None
            summary["lpips_note"] = lpips_note
        if unmatched:
            summary["unmatched"] = unmatched
        result["paired"] = summary
    result["seconds"] = {
        "reference_features": round(t_ref, 3), "translate": round(t_translate, 3),
        "output_features": round(t_feat, 3), "statistics": round(t_stats, 3),
        "total": round(time.perf_counter() - t_start, 3),
    }
    return result


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cut_hf.evaluate",
        description="Translate a test folder and measure FID / KID against the target domain "
                    "(PSNR / SSIM with --paired).",
    )
    p.add_argument("--model", required=True,
                   help="Hub id, save_pretrained folder, train.py output folder, or an official latest_net_G.pth")
    p.add_argument("--input", required=True, help="source-domain test images, e.g. datasets/horse2zebra/testA")
    p.add_argument("--reference", required=True, help="target-domain test images, e.g. datasets/horse2zebra/testB")
    p.add_argument("--output", help="save the translated images here (and metrics.json unless --json)")
    p.add_argument("--size", type=int, default=256,
                   help="resize inputs and references to SIZE x SIZE, as the paper's test loader (0: native sizes)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--paired", action="store_true", help="also PSNR / SSIM (LPIPS if cached) against same-name files")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="local copy of the FID Inception weights (weights-inception-2015-12-05-6726825d.pth)")
    p.add_argument("--feature-extractor", default="inception", choices=("inception", "tiny"),
                   help="'tiny': a small random conv net, for smoke tests only (its FID is not comparable)")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of KID's subset sampling")
    p.add_argument("--json", metavar="PATH", help="write the metrics here (default: OUTPUT/metrics.json with --output)")
    return p


def _load_model(model: str, device: str | None) -> nn.Module:
    from .convert import ConversionError, load_official_generator
    from .errors import ModelLoadError
    from .loading import load_generator

    try:
        if Path(model).suffix in (".pth", ".pt") and Path(model).is_file():
            generator = load_official_generator(model)  # weights_only, strict: same checks as convert
        else:
            generator = load_generator(model)
    except (ModelLoadError, ConversionError) as err:
        raise EvaluationError(str(err)) from err
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return generator.to(device)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the metrics as JSON on stdout and returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if args.size < 0 or args.batch_size < 1:
            raise EvaluationError("--size must be >= 0 and --batch-size >= 1")
        extractor = TinyFeatureExtractor() if args.feature_extractor == "tiny" else None
        if extractor is None:  # fail on missing weights before translating anything
            extractor = inception_feature_extractor(args.inception_weights)
        generator = _load_model(args.model, args.device)
        result = evaluate_folders(
            generator, args.input, args.reference, extractor, output_dir=args.output, size=args.size,
            batch_size=args.batch_size, device=args.device, precision=args.precision, paired=args.paired,
            kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size, seed=args.seed, progress=True,
        )
    except (EvaluationError, MetricsUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    result = {"model": args.model, "input": args.input, "reference": args.reference, **result,
              "command": "python -m cut_hf.evaluate " + shlex.join(argv)}
    text = json.dumps(result, indent=2)
    print(text)
    json_path = Path(args.json) if args.json else (Path(args.output) / "metrics.json" if args.output else None)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n", encoding="utf-8")
    line = (f"FID {result['fid']:.2f}  KID {result['kid_mean']:.4f} ± {result['kid_std']:.4f}  "
            f"({result['num_translated']} translated vs {result['num_reference']} reference, "
            f"{len(result['skipped'])} skipped)")
    if "paired" in result:
        pr = result["paired"]
        line += f"  PSNR {pr['psnr']:.2f} dB  SSIM {pr['ssim']:.4f}" + (
            f"  LPIPS {pr['lpips']:.4f}" if pr.get("lpips") is not None else "")
    print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

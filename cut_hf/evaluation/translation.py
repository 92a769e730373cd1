"""Measure a CUT generator the way the paper did: translate a test folder, then FID / KID against
the target domain's test folder (and PSNR / SSIM / LPIPS against ground truth with ``--paired``).

``cut-hf evaluate --model ID_OR_DIR --input testA --reference testB [--output DIR]
[--size 256] [--batch-size 8] [--paired] [--inception-weights PATH] [--json PATH]``

The paper's protocol, as in the official ``test.py`` + pytorch-fid: every test image is converted to
RGB and resized to 256x256 (bicubic; the test options set load_size = crop_size = 256, so nothing
is cropped), translated, saved losslessly, and FID is computed between all translated images and
all images of the other domain's test folder with the 2048-d pool3 features of the FID Inception-v3.
``--size 0`` keeps native sizes instead. In training, :func:`evaluate_folders` is the same code.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from PIL import Image

from cut_hf.evaluation.metrics import (
    extract_features,
    fid_kid,
    inception_feature_extractor,
    lpips_available,
    paired_metrics,
)
from cut_hf.images import ImageLoadError, find_images, load_image

# How many input images are held in memory at once (translated, measured, then dropped).
CHUNK = 64

__all__ = ["EvaluationError", "evaluate_folders", "list_images"]


class EvaluationError(RuntimeError):
    """The evaluation cannot run (missing or empty folder, nothing readable); one-line message."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (:func:`cut_hf.images.find_images`, not recursive: each
    output is saved under its input's name), sorted. Raises :class:`EvaluationError`."""
    path = Path(folder).expanduser()
    if not path.exists():
        raise EvaluationError(f"folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise EvaluationError(f"{str(path)!r} is not a folder")
    files = find_images(path, recursive=False)
    if not files:
        raise EvaluationError(f"folder {str(path)!r} holds no images (no .png, .jpg, .webp, ... file directly in it)")
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
    reference_dir: Path, extractor: nn.Module, size: int | None, batch_size: int, cache: dict[str, Any]
) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """Features of the reference images (computed once per ``cache``) and a new list of the files skipped."""
    key = f"ref:{reference_dir.resolve()}:{size}:{id(extractor)}"
    if key not in cache:
        skipped: list[dict[str, str]] = []
        cache[key] = (_compute_reference_features(reference_dir, extractor, size, batch_size, skipped), skipped)
    feats, skipped = cache[key]
    return feats, list(skipped)


def _compute_reference_features(
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
    generator: nn.Module, input_dir: str | Path, reference_dir: str | Path, feature_extractor: nn.Module | None = None,
    *, output_dir: str | Path | None = None, size: int | None = 256, batch_size: int = 8,
    device: str | torch.device | None = None, precision: str = "fp32", paired: bool = False,
    inception_weights: str | Path | None = None, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0,
    cache: dict[str, Any] | None = None, progress: bool = False,
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
        precision: ``fp32`` | ``bf16`` | ``fp16``, passed to :func:`cut_hf.translation.pipeline.translate`.
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
    t_start = time.perf_counter()
    size = size or None
    input_dir, reference_dir = Path(input_dir), Path(reference_dir)
    inputs = list_images(input_dir)
    refs = list_images(reference_dir)  # checked before any slow work
    cache = {} if cache is None else cache
    extractor = _feature_extractor(feature_extractor, inception_weights, cache, device)
    extractor_name = _extractor_name(extractor)

    t0 = time.perf_counter()
    ref_feats, skipped = _reference_features(reference_dir, extractor, size, batch_size, cache)
    seconds = {"reference_features": time.perf_counter() - t0}

    scorer = _PairedScorer(inputs, refs, input_dir, reference_dir, size, skipped) if paired else None
    fake_feats = _translate_and_measure(
        generator, inputs, extractor, size=size, batch_size=batch_size, device=device, precision=precision,
        output_dir=output_dir, scorer=scorer, skipped=skipped, seconds=seconds, progress=progress)
    if not fake_feats:
        raise EvaluationError(f"no readable image in the input folder {str(input_dir)!r}")
    fakes = torch.cat(fake_feats)
    t0 = time.perf_counter()
    result: dict[str, Any] = fid_kid(ref_feats, fakes, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
                                     seed=seed)
    seconds["statistics"] = time.perf_counter() - t0
    result.update(num_translated=len(fakes), num_reference=len(ref_feats), skipped=skipped, size=size,
                  feature_extractor=extractor_name, feature_dim=int(fakes.shape[1]))
    if scorer is not None:
        result["paired"] = scorer.summary()
    seconds["total"] = time.perf_counter() - t_start
    order = ("reference_features", "translate", "output_features", "statistics", "total")
    result["seconds"] = {k: round(seconds[k], 3) for k in order}
    return result


def _feature_extractor(extractor: nn.Module | None, inception_weights: str | Path | None, cache: dict[str, Any],
                       device: str | torch.device | None) -> nn.Module:
    """The given extractor, or the FID Inception-v3 (built once per ``cache``), on ``device``."""
    if extractor is None:
        key = f"inception:{inception_weights}"
        if key not in cache:
            cache[key] = inception_feature_extractor(inception_weights)
        extractor = cache[key]
    return extractor.to(device) if device is not None else extractor


def _translate_and_measure(
    generator: nn.Module, inputs: Sequence[Path], extractor: nn.Module, *, size: int | None, batch_size: int,
    device: str | torch.device | None, precision: str, output_dir: str | Path | None,
    scorer: _PairedScorer | None, skipped: list[dict[str, str]], seconds: dict[str, float], progress: bool,
) -> list[torch.Tensor]:
    """Translate ``inputs`` chunk by chunk; the features of each chunk's outputs (adds to ``seconds``)."""
    from cut_hf.translation.pipeline import translate  # imported here: the pipeline imports models, not the reverse

    seconds.update(translate=0.0, output_features=0.0)
    out_dir = Path(output_dir) if output_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(inputs), desc="translate", unit="img")
    was_training = generator.training
    generator.eval()
    fake_feats: list[torch.Tensor] = []
    try:
        for chunk in _chunks(inputs, CHUNK):
            loaded = _load_all(chunk, size, skipped)
            if loaded:
                t0 = time.perf_counter()
                out = translate(generator, [im for _, im in loaded], batch_size=batch_size, device=device,
                                precision=precision)
                outputs = out if isinstance(out, list) else [out]  # a list in, a list out
                seconds["translate"] += time.perf_counter() - t0
                if out_dir is not None:
                    for (path, _), out in zip(loaded, outputs, strict=True):
                        out.save(out_dir / f"{path.stem}.png")
                t0 = time.perf_counter()
                out_u8 = [_to_uint8(out) for out in outputs]
                fake_feats.append(_features(extractor, out_u8, batch_size))
                if scorer is not None:
                    scorer.add([path for path, _ in loaded], out_u8)
                seconds["output_features"] += time.perf_counter() - t0
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
        generator.train(was_training)
    return fake_feats


class _PairedScorer:
    """Per-pair PSNR / SSIM (and LPIPS when its weights are cached) against same-name ground truth."""

    def __init__(self, inputs: Sequence[Path], refs: Sequence[Path], input_dir: Path, reference_dir: Path,
                 size: int | None, skipped: list[dict[str, str]]) -> None:
        self.by_stem = {p.stem: p for p in refs}
        if not any(p.stem in self.by_stem for p in inputs):
            raise EvaluationError(f"--paired: no file name of {str(input_dir)!r} appears in {str(reference_dir)!r}")
        self.size, self.skipped = size, skipped
        self.per_pair: dict[str, list[float]] = {}
        self.unmatched: list[str] = []
        ok, note = lpips_available()
        self.lpips_note: str | None = note
        self.lpips = None
        if ok:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            # sync_on_compute=False: this process holds every pair (see cut_hf.evaluation.metrics.fid_kid)
            self.lpips = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True,
                                                               sync_on_compute=False).eval()
            self.lpips_note = None

    def add(self, paths: Sequence[Path], outputs: Sequence[torch.Tensor]) -> None:
        """Score the uint8 (3, H, W) translations of ``paths`` against their ground truth."""
        outs, gts = [], []
        for path, img in zip(paths, outputs, strict=True):
            partner = self.by_stem.get(path.stem)
            if partner is None:
                self.unmatched.append(path.name)
                continue
            try:
                gt = _to_uint8(_open_rgb(partner, self.size))
            except ImageLoadError as err:
                self.skipped.append({"file": str(partner), "reason": str(err)})
                self.unmatched.append(path.name)
                continue
            if gt.shape != img.shape:
                raise EvaluationError(
                    f"--paired: {path.name} translates to {tuple(img.shape[1:])} but its ground truth "
                    f"{partner.name} is {tuple(gt.shape[1:])}; pass --size to compare at one size")
            outs.append(img.float() / 255)
            gts.append(gt.float() / 255)
        for k, v in paired_metrics(outs, gts, lpips=self.lpips).items():
            self.per_pair.setdefault(k, []).extend(v)

    def summary(self) -> dict[str, Any]:
        """``pairs``, the mean of each metric, ``lpips_note`` without LPIPS, ``unmatched`` names."""
        summary: dict[str, Any] = {"pairs": len(self.per_pair.get("psnr", []))}
        for k, v in self.per_pair.items():
            summary[k] = sum(v) / len(v) if v else None
        if self.lpips is None:
            summary["lpips"] = None
            summary["lpips_note"] = self.lpips_note
        if self.unmatched:
            summary["unmatched"] = self.unmatched
        return summary

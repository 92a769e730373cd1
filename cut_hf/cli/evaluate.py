"""``cut-hf evaluate``: translate a test folder and measure FID / KID (PSNR / SSIM with ``--paired``).

The work is :func:`cut_hf.evaluation.translation.evaluate_folders`; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch.nn as nn

from cut_hf.cli.help import HelpFormatter
from cut_hf.errors import ModelLoadError
from cut_hf.evaluation.metrics import MetricsUnavailable, TinyFeatureExtractor, inception_feature_extractor
from cut_hf.evaluation.translation import EvaluationError, evaluate_folders
from cut_hf.hub.cards import add_eval_results, translation_eval_results
from cut_hf.hub.loading import load_generator
from cut_hf.official.checkpoints import ConversionError, load_official_generator
from cut_hf.perf import default_device


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``cut-hf evaluate``."""
    p = argparse.ArgumentParser(
        prog="cut-hf evaluate",
        description="Translate a test folder and measure FID / KID against the target domain "
                    "(PSNR / SSIM with --paired).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True,
                   help="Hub id, save_pretrained folder, train.py output folder, or an official latest_net_G.pth")
    p.add_argument("--input", required=True, help="source-domain test images, e.g. datasets/horse2zebra/testA")
    p.add_argument("--reference", required=True, help="target-domain test images, e.g. datasets/horse2zebra/testB")
    p.add_argument("--output", help="save the translated images here (and metrics.json unless --json)")
    p.add_argument("--size", type=int, default=256,
                   help="resize inputs and references to SIZE x SIZE, as the paper's test loader (0: native sizes)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps, xpu (default: CUDA, then MPS / XPU, then the CPU)")
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
    p.add_argument("--update-card", action="store_true",
                   help="add the scores to the model-index of --model's README.md (a local folder)")
    p.add_argument("--dataset-name", help="what the scores were measured on, for the card (default: the "
                                          "reference folder, e.g. horse2zebra/testB; a Hub dataset id if it is one)")
    return p


def _load_model(model: str, device: str | None) -> nn.Module:
    """A generator from a Hub id, a folder or an official ``.pth`` checkpoint, on ``device``."""
    generator: nn.Module
    try:
        if Path(model).suffix in (".pth", ".pt") and Path(model).is_file():
            generator = load_official_generator(model)  # weights_only, strict: same checks as convert
        else:
            generator = load_generator(model)
    except (ModelLoadError, ConversionError) as err:
        raise EvaluationError(str(err)) from err
    if device is None:
        device = str(default_device())
    return generator.to(device)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the metrics as JSON on stdout and returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.size < 0 or args.batch_size < 1:
            raise EvaluationError("--size must be >= 0 and --batch-size >= 1")
        # fail on missing Inception weights before translating anything
        extractor = (TinyFeatureExtractor() if args.feature_extractor == "tiny"
                     else inception_feature_extractor(args.inception_weights))
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
              "command": "cut-hf evaluate " + shlex.join(argv)}
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
    if args.update_card:
        return _update_card(args, {**result, **result.get("paired", {})})
    return 0


def _update_card(args: argparse.Namespace, scores: dict) -> int:
    """Add ``scores`` to the model-index of the model folder's card (``--update-card``)."""
    folder = Path(args.model)
    card = next((c for c in (folder / "README.md", folder / "generator" / "README.md") if c.is_file()), None)
    if card is None:
        print(f"error: --update-card: no README.md in {args.model!r} (or its generator/); it needs a local "
              "model folder", file=sys.stderr)
        return 1
    reference = Path(args.reference)
    name = args.dataset_name or f"{reference.parent.name}/{reference.name}"
    note = "tiny test features, not comparable" if args.feature_extractor == "tiny" else None
    add_eval_results(card, translation_eval_results(scores, name, note=note), model_name=folder.name)
    print(f"added the scores to the model-index of {card}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

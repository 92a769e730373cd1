"""``cut-hf evaluate-simclr``: kNN and linear-probe accuracy of a SimCLR encoder's frozen features.

The work is :func:`cut_hf.evaluation.simclr.evaluate`; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from cut_hf.cli.help import HelpFormatter
from cut_hf.data.sources import DataError
from cut_hf.errors import ModelLoadError
from cut_hf.evaluation.simclr import evaluate
from cut_hf.models.simclr import BACKBONES, SimCLR


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``cut-hf evaluate-simclr``."""
    p = argparse.ArgumentParser(prog="cut-hf evaluate-simclr",
                                description="kNN and linear-probe accuracy of a SimCLR encoder's frozen features.",
                                formatter_class=HelpFormatter)
    a = p.add_argument
    a("--model", help="SimCLR folder (save_pretrained, or a `cut-hf train --task simclr` output folder) or Hub id")
    a("--data", required=True, help="labelled folder: DIR/train/<class>/ + DIR/test/<class>/, or DIR/<class>/")
    a("--image-size", type=int, default=None, help="input size (default: 32 with the CIFAR stem, else 224)")
    a("--k", type=int, default=200, help="kNN neighbours (capped at the training set size)")
    a("--knn-temperature", type=float, default=0.1, help="kNN vote temperature")
    a("--probe-c", type=float, default=1.0, help="inverse L2 strength of the logistic-regression probe")
    a("--test-fraction", type=float, default=0.2, help="test share per class when DIR has no train/test split")
    a("--batch-size", type=int, default=256)
    a("--device", default=None, help="cpu, cuda, ... (default: cuda when available, else cpu)")
    a("--random-init", action="store_true",
      help="baseline: the same architecture with random weights (seeded by --seed) instead of the trained ones")
    a("--backbone", default="resnet18", choices=BACKBONES, help="architecture for --random-init without --model")
    a("--cifar-stem", action="store_true", help="architecture for --random-init without --model")
    a("--seed", type=int, default=0)
    a("--output", default="simclr_eval.json", help="JSON file for the results")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit status 1 with a one-line message on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    if not args.model and not args.random_init:
        print("error: give --model ID_OR_DIR (or --random-init for a random baseline)", file=sys.stderr)
        return 1
    if args.k < 1 or args.knn_temperature <= 0 or args.probe_c <= 0:
        print("error: --k must be >= 1, --knn-temperature and --probe-c > 0", file=sys.stderr)
        return 1
    try:
        config: dict[str, Any]
        if args.model:
            model = SimCLR.from_pretrained(args.model)  # a trainer output folder: its model/
            config = dict(backbone=model.backbone, proj_dim=model.proj_dim, cifar_stem=model.cifar_stem)
        else:
            config = dict(backbone=args.backbone, cifar_stem=args.cifar_stem)
        if args.random_init:
            torch.manual_seed(args.seed)
            model = SimCLR(**config)
        result = evaluate(model, args.data, args.image_size, args.k, args.knn_temperature, args.probe_c,
                          args.batch_size, args.device, args.test_fraction, args.seed)
    except (ModelLoadError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result = {"model": args.model, "random_init": args.random_init, "data": str(args.data), **config, **result}
    print(f"{'weights':<12} {'kNN top-1':>10} {'linear top-1':>13} {'chance':>8}  "
          f"({result['num_train']} train / {result['num_test']} test, {result['num_classes']} classes, "
          f"{result['image_size']} px, k {result['k']})")
    print(f"{'random' if args.random_init else 'trained':<12} {result['knn_top1']:>10.4f} "
          f"{result['linear_top1']:>13.4f} {result['chance']:>8.4f}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

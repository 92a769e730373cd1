"""``cut-hf train --task simclr`` (= ``python train.py --task simclr``): SimCLR with 🤗 Accelerate.

    cut-hf train --task simclr --data images/ --backbone resnet18 --cifar-stem --image-size 32
    accelerate launch -m cut_hf train --task simclr --data images/ --batch-size 512 --optimizer lars

The flags, the frozen configuration they make (:class:`~cut_hf.training.tasks.simclr.SimCLRTrainConfig`,
the optimiser's defaults filled in) and :func:`~cut_hf.training.tasks.simclr.run`, which trains.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from cut_hf.cli.exits import training_exit_status
from cut_hf.cli.help import HelpFormatter
from cut_hf.data.augment import PRESETS
from cut_hf.data.sources import DataError
from cut_hf.data.unpaired import default_num_workers
from cut_hf.models.simclr import BACKBONES
from cut_hf.training.runtime import MIXED_PRECISION_HELP, add_runtime_flags
from cut_hf.training.tasks.simclr import OPTIMIZER_DEFAULTS, SimCLRTrainConfig, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cut-hf train --task simclr", description="Train SimCLR with Accelerate.",
                                formatter_class=HelpFormatter)
    a = p.add_argument
    a("--task", default="simclr", choices=["simclr"], help=argparse.SUPPRESS)  # passed through by train.py
    d = p.add_argument_group("data (labels are not needed)").add_argument
    d("--data", help="folder of images, searched recursively (class subfolders are ignored)")
    d("--dataset", help="🤗 dataset instead: Hub id, save_to_disk folder or local dataset folder")
    d("--column", default="image", help="--dataset column holding the images")
    d("--split", default="train", help="--dataset split")
    d("--image-size", type=int, default=224, help="side of the square training views")
    d("--preset", default=None, choices=sorted(PRESETS),
      help="augmentation recipe (default: cifar with --cifar-stem, else simclr)")
    d("--jitter-strength", type=float, default=None, help="colour jitter strength s (default: the preset's)")
    d("--min-crop-scale", type=float, default=0.08, help="smallest crop area, as a fraction of the image")
    d("--num-workers", type=int, default=default_num_workers(),
      help="DataLoader worker processes per training process (default: 4, at most the usable cores)")
    m = p.add_argument_group("model").add_argument
    m("--backbone", default="resnet50", choices=BACKBONES, help="encoder f (random initialisation)")
    m("--cifar-stem", action="store_true", help="3x3 stride-1 first conv and no max-pool, for 32 px images")
    m("--proj-dim", type=int, default=128, help="size of the projection z")
    o = p.add_argument_group("objective and optimisation").add_argument
    o("--temperature", type=float, default=0.5, help="NT-Xent tau (0.5 for small data, 0.1 for large batches)")
    o("--optimizer", default="adamw", choices=sorted(OPTIMIZER_DEFAULTS), help="lars: the paper's, for large batches")
    o("--lr", type=float, default=None, help="peak learning rate (default: lars 0.3 x global batch / 256, adamw 1e-3)")
    o("--weight-decay", type=float, default=None, help="default: lars 1e-6, adamw 1e-4 (never on biases and norms)")
    o("--momentum", type=float, default=0.9, help="LARS momentum")
    o("--lars-eta", type=float, default=1e-3, help="LARS trust coefficient")
    o("--warmup-steps", type=int, default=None, help="linear warmup steps (default: 10%% of all steps)")
    o("--batch-size", type=int, default=256, help="images per process and step (2x views)")
    o("--epochs", type=int, default=100, help="passes over the data")
    o("--max-steps", type=int, default=None, help="stop after this many steps (the schedule spans them)")
    o("--seed", type=int, default=0)
    o("--mixed-precision", default=None, choices=["no", "fp16", "bf16"], help=MIXED_PRECISION_HELP)
    o("--no-sync-bn", dest="sync_bn", action="store_false",
      help="with several GPUs, keep per-process batch norm instead of the paper's global (synchronised) BN")
    o("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    add_output_flags(p)
    return p


def add_output_flags(p: argparse.ArgumentParser) -> None:
    """Checkpoint, logging, output and Hub flags, and the evaluation after training."""
    r = add_runtime_flags(p, "outputs/simclr", 1000, "view grids in the tracker", "OUTPUT/model").add_argument
    r("--eval-data", default=None,
      help="labelled folder: after training, kNN and linear-probe accuracy (cut_hf.evaluation.simclr) go in the card")


def parse_args(argv: list[str] | None = None) -> SimCLRTrainConfig:
    """Parse flags, fill the optimiser-dependent defaults and check the combination."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    values = vars(parser.parse_args(argv))
    c = argparse.Namespace(**values)  # read-only view for the checks below
    if bool(c.data) == bool(c.dataset):
        parser.error("give the training images in exactly one way: --data FOLDER or --dataset ID --column COL")
    if c.push_to_hub and not c.hub_model_id:
        parser.error("--push-to-hub needs --hub-model-id user/name")
    if c.push_checkpoints and not c.push_to_hub:
        parser.error("--push-checkpoints uploads to the --push-to-hub repository: add --push-to-hub")
    if c.batch_size < 2:
        parser.error("--batch-size must be >= 2: NT-Xent needs other images as negatives")
    if c.image_size < 8 or c.epochs < 1 or (c.max_steps is not None and c.max_steps < 1):
        parser.error("--image-size must be >= 8, --epochs and --max-steps >= 1")
    if c.temperature <= 0:
        parser.error("--temperature must be > 0")
    if not 0 < c.min_crop_scale <= 1:
        parser.error("--min-crop-scale must be in (0, 1]")
    if values["weight_decay"] is None:
        values["weight_decay"] = OPTIMIZER_DEFAULTS[c.optimizer]["weight_decay"]
    if values["preset"] is None:
        values["preset"] = "cifar" if c.cifar_stem else "simclr"
    return SimCLRTrainConfig(**values, command="cut-hf train --task simclr " + shlex.join(argv))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 with a one-line message on known errors)."""
    config = parse_args(argv)
    return training_exit_status(lambda: run(config), (DataError,))

if __name__ == "__main__":
    sys.exit(main())

"""SimCLR in the training runtime: the run's typed configuration, its data, model and optimiser,
:class:`SimCLRTask` (which joins :class:`~cut_hf.objectives.simclr.SimCLRObjective` to
:class:`~cut_hf.training.runtime.Trainer`), the outputs with their model card, and :func:`run`.
``cut-hf train --task simclr`` (:mod:`cut_hf.cli.simclr_train`) builds the configuration from its flags.

Reads top to bottom like ``cut-hf train``: data (an image folder or a 🤗 dataset column; labels are
not needed), the model, the objective and the loop, the runtime every objective shares.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cut_hf.data.augment import SimCLRAugment
from cut_hf.data.sources import (
    DataError,
    DatasetColumnImages,
    FolderImages,
    ImageList,
    check_readable,
    is_hub_id,
    open_hf_dataset,
)
from cut_hf.data.unpaired import UnpairedSampler, make_dataloader
from cut_hf.models.simclr import SimCLR
from cut_hf.objectives.simclr import SimCLRObjective, SimCLRViewDataset, revert_sync_batchnorm
from cut_hf.training.logs import image_grid, save_image
from cut_hf.training.optim import LARS, param_groups, warmup_cosine
from cut_hf.training.runtime import RunConfig, Trainer, TrainingTask, fixed, launcher_resolved, setup_accelerator

# Defaults that depend on the optimiser (the paper's LARS recipe; AdamW for small runs).
OPTIMIZER_DEFAULTS: dict[str, dict[str, float | None]] = {
    "lars": dict(lr=None, weight_decay=1e-6),  # lr None: 0.3 x global batch / 256, the paper's scaling
    "adamw": dict(lr=1e-3, weight_decay=1e-4),
}
MODEL_SUBFOLDER = "model"


@dataclass(frozen=True, kw_only=True)
class SimCLRTrainConfig(RunConfig):
    """Every flag (same names; the runtime's in :class:`RunConfig`), the optimiser's defaults filled in.
    ``lr`` stays None for LARS's scaling rule (0.3 x global batch / 256, known once launched)."""

    data: str | None
    dataset: str | None
    column: str
    split: str
    image_size: int
    preset: str
    jitter_strength: float | None
    min_crop_scale: float
    num_workers: int
    backbone: str = fixed()
    cifar_stem: bool = fixed()
    proj_dim: int = fixed()
    temperature: float
    optimizer: str = fixed()
    lr: float | None
    weight_decay: float
    momentum: float
    lars_eta: float
    warmup_steps: int | None
    batch_size: int
    epochs: int
    sync_bn: bool
    eval_data: str | None
    command: str
    task: str = "simclr"


# ----------------------------------------------------------------------------- data, model, optimiser


def load_images(args: SimCLRTrainConfig) -> ImageList:
    """The training images from ``--data`` (recursive) or ``--dataset``/``--column``; raises DataError."""
    if args.data:
        images: ImageList = FolderImages(args.data, "--data")
    else:
        assert args.dataset is not None  # the parser requires --data or --dataset
        images = DatasetColumnImages(open_hf_dataset(args.dataset, args.split), args.column,
                                     f"{args.dataset}[{args.split}]")
    if len(images) == 0:
        raise DataError(f"{images.description} holds no images (looked for common image file types)")
    return images


def make_augment(args: SimCLRTrainConfig) -> SimCLRAugment:
    """The preset, at ``--image-size``, with the strength and crop overrides."""
    overrides: dict[str, Any] = {"size": args.image_size, "crop_scale": (args.min_crop_scale, 1.0), "seed": args.seed}
    if args.jitter_strength is not None:
        overrides["jitter_strength"] = args.jitter_strength
    return SimCLRAugment.from_preset(args.preset, **overrides)


def make_optimizer(c: SimCLRTrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """LARS or AdamW over :func:`~cut_hf.training.optim.param_groups`."""
    groups = param_groups(model, c.weight_decay)
    if c.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=c.momentum, weight_decay=c.weight_decay, eta=c.lars_eta)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=c.weight_decay)


def resolved_lr(c: SimCLRTrainConfig, global_batch: int) -> float:
    """``--lr``, or the optimiser's default (LARS: 0.3 x global batch / 256)."""
    if c.lr is not None:
        return c.lr
    default = OPTIMIZER_DEFAULTS[c.optimizer]["lr"]
    return 0.3 * global_batch / 256 if default is None else default  # None (LARS): the paper's scaling


# ----------------------------------------------------------------------------- in the runtime


class SimCLRTask(TrainingTask):
    """A prepared :class:`SimCLRObjective` in the runtime: its step, view grids, evaluation and outputs."""

    name = "simclr"
    label = "simclr"
    window = 50

    def __init__(self, c: SimCLRTrainConfig, objective: SimCLRObjective, optimizer: Any, scheduler: Any,
                 accelerator: Any, extra_summary: dict[str, Any]) -> None:
        self.config, self.objective, self.accelerator = c, objective, accelerator
        self.optimizer, self.scheduler, self.extra_summary = optimizer, scheduler, extra_summary

    def initial_state(self) -> dict[str, Any]:
        return {"skipped_steps": 0}

    def settings(self) -> dict[str, Any]:
        return asdict(self.config)

    def step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.objective.training_step(batch, self.optimizer, self.scheduler, self.accelerator)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def samples(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"views": views_grid(batch)}

    def write_outputs(self, summary: dict[str, Any], batch: Any) -> tuple[str, Path, dict[str, Path]]:
        c, acc = self.config, self.accelerator
        summary.update(self.extra_summary)
        plain = revert_sync_batchnorm(acc.unwrap_model(self.objective.model))
        metrics = None
        if c.eval_data:
            from cut_hf.evaluation.simclr import evaluate

            result = evaluate(plain, c.eval_data, image_size=c.image_size, device=acc.device)
            summary["eval"] = result
            metrics = {f"kNN top-1 (k {result['k']}, T {result['knn_temperature']})": f"{result['knn_top1']:.4f}",
                       "linear probe top-1": f"{result['linear_top1']:.4f}",
                       "evaluation data": f"`{Path(c.eval_data).name}` ({result['num_train']} train / "
                                          f"{result['num_test']} test images, {result['num_classes']} classes)"}
            acc.print(f"kNN top-1 {result['knn_top1']:.4f}, linear probe top-1 {result['linear_top1']:.4f}")
        grid = views_grid(batch) if batch is not None else None
        folder = save_outputs(c, plain, summary, grid, metrics)
        return str(folder), folder, {}

    def output_folders(self) -> tuple[Path, ...]:
        return (Path(self.config.output_dir) / MODEL_SUBFOLDER,)


def views_grid(batch: dict[str, Any]) -> torch.Tensor:
    """view1 | view2 for up to 8 images, (3, H', W') in [0, 1]."""
    return image_grid([batch["view1"] * 2 - 1, batch["view2"] * 2 - 1], max_rows=8)




# ----------------------------------------------------------------------------- outputs


def data_name(args: SimCLRTrainConfig) -> str:
    """A short name of the training data: the folder (with its parent when it is a split folder) or dataset id."""
    if not args.data:
        return str(args.dataset)
    path = Path(args.data).expanduser().resolve()
    return f"{path.parent.name}/{path.name}" if path.name.lower() in ("train", "training", "images") else path.name


def describe_data(args: SimCLRTrainConfig) -> str:
    """The training data, in words, for the model card."""
    if args.data:
        return f"folder `{data_name(args)}`"
    return f"🤗 dataset `{args.dataset}` (split {args.split}, column {args.column})"


def save_outputs(args: SimCLRTrainConfig, model: SimCLR, summary: dict[str, Any], grid: torch.Tensor | None,
                 metrics: dict[str, Any] | None) -> Path:
    """Write OUTPUT/model: ``save_pretrained`` weights and config, a model card and a grid of views."""
    folder = Path(args.output_dir) / MODEL_SUBFOLDER
    data = describe_data(args)
    training = {
        "data": f"{data}, {summary['num_images']} images",
        "steps": summary["step"],
        "epochs completed": summary["epoch"],
        "image size": args.image_size,
        "augmentation": f"preset {args.preset}" + (f", jitter strength {args.jitter_strength}"
                                                   if args.jitter_strength is not None else "")
                        + f", crop scale {args.min_crop_scale}-1",
        "batch size": f"{args.batch_size} x {summary['num_processes']} process(es) "
                      f"({2 * args.batch_size * summary['num_processes']} views)",
        "optimizer": f"{args.optimizer}, lr {summary['lr']:g}, weight decay {args.weight_decay:g}, "
                     f"{summary['warmup_steps']} warmup steps then cosine decay",
        "temperature": args.temperature,
        "precision": args.mixed_precision if args.mixed_precision != "no" else "fp32",
        "seed": args.seed,
        "command": f"`{args.command}`",
    }
    if summary.get("skipped_files"):
        training["unreadable files skipped"] = summary["skipped_files"]
    final = {f"{k} (mean of last {summary['loss_window']} steps)": f"{v:.4f}"
             for k, v in summary["final_losses"].items()}
    card = dict(
        model_name=f"SimCLR {args.backbone} on {data_name(args)}",
        description=(f"Trained from random initialisation with `cut-hf train --task simclr` for {summary['step']} "
                     f"steps on {data}." + (" The run ended early (--max-steps): this is not a fully trained model."
                                             if summary["stopped_early"] else "")),
        training={**training, **final},
        metrics=metrics or None,
        repo_id=args.hub_model_id,
        datasets=[args.dataset] if is_hub_id(args.dataset) else None,  # the card's datasets: (Hub ids only)
    )
    if folder.exists():
        shutil.rmtree(folder)  # a fresh folder: save_pretrained never overwrites a README.md
    model.save_pretrained(folder, model_card_kwargs=card)
    if grid is not None:
        save_image(grid, folder / "views.png")
    return folder




# ----------------------------------------------------------------------------- training


def run(c: SimCLRTrainConfig) -> dict[str, Any]:
    """Train; returns a summary. Raises DataError, CheckpointError, NonFiniteLossError, ConfigError."""
    accelerator = setup_accelerator(c)
    c = launcher_resolved(c, accelerator)  # the precision Accelerate chose, for the card and the checkpoints

    # -- data: every process takes different images of the same epoch, in whole batches
    images = load_images(c)
    check_readable(images, "the training data")
    if len(images) < c.batch_size * accelerator.num_processes:
        raise DataError(f"{images.description} has {len(images)} image(s), fewer than one batch of "
                        f"{c.batch_size} for each of {accelerator.num_processes} process(es); lower --batch-size")
    dataset = SimCLRViewDataset(images, make_augment(c), seed=c.seed)
    sampler = UnpairedSampler(len(dataset), c.batch_size, accelerator.num_processes, accelerator.process_index,
                              seed=c.seed)
    loader = make_dataloader(dataset, sampler, c.num_workers, pin_memory=accelerator.device.type == "cuda",
                             collate_fn=torch.utils.data.default_collate)
    planned = c.epochs * sampler.batches_per_epoch
    max_steps = planned if c.max_steps is None else c.max_steps  # may exceed --epochs: then more epochs run
    warmup = c.warmup_steps if c.warmup_steps is not None else max(1, round(0.1 * max_steps))
    accelerator.print(f"data: {len(images)} images ({images.description}); {sampler.batches_per_epoch} steps per "
                      f"epoch on each of {accelerator.num_processes} process(es); {max_steps} steps in all")

    # -- model, objective and optimiser, prepared together
    model = SimCLR(backbone=c.backbone, proj_dim=c.proj_dim, cifar_stem=c.cifar_stem)
    if accelerator.num_processes > 1 and c.sync_bn and accelerator.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the paper's global BN: no leak through batch stats
    if accelerator.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    lr = resolved_lr(c, c.batch_size * accelerator.num_processes)
    optimizer = make_optimizer(c, model, lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, max_steps))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()

    # -- the loop
    extra = {"num_images": len(images), "warmup_steps": warmup, "lr": lr}
    task = SimCLRTask(c, SimCLRObjective(model, c.temperature), optimizer, scheduler, accelerator, extra)
    summary = Trainer(accelerator, c, task, loader, sampler, max_steps, None, planned).run()
    return {**summary, **extra}

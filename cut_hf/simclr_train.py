"""Train SimCLR (Chen et al., 2020) with 🤗 Accelerate: two views per image, NT-Xent over every process.

    python -m cut_hf.simclr_train --data images/ --backbone resnet18 --cifar-stem --image-size 32
    accelerate launch -m cut_hf.simclr_train --data images/ --batch-size 512 --optimizer lars
    python train.py --task simclr --data images/ ...                    # the same, through train.py

Reads top to bottom: the configuration with its defaults, the data (an image folder or a 🤗 dataset
column; labels are not needed), the optimiser pieces (LARS, warmup + cosine), the loss across
processes, then ``run``: setup, data, model, optimiser, resume, the loop and the outputs. Checkpoints,
trackers, the NaN guard and the Hub upload are the helpers ``train.py`` uses (``cut_hf.training``).

Reproducibility: every random choice of an item (its two views) comes from a generator seeded by
(seed, epoch, index), and each epoch's order from (seed, epoch); nothing reads the global RNG
after the model is built. ``--resume`` therefore continues bit-exactly (fp32, same processes).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, default_collate

from .augment import PRESETS, SimCLRAugment
from .data import (
    DataError,
    DatasetColumnImages,
    FolderImages,
    ImageList,
    UnpairedSampler,
    item_generator,
    open_hf_dataset,
    to_channels,
)
from .distributed import gather_with_grad, rank, world_size
from .losses import nt_xent_loss_for_anchors
from .models.simclr import BACKBONES, SimCLR
from .training import (
    CheckpointError,
    CheckpointManager,
    NonFiniteLossError,
    check_finite,
    image_grid,
    log_images,
    push_folders_to_hub,
    save_image,
    tracker_config,
)

logger = logging.getLogger("simclr_train")

# ----------------------------------------------------------------------------- configuration
# Defaults that depend on the optimiser (the paper's LARS recipe; AdamW for small runs).
OPTIMIZER_DEFAULTS = {
    "lars": dict(lr=None, weight_decay=1e-6),  # lr None: 0.3 x global batch / 256, the paper's scaling
    "adamw": dict(lr=1e-3, weight_decay=1e-4),
}
# Settings a checkpoint must share with the run that resumes it (they fix tensor shapes or optimiser state).
ARCH_KEYS = ("backbone", "proj_dim", "cifar_stem", "optimizer")
MODEL_SUBFOLDER = "model"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cut_hf.simclr_train", description="Train SimCLR with Accelerate.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    d("--num-workers", type=int, default=4, help="DataLoader worker processes per training process")
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
    o("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="bf16 works on CPU too")
    o("--no-sync-bn", dest="sync_bn", action="store_false",
      help="with several GPUs, keep per-process batch norm instead of the paper's global (synchronised) BN")
    o("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    r = p.add_argument_group("checkpoints, logging and outputs").add_argument
    r("--output-dir", default="outputs/simclr")
    r("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (0: never)")
    r("--keep-checkpoints", type=int, default=3, help="keep the newest K checkpoints")
    r("--resume", default=None, help="'latest' (newest in OUTPUT/checkpoints) or a checkpoint folder")
    r("--log-every", type=int, default=10, help="steps between tracker logs")
    r("--sample-every", type=int, default=500, help="steps between view grids in the tracker (0: never)")
    r("--report-to", default="tensorboard", choices=["tensorboard", "none"])
    r("--eval-data", default=None,
      help="labelled folder: after training, kNN and linear-probe accuracy (cut_hf.evaluate_simclr) go in the card")
    h = p.add_argument_group("Hub").add_argument
    h("--push-to-hub", action="store_true", help="upload OUTPUT/model")
    h("--hub-model-id", help="user/name on the Hub")
    h("--private", action="store_true", help="create the Hub repository private")
    h("--hub-endpoint", default=None, help="Hub URL (default: huggingface.co or HF_ENDPOINT)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags, fill the optimiser-dependent defaults and check the combination."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.data) == bool(args.dataset):
        parser.error("give the training images in exactly one way: --data FOLDER or --dataset ID --column COL")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push-to-hub needs --hub-model-id user/name")
    if args.batch_size < 2:
        parser.error("--batch-size must be >= 2: NT-Xent needs other images as negatives")
    if args.image_size < 8 or args.epochs < 1 or (args.max_steps is not None and args.max_steps < 1):
        parser.error("--image-size must be >= 8, --epochs and --max-steps >= 1")
    if args.temperature <= 0:
        parser.error("--temperature must be > 0")
    if not 0 < args.min_crop_scale <= 1:
        parser.error("--min-crop-scale must be in (0, 1]")
    if args.weight_decay is None:
        args.weight_decay = OPTIMIZER_DEFAULTS[args.optimizer]["weight_decay"]
    if args.preset is None:
        args.preset = "cifar" if args.cifar_stem else "simclr"
    return args


class ConfigError(ValueError):
    """Flags that cannot work together on this machine."""


# ----------------------------------------------------------------------------- data


class SimCLRViewDataset(Dataset):
    """Items ``(epoch, index)`` -> ``{"view1", "view2", "name", "skipped"}``.

    The views are (3, S, S) float tensors in [0, 1], drawn by ``augment`` with a generator seeded by
    (seed, epoch, index): an item is the same whichever process, worker or resumed run loads it.
    An unreadable file is skipped (the next readable image takes its place) and named in
    ``skipped`` so the loop can count it.
    """

    def __init__(self, images: ImageList, augment: SimCLRAugment, seed: int = 0) -> None:
        self.images, self.augment, self.seed = images, augment, seed
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        skipped: list[str] = []
        for attempt in range(max(4 * len(self.images), 16)):
            i = (index + attempt) % len(self.images)
            try:
                img = to_channels(self.images.load(i), 3)  # EXIF, 16-bit, palette, alpha handled
                break
            except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                name = self.images.name(i)
                skipped.append(name)
                if name not in self._warned:
                    self._warned.add(name)
                    logger.warning("skipping unreadable image %s: %s", name, e)
        else:
            raise DataError(f"no readable image found in {self.images.description}; are all files corrupt?")
        view1, view2 = self.augment(img, generator=item_generator(self.seed, epoch, index, salt=7))
        return {"view1": view1, "view2": view2, "name": self.images.name(i), "skipped": "\n".join(skipped)}


def load_images(args: argparse.Namespace) -> ImageList:
    """The training images from ``--data`` (recursive) or ``--dataset``/``--column``; raises DataError."""
    if args.data:
        images: ImageList = FolderImages(args.data, "--data")
    else:
        images = DatasetColumnImages(open_hf_dataset(args.dataset, args.split), args.column,
                                     f"{args.dataset}[{args.split}]")
    if len(images) == 0:
        raise DataError(f"{images.description} holds no images (looked for common image file types)")
    return images


def make_augment(args: argparse.Namespace) -> SimCLRAugment:
    """The preset, at ``--image-size``, with the strength and crop overrides."""
    overrides: dict[str, Any] = {"size": args.image_size, "crop_scale": (args.min_crop_scale, 1.0), "seed": args.seed}
    if args.jitter_strength is not None:
        overrides["jitter_strength"] = args.jitter_strength
    return SimCLRAugment.from_preset(args.preset, **overrides)


def make_dataloader(dataset: SimCLRViewDataset, sampler: UnpairedSampler, num_workers: int,
                    pin_memory: bool = False) -> DataLoader:
    """Batches of whole items; the loader's own generator keeps the global RNG untouched."""
    return DataLoader(dataset, batch_size=sampler.batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=default_collate, drop_last=True, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(sampler.seed))


# ----------------------------------------------------------------------------- optimisation


class LARS(torch.optim.Optimizer):
    """LARS (You et al., 2017) as SimCLR's ``lars_optimizer.py``: SGD with momentum and a per-layer trust ratio.

    For each parameter w with gradient g, in a group with ``lars_adaptation=True``::

        g <- g + weight_decay * w
        trust = eta * ||w|| / ||g||      (1 when either norm is 0)
        v <- momentum * v + lr * trust * g
        w <- w - v                       (nesterov: w - (momentum * v + lr * trust * g))

    Groups with ``lars_adaptation=False`` (biases and norm parameters in SimCLR) use trust 1 and no
    weight decay: plain momentum SGD. :func:`param_groups` builds the two groups.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 1e-3, nesterov: bool = False) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"invalid LARS hyper-parameters: lr {lr}, momentum {momentum}, "
                             f"weight_decay {weight_decay}, eta {eta}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, nesterov=nesterov,
                        lars_adaptation=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer.step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            adapt = group["lars_adaptation"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if adapt and group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                lr = group["lr"]
                if adapt:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    scaled = g * (trust * lr)
                else:
                    scaled = g * lr
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                v = state["momentum_buffer"]
                v.mul_(group["momentum"]).add_(scaled)
                p.sub_(v * group["momentum"] + scaled if group["nesterov"] else v)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights (decayed, LARS-adapted) and biases + norm parameters (neither), as the paper.

    Parameters with one dimension are exactly the biases and the batch-norm scales and shifts of a
    ResNet and its head.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_adaptation": True},
        {"params": no_decay, "weight_decay": 0.0, "lars_adaptation": False},
    ]


def warmup_cosine(warmup_steps: int, total_steps: int):
    """Learning-rate factor per step: linear warmup from 1/warmup to 1, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(args: argparse.Namespace, model: nn.Module, global_batch: int) -> torch.optim.Optimizer:
    """LARS or AdamW over :func:`param_groups`; fills ``args.lr`` when it was left to the default."""
    if args.lr is None:
        args.lr = 0.3 * global_batch / 256 if args.optimizer == "lars" else OPTIMIZER_DEFAULTS["adamw"]["lr"]
    groups = param_groups(model, args.weight_decay)
    if args.optimizer == "lars":
        return LARS(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, eta=args.lars_eta)
    return torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)


# ----------------------------------------------------------------------------- the loss across processes


def contrastive_loss(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent of this process's views against the views of every process, with gradients through the gather.

    Args:
        z: (2N, D) projections of this process's first views (rows :N) then second views (rows N:).
        temperature: tau.
    Returns:
        (loss of this process's 2N anchors, top-1 accuracy of finding the positive among all 2WN - 1 views).
    """
    n = z.shape[0] // 2
    everyone = gather_with_grad(z.float())  # (W * 2N, D), rank-major
    w = world_size()
    pairs = everyone.view(w, 2, n, -1)  # (W, 2, N, D)
    z_a, z_b = pairs[:, 0].reshape(w * n, -1), pairs[:, 1].reshape(w * n, -1)  # (W * N, D) each
    anchors = slice(rank() * n, (rank() + 1) * n)
    loss = nt_xent_loss_for_anchors(z_a, z_b, anchors, temperature)
    with torch.no_grad():  # how often the other view is the nearest of all views: a readable progress signal
        zn = torch.nn.functional.normalize(torch.cat([z_a, z_b]), dim=1)  # (2WN, D)
        rows = torch.cat([torch.arange(w * n)[anchors], torch.arange(w * n)[anchors] + w * n]).to(z.device)
        sim = zn[rows] @ zn.t()
        sim[torch.arange(rows.numel(), device=z.device), rows] = -float("inf")
        accuracy = (sim.argmax(dim=1) == (rows + w * n) % (2 * w * n)).float().mean()
    return loss, accuracy


# ----------------------------------------------------------------------------- outputs


def data_name(args: argparse.Namespace) -> str:
    """A short name of the training data: the folder (with its parent when it is a split folder) or dataset id."""
    if not args.data:
        return str(args.dataset)
    path = Path(args.data).expanduser().resolve()
    return f"{path.parent.name}/{path.name}" if path.name.lower() in ("train", "training", "images") else path.name


def describe_data(args: argparse.Namespace) -> str:
    if args.data:
        return f"folder `{data_name(args)}`"
    return f"🤗 dataset `{args.dataset}` (split {args.split}, column {args.column})"


def save_outputs(args: argparse.Namespace, model: SimCLR, summary: dict[str, Any], grid: torch.Tensor | None,
                 command: str, metrics: dict[str, Any] | None) -> Path:
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
        "optimizer": f"{args.optimizer}, lr {args.lr:g}, weight decay {args.weight_decay:g}, "
                     f"{summary['warmup_steps']} warmup steps then cosine decay",
        "temperature": args.temperature,
        "precision": args.mixed_precision if args.mixed_precision != "no" else "fp32",
        "seed": args.seed,
        "command": f"`{command}`",
    }
    if summary.get("skipped_files"):
        training["unreadable files skipped"] = summary["skipped_files"]
    final = {f"{k} (mean of last {summary['loss_window']} steps)": f"{v:.4f}"
             for k, v in summary["final_losses"].items()}
    card = dict(
        model_name=f"SimCLR {args.backbone} on {data_name(args)}",
        description=(f"Trained from random initialisation with cut-hf's `cut_hf.simclr_train` for {summary['step']} "
                     f"steps on {data}." + (" The run ended early (--max-steps): this is not a fully trained model."
                                             if summary["stopped_early"] else "")),
        training={**training, **final},
        metrics=metrics or None,
        repo_id=args.hub_model_id,
    )
    if folder.exists():
        shutil.rmtree(folder)  # a fresh folder: save_pretrained never overwrites a README.md
    model.save_pretrained(folder, model_card_kwargs=card)
    if grid is not None:
        save_image(grid, folder / "views.png")
    return folder


def views_grid(batch: dict[str, Any]) -> torch.Tensor:
    """view1 | view2 for up to 8 images, (3, H', W') in [0, 1]."""
    return image_grid([batch["view1"] * 2 - 1, batch["view2"] * 2 - 1], max_rows=8)


# ----------------------------------------------------------------------------- training


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train; returns a summary. Raises DataError, CheckpointError, NonFiniteLossError, ConfigError."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    out_dir = Path(args.output_dir)
    accelerator = Accelerator(
        cpu=args.cpu or not torch.accelerator.is_available(),
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(out_dir),
        step_scheduler_with_optimizer=False,  # the schedule counts optimiser steps; stepped once per step below
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise ConfigError(f"launched as {launched} processes but Accelerate joined {accelerator.num_processes}: "
                          "each would train alone; check the launcher and its environment")
    if args.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("--mixed-precision fp16 needs a GPU; use bf16 on the CPU")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(args.seed)  # the same on every process: identical initial weights
    is_main = accelerator.is_main_process

    # -- data: every process takes different images of the same epoch, in whole batches
    images = load_images(args)
    if len(images) < args.batch_size * accelerator.num_processes:
        raise DataError(f"{images.description} has {len(images)} image(s), fewer than one batch of "
                        f"{args.batch_size} for each of {accelerator.num_processes} process(es); lower --batch-size")
    augment = make_augment(args)
    dataset = SimCLRViewDataset(images, augment, seed=args.seed)
    sampler = UnpairedSampler(len(dataset), args.batch_size, accelerator.num_processes, accelerator.process_index,
                              seed=args.seed)
    loader = make_dataloader(dataset, sampler, args.num_workers, pin_memory=accelerator.device.type == "cuda")
    max_steps = args.epochs * sampler.batches_per_epoch
    if args.max_steps is not None:
        max_steps = args.max_steps  # may exceed --epochs: then more epochs run
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, round(0.1 * max_steps))
    accelerator.print(f"data: {len(images)} images ({images.description}); {sampler.batches_per_epoch} steps per "
                      f"epoch on each of {accelerator.num_processes} process(es); {max_steps} steps in all")

    # -- model and optimiser, prepared together
    model = SimCLR(backbone=args.backbone, proj_dim=args.proj_dim, cifar_stem=args.cifar_stem)
    if accelerator.num_processes > 1 and args.sync_bn and accelerator.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the paper's global BN: no leak through batch stats
    if accelerator.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(args, model, args.batch_size * accelerator.num_processes)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, max_steps))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    # -- resume
    ckpts = CheckpointManager(out_dir / "checkpoints", keep=args.keep_checkpoints)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "skipped_files": 0, "skipped_steps": 0}
    if is_main:
        for stale in ckpts.remove_stale():
            logger.warning("removed %s, left by a run stopped while saving", stale)
    accelerator.wait_for_everyone()
    resume_from = ckpts.resolve(args.resume) if args.resume else None
    if args.resume == "latest" and resume_from is None:
        accelerator.print(f"--resume latest: no checkpoint in {ckpts.root} yet, starting from scratch")
    if resume_from is not None:
        saved = CheckpointManager.read_state(resume_from)
        if saved.get("task") != "simclr":
            raise CheckpointError(f"{resume_from} is not a SimCLR checkpoint (task {saved.get('task')!r})")
        mismatch = {k: (saved["args"].get(k), getattr(args, k)) for k in ARCH_KEYS if saved["args"].get(k) != getattr(args, k)}
        if mismatch:
            raise CheckpointError(f"{resume_from} was trained with other settings (saved, now): {mismatch}")
        try:
            accelerator.load_state(str(resume_from))  # weights, optimiser, schedule, scaler, RNG
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            raise CheckpointError(f"{resume_from} could not be loaded (truncated or foreign files?): {e}") from e
        state.update({k: saved[k] for k in state if k in saved})
        if saved["batch_size"] * saved["num_processes"] != args.batch_size * accelerator.num_processes:
            old = saved["batch_size"] * saved["num_processes"]
            state["batch_in_epoch"] = state["batch_in_epoch"] * old // (args.batch_size * accelerator.num_processes)
            accelerator.print("resuming with another batch size x processes: the data order differs from the original run")
        accelerator.print(f"resumed from {resume_from} at step {state['step']}, epoch {state['epoch']}")
    next_ckpt = ckpts.next_index()  # the counter continues after a resume

    if accelerator.log_with:
        accelerator.init_trackers("logs", config=tracker_config(public_args(args)))

    # -- the loop
    command = "python -m cut_hf.simclr_train " + " ".join(shlex.quote(a) for a in (args._argv or []))
    window: deque[dict[str, float]] = deque(maxlen=50)
    skipped_names: set[str] = set()
    last_saved, grid, batch = -1, None, None
    step_times: list[float] = []
    progress = tqdm(total=max_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                    desc="simclr training", dynamic_ncols=True)
    epoch = state["epoch"]
    model.train()
    while state["step"] < max_steps:
        sampler.set_epoch(epoch, start_batch=state["batch_in_epoch"])
        for batch in loader:
            t0 = time.perf_counter()
            views = torch.cat([batch["view1"], batch["view2"]]).to(accelerator.device, non_blocking=True)  # (2N, 3, S, S)
            if accelerator.device.type == "cuda":
                views = views.contiguous(memory_format=torch.channels_last)
            with accelerator.autocast():
                _, z = model(views)  # one pass over both views: BN statistics over all 2N views
            loss, accuracy = contrastive_loss(z, args.temperature)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch_in_epoch"] += 1
            # One small all-reduce: every process sees the same (mean) values, so a NaN stops all together.
            skipped = torch.tensor(float(optimizer.step_was_skipped), device=accelerator.device)
            values = accelerator.reduce(torch.stack([loss.detach(), accuracy, skipped]), reduction="mean").tolist()
            values = {"nt_xent": values[0], "positive_top1": values[1], "skipped": values[2]}
            state["skipped_steps"] += int(values.pop("skipped") > 0)  # fp16 overflow: counted, not fatal
            check_finite(values, state["step"])
            step_times.append(time.perf_counter() - t0)
            window.append(values)
            for names in batch["skipped"]:
                skipped_names.update(n for n in names.split("\n") if n)
            state["skipped_files"] = len(skipped_names)

            progress.update(1)
            progress.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
            if args.log_every and state["step"] % args.log_every == 0:
                accelerator.log({**values, "lr": scheduler.get_last_lr()[0], "epoch": epoch,
                                 "skipped_files": state["skipped_files"], "skipped_steps_fp16": state["skipped_steps"]},
                                step=state["step"])
            if args.sample_every and state["step"] % args.sample_every == 0 and is_main:
                log_images(accelerator, {"views": views_grid(batch)}, state["step"])
            if args.checkpoint_every and state["step"] % args.checkpoint_every == 0:
                save_checkpoint(accelerator, ckpts, state, next_ckpt, args)
                next_ckpt, last_saved = next_ckpt + 1, state["step"]
            if state["step"] >= max_steps:
                break
        else:  # the epoch ran to its end
            epoch += 1
            state["epoch"], state["batch_in_epoch"] = epoch, 0
    progress.close()
    if args.checkpoint_every and last_saved != state["step"] and state["step"] > 0:
        save_checkpoint(accelerator, ckpts, state, next_ckpt, args)

    # -- outputs (main process), after every process has finished its last step
    accelerator.wait_for_everyone()
    final = {k: sum(w[k] for w in window) / len(window) for k in window[-1]} if window else {}
    summary = {**state, "num_processes": accelerator.num_processes, "num_images": len(images),
               "final_losses": final, "loss_window": len(window), "warmup_steps": warmup, "max_steps": max_steps,
               "stopped_early": state["step"] < args.epochs * sampler.batches_per_epoch,
               "seconds_per_step": step_times, "output_dir": str(out_dir)}
    if is_main:
        plain = revert_sync_batchnorm(accelerator.unwrap_model(model))
        metrics = None
        if args.eval_data:
            from .evaluate_simclr import evaluate

            result = evaluate(plain, args.eval_data, image_size=args.image_size, device=accelerator.device)
            summary["eval"] = result
            metrics = {f"kNN top-1 (k {result['k']}, T {result['knn_temperature']})": f"{result['knn_top1']:.4f}",
                       "linear probe top-1": f"{result['linear_top1']:.4f}",
                       "evaluation data": f"`{Path(args.eval_data).name}` ({result['num_train']} train / "
                                          f"{result['num_test']} test images, {result['num_classes']} classes)"}
            accelerator.print(f"kNN top-1 {result['knn_top1']:.4f}, linear probe top-1 {result['linear_top1']:.4f}")
        grid = views_grid(batch) if batch is not None else None
        folder = save_outputs(args, plain, summary, grid, command, metrics)
        accelerator.print(f"saved {folder}; skipped {state['skipped_files']} unreadable file(s), "
                          f"{state['skipped_steps']} fp16 overflow step(s)")
        if args.push_to_hub:
            url = push_folders_to_hub(args.hub_model_id, folder, private=args.private, endpoint=args.hub_endpoint)
            accelerator.print(f"pushed to {url}")
            summary["hub_url"] = url
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """SyncBatchNorm layers back to BatchNorm2d, so the saved model loads without a process group."""
    if not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        return model
    plain = SimCLR(backbone=model.backbone, proj_dim=model.proj_dim, cifar_stem=model.cifar_stem)
    plain.load_state_dict(model.state_dict())
    return plain.to(next(model.parameters()).device)


def public_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as a dict, without private bookkeeping (``_argv``)."""
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


def save_checkpoint(accelerator: Any, ckpts: CheckpointManager, state: dict[str, Any], index: int,
                    args: argparse.Namespace) -> None:
    trainer_state = {**state, "task": "simclr", "checkpoint_index": index, "batch_size": args.batch_size,
                     "num_processes": accelerator.num_processes,
                     "args": public_args(args)}
    path = ckpts.save(accelerator, trainer_state, index)
    accelerator.print(f"\nsaved checkpoint {path} (step {state['step']})")


def main(argv: list[str] | argparse.Namespace | None = None) -> int:
    """Command-line entry point; returns the exit status (1 with a one-line message on known errors).

    ``argv`` is a list of flags (``sys.argv[1:]`` when None). ``train.py --task simclr`` may pass its
    own parsed namespace instead: its flags are then re-read from ``sys.argv`` with this parser.
    """
    if isinstance(argv, argparse.Namespace):
        argv = None  # another script's parser: this one reads the same command line
    if argv is None:
        argv = sys.argv[1:]
    argv = list(argv)
    args = parse_args(argv)
    args._argv = [a for a in argv]
    try:
        run(args)
    except (DataError, CheckpointError, NonFiniteLossError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

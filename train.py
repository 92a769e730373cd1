"""Train CUT or FastCUT (Park et al., ECCV 2020) with 🤗 Accelerate.

    python train.py --data-dir datasets/horse2zebra --output-dir outputs/h2z             # one device
    accelerate launch train.py --data-dir datasets/horse2zebra --mode fastcut            # many GPUs / nodes
    torchrun --nproc_per_node 4 train.py --data-dir datasets/horse2zebra                 # the same with torchrun

Reads top to bottom: the configuration with its defaults, the models and the objective (small
functions that ``bench/bench.py`` imports to time one step), then ``run``: setup, data, models,
optimisers, resume, the loop and the outputs. The objective is the paper's code
(``models/cut_model.py`` of taesungp/contrastive-unpaired-translation) step for step, with two changes that
do not alter it: the PatchNCE keys reuse the features of the generator's forward pass, and G and F
share one optimiser (two parameter groups) so that a single fp16 GradScaler scales them correctly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from cut_hf import CUTGenerator, PatchDiscriminator, PatchSampler, perf
from cut_hf.data import (
    PREPROCESS_MODES,
    DataError,
    Preprocess,
    UnpairedImageDataset,
    UnpairedSampler,
    check_enough_images,
    load_domains,
    make_dataloader,
)
from cut_hf.evaluate import EvaluationError, evaluate_folders, list_images
from cut_hf.losses import GAN_MODES, gan_loss, patch_nce_loss
from cut_hf.metrics import MetricsUnavailable, TinyFeatureExtractor, inception_feature_extractor
from cut_hf.training import (
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

logger = logging.getLogger("train")

# ----------------------------------------------------------------------------- configuration
# `--mode` fills in whatever was not given on the command line, as the paper's --CUT_mode does.
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cut": dict(lambda_nce=1.0, nce_idt=True, flip_equivariance=False, n_epochs=200, n_epochs_decay=200),
    "fastcut": dict(lambda_nce=10.0, nce_idt=False, flip_equivariance=True, n_epochs=150, n_epochs_decay=50),
}
# Settings a checkpoint must share with the run that resumes it (they fix the tensors' shapes).
ARCH_KEYS = ("input_nc", "output_nc", "ngf", "ndf", "n_blocks", "n_layers_d", "norm_g", "norm_d", "no_antialias",
             "no_antialias_up", "dropout", "nce_layers", "netf_nc")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train CUT / FastCUT with Accelerate.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--task", default="cut", choices=["cut", "simclr"], help="what to train (simclr: cut_hf.simclr_train)")
    a("--mode", default="cut", choices=list(MODE_DEFAULTS), help="the paper's CUT or FastCUT preset")
    # data
    d = p.add_argument_group("data").add_argument
    d("--data-dir", help="folder with trainA/ and trainB/ (the official layout)")
    d("--domain-a", help="folder of domain A images (instead of --data-dir)")
    d("--domain-b", help="folder of domain B images")
    d("--dataset", help="🤗 dataset: Hub id, save_to_disk folder or local dataset folder")
    d("--column-a", default="imageA", help="--dataset column of domain A")
    d("--column-b", default="imageB", help="--dataset column of domain B")
    d("--split", default="train", help="--dataset split")
    d("--label-a", help="name of domain A in the model card (default: from the data source)")
    d("--label-b", help="name of domain B in the model card")
    d("--preprocess", default="resize_and_crop", choices=PREPROCESS_MODES)
    d("--load-size", type=int, default=286, help="resize to this before cropping")
    d("--crop-size", type=int, default=256, help="training image size")
    d("--no-flip", action="store_true", help="no random horizontal flips")
    d("--num-workers", type=int, default=4, help="DataLoader worker processes per training process")
    # model
    m = p.add_argument_group("model").add_argument
    m("--input-nc", type=int, default=3, help="channels of domain A images")
    m("--output-nc", type=int, default=3, help="channels of domain B images")
    m("--ngf", type=int, default=64, help="generator width")
    m("--ndf", type=int, default=64, help="discriminator width")
    m("--n-blocks", type=int, default=9, help="generator residual blocks")
    m("--n-layers-d", type=int, default=3, help="discriminator strided layers (3: 70x70 PatchGAN)")
    m("--norm-g", default="instance", choices=["instance", "batch", "none"])
    m("--norm-d", default="instance", choices=["instance", "batch", "none"])
    m("--no-antialias", action="store_true", help="strided convs instead of blur-pool downsampling")
    m("--no-antialias-up", action="store_true", help="transposed convs instead of blur upsampling")
    m("--dropout", action="store_true", help="dropout in the generator's residual blocks")
    m("--netf-nc", type=int, default=256, help="PatchSampler embedding size")
    # objective
    o = p.add_argument_group("objective (defaults marked * come from --mode)").add_argument
    o("--lambda-gan", type=float, default=1.0, help="weight of the GAN loss")
    o("--lambda-nce", type=float, default=None, help="* weight of PatchNCE (cut 1, fastcut 10)")
    o("--nce-idt", action=argparse.BooleanOptionalAction, default=None, help="* PatchNCE identity loss on B (cut)")
    o("--flip-equivariance", action=argparse.BooleanOptionalAction, default=None, help="* FastCUT's flip trick")
    o("--nce-layers", default="0,4,8,12,16", help="generator layers for PatchNCE")
    o("--num-patches", type=int, default=256, help="patches per layer and image")
    o("--nce-t", type=float, default=0.07, help="PatchNCE temperature")
    o("--nce-negatives-from-batch", action="store_true", help="negatives from all images of the batch")
    o("--gan-mode", default="lsgan", choices=GAN_MODES)
    o("--no-reuse-features", dest="reuse_features", action="store_false",
      help="recompute PatchNCE keys with a second encoder pass instead of reusing the forward pass's")
    # speed (figures in bench/RESULTS.md)
    s = p.add_argument_group("performance").add_argument
    s("--channels-last", action=argparse.BooleanOptionalAction, default=None,
      help="channels-last memory format for G and D (default: where it is faster: CUDA, AVX-512 CPUs, "
           "emulated bf16)")
    s("--compile", action="store_true", help="torch.compile G and D (first steps slower while compiling)")
    s("--fast-ops", action=argparse.BooleanOptionalAction, default=True,
      help="exact fast equivalents of the official Upsample and instance norm (cut_hf.models.layers)")
    s("--threads", type=int, default=None,
      help="CPU threads per process (default: torch's, the cores; on a busy shared CPU fewer can be faster)")
    # optimisation
    t = p.add_argument_group("optimisation").add_argument
    t("--batch-size", type=int, default=1, help="images per process and step")
    t("--lr", type=float, default=2e-4)
    t("--beta1", type=float, default=0.5)
    t("--beta2", type=float, default=0.999)
    t("--n-epochs", type=int, default=None, help="* epochs at the initial learning rate (cut 200, fastcut 150)")
    t("--n-epochs-decay", type=int, default=None, help="* epochs of linear decay to zero (cut 200, fastcut 50)")
    t("--max-steps", type=int, default=None, help="stop after this many steps in all (tests, benchmarks)")
    t("--seed", type=int, default=0)
    t("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="bf16 works on CPU too")
    t("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    # outputs
    r = p.add_argument_group("checkpoints, logging and outputs").add_argument
    r("--output-dir", default="outputs/cut")
    r("--checkpoint-every", type=int, default=5000, help="steps between checkpoints (0: never)")
    r("--keep-checkpoints", type=int, default=3, help="keep the newest K checkpoints")
    r("--resume", default=None, help="'latest' (newest in OUTPUT/checkpoints) or a checkpoint folder")
    r("--log-every", type=int, default=10, help="steps between tracker logs")
    r("--sample-every", type=int, default=500, help="steps between sample image grids")
    r("--report-to", default="tensorboard", choices=["tensorboard", "none"])
    r("--log-seen-files", action="store_true",
      help="each process writes the files it trained on and a hash of its weights to OUTPUT/seen_files/")
    e = p.add_argument_group("evaluation during training (main process; cut_hf.evaluate)").add_argument
    e("--eval-every", type=int, default=0, help="steps between FID/KID evaluations (0: never); keeps OUTPUT/best/")
    e("--eval-dir", default=None,
      help="INPUT:REFERENCE test folders (default with --data-dir: DATA_DIR/testA:DATA_DIR/testB)")
    e("--eval-size", type=int, default=None, help="evaluation image size (default: --crop-size; 0: native sizes)")
    e("--eval-feature-extractor", default="inception", choices=["inception", "tiny"],
      help="FID Inception-v3, or cut_hf.metrics.TinyFeatureExtractor (tests / offline smoke runs, not comparable)")
    e("--eval-paired", action="store_true",
      help="REFERENCE holds ground truth under the input names: best model by PSNR (higher is better)")
    h = p.add_argument_group("Hub").add_argument
    h("--push-to-hub", action="store_true", help="upload OUTPUT/generator (and sampler/, discriminator/)")
    h("--hub-model-id", help="user/name on the Hub")
    h("--private", action="store_true", help="create the Hub repository private")
    h("--hub-endpoint", default=None, help="Hub URL (default: huggingface.co or HF_ENDPOINT)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags, fill the ``--mode`` defaults and check the combination."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = "python train.py " + shlex.join(sys.argv[1:] if argv is None else argv)  # for the model card
    for key, value in MODE_DEFAULTS[args.mode].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.nce_layers = sorted({int(i) for i in str(args.nce_layers).split(",") if i.strip()})
    except ValueError:
        parser.error(f"--nce-layers must be comma-separated integers, got {args.nce_layers!r}")
    if args.nce_idt and args.input_nc != args.output_nc:
        parser.error("the NCE identity loss runs G on B images: it needs --input-nc == --output-nc (or --no-nce-idt)")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push-to-hub needs --hub-model-id user/name")
    if args.batch_size < 1 or args.n_epochs < 0 or args.n_epochs_decay < 0:
        parser.error("--batch-size must be >= 1 and epochs >= 0")
    if args.lambda_gan <= 0 and args.lambda_nce <= 0:
        parser.error("nothing to train: --lambda-gan and --lambda-nce are both 0")
    if args.eval_every < 0:
        parser.error("--eval-every must be >= 0 (0: no evaluation)")
    args.eval_dirs = None  # (input folder, reference folder) when evaluating
    if args.eval_every:
        if args.eval_dir:
            parts = str(args.eval_dir).split(":")
            if len(parts) != 2 or not all(parts):
                parser.error(f"--eval-dir must be INPUT:REFERENCE (two folders joined by ':'), got {args.eval_dir!r}")
            args.eval_dirs = parts
        elif args.data_dir:
            args.eval_dirs = [str(Path(args.data_dir) / "testA"), str(Path(args.data_dir) / "testB")]
        else:
            parser.error("--eval-every needs --eval-dir INPUT:REFERENCE (or --data-dir with testA/ and testB/)")
    if args.eval_size is None:
        args.eval_size = args.crop_size
    return args


class ConfigError(ValueError):
    """Flags that cannot work together on this machine."""


# ----------------------------------------------------------------------------- evaluation while training


class Evaluator:
    """``--eval-every``: FID/KID (or paired PSNR) of the generator on the test folders, on the main
    process only, and OUTPUT/best/ kept as the best generator so far.

    One ``cache`` dict lives across evaluations, so the reference features (and the feature
    network) are computed once. The best metric and step live in the trainer state (saved with
    every checkpoint) and in OUTPUT/best/best.json, so a resumed run keeps comparing against them.
    """

    def __init__(self, args: argparse.Namespace, out_dir: Path, device: torch.device) -> None:
        self.input_dir, self.reference_dir = (Path(d) for d in args.eval_dirs)
        self.size, self.paired, self.device = args.eval_size or None, args.eval_paired, device
        self.metric = "psnr" if self.paired else "fid"
        self.best_dir = out_dir / "best"
        self.cache: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, Any] | None = None
        # Checked now, not after hours of training: raises EvaluationError / MetricsUnavailable.
        list_images(self.input_dir)
        list_images(self.reference_dir)
        self.extractor = (TinyFeatureExtractor() if args.eval_feature_extractor == "tiny"
                          else inception_feature_extractor(None))

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.metric == "psnr" else value < best

    def read_best(self) -> dict[str, Any] | None:
        """OUTPUT/best/best.json if it was written for this metric (used when resuming)."""
        try:
            saved = json.loads((self.best_dir / "best.json").read_text())
        except (OSError, ValueError):
            return None
        return saved if saved.get("metric") == self.metric else None

    def __call__(self, generator: CUTGenerator, state: dict[str, Any]) -> dict[str, float]:
        """Evaluate at ``state['step']``; update ``state['best_*']`` and OUTPUT/best/. Returns the logged values."""
        # Forked RNG: evaluating must not change the training's random stream (resume stays exact).
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            result = evaluate_folders(generator, self.input_dir, self.reference_dir, self.extractor,
                                      size=self.size, device=self.device, paired=self.paired, cache=self.cache)
        generator.train()
        values = {"eval/fid": result["fid"], "eval/kid_mean": result["kid_mean"]}
        if self.paired:
            values.update({f"eval/{k}": result["paired"][k] for k in ("psnr", "ssim")
                           if result["paired"].get(k) is not None})
        value = float(values[f"eval/{self.metric}"])
        self.last = {"step": state["step"], **{k.split("/", 1)[1]: v for k, v in values.items()}}
        self.history.append(self.last)
        if self.better(value, state.get("best_metric")):
            state["best_metric"], state["best_step"] = value, state["step"]
            self.save_best(generator, state)
        return values

    def save_best(self, generator: CUTGenerator, state: dict[str, Any]) -> None:
        """Write OUTPUT/best/ into a temporary folder, then swap it in by renames."""
        tmp, old = self.best_dir.with_name(".best.tmp"), self.best_dir.with_name(".best.old")
        for stale in (tmp, old):
            if stale.exists():
                shutil.rmtree(stale)
        name = "PSNR" if self.paired else "FID"
        generator.save_pretrained(tmp, model_card_kwargs=dict(
            model_name="CUT generator (best evaluation)",
            description=f"The generator of step {state['step']}, the best {name} "
                        f"({state['best_metric']:.4f}) of the evaluations during training.",
            metrics={k: v for k, v in self.last.items()}))
        record = {"metric": self.metric, "value": state["best_metric"], "step": state["step"],
                  "input_dir": str(self.input_dir), "reference_dir": str(self.reference_dir), "size": self.size}
        (tmp / "best.json").write_text(json.dumps(record, indent=2))
        if self.best_dir.exists():
            self.best_dir.rename(old)
        tmp.rename(self.best_dir)
        if old.exists():
            shutil.rmtree(old)


# ----------------------------------------------------------------------------- models


class GeneratorWithFeatures(nn.Module):
    """The generator as DistributedDataParallel sees it: one forward, translation and features.

    DDP synchronises gradients only for passes made through its ``forward``; this wrapper makes
    the pass that also yields the PatchNCE features (``forward_with_features``) that forward.
    """

    def __init__(self, generator: CUTGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.generator.forward_with_features(x)


@dataclass
class CUTModels:
    """Prepared (possibly DDP-wrapped) modules, and the plain modules inside them."""

    G: nn.Module  # GeneratorWithFeatures, prepared
    D: nn.Module  # PatchDiscriminator, prepared
    F: nn.Module  # PatchSampler, prepared
    generator: CUTGenerator
    discriminator: PatchDiscriminator
    sampler: PatchSampler


def build_models(args: argparse.Namespace) -> tuple[CUTGenerator, PatchDiscriminator, PatchSampler]:
    """G, D and F (the PatchSampler, built here with its MLPs: nothing is created lazily)."""
    generator = CUTGenerator(
        input_nc=args.input_nc, output_nc=args.output_nc, ngf=args.ngf, n_blocks=args.n_blocks, norm=args.norm_g,
        antialias=not args.no_antialias, antialias_up=not args.no_antialias_up, dropout=args.dropout,
        nce_layers=list(args.nce_layers),
    )
    discriminator = PatchDiscriminator(input_nc=args.output_nc, ndf=args.ndf, n_layers=args.n_layers_d,
                                       norm=args.norm_d, antialias=not args.no_antialias)
    sampler = PatchSampler(generator.feature_channels(), num_patches=args.num_patches, nc=args.netf_nc)
    return generator, discriminator, sampler


def build_optimizers(args: argparse.Namespace, generator: nn.Module, discriminator: nn.Module,
                     sampler: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam for G and F together (two parameter groups: one fp16 GradScaler step), Adam for D."""
    betas = (args.beta1, args.beta2)
    opt_g = torch.optim.Adam([{"params": list(generator.parameters()), "name": "G"},
                              {"params": list(sampler.parameters()), "name": "F"}], lr=args.lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=args.lr, betas=betas)
    return opt_g, opt_d


def linear_decay(n_epochs: int, n_epochs_decay: int):
    """The paper code's ``linear`` policy: lr constant for ``n_epochs``, then down by 1/(decay+1) per epoch."""

    def factor(epoch: int) -> float:  # epoch: scheduler steps taken so far (0-based)
        return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)

    return factor


def setup_training(args: argparse.Namespace, accelerator: Accelerator):
    """Build G, D, F, their optimisers and schedulers, and prepare them all in one call."""
    generator, discriminator, sampler = build_models(args)
    perf.training_fast_paths_(generator, discriminator, accelerator.device, args.channels_last, args.compile,
                              args.fast_ops, args.mixed_precision)
    opt_g, opt_d = build_optimizers(args, generator, discriminator, sampler)
    rule = linear_decay(args.n_epochs, args.n_epochs_decay)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, rule)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, rule)
    g, d, f, opt_g, opt_d, sched_g, sched_d = accelerator.prepare(
        GeneratorWithFeatures(generator), discriminator, sampler, opt_g, opt_d, sched_g, sched_d)
    models = CUTModels(G=g, D=d, F=f, generator=accelerator.unwrap_model(g).generator,
                       discriminator=accelerator.unwrap_model(d), sampler=accelerator.unwrap_model(f))
    return models, (opt_g, opt_d), (sched_g, sched_d)


# ----------------------------------------------------------------------------- the objective


def generator_forward(models: CUTModels, real_a: torch.Tensor, real_b: torch.Tensor,
                      args: argparse.Namespace) -> dict[str, Any]:
    """The official ``forward()``: G on cat(real_A, real_B) with the identity loss, flipped at random
    for FastCUT's flip equivariance. Also returns the features of that pass (PatchNCE keys)."""
    real = torch.cat([real_a, real_b]) if args.nce_idt else real_a  # (2B or B, C, H, W)
    flipped = bool(args.flip_equivariance) and bool(torch.rand(()) < 0.5)
    if flipped:
        real = torch.flip(real, [3])
    fake, feats = models.G(real)
    n = real_a.shape[0]
    return {"fake_B": fake[:n], "idt_B": fake[n:] if args.nce_idt else None, "feats": feats, "flipped": flipped}


def compute_d_loss(discriminator: nn.Module, fake_b: torch.Tensor, real_b: torch.Tensor,
                   gan_mode: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(D_fake + D_real) / 2, with the fake detached so that no gradient reaches G."""
    loss_fake = gan_loss(discriminator(fake_b.detach()), False, gan_mode)
    loss_real = gan_loss(discriminator(real_b), True, gan_mode)
    return (loss_fake + loss_real) * 0.5, {"D_fake": loss_fake, "D_real": loss_real}


def compute_nce_loss(models: CUTModels, src: torch.Tensor, tgt: torch.Tensor, args: argparse.Namespace,
                     flipped: bool = False, feat_k: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The official ``calculate_NCE_loss(src, tgt)``, weighted by lambda_NCE and averaged over layers.

    Queries are G's features of the translation ``tgt`` (flipped back when the input was flipped);
    keys are G's features of the source ``src`` at the same sampled locations. ``feat_k`` are those
    key features if already computed (the forward pass's); otherwise a second encoder pass makes
    them. Keys carry no gradient (the loss detaches them), so they are built without a graph.
    """
    feat_q = models.generator.encode(tgt, args.nce_layers)  # list of (B, C_l, H_l, W_l)
    if flipped:
        feat_q = [torch.flip(f, [3]) for f in feat_q]
    with torch.no_grad():
        if feat_k is None:
            feat_k = models.generator.encode(src, args.nce_layers)
        k_pool, patch_ids = models.sampler([f.detach() for f in feat_k], args.num_patches)  # (B*S, nc) each
    q_pool, _ = models.F(feat_q, args.num_patches, patch_ids)  # same locations, through DDP for F's grads
    total = 0.0
    for f_q, f_k in zip(q_pool, k_pool):
        total = total + patch_nce_loss(f_q, f_k, args.nce_t, batch_size=src.shape[0],
                                       negatives_from_batch=args.nce_negatives_from_batch) * args.lambda_nce
    return total / len(args.nce_layers)


def compute_g_loss(models: CUTModels, real_a: torch.Tensor, real_b: torch.Tensor, out: dict[str, Any],
                   args: argparse.Namespace) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G_GAN + NCE, or G_GAN + (NCE + NCE_Y) / 2 with the identity loss, as the official compute_G_loss."""
    terms: dict[str, torch.Tensor] = {}
    zero = real_a.new_zeros(())
    loss_gan = zero
    if args.lambda_gan > 0:
        # D's plain module: its parameters are frozen here and its DDP wrapper must not expect grads.
        loss_gan = gan_loss(models.discriminator(out["fake_B"]), True, args.gan_mode) * args.lambda_gan
        terms["G_GAN"] = loss_gan
    loss_nce = zero
    if args.lambda_nce > 0:
        # The forward pass saw exactly real_A (and real_B) unless it flipped them: reuse its features then.
        reuse = args.reuse_features and not out["flipped"]
        n = real_a.shape[0]
        keys_a = [f[:n] for f in out["feats"]] if reuse else None
        terms["NCE"] = compute_nce_loss(models, real_a, out["fake_B"], args, out["flipped"], keys_a)
        loss_nce = terms["NCE"]
        if args.nce_idt:
            keys_b = [f[n:] for f in out["feats"]] if reuse else None
            terms["NCE_Y"] = compute_nce_loss(models, real_b, out["idt_B"], args, out["flipped"], keys_b)
            loss_nce = (terms["NCE"] + terms["NCE_Y"]) * 0.5
    return loss_gan + loss_nce, terms


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def training_step(batch: dict[str, torch.Tensor], models: CUTModels, optimizers, accelerator: Accelerator,
                  args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One CUT step, the official ``optimize_parameters``: forward, D step, then G+F step.

    Returns ``(losses, out)``: detached loss terms (D_fake, D_real, G_GAN, NCE[, NCE_Y]) and the
    forward pass's images; ``losses`` also holds ``skipped_D`` / ``skipped_G`` (1.0 when fp16's
    GradScaler skipped that optimiser's step).
    """
    opt_g, opt_d = optimizers
    real_a = batch["A"].to(accelerator.device, non_blocking=True)  # (B, C, H, W) in [-1, 1]
    real_b = batch["B"].to(accelerator.device, non_blocking=True)
    with accelerator.autocast():
        out = generator_forward(models, real_a, real_b, args)

    # D step: fake detached, D trainable.
    set_requires_grad(models.discriminator, True)
    opt_d.zero_grad(set_to_none=True)
    with accelerator.autocast():
        loss_d, d_terms = compute_d_loss(models.D, out["fake_B"], real_b, args.gan_mode)
    accelerator.backward(loss_d)
    opt_d.step()

    # G and F step: D frozen (it receives no gradients).
    set_requires_grad(models.discriminator, False)
    opt_g.zero_grad(set_to_none=True)
    with accelerator.autocast():
        loss_g, g_terms = compute_g_loss(models, real_a, real_b, out, args)
    accelerator.backward(loss_g)
    opt_g.step()
    set_requires_grad(models.discriminator, True)

    losses = {k: v.detach().float() for k, v in {**d_terms, **g_terms}.items()}
    losses["skipped_D"] = torch.tensor(float(opt_d.step_was_skipped), device=real_a.device)
    losses["skipped_G"] = torch.tensor(float(opt_g.step_was_skipped), device=real_a.device)
    return losses, out


# ----------------------------------------------------------------------------- outputs


def describe_data(args: argparse.Namespace) -> tuple[str, str, str]:
    """(data description, name of A, name of B) for the model card."""
    if args.data_dir:
        base = Path(args.data_dir).name
        return f"folder `{base}` (trainA/trainB)", args.label_a or f"{base} A", args.label_b or f"{base} B"
    if args.domain_a:
        return (f"folders `{Path(args.domain_a).name}` and `{Path(args.domain_b).name}`",
                args.label_a or Path(args.domain_a).name, args.label_b or Path(args.domain_b).name)
    return (f"🤗 dataset `{args.dataset}` (split {args.split}, columns {args.column_a}, {args.column_b})",
            args.label_a or args.column_a, args.label_b or args.column_b)


def save_outputs(args: argparse.Namespace, models: CUTModels, summary: dict[str, Any],
                 grid: torch.Tensor | None, command: str) -> Path:
    """Write OUTPUT/generator (with model card and sample grid), OUTPUT/sampler, OUTPUT/discriminator."""
    out = Path(args.output_dir)
    data, name_a, name_b = describe_data(args)
    mode_title = "CUT" if args.mode == "cut" else "FastCUT"
    training = {
        "mode": mode_title,
        "data": data,
        "steps": summary["step"],
        "epochs completed": summary["epoch"],
        "image size": f"{args.crop_size} (preprocess {args.preprocess}, load {args.load_size})",
        "batch size": f"{args.batch_size} x {summary['num_processes']} process(es)",
        "precision": args.mixed_precision if args.mixed_precision != "no" else "fp32",
        "learning rate": f"{args.lr} (Adam betas {args.beta1}, {args.beta2}); {args.n_epochs} + {args.n_epochs_decay} epochs",
        "lambda_GAN / lambda_NCE": f"{args.lambda_gan} / {args.lambda_nce}",
        "NCE identity loss": args.nce_idt,
        "flip equivariance": args.flip_equivariance,
        "NCE layers / patches / T": f"{','.join(map(str, args.nce_layers))} / {args.num_patches} / {args.nce_t}",
        "GAN loss": args.gan_mode,
        "seed": args.seed,
    }
    if summary.get("skipped_files"):
        training["unreadable files skipped"] = summary["skipped_files"]
    metrics: dict[str, str] = {}
    if summary.get("best_step") is not None:
        name = "PSNR" if args.eval_paired else "FID"
        extractor = "FID Inception-v3" if args.eval_feature_extractor == "inception" else "tiny test features, not comparable"
        training["evaluation"] = (f"every {args.eval_every} steps, `{Path(args.eval_dirs[0]).name}` → "
                                  f"`{Path(args.eval_dirs[1]).name}`, size {args.eval_size} ({extractor})")
        training["best evaluation"] = f"step {summary['best_step']}: {name} {summary['best_metric']:.4f} (saved in best/)"
        metrics[f"best {name} (step {summary['best_step']})"] = f"{summary['best_metric']:.4f}"
    if summary.get("evaluations"):
        last = summary["evaluations"][-1]
        metrics.update({f"{k} (step {last['step']})": f"{v:.4f}" for k, v in last.items() if k != "step"})
    losses = {f"{k} (mean of last {summary['loss_window']} steps)": f"{v:.4f}"
              for k, v in summary["final_losses"].items()}
    card = dict(
        model_name=f"{mode_title} {name_a} → {name_b}",
        mode_title=mode_title,
        domain_a=name_a,
        domain_b=name_b,
        description=(f"Trained with cut-hf's `train.py` for {summary['step']} steps on {data}."
                     + (" The run ended early (--max-steps): this is not a fully trained model."
                        if summary["stopped_early"] else "")),
        training=training,
        losses=losses,
        metrics=metrics or None,
        provenance=f"Trained from scratch with:\n\n```bash\n{command}\n```",
        sample_image="samples.png" if grid is not None else None,
        repo_id=args.hub_model_id,
    )
    folder = out / "generator"
    for sub, model, kwargs in (("generator", models.generator, card), ("sampler", models.sampler, {}),
                               ("discriminator", models.discriminator, {})):
        if (out / sub).exists():
            shutil.rmtree(out / sub)  # a fresh folder: save_pretrained never overwrites a README.md
        model.save_pretrained(out / sub, model_card_kwargs=kwargs)
    if grid is not None:
        save_image(grid, folder / "samples.png")
    return folder


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names and exact bytes): equal digests, equal weights."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- training


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train; returns a summary. Raises DataError, CheckpointError, NonFiniteLossError, ConfigError."""
    out_dir = Path(args.output_dir)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    accelerator = Accelerator(
        # Without a GPU, Accelerate only joins torchrun's processes into one job when told cpu=True.
        cpu=args.cpu or not torch.accelerator.is_available(),
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(out_dir),
        step_scheduler_with_optimizer=False,  # the lr changes per epoch, not per optimiser step
    )
    launched = int(os.environ.get("WORLD_SIZE", accelerator.num_processes))  # set by torchrun / accelerate launch
    if launched != accelerator.num_processes:
        raise ConfigError(f"launched as {launched} processes but Accelerate joined {accelerator.num_processes}: "
                          "each would train alone; check the launcher and its environment")
    if args.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("--mixed-precision fp16 needs a GPU; use bf16 on the CPU")
    if perf.emulated_bf16(args.mixed_precision, accelerator.device):  # the translate CLI's and the app's test too
        logger.warning("this CPU (%s) has no native bf16: PyTorch falls back to slow bf16 convolutions (about 20x "
                       "slower than fp32 for the default CUT step on an AVX2 machine, bench/RESULTS.md); "
                       "use --mixed-precision no", torch.backends.cpu.get_cpu_capability())
    if accelerator.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    if args.threads:
        perf.set_threads(args.threads)
    set_seed(args.seed)  # the same on every process: identical initial weights and patch draws
    is_main = accelerator.is_main_process

    # -- data: every process sees different items of the same epoch
    images_a, images_b = load_domains(args.data_dir, args.domain_a, args.domain_b, args.dataset, args.column_a,
                                      args.column_b, args.split)
    check_enough_images(images_a, images_b, args.batch_size, accelerator.num_processes)
    pre_a = Preprocess(args.preprocess, args.load_size, args.crop_size, not args.no_flip, args.input_nc)
    pre_b = Preprocess(args.preprocess, args.load_size, args.crop_size, not args.no_flip, args.output_nc)
    dataset = UnpairedImageDataset(images_a, images_b, pre_a, pre_b, seed=args.seed,
                                   finetune_from_epoch=args.n_epochs)
    sampler = UnpairedSampler(len(dataset), args.batch_size, accelerator.num_processes,
                              accelerator.process_index, seed=args.seed)
    loader = make_dataloader(dataset, sampler, args.num_workers, pin_memory=accelerator.device.type == "cuda")
    total_epochs = args.n_epochs + args.n_epochs_decay
    max_steps = total_epochs * sampler.batches_per_epoch
    if args.max_steps is not None:
        max_steps = min(max_steps, args.max_steps)
    accelerator.print(f"data: A {len(images_a)} images ({images_a.description}), B {len(images_b)} images "
                      f"({images_b.description}); {sampler.batches_per_epoch} steps per epoch on each of "
                      f"{accelerator.num_processes} process(es); {max_steps} steps in all")

    # -- evaluation: folders and feature network checked on every process before any training
    evaluator = Evaluator(args, out_dir, accelerator.device) if args.eval_every else None

    # -- models, optimisers, schedulers: prepared together
    models, optimizers, schedulers = setup_training(args, accelerator)

    # -- resume
    ckpts = CheckpointManager(out_dir / "checkpoints", keep=args.keep_checkpoints)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "skipped_files": 0, "skipped_steps_D": 0,
             "skipped_steps_G": 0, "best_metric": None, "best_step": None}
    if is_main:
        for stale in ckpts.remove_stale():
            logger.warning("removed %s, left by a run stopped while saving", stale)
    accelerator.wait_for_everyone()
    resume_from = ckpts.resolve(args.resume) if args.resume else None
    if args.resume == "latest" and resume_from is None:
        accelerator.print(f"--resume latest: no checkpoint in {ckpts.root} yet, starting from scratch")
    if resume_from is not None:
        saved = CheckpointManager.read_state(resume_from)
        mismatch = {k: (saved["args"].get(k), getattr(args, k)) for k in ARCH_KEYS
                    if saved["args"].get(k) != getattr(args, k)}
        if mismatch:
            raise CheckpointError(f"{resume_from} was trained with other model settings (saved, now): {mismatch}")
        accelerator.load_state(str(resume_from))  # weights, optimisers, schedulers, scaler, RNG
        state.update({k: saved[k] for k in state if k in saved})
        old_world = saved["batch_size"] * saved["num_processes"]
        if old_world != args.batch_size * accelerator.num_processes:  # other batch/process count: same data position
            state["batch_in_epoch"] = state["batch_in_epoch"] * old_world // (args.batch_size * accelerator.num_processes)
            accelerator.print("resuming with another batch size x processes: the data order differs from the original run")
        accelerator.print(f"resumed from {resume_from} at step {state['step']}, epoch {state['epoch']}")
        on_disk = evaluator.read_best() if evaluator is not None else None
        if on_disk is not None:  # OUTPUT/best/ is what a better model would replace: compare against it
            state["best_metric"], state["best_step"] = on_disk["value"], on_disk["step"]
    next_ckpt = ckpts.next_index()  # the counter continues after a resume

    if accelerator.log_with:
        accelerator.init_trackers("logs", config=tracker_config(vars(args)))

    # -- the loop
    window: deque[dict[str, float]] = deque(maxlen=100)
    seen: dict[str, list[str]] = {"A": [], "B": []}
    skipped_names: set[str] = set()
    last_saved, grid, out = -1, None, None
    progress = tqdm(total=max_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                    desc=f"{args.mode} training", dynamic_ncols=True)
    step_times: list[float] = []
    done = state["step"] >= max_steps
    epoch = state["epoch"]
    while epoch < total_epochs and not done:
        sampler.set_epoch(epoch, start_batch=state["batch_in_epoch"])
        for batch in loader:
            t0 = time.perf_counter()
            losses, out = training_step(batch, models, optimizers, accelerator, args)
            state["step"] += 1
            state["batch_in_epoch"] += 1
            # One small all-reduce per step: every process sees the same (mean) values, so a NaN
            # anywhere stops all processes together instead of leaving the others waiting.
            names = list(losses)
            values = accelerator.reduce(torch.stack([losses[k] for k in names]), reduction="mean").tolist()
            values = dict(zip(names, values))
            step_times.append(time.perf_counter() - t0)
            state["skipped_steps_D"] += int(values.pop("skipped_D") > 0)  # fp16 overflow: counted, not fatal
            state["skipped_steps_G"] += int(values.pop("skipped_G") > 0)
            check_finite(values, state["step"])
            window.append(values)
            for name in batch["skipped"]:
                skipped_names.update(n for n in name.split("\n") if n)
            state["skipped_files"] = len(skipped_names)
            if args.log_seen_files:
                seen["A"] += list(batch["A_name"])
                seen["B"] += list(batch["B_name"])

            progress.update(1)
            progress.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
            if args.log_every and state["step"] % args.log_every == 0:
                lr = schedulers[0].get_last_lr()[0]
                accelerator.log({**values, "lr": lr, "epoch": epoch, "skipped_files": state["skipped_files"],
                                 "skipped_steps_fp16": state["skipped_steps_D"] + state["skipped_steps_G"]},
                                step=state["step"])
            if args.sample_every and state["step"] % args.sample_every == 0 and is_main:
                grid = sample_grid(batch, out)
                log_images(accelerator, {"samples": grid}, state["step"])
                save_image(grid, out_dir / "samples" / f"step_{state['step']:08d}.png")
            if evaluator is not None and state["step"] % args.eval_every == 0:
                if is_main:  # models.generator is the unwrapped CUTGenerator (accelerator.unwrap_model)
                    scores = evaluator(models.generator, state)
                    accelerator.log(scores, step=state["step"])
                    accelerator.print(f"\nstep {state['step']}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
                                      + f"; best {evaluator.metric} {state['best_metric']:.4f} at step {state['best_step']}")
                accelerator.wait_for_everyone()  # the other processes wait instead of running ahead
            if args.checkpoint_every and state["step"] % args.checkpoint_every == 0:
                save_checkpoint(accelerator, ckpts, state, next_ckpt, args)
                next_ckpt, last_saved = next_ckpt + 1, state["step"]
            if state["step"] >= max_steps:
                done = True
                break
        else:  # the epoch ran to its end: the official update_learning_rate() and the next epoch
            for s in schedulers:
                s.step()
            epoch += 1
            state["epoch"], state["batch_in_epoch"] = epoch, 0
    progress.close()
    if args.checkpoint_every and last_saved != state["step"] and state["step"] > 0:
        save_checkpoint(accelerator, ckpts, state, next_ckpt, args)

    # -- outputs (main process), after every process has finished its last step
    accelerator.wait_for_everyone()
    final = {k: sum(w[k] for w in window) / len(window) for k in window[-1]} if window else {}
    summary = {**state, "num_processes": accelerator.num_processes, "final_losses": final,
               "loss_window": len(window), "stopped_early": state["step"] < total_epochs * sampler.batches_per_epoch,
               "seconds_per_step": step_times, "output_dir": str(out_dir),
               "evaluations": evaluator.history if evaluator is not None else []}
    if args.log_seen_files:
        folder = out_dir / "seen_files"
        folder.mkdir(parents=True, exist_ok=True)
        record = {**seen, "generator_sha256": weights_digest(models.generator)}
        (folder / f"rank{accelerator.process_index}.json").write_text(json.dumps(record, indent=1))
    if is_main:
        if out is not None:
            grid = sample_grid(batch, out)
        save_outputs(args, models, summary, grid, args.command)
        accelerator.print(f"saved {out_dir / 'generator'} (+ sampler/, discriminator/); "
                          f"skipped {state['skipped_files']} unreadable file(s), "
                          f"{state['skipped_steps_D'] + state['skipped_steps_G']} fp16 overflow step(s)")
        if args.push_to_hub:
            url = push_folders_to_hub(args.hub_model_id, out_dir / "generator",
                                      {"sampler": out_dir / "sampler", "discriminator": out_dir / "discriminator"},
                                      private=args.private, endpoint=args.hub_endpoint)
            accelerator.print(f"pushed to {url}")
            summary["hub_url"] = url
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def sample_grid(batch: dict[str, Any], out: dict[str, Any]) -> torch.Tensor:
    """real_A | fake_B | real_B | idt_B (without idt_B in FastCUT), up to 4 rows."""
    cols = [batch["A"], out["fake_B"], batch["B"]] + ([out["idt_B"]] if out["idt_B"] is not None else [])
    return image_grid(cols)


def save_checkpoint(accelerator: Accelerator, ckpts: CheckpointManager, state: dict[str, Any], index: int,
                    args: argparse.Namespace) -> None:
    trainer_state = {**state, "checkpoint_index": index, "batch_size": args.batch_size,
                     "num_processes": accelerator.num_processes, "args": vars(args)}
    path = ckpts.save(accelerator, trainer_state, index)
    accelerator.print(f"\nsaved checkpoint {path} (step {state['step']})")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 with a one-line message on known errors)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The task decides which parser reads the rest: SimCLR has flags of its own.
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument("--task", default="cut", choices=["cut", "simclr"])
    if task.parse_known_args(argv)[0].task == "simclr":
        try:
            from cut_hf import simclr_train
        except ImportError as e:
            print(f"error: --task simclr needs cut_hf/simclr_train.py, which this installation lacks ({e})",
                  file=sys.stderr)
            return 1
        return simclr_train.main(argv)
    args = parse_args(argv)
    try:
        run(args)
    except (DataError, CheckpointError, NonFiniteLossError, ConfigError, EvaluationError, MetricsUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``cut-hf train`` (= ``python train.py``): CUT, FastCUT or SinCUT (Park et al., ECCV 2020) with 🤗 Accelerate.

    python train.py --data-dir datasets/horse2zebra --output-dir outputs/h2z             # one device
    python train.py --mode sincut --image-a photo.jpg --image-b painting.jpg             # one image per domain
    accelerate launch train.py --data-dir datasets/horse2zebra --mode fastcut            # many GPUs / nodes
    torchrun --nproc_per_node 4 train.py --data-dir datasets/horse2zebra                 # the same with torchrun
    python train.py --task simclr --data images/ ...                          # SimCLR (cut_hf.training.tasks.simclr)

Reads top to bottom: the flags, the frozen configuration they make (``--mode`` fills the defaults
the paper's ``--CUT_mode`` and ``--model sincut`` set), then ``run``: data, models, the objective
(:class:`cut_hf.objectives.cut.CUTObjective`, the paper's step) and the loop, which is the runtime
every objective shares (:class:`cut_hf.training.runtime.Trainer`: resume, checkpoints, logs, outputs, Hub).
A new objective is a subclass of the objective, an entry in ``OBJECTIVES`` and ``MODE_DEFAULTS``;
SinCUT also swaps the data, the networks and the task (:mod:`cut_hf.training.tasks.sincut`).
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from cut_hf import CUTGenerator, PatchDiscriminator, PatchSampler, perf
from cut_hf.cli.exits import training_exit_status
from cut_hf.cli.help import HelpFormatter, preset_defaults_in_help
from cut_hf.data.sources import DataError, check_enough_images, check_one_source, load_domains
from cut_hf.data.streaming import (
    SHUFFLE_BUFFER,
    StreamedDomain,
    StreamedUnpairedDataset,
    make_stream_loader,
    open_stream,
)
from cut_hf.data.unpaired import (
    PREPROCESS_MODES,
    Preprocess,
    UnpairedImageDataset,
    UnpairedSampler,
    default_num_workers,
    make_dataloader,
)
from cut_hf.errors import ModelLoadError
from cut_hf.evaluation.metrics import MetricsUnavailable
from cut_hf.evaluation.translation import EvaluationError
from cut_hf.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from cut_hf.objectives.cut import CUTObjective, build_optimizers
from cut_hf.objectives.losses import GAN_MODES
from cut_hf.objectives.sincut import SinCUTObjective
from cut_hf.training.finetune import load_source_models, source_flags, source_folders
from cut_hf.training.optim import linear_decay
from cut_hf.training.runtime import (
    MIXED_PRECISION_HELP,
    Trainer,
    add_runtime_flags,
    launcher_resolved,
    setup_accelerator,
)
from cut_hf.training.tasks.cut import CUTTask, CUTTrainConfig, Evaluator
from cut_hf.training.tasks.sincut import (
    SinCUTTask,
    SinCUTTrainConfig,
    build_sincut_models,
    sincut_flag_defaults,
    single_image_data,
)

# ----------------------------------------------------------------------------- configuration
# `--mode` fills in whatever was not given on the command line, as the paper's --CUT_mode does.
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cut": dict(lambda_nce=1.0, nce_idt=True, flip_equivariance=False, n_epochs=200, n_epochs_decay=200,
                lambda_identity=0.0),
    "fastcut": dict(lambda_nce=10.0, nce_idt=False, flip_equivariance=True, n_epochs=150, n_epochs_decay=50,
                    lambda_identity=0.0),
    # The paper's --model sincut (SinCUTConfig): StyleGAN2 G and D, 64 px crops of two images, epochs of 100,000 crops.
    "sincut": sincut_flag_defaults(),
}
# The objective class of each mode.
OBJECTIVES: dict[str, type[CUTObjective]] = {"cut": CUTObjective, "fastcut": CUTObjective, "sincut": SinCUTObjective}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cut-hf train", description="Train CUT / FastCUT / SinCUT with Accelerate.",
                                formatter_class=HelpFormatter)
    a = p.add_argument
    a("--task", default="cut", choices=["cut", "simclr"],
      help="what to train (simclr: SimCLR, whose flags are listed by --task simclr --help)")
    a("--mode", default="cut", choices=list(MODE_DEFAULTS),
      help="the paper's CUT, FastCUT or SinCUT preset (it sets the defaults shown per mode below)")
    # data
    d = p.add_argument_group("data").add_argument
    d("--data-dir", help="folder with trainA/ and trainB/ (the official layout)")
    d("--domain-a", help="folder of domain A images (instead of --data-dir)")
    d("--domain-b", help="folder of domain B images")
    d("--dataset", help="🤗 dataset holding both domains: Hub id, save_to_disk folder or local dataset folder")
    d("--dataset-a", help="🤗 dataset of domain A (Hub id or folder, as --dataset); with --dataset-b")
    d("--dataset-b", help="🤗 dataset of domain B")
    d("--column-a", default=None, help="column of domain A (default: imageA with --dataset, image with --dataset-a)")
    d("--column-b", default=None, help="column of domain B (default: imageB with --dataset, image with --dataset-b)")
    d("--split", default="train", help="the 🤗 datasets' split")
    d("--dataset-config", default=None, help="the 🤗 datasets' configuration, where they have several")
    d("--revision", default=None, help="the 🤗 datasets' revision on the Hub (branch, tag or commit)")
    d("--streaming", action="store_true",
      help="stream the 🤗 datasets (rows read as needed; needs --max-steps, which the epochs share; see README)")
    d("--shuffle-buffer", type=int, default=SHUFFLE_BUFFER, help="--streaming: rows in each stream's shuffle buffer")
    d("--label-a", help="name of domain A in the model card (default: from the data source)")
    d("--label-b", help="name of domain B in the model card")
    d("--image-a", help="SinCUT: the one image of domain A (or --data-dir with one image in trainA/ and trainB/)")
    d("--image-b", help="SinCUT: the one image of domain B")
    d("--random-scale-max", type=float, default=3.0, help="SinCUT: zoom each image out by up to this factor")
    d("--epoch-crops", type=int, default=100_000, help="SinCUT: crops in one epoch")
    d("--preprocess", default="resize_and_crop", choices=PREPROCESS_MODES)
    d("--load-size", type=int, default=286, help="resize to this before cropping")
    d("--crop-size", type=int, default=256, help="training image size")
    d("--no-flip", action="store_true", help="no random horizontal flips")
    d("--num-workers", type=int, default=default_num_workers(),
      help="DataLoader worker processes per training process (default: 4, at most the usable cores)")
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
    m("--residual", action="store_true",
      help="generator output tanh(last conv + atanh(input)): changes learnt as differences (not the paper's)")
    m("--netf-nc", type=int, default=256, help="PatchSampler embedding size")
    m("--init-from", metavar="ID_OR_DIR", default=None,
      help="fine-tune: start G (and F, D where it has them) from this Hub id, save_pretrained folder or train.py "
           "output folder; the architecture flags come from its config.json")
    m("--num-downsampling", type=int, default=1, help="SinCUT: stride-2 stages of the StyleGAN2 generator")
    # objective
    o = p.add_argument_group("objective").add_argument
    o("--lambda-gan", type=float, default=1.0, help="weight of the GAN loss")
    o("--lambda-nce", type=float, default=None, help="weight of PatchNCE")
    o("--nce-idt", action=argparse.BooleanOptionalAction, default=None, help="PatchNCE identity loss on B")
    o("--flip-equivariance", action=argparse.BooleanOptionalAction, default=None, help="FastCUT's flip trick")
    o("--nce-layers", default="0,4,8,12,16", help="generator layers for PatchNCE")
    o("--num-patches", type=int, default=256, help="patches per layer and image")
    o("--nce-t", type=float, default=0.07, help="PatchNCE temperature")
    o("--nce-negatives-from-batch", action="store_true", help="negatives from all images of the batch")
    o("--gan-mode", default="lsgan", choices=GAN_MODES)
    o("--lambda-r1", type=float, default=1.0, help="SinCUT: weight of the R1 penalty on real B")
    o("--lambda-identity", type=float, default=None,
      help="weight of the identity L1 |G(B) - B| (needs --nce-idt)")
    o("--no-reuse-features", dest="reuse_features", action="store_false",
      help="recompute PatchNCE keys with a second encoder pass instead of reusing the forward pass's")
    add_run_flags(p)
    preset_defaults_in_help(p, MODE_DEFAULTS, "--mode")
    return p


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags of speed, optimisation, outputs, evaluation and the Hub."""
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
    t("--n-epochs", type=int, default=None, help="epochs at the initial learning rate")
    t("--n-epochs-decay", type=int, default=None, help="epochs of linear decay to zero")
    t("--max-steps", type=int, default=None, help="stop after this many steps in all (tests, benchmarks)")
    t("--seed", type=int, default=0)
    t("--mixed-precision", default=None, choices=["no", "fp16", "bf16"], help=MIXED_PRECISION_HELP)
    t("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    # checkpoints, logging, outputs, Hub: the runtime's flags, and one of CUT's own
    group = add_runtime_flags(p, "outputs/cut", 5000, "sample image grids",
                              "OUTPUT/generator (and sampler/, discriminator/)")
    r = group.add_argument
    r("--log-seen-files", action="store_true",
      help="each process writes the files it trained on and a hash of its weights to OUTPUT/seen_files/")
    e = p.add_argument_group("evaluation during training (main process; cut_hf.evaluation.translation)").add_argument
    e("--eval-every", type=int, default=0, help="steps between FID/KID evaluations (0: never); keeps OUTPUT/best/")
    e("--eval-dir", default=None,
      help="INPUT:REFERENCE test folders (default with --data-dir: DATA_DIR/testA:DATA_DIR/testB)")
    e("--eval-size", type=int, default=None, help="evaluation image size (default: --crop-size; 0: native sizes)")
    e("--eval-feature-extractor", default="inception", choices=["inception", "tiny"],
      help="FID Inception-v3, or cut_hf.evaluation.metrics.TinyFeatureExtractor "
           "(tests / offline smoke runs, not comparable)")
    e("--eval-paired", action="store_true",
      help="REFERENCE holds ground truth under the input names: best model by PSNR (higher is better)")


def parse_args(argv: list[str] | None = None) -> CUTTrainConfig:
    """Parse flags, fill the ``--mode`` defaults, check the combination; returns the frozen config."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser.set_defaults(**MODE_DEFAULTS[parser.parse_known_args(argv)[0].mode])  # flags given still win
    values = vars(parser.parse_args(argv))
    try:
        values["nce_layers"] = tuple(sorted({int(i) for i in str(values["nce_layers"]).split(",") if i.strip()}))
    except ValueError:
        parser.error(f"--nce-layers must be comma-separated integers, got {values['nce_layers']!r}")
    values["eval_dirs"] = eval_dirs(parser, values)
    for role in ("a", "b"):  # per-domain datasets usually call their one image column "image"
        if values[f"column_{role}"] is None:
            values[f"column_{role}"] = "image" if values[f"dataset_{role}"] else f"image{role.upper()}"
    if values["init_from"]:
        values.update(init_from_flags(parser, argv, values))
    if values["eval_size"] is None:
        values["eval_size"] = values["crop_size"]
    config_class = SinCUTTrainConfig if values["mode"] == "sincut" else CUTTrainConfig
    sincut_only = {f.name for f in fields(SinCUTTrainConfig)} - {f.name for f in fields(CUTTrainConfig)}
    if config_class is CUTTrainConfig:  # SinCUT's flags are refused, not ignored, in the other modes
        given = sorted(name for name in sincut_only if values.pop(name) != parser.get_default(name))
        if given:
            parser.error(f"{', '.join('--' + n.replace('_', '-') for n in given)}: SinCUT's, add --mode sincut")
    config = config_class(**values, command="python train.py " + shlex.join(argv))  # the card's command
    check_config(parser, config)
    return config


def init_from_flags(parser: argparse.ArgumentParser, argv: list[str], values: dict[str, Any]) -> dict[str, Any]:
    """The architecture flags of ``--init-from``'s models; a flag given that differs is a usage error."""
    if values["resume"]:
        parser.error("--init-from starts a new run from a model; --resume continues a run: use one of them")
    if values["mode"] == "sincut":
        parser.error("--init-from starts CUT / FastCUT runs (not --mode sincut)")
    try:
        from_source = source_flags(source_folders(values["init_from"]))
    except ModelLoadError as e:
        parser.error(f"--init-from: {e}")
    given = explicit_flags(parser, argv)
    if "nce_layers" in given:
        given["nce_layers"] = values["nce_layers"]
    conflicts = [f"--{k.replace('_', '-')} {given[k]} (the model has {v})" for k, v in from_source.items()
                 if k in given and given[k] != v]
    if conflicts:
        parser.error(f"--init-from {values['init_from']}: {', '.join(conflicts)}; leave these flags out")
    return from_source


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, Any]:
    """The flags given on the command line (defaults, ``--mode``'s included, left out)."""
    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    quiet._defaults.clear()
    return vars(quiet.parse_known_args(argv)[0])


def eval_dirs(parser: argparse.ArgumentParser, values: dict[str, Any]) -> tuple[str, str] | None:
    """(input folder, reference folder) of ``--eval-every``, or None without evaluation."""
    if values["eval_every"] < 0:
        parser.error("--eval-every must be >= 0 (0: no evaluation)")
    if not values["eval_every"]:
        return None
    if values["eval_dir"]:
        parts = str(values["eval_dir"]).split(":")
        if len(parts) != 2 or not all(parts):
            parser.error(f"--eval-dir must be INPUT:REFERENCE (two folders joined by ':'), got {values['eval_dir']!r}")
        return parts[0], parts[1]
    if values["data_dir"]:
        return str(Path(values["data_dir"]) / "testA"), str(Path(values["data_dir"]) / "testB")
    parser.error("--eval-every needs --eval-dir INPUT:REFERENCE (or --data-dir with testA/ and testB/)")


def check_config(parser: argparse.ArgumentParser, c: CUTTrainConfig) -> None:
    """Stop with a usage error on flags that cannot work together."""
    if c.nce_idt and c.input_nc != c.output_nc:
        parser.error("the NCE identity loss runs G on B images: it needs --input-nc == --output-nc (or --no-nce-idt)")
    if c.push_to_hub and not c.hub_model_id:
        parser.error("--push-to-hub needs --hub-model-id user/name")
    if c.push_checkpoints and not c.push_to_hub:
        parser.error("--push-checkpoints uploads to the --push-to-hub repository: add --push-to-hub")
    if c.batch_size < 1 or c.n_epochs < 0 or c.n_epochs_decay < 0:
        parser.error("--batch-size must be >= 1 and epochs >= 0")
    if c.lambda_gan <= 0 and c.lambda_nce <= 0:
        parser.error("nothing to train: --lambda-gan and --lambda-nce are both 0")
    if c.lambda_identity > 0 and not c.nce_idt:
        parser.error("the identity loss translates B images: "
                     "--lambda-identity needs --nce-idt (or --lambda-identity 0)")
    if c.mode == "sincut" and (c.eval_every or c.channels_last):
        parser.error("--mode sincut has no --eval-every or --channels-last")
    if c.streaming and not (c.dataset or c.dataset_a):
        parser.error("--streaming reads 🤗 datasets: give --dataset or --dataset-a/--dataset-b")
    if c.streaming and not c.max_steps:
        parser.error("--streaming needs --max-steps (a stream has no length to count epochs in)")


# ----------------------------------------------------------------------------- models and objective


def build_models(
    c: CUTTrainConfig,
) -> tuple[CUTGenerator | StyleGAN2Generator, PatchDiscriminator | StyleGAN2Discriminator, PatchSampler]:
    """G, D and F (the PatchSampler, built here with its MLPs: nothing is created lazily); StyleGAN2 for SinCUT."""
    if isinstance(c, SinCUTTrainConfig):
        return build_sincut_models(c)
    if c.init_from:
        return models_from_source(c)
    generator = CUTGenerator(input_nc=c.input_nc, output_nc=c.output_nc, ngf=c.ngf, n_blocks=c.n_blocks, norm=c.norm_g,
                             antialias=not c.no_antialias, antialias_up=not c.no_antialias_up, dropout=c.dropout,
                             nce_layers=list(c.nce_layers), fast_ops=c.fast_ops, residual=c.residual)
    discriminator = PatchDiscriminator(input_nc=c.output_nc, ndf=c.ndf, n_layers=c.n_layers_d, norm=c.norm_d,
                                       antialias=not c.no_antialias)
    sampler = PatchSampler.for_generator(generator, num_patches=c.num_patches, nc=c.netf_nc)
    return generator, discriminator, sampler


def models_from_source(c: CUTTrainConfig) -> tuple[CUTGenerator, PatchDiscriminator, PatchSampler]:
    """``--init-from``: G from the source, and F and D where it has them (fresh from the flags, which
    parse_args took from the source's configs, where not)."""
    generator, discriminator, sampler = load_source_models(source_folders(str(c.init_from)), c.fast_ops,
                                                           c.num_patches)
    if discriminator is None:
        discriminator = PatchDiscriminator(input_nc=c.output_nc, ndf=c.ndf, n_layers=c.n_layers_d, norm=c.norm_d,
                                           antialias=not c.no_antialias)
    if sampler is None:
        sampler = PatchSampler.for_generator(generator, num_patches=c.num_patches, nc=c.netf_nc)
    return generator, discriminator, sampler


def setup_training(c: CUTTrainConfig, accelerator: Any) -> tuple[CUTObjective, tuple[Any, Any], tuple[Any, Any]]:
    """The objective over G, D and F, its optimisers and per-epoch schedulers, all prepared in one call."""
    generator, discriminator, sampler = build_models(c)
    perf.training_fast_paths_(generator, discriminator, accelerator.device, c.channels_last, c.compile,
                              c.mixed_precision or "no")
    opt_g, opt_d = build_optimizers(generator, discriminator, sampler, c.lr, (c.beta1, c.beta2))
    rule = linear_decay(c.n_epochs, c.n_epochs_decay)
    sched_g, sched_d = (torch.optim.lr_scheduler.LambdaLR(opt, rule) for opt in (opt_g, opt_d))
    objective, (opt_g, opt_d, sched_g, sched_d) = OBJECTIVES[c.mode].prepared(
        accelerator, generator, discriminator, sampler, c.objective(), opt_g, opt_d, sched_g, sched_d)
    return objective, (opt_g, opt_d), (sched_g, sched_d)


# ----------------------------------------------------------------------------- training


def build_data(c: CUTTrainConfig, num_processes: int, rank: int) -> tuple[Any, UnpairedSampler, str]:
    """The dataset, the sampler of process ``rank`` and a line about the data: the unpaired
    domains, or SinCUT's zoom-and-patch crops of two images. Raises DataError."""
    if isinstance(c, SinCUTTrainConfig):
        return single_image_data(c, num_processes, rank)
    if c.streaming:
        return streamed_data(c, num_processes, rank)
    images_a, images_b = load_domains(c.data_dir, c.domain_a, c.domain_b, c.dataset, c.column_a, c.column_b, c.split,
                                      dataset_a=c.dataset_a, dataset_b=c.dataset_b, dataset_config=c.dataset_config,
                                      revision=c.revision)
    check_enough_images(images_a, images_b, c.batch_size, num_processes)
    pre_a = Preprocess(c.preprocess, c.load_size, c.crop_size, not c.no_flip, c.input_nc)
    pre_b = Preprocess(c.preprocess, c.load_size, c.crop_size, not c.no_flip, c.output_nc)
    dataset = UnpairedImageDataset(images_a, images_b, pre_a, pre_b, seed=c.seed, finetune_from_epoch=c.n_epochs)
    sampler = UnpairedSampler(len(dataset), c.batch_size, num_processes, rank, seed=c.seed)
    return dataset, sampler, (f"A {len(images_a)} images ({images_a.description}), "
                              f"B {len(images_b)} images ({images_b.description})")


def streamed_data(c: CUTTrainConfig, num_processes: int, rank: int) -> tuple[Any, Any, str]:
    """``--streaming``: each process reads its own part of the streams; an epoch is --max-steps
    shared out over the schedule's epochs (the dataset is also the sampler)."""
    check_one_source(c.data_dir, c.domain_a, c.domain_b, c.dataset, c.dataset_a, c.dataset_b)
    domains = []
    for name, column in ((c.dataset_a or c.dataset, c.column_a), (c.dataset_b or c.dataset, c.column_b)):
        stream = open_stream(str(name), c.split, c.dataset_config, c.revision)
        domains.append(StreamedDomain(stream, column, f"{name}[{c.split}]", rank, num_processes, c.seed,
                                      c.shuffle_buffer))
    pre_a = Preprocess(c.preprocess, c.load_size, c.crop_size, not c.no_flip, c.input_nc)
    pre_b = Preprocess(c.preprocess, c.load_size, c.crop_size, not c.no_flip, c.output_nc)
    per_epoch = max(1, (c.max_steps or 0) // (c.n_epochs + c.n_epochs_decay))
    dataset = StreamedUnpairedDataset(domains[0], domains[1], pre_a, pre_b, c.batch_size, per_epoch, seed=c.seed,
                                      finetune_from_epoch=c.n_epochs)
    return dataset, dataset, f"A {domains[0].description}, B {domains[1].description}"


def run(c: CUTTrainConfig) -> dict[str, Any]:
    """Train; returns a summary. Raises DataError, CheckpointError, NonFiniteLossError, ConfigError."""
    accelerator = setup_accelerator(c)
    c = launcher_resolved(c, accelerator)  # the precision Accelerate chose, for the card and the checkpoints

    # -- data: every process sees different items of the same epoch
    dataset, sampler, about = build_data(c, accelerator.num_processes, accelerator.process_index)
    pin = accelerator.device.type == "cuda"
    loader = make_stream_loader(dataset, pin) if c.streaming else make_dataloader(dataset, sampler, c.num_workers, pin)
    total_epochs = c.n_epochs + c.n_epochs_decay
    planned = total_epochs * sampler.batches_per_epoch
    max_steps = planned if c.max_steps is None else min(planned, c.max_steps)
    accelerator.print(f"data: {about}; {sampler.batches_per_epoch} steps per epoch on each of "
                      f"{accelerator.num_processes} process(es); {max_steps} steps in all")

    # -- evaluation: folders and feature network checked on every process before any training
    evaluator = Evaluator(c, Path(c.output_dir), accelerator.device) if c.eval_every else None

    # -- models, objective, optimisers, schedulers; then the loop
    objective, optimizers, schedulers = setup_training(c, accelerator)
    task = (SinCUTTask if isinstance(c, SinCUTTrainConfig) else CUTTask)(c, objective, optimizers, schedulers,
                                                                         accelerator, evaluator)
    trainer = Trainer(accelerator, c, task, loader, sampler, max_steps, total_epochs, planned)
    return trainer.run()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 with a one-line message on known errors)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The task decides which parser reads the rest: SimCLR has flags of its own.
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument("--task", default="cut", choices=["cut", "simclr"])
    if task.parse_known_args(argv)[0].task == "simclr":
        from cut_hf.cli.simclr_train import main as simclr_main

        return simclr_main(argv)
    config = parse_args(argv)
    return training_exit_status(
        lambda: run(config), (DataError, EvaluationError, MetricsUnavailable, ModelLoadError))

if __name__ == "__main__":
    sys.exit(main())

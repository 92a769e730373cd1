"""CUT / FastCUT in the training runtime: the run's typed configuration, evaluation while training,
the outputs with their model card, and :class:`CUTTask`, which joins :class:`~cut_hf.objectives.cut.CUTObjective`
to :class:`~cut_hf.training.runtime.Trainer`. ``train.py`` builds all of them from its flags.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from cut_hf.data.sources import is_hub_id
from cut_hf.evaluation.metrics import TinyFeatureExtractor, inception_feature_extractor
from cut_hf.evaluation.translation import evaluate_folders, list_images
from cut_hf.hub.cards import translation_eval_results
from cut_hf.objectives.cut import CUTObjective, CUTObjectiveConfig, Generator
from cut_hf.training.logs import image_grid, save_image, weights_digest
from cut_hf.training.runtime import RunConfig, TrainingTask, fixed


@dataclass(frozen=True, kw_only=True)
class CUTTrainConfig(RunConfig):
    """Every flag of ``train.py`` for CUT and FastCUT (same names; the runtime's in
    :class:`RunConfig`), ``--mode`` defaults filled in; SinCUT's own flags are in
    :class:`~cut_hf.training.tasks.sincut.SinCUTTrainConfig`.

    ``command`` is the command line (for the model card); ``eval_dirs`` the (input, reference)
    folders of ``--eval-every``, or None. Fields marked :func:`~cut_hf.training.runtime.fixed` fix
    the networks' shapes: a checkpoint resumes only a run that shares them.
    """

    # data
    data_dir: str | None
    domain_a: str | None
    domain_b: str | None
    dataset: str | None
    column_a: str
    column_b: str
    split: str
    dataset_a: str | None = None
    dataset_b: str | None = None
    dataset_config: str | None = None
    revision: str | None = None
    streaming: bool = False
    shuffle_buffer: int = 1000
    init_from: str | None = None  # --init-from: the model the run starts from (fine-tuning)
    label_a: str | None
    label_b: str | None
    preprocess: str
    load_size: int
    crop_size: int
    no_flip: bool
    num_workers: int
    # model
    input_nc: int = fixed()
    output_nc: int = fixed()
    ngf: int = fixed()
    ndf: int = fixed()
    n_blocks: int = fixed()
    n_layers_d: int = fixed()
    norm_g: str = fixed()
    norm_d: str = fixed()
    no_antialias: bool = fixed()
    no_antialias_up: bool = fixed()
    dropout: bool = fixed()
    residual: bool = False
    netf_nc: int = fixed()
    nce_layers: tuple[int, ...] = fixed()
    # objective
    mode: str
    lambda_gan: float
    lambda_nce: float
    nce_idt: bool
    flip_equivariance: bool
    num_patches: int
    nce_t: float
    nce_negatives_from_batch: bool
    gan_mode: str
    reuse_features: bool
    # performance
    channels_last: bool | None
    compile: bool
    fast_ops: bool
    # optimisation
    batch_size: int
    lr: float
    beta1: float
    beta2: float
    n_epochs: int
    n_epochs_decay: int
    # logging and evaluation (checkpoints, outputs and the Hub: RunConfig)
    log_seen_files: bool
    eval_every: int
    eval_dir: str | None
    eval_dirs: tuple[str, str] | None
    eval_size: int
    eval_feature_extractor: str
    eval_paired: bool
    command: str
    task: str = "cut"
    lambda_identity: float = 0.0  # identity L1 |G(B) - B| (every mode; 1 in SinCUT's preset)

    #: The objective's configuration class (SinCUT's adds its R1 weight).
    objective_config: ClassVar[type[CUTObjectiveConfig]] = CUTObjectiveConfig

    def objective(self) -> CUTObjectiveConfig:
        """The objective's part of the configuration."""
        names = {f.name for f in fields(self.objective_config)}
        return self.objective_config(**{k: v for k, v in asdict(self).items() if k in names})


class CUTTask(TrainingTask):
    """A prepared :class:`CUTObjective` in the runtime: its step, per-epoch lr decay, samples,
    evaluation (``--eval-every``), seen-file records (``--log-seen-files``) and outputs."""

    name = "cut"
    sample_folder = "samples"

    def __init__(self, config: CUTTrainConfig, objective: CUTObjective, optimizers: tuple[Any, Any],
                 schedulers: tuple[Any, Any], accelerator: Any, evaluator: Evaluator | None = None) -> None:
        self.config, self.objective, self.accelerator = config, objective, accelerator
        self.optimizers, self.schedulers, self.evaluator = optimizers, schedulers, evaluator
        self.label = config.mode
        self.seen: dict[str, list[str]] = {"A": [], "B": []}

    def initial_state(self) -> dict[str, Any]:
        return {"skipped_steps_D": 0, "skipped_steps_G": 0, "best_metric": None, "best_step": None}

    def settings(self) -> dict[str, Any]:
        return asdict(self.config)

    def step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.objective.training_step(batch, self.optimizers, self.accelerator)

    def end_epoch(self) -> None:  # the official update_learning_rate()
        for s in self.schedulers:
            s.step()

    def lr(self) -> float:
        return self.schedulers[0].get_last_lr()[0]

    def samples(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"samples": image_grid(self.objective.sample_columns(batch))}

    def after_step(self, state: dict[str, Any], batch: dict[str, Any]) -> None:
        acc, cfg = self.accelerator, self.config
        if cfg.log_seen_files:
            self.seen["A"] += list(batch["A_name"])
            self.seen["B"] += list(batch["B_name"])
        if self.evaluator is None or state["step"] % cfg.eval_every:
            return
        if acc.is_main_process:  # objective.generator is the unwrapped CUTGenerator
            scores = self.evaluator(self.objective.generator, state)
            acc.log(scores, step=state["step"])
            acc.print(f"\nstep {state['step']}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
                      + f"; best {self.evaluator.metric} {state['best_metric']:.4f} at step {state['best_step']}")
        acc.wait_for_everyone()  # the other processes wait instead of running ahead

    def on_resume(self, saved: dict[str, Any], state: dict[str, Any]) -> None:
        on_disk = self.evaluator.read_best() if self.evaluator is not None else None
        if on_disk is not None:  # OUTPUT/best/ is what a better model would replace: compare against it
            state["best_metric"], state["best_step"] = on_disk["value"], on_disk["step"]

    def after_training(self, summary: dict[str, Any]) -> None:
        summary["evaluations"] = self.evaluator.history if self.evaluator is not None else []
        if self.config.log_seen_files:
            folder = Path(self.config.output_dir) / "seen_files"
            folder.mkdir(parents=True, exist_ok=True)
            record = {**self.seen, "generator_sha256": weights_digest(self.objective.generator)}
            (folder / f"rank{self.accelerator.process_index}.json").write_text(json.dumps(record, indent=1))

    def save(self, summary: dict[str, Any], grid: torch.Tensor | None) -> None:
        """Write the three model folders with their card (:func:`save_outputs`)."""
        save_outputs(self.config, self.objective, summary, grid)

    def write_outputs(self, summary: dict[str, Any], batch: Any) -> tuple[str, Path, dict[str, Path]]:
        out = Path(self.config.output_dir)
        grid = self.samples(batch)["samples"] if self.objective.last is not None else None
        self.save(summary, grid)
        return (f"{out / 'generator'} (+ sampler/, discriminator/)", out / "generator",
                {"sampler": out / "sampler", "discriminator": out / "discriminator"})

    def output_folders(self) -> tuple[Path, ...]:
        out = Path(self.config.output_dir)
        return (out / "generator", out / "sampler", out / "discriminator")


# ----------------------------------------------------------------------------- evaluation while training


class Evaluator:
    """``--eval-every``: FID/KID (or paired PSNR) of the generator on the test folders, on the main
    process only, and OUTPUT/best/ kept as the best generator so far.

    One ``cache`` dict lives across evaluations, so the reference features (and the feature
    network) are computed once. The best metric and step live in the trainer state (saved with
    every checkpoint) and in OUTPUT/best/best.json, so a resumed run keeps comparing against them.
    """

    def __init__(self, args: CUTTrainConfig, out_dir: Path, device: torch.device) -> None:
        if args.eval_dirs is None:  # the parser requires them with --eval-every; a hand-made config may not
            raise ValueError("evaluating during training needs eval_dirs (--eval-dirs INPUT REFERENCE)")
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
        self.args = args

    def eval_results(self, scores: dict[str, Any]) -> list[Any]:
        """``scores`` as model-index entries (the best model's card has them too)."""
        return evaluation_results(self.args, scores)

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

    def __call__(self, generator: Generator, state: dict[str, Any]) -> dict[str, float]:
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
        self.last = last = {"step": state["step"], **{k.split("/", 1)[1]: v for k, v in values.items()}}
        self.history.append(last)
        if self.better(value, state.get("best_metric")):
            state["best_metric"], state["best_step"] = value, state["step"]
            self.save_best(generator, state, last)
        return values

    def save_best(self, generator: Generator, state: dict[str, Any], metrics: dict[str, Any]) -> None:
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
            metrics=dict(metrics), eval_results=self.eval_results(metrics)))
        record = {"metric": self.metric, "value": state["best_metric"], "step": state["step"],
                  "input_dir": str(self.input_dir), "reference_dir": str(self.reference_dir), "size": self.size}
        (tmp / "best.json").write_text(json.dumps(record, indent=2))
        if self.best_dir.exists():
            self.best_dir.rename(old)
        tmp.rename(self.best_dir)
        if old.exists():
            shutil.rmtree(old)


# ----------------------------------------------------------------------------- outputs


def describe_data(args: CUTTrainConfig) -> tuple[str, str, str]:
    """(data description, name of A, name of B) for the model card."""
    if args.data_dir:
        base = Path(args.data_dir).name
        return f"folder `{base}` (trainA/trainB)", args.label_a or f"{base} A", args.label_b or f"{base} B"
    if args.domain_a and args.domain_b:
        return (f"folders `{Path(args.domain_a).name}` and `{Path(args.domain_b).name}`",
                args.label_a or Path(args.domain_a).name, args.label_b or Path(args.domain_b).name)
    streamed = ", streamed" if args.streaming else ""
    if args.dataset_a:
        return (f"🤗 datasets `{args.dataset_a}` (column {args.column_a}) and `{args.dataset_b}` (column "
                f"{args.column_b}), split {args.split}{streamed}",
                args.label_a or Path(args.dataset_a).name, args.label_b or Path(str(args.dataset_b)).name)
    return (f"🤗 dataset `{args.dataset}` (split {args.split}, columns {args.column_a}, {args.column_b}{streamed})",
            args.label_a or args.column_a, args.label_b or args.column_b)


def card_metadata(args: CUTTrainConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """The card's Hub metadata: ``datasets:`` (the Hub datasets trained on), ``base_model:``
    (``--init-from``'s Hub id) and ``model-index`` (the evaluation of the final step, if any)."""
    meta: dict[str, Any] = {"datasets": [d for d in (args.dataset, args.dataset_a, args.dataset_b) if is_hub_id(d)]}
    if args.init_from and is_hub_id(args.init_from):
        meta["base_model"] = args.init_from
    last = (summary.get("evaluations") or [None])[-1]
    if last is not None and last["step"] == summary["step"] and args.eval_dirs:  # scores of these very weights
        meta["eval_results"] = evaluation_results(args, last)
    return meta


def evaluation_results(args: CUTTrainConfig, scores: dict[str, Any]) -> list[Any]:
    """``--eval-every``'s scores as the card's ``model-index`` entries."""
    assert args.eval_dirs is not None
    reference = Path(args.eval_dirs[1])
    note = "tiny test features, not comparable" if args.eval_feature_extractor == "tiny" else None
    return translation_eval_results(scores, f"{reference.parent.name}/{reference.name}", note=note)


def save_outputs(args: CUTTrainConfig, objective: CUTObjective, summary: dict[str, Any],
                 grid: torch.Tensor | None) -> Path:
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
        "learning rate": f"{args.lr} (Adam betas {args.beta1}, {args.beta2}); "
                         f"{args.n_epochs} + {args.n_epochs_decay} epochs",
        "lambda_GAN / lambda_NCE": f"{args.lambda_gan} / {args.lambda_nce}",
        "NCE identity loss": args.nce_idt,
        "flip equivariance": args.flip_equivariance,
        "NCE layers / patches / T": f"{','.join(map(str, args.nce_layers))} / {args.num_patches} / {args.nce_t}",
        "GAN loss": args.gan_mode,
        "seed": args.seed,
    }
    # The two options outside the paper's recipe, shown only when used.
    if args.lambda_identity > 0:
        training["identity L1 |G(B) - B| (lambda_identity)"] = args.lambda_identity
    if args.residual:
        training["residual generator (output tanh(conv + atanh(input)))"] = True
    if summary.get("skipped_files"):
        training["unreadable files skipped"] = summary["skipped_files"]
    metrics: dict[str, str] = {}
    if summary.get("best_step") is not None and args.eval_dirs is not None:
        name = "PSNR" if args.eval_paired else "FID"
        extractor = ("FID Inception-v3" if args.eval_feature_extractor == "inception"
                     else "tiny test features, not comparable")
        training["evaluation"] = (f"every {args.eval_every} steps, `{Path(args.eval_dirs[0]).name}` → "
                                  f"`{Path(args.eval_dirs[1]).name}`, size {args.eval_size} ({extractor})")
        training["best evaluation"] = (f"step {summary['best_step']}: {name} {summary['best_metric']:.4f} "
                                       "(saved in best/)")
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
        provenance=(f"Fine-tuned from `{args.init_from}`" if args.init_from else "Trained from scratch")
                   + f" with:\n\n```bash\n{args.command}\n```",
        sample_image="samples.png" if grid is not None else None,
        repo_id=args.hub_model_id,
        **card_metadata(args, summary),
    )
    return write_model_folders(out, objective, card, grid)


def write_model_folders(out: Path, objective: CUTObjective, card: dict[str, Any], grid: torch.Tensor | None) -> Path:
    """OUTPUT/generator (with the card ``card`` and the sample grid), OUTPUT/sampler, OUTPUT/discriminator."""
    folder = out / "generator"
    for sub, model, kwargs in (("generator", objective.generator, card), ("sampler", objective.sampler, {}),
                               ("discriminator", objective.discriminator, {})):
        if (out / sub).exists():
            shutil.rmtree(out / sub)  # a fresh folder: save_pretrained never overwrites a README.md
        model.save_pretrained(out / sub, model_card_kwargs=kwargs)
    if grid is not None:
        save_image(grid, folder / "samples.png")
    return folder

"""The one training runtime of cut-hf: Accelerate setup, resume, the loop, checkpoints, logs and outputs.

Every objective (CUT, FastCUT and SinCUT, and SimCLR: ``cut-hf train [--task simclr]``, see
:mod:`cut_hf.training.tasks`) runs in :class:`Trainer`. What differs between them lives in a
:class:`TrainingTask`: one optimisation step, what happens at the end of an epoch, the sample
images, the checkpointed settings and the saved outputs. The runtime owns the rest: one all-reduce
of the step's values per step (so a NaN on any process stops all of them together), the NaN guard,
fp16 skipped-step counts, unreadable-file counts, tracker logs, checkpoints every N steps, every N
minutes and at the end, ``--resume latest|PATH``, and the Hub upload. Nothing is lost when the run
is stopped: SIGTERM, SIGUSR1 or a first Ctrl-C (:mod:`cut_hf.training.signals`) ends the step, every
process agrees in the same all-reduce, one checkpoint is written at the same step everywhere and
:class:`TrainingStopped` says how to resume; a full disk ends the run with one
:class:`~cut_hf.errors.DiskFullError` line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from cut_hf import perf
from cut_hf.errors import DiskFullError, is_disk_full, tree_bytes
from cut_hf.training.checkpoints import CheckpointError, CheckpointManager
from cut_hf.training.logs import (
    CheckpointUploader,
    PushError,
    check_finite,
    log_images,
    push_folders_to_hub,
    save_image,
    tracker_config,
)
from cut_hf.training.signals import StopSignals, TrainingStopped

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """Flags that cannot work together on this machine."""


def fixed() -> Any:
    """Marks a :class:`RunConfig` field that a checkpoint must share with the run resuming it (it
    fixes the shape of saved tensors, or the kind of optimiser state): ``ngf: int = fixed()``. The
    one rule of resuming: :func:`fixed_settings` lists the marked fields, the trainer compares them."""
    return field(metadata={"fixed": True})


def fixed_settings(config: RunConfig) -> tuple[str, ...]:
    """The names of ``config``'s fields marked :func:`fixed` (what a resumed checkpoint must share)."""
    return tuple(f.name for f in fields(config) if f.metadata.get("fixed"))


@dataclass(frozen=True)
class RunConfig:
    """The settings every training entry point shares (flags of the same names)."""

    output_dir: str
    seed: int = 0
    mixed_precision: str | None = None  # None: Accelerate's (launcher, accelerate config, env); resolved at start
    cpu: bool = False
    threads: int | None = None
    report_to: str = "tensorboard"
    max_steps: int | None = None
    checkpoint_every: int = 5000
    checkpoint_minutes: float = 0.0
    keep_checkpoints: int = 3
    resume: str | None = None
    log_every: int = 10
    sample_every: int = 500
    push_to_hub: bool = False
    hub_model_id: str | None = None
    private: bool = False
    hub_endpoint: str | None = None
    push_checkpoints: bool = False


#: ``--mixed-precision``'s help: the launcher decides unless the flag is given.
MIXED_PRECISION_HELP = ("default: Accelerate's setting (accelerate launch --mixed_precision, accelerate config, "
                        "ACCELERATE_MIXED_PRECISION), else no; bf16 works on CPU too")
#: Where a run's trackers file it (wandb / trackio / mlflow project); the run is named by its output folder.
TRACKER_PROJECT = "cut-hf"


def parse_report_to(value: str) -> str:
    """``--report-to``'s value checked against Accelerate's trackers: ``all``, ``none``, a name or a
    comma list (``tensorboard,trackio``); returns it normalised. Raises ``ValueError`` (argparse
    turns it into a usage error)."""
    from accelerate.utils import LoggerType

    names = [n.strip().lower() for n in str(value).split(",") if n.strip()]
    known = [*LoggerType.list(), "none"]
    unknown = [n for n in names if n not in known]
    if not names or unknown or ("none" in names and len(names) > 1):
        raise ValueError(f"--report-to takes {', '.join(known)} or a comma list of them, got {value!r}")
    return ",".join(dict.fromkeys(names))


def trackers(config: RunConfig) -> list[str]:
    """The trackers of ``config.report_to`` (empty for ``none``); raises :class:`ConfigError` for one
    that is not installed (Accelerate would leave it out without a word)."""
    from accelerate.tracking import get_available_trackers

    names = [n for n in parse_report_to(config.report_to).split(",") if n != "none"]
    available = {str(t) for t in get_available_trackers()}
    missing = [n for n in names if n != "all" and n not in available]
    if missing:
        raise ConfigError(f"--report-to {','.join(missing)}: not installed here (pip install {' '.join(missing)})")
    return names


def add_runtime_flags(parser: Any, output_dir: str, checkpoint_every: int, samples: str, upload: str) -> Any:
    """Add the flags of :class:`RunConfig` about checkpoints, logs, outputs and the Hub to ``parser``
    (the seed, precision and device flags sit with each script's optimisation flags).

    ``output_dir`` and ``checkpoint_every`` are the script's defaults, ``samples`` and ``upload``
    say in words what ``--sample-every`` logs and ``--push-to-hub`` uploads. Returns the
    "checkpoints, logging and outputs" group, for the script's own flags of that kind.
    """
    group = parser.add_argument_group("checkpoints, logging and outputs")
    r = group.add_argument
    r("--output-dir", default=output_dir)
    r("--checkpoint-every", type=int, default=checkpoint_every, help="steps between checkpoints (0: never)")
    r("--checkpoint-minutes", type=float, default=0.0,
      help="also a checkpoint every N minutes of wall time (0: never); SIGTERM/SIGUSR1/Ctrl-C always save one")
    r("--keep-checkpoints", type=int, default=3, help="keep the newest K checkpoints")
    r("--resume", default=None, help="'latest' (newest in OUTPUT/checkpoints) or a checkpoint folder")
    r("--log-every", type=int, default=10, help="steps between tracker logs")
    r("--sample-every", type=int, default=500, help=f"steps between {samples} (0: never)")
    r("--report-to", default="tensorboard", type=_report_to_flag,
      help="Accelerate's trackers: all, tensorboard, wandb, trackio, mlflow, comet_ml, aim, clearml, dvclive, "
           "swanlab, a comma list, or none")
    h = parser.add_argument_group("Hub").add_argument
    h("--push-to-hub", action="store_true", help=f"upload {upload}")
    h("--hub-model-id", help="user/name on the Hub")
    h("--private", action="store_true", help="create the Hub repository private")
    h("--hub-endpoint", default=None, help="Hub URL (default: huggingface.co or HF_ENDPOINT)")
    h("--push-checkpoints", action="store_true",
      help="with --push-to-hub: upload each checkpoint to checkpoints/ in the background as it is written")
    return group


def _report_to_flag(value: str) -> str:
    import argparse

    try:
        return parse_report_to(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def setup_accelerator(config: RunConfig) -> Any:
    """An ``Accelerator`` for ``config``, checked against the launcher and the device, seeded.

    Raises :class:`ConfigError` when the launcher started more processes than Accelerate joined
    (each would train alone) and for fp16 on a CPU.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed


    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    log_with = trackers(config)
    accelerator = Accelerator(
        # Without a GPU, Accelerate only joins torchrun's processes into one job when told cpu=True.
        cpu=config.cpu or not torch.accelerator.is_available(),
        # None lets Accelerate decide: `accelerate launch --mixed_precision`, `accelerate config` and
        # ACCELERATE_MIXED_PRECISION; a flag given on the command line wins over all of them.
        mixed_precision=config.mixed_precision,
        log_with=log_with or None,
        project_config=ProjectConfiguration(project_dir=config.output_dir,
                                            logging_dir=str(Path(config.output_dir) / "logs")),
        step_scheduler_with_optimizer=False,  # each task steps its schedule itself (per epoch or per step)
    )
    precision = accelerator.mixed_precision
    # torchrun / accelerate launch set WORLD_SIZE; a plain `python` run has nothing to compare.
    launched = int(os.environ.get("WORLD_SIZE", accelerator.num_processes))
    if launched != accelerator.num_processes:
        raise ConfigError(f"launched as {launched} processes but Accelerate joined {accelerator.num_processes}: "
                          "each would train alone; check the launcher and its environment")
    if precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("--mixed-precision fp16 needs a GPU; use bf16 on the CPU")
    if perf.emulated_bf16(precision, accelerator.device):  # the translate CLI's and the app's test too
        logger.warning("%s (figures in bench/RESULTS.md); use --mixed-precision no", perf.EMULATED_BF16_NOTE)
    if accelerator.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    if config.threads:
        perf.set_threads(config.threads)
    if accelerator.device.type == "cpu":
        perf.keep_freed_memory()  # no page faults on every step's activations (bench/RESULTS.md)
    set_seed(config.seed)  # the same on every process: identical initial weights and random draws
    source = ("--mixed-precision" if config.mixed_precision is not None
              else "Accelerate's setting" if os.environ.get("ACCELERATE_MIXED_PRECISION") else "default")
    accelerator.print(f"precision {'fp32' if precision == 'no' else precision} ({source}); "
                      f"{accelerator.num_processes} process(es) on {accelerator.device.type}")
    return accelerator


def launcher_resolved(config: Any, accelerator: Any) -> Any:
    """``config`` with the settings Accelerate resolved (the precision actually used), so that the
    card, ``trainer_state.json`` and the tracker's hparams say what ran, not what was (not) typed."""
    return dataclasses.replace(config, mixed_precision=accelerator.mixed_precision)


class TrainingTask:
    """What one objective adds to the runtime. Subclasses override what they need.

    Attributes:
        name: the kind of checkpoint (``"cut"`` for CUT and FastCUT, ``"sincut"``, ``"simclr"``); a run
            resumes only its own kind.
        label: the progress bar's name.
        window: the final losses are the mean of this many last steps.
        sample_folder: OUTPUT subfolder where sample grids are saved too (None: tracker only).
    """

    name = "task"
    label = "training"
    window = 100
    sample_folder: str | None = None

    def initial_state(self) -> dict[str, Any]:
        """State keys of this task (saved in every checkpoint), with their start values."""
        return {}

    def settings(self) -> dict[str, Any]:
        """The flags, saved as ``args`` in every checkpoint and logged as tracker hparams."""
        return {}

    def step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimisation step; detached 0-d values to log. A key ``skipped`` or ``skipped_X``
        is 1.0 when fp16's GradScaler skipped that step (counted as ``skipped_steps[_X]``)."""
        raise NotImplementedError

    def end_epoch(self) -> None:
        """Called when an epoch ran to its end (e.g. a per-epoch learning-rate schedule)."""

    def lr(self) -> float:
        raise NotImplementedError

    def samples(self, batch: Any) -> dict[str, torch.Tensor]:
        """Named (3, H, W) grids in [0, 1] of the latest step, for the tracker."""
        return {}

    def after_step(self, state: dict[str, Any], batch: Any) -> None:
        """Called on every process after each step's bookkeeping (evaluations, records)."""

    def on_resume(self, saved: dict[str, Any], state: dict[str, Any]) -> None:
        """Called after a checkpoint was loaded into ``state``."""

    def after_training(self, summary: dict[str, Any]) -> None:
        """Called on every process once the loop ended, before the outputs."""

    def write_outputs(self, summary: dict[str, Any], batch: Any) -> tuple[str, Path, dict[str, Path]]:
        """Save the trained models (main process); returns (what was saved, in words, the Hub root
        folder, its Hub subfolders)."""
        raise NotImplementedError

    def output_folders(self) -> tuple[Path, ...]:
        """The folders :meth:`write_outputs` writes: removed when a full disk stops it half-way."""
        return ()


def _json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparing saved settings."""
    return json.loads(json.dumps(value))


class Trainer:
    """Runs a :class:`TrainingTask` over a loader of epochs dealt out by a sampler: an
    :class:`~cut_hf.data.unpaired.UnpairedSampler` (CUT, FastCUT, SimCLR) or SinCUT's
    :class:`~cut_hf.data.single_image.SingleImageSampler` (one of them, with epochs of crops).

    Args:
        accelerator: from :func:`setup_accelerator`; the task's models are prepared with it.
        config: the shared settings.
        task: the objective.
        loader, sampler: the data; ``sampler.set_epoch(epoch, start_batch)`` positions each epoch.
        max_steps: steps in all; ``epochs``: stop after this many epochs too (None: only steps).
        planned_steps: the steps of the full schedule (a shorter run is reported as stopped early).
    """

    def __init__(self, accelerator: Any, config: RunConfig, task: TrainingTask, loader: Any, sampler: Any,
                 max_steps: int, epochs: int | None, planned_steps: int) -> None:
        self.accelerator, self.config, self.task = accelerator, config, task
        self.loader, self.sampler = loader, sampler
        self.max_steps, self.epochs, self.planned_steps = max_steps, epochs, planned_steps
        self.out_dir = Path(config.output_dir)
        self.ckpts = CheckpointManager(self.out_dir / "checkpoints", keep=config.keep_checkpoints)
        self.state: dict[str, Any] = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "skipped_files": 0,
                                      **task.initial_state()}
        self.window: deque[dict[str, float]] = deque(maxlen=task.window)
        self.skipped_names: set[str] = set()
        self.step_times: list[float] = []
        self.last_saved = -1
        self.last_save_time = time.monotonic()  # --checkpoint-minutes counts from here
        self.signals = StopSignals(announce=accelerator.is_local_main_process)
        self.stop_agreed = self.save_agreed = False  # what the processes agreed in the step's all-reduce
        # --push-checkpoints: the main process uploads each checkpoint in the background
        uploads = config.push_to_hub and config.push_checkpoints and accelerator.is_main_process
        self.uploader = (CheckpointUploader(str(config.hub_model_id), private=config.private,
                                            endpoint=config.hub_endpoint) if uploads else None)

    # -- resume
    def resume(self) -> Path | None:
        """Load ``--resume`` (``latest``: the newest complete checkpoint, if any) into the prepared
        models and the state; raises :class:`CheckpointError` for checkpoints this run cannot use."""
        acc, resume = self.accelerator, self.config.resume
        if acc.is_main_process:
            for stale in self.ckpts.remove_stale():
                logger.warning("removed %s, left by a run stopped while saving", stale)
        acc.wait_for_everyone()
        path = self.resolve(resume) if resume else None
        if resume == "latest" and path is None:
            acc.print(f"--resume latest: no checkpoint in {self.ckpts.root} yet, starting from scratch")
        if path is None:
            return None
        saved = CheckpointManager.read_state(path)
        if saved.get("task", "cut") != self.task.name:  # checkpoints without "task" are CUT's
            raise CheckpointError(f"{path} is not a {self.task.name} checkpoint (task {saved.get('task', 'cut')!r})")
        now = _json(self.task.settings())
        mismatch = {k: (saved["args"].get(k), now.get(k)) for k in fixed_settings(self.config)
                    if saved["args"].get(k) != now.get(k)}
        if mismatch:
            raise CheckpointError(f"{path} was trained with other model settings (saved, now): {mismatch}")
        try:
            acc.load_state(str(path))  # weights, optimisers, schedulers, scaler, RNG
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            raise CheckpointError(f"{path} could not be loaded (truncated or foreign files?): {e}") from e
        self.state.update({k: saved[k] for k in self.state if k in saved})
        old_world, world = saved["batch_size"] * saved["num_processes"], self.sampler.batch_size * acc.num_processes
        if old_world != world:  # another batch size x processes: the same position in the data
            self.state["batch_in_epoch"] = self.state["batch_in_epoch"] * old_world // world
            acc.print("resuming with another batch size x processes: the data order differs from the original run")
        acc.print(f"resumed from {path} at step {self.state['step']}, epoch {self.state['epoch']}")
        self.last_saved = self.state["step"]  # that checkpoint exists: never write the same step again
        self.task.on_resume(saved, self.state)
        return path

    def resolve(self, resume: str) -> Path | None:
        """The checkpoint ``--resume`` names, chosen on the main process (which sets damaged ones
        aside and warns) and sent to the others, so every process loads the same one."""
        acc = self.accelerator
        found: list[Path | None] = [None]
        error: list[str | None] = [None]
        if acc.is_main_process:
            try:
                found[0] = self.ckpts.resolve(resume, warn=acc.print, set_aside=True)
            except CheckpointError as e:
                error[0] = str(e)
        if acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            found, error = broadcast_object_list(found), broadcast_object_list(error)
        if error[0] is not None:
            raise CheckpointError(error[0])
        return found[0]

    def save_checkpoint(self) -> None:
        state = {**self.state, "task": self.task.name, "batch_size": self.sampler.batch_size,
                 "num_processes": self.accelerator.num_processes, "args": _json(self.task.settings())}
        path = self.ckpts.save(self.accelerator, state, self.state["step"])
        self.last_saved, self.last_save_time = self.state["step"], time.monotonic()
        self.accelerator.print(f"\nsaved checkpoint {path} (step {self.state['step']})")
        if self.uploader is not None:
            self.uploader.submit(path)

    # -- the loop
    def run(self) -> dict[str, Any]:
        """Resume if asked, train, checkpoint and write the outputs; returns a summary.

        Raises :class:`TrainingStopped` after saving a checkpoint when a stop signal arrived, and
        :class:`~cut_hf.errors.DiskFullError` when the disk filled (the last complete checkpoint stays).
        """
        with self.signals:
            try:
                self.resume()
                batch = self.train()
                if self.stop_agreed:
                    self.stopped()
                return self.finish(batch)
            except (OSError, RuntimeError) as e:  # a full disk anywhere else: logs, samples, evaluations
                if isinstance(e, (DiskFullError, CheckpointError)) or not is_disk_full(e):
                    raise
                raise DiskFullError("the run's files", self.out_dir, None, "free space and rerun with "
                                    "--resume latest") from None

    def train(self) -> Any:
        """The loop over epochs and steps, until the last step or an agreed stop; returns the last batch."""
        from tqdm.auto import tqdm

        acc, cfg, state = self.accelerator, self.config, self.state
        if acc.log_with:
            run = self.out_dir.resolve().name  # the run's name in wandb / trackio: its output folder
            acc.init_trackers(TRACKER_PROJECT, config=tracker_config(self.task.settings()), init_kwargs={
                "trackio": {"name": run, "resume": "allow" if cfg.resume else "never"}, "wandb": {"name": run}})
        progress = tqdm(total=self.max_steps, initial=state["step"], disable=not acc.is_local_main_process,
                        desc=f"{self.task.label} training", dynamic_ncols=True)
        batch = None
        try:  # the bar ends its line before any error message
            while state["step"] < self.max_steps and (self.epochs is None or state["epoch"] < self.epochs):
                self.sampler.set_epoch(state["epoch"], start_batch=state["batch_in_epoch"])
                for batch in self.loader:
                    values = self.one_step(batch)
                    progress.update(1)
                    progress.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
                    self.after_step(batch, values)
                    if state["step"] >= self.max_steps or self.stop_agreed:
                        break
                else:  # the epoch ran to its end
                    self.end_epoch()
                if self.stop_agreed:
                    break
        finally:
            progress.close()
        self.stop_agreed = self.stop_agreed and state["step"] < self.max_steps  # asked at the last step: finish
        if self.stop_agreed:
            return batch  # stopped() saves the checkpoint
        if cfg.checkpoint_every and self.last_saved != state["step"] and state["step"] > 0:
            self.save_checkpoint()
        acc.wait_for_everyone()  # every process has finished its last step
        return batch

    def end_epoch(self) -> None:
        self.task.end_epoch()
        self.state["epoch"], self.state["batch_in_epoch"] = self.state["epoch"] + 1, 0

    def stopped(self) -> None:
        """After an agreed stop: a checkpoint at this step on every process, one line, :class:`TrainingStopped`."""
        acc, state = self.accelerator, self.state
        if state["batch_in_epoch"] >= self.sampler.batches_per_epoch:
            # Stopped on an epoch's last batch: end the epoch here, as the uninterrupted run does next,
            # so the checkpoint reads "epoch e+1, batch 0" (and its schedulers have taken the epoch's step).
            self.end_epoch()
        if self.last_saved != state["step"]:
            self.save_checkpoint()
        acc.wait_for_everyone()
        acc.end_training()
        stop = TrainingStopped(state["step"], self.signals.requested or "a signal to another process")
        acc.print(str(stop))
        raise stop

    def one_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """The task's step and its bookkeeping; returns the values averaged over processes."""
        state = self.state
        t0 = time.perf_counter()
        losses = self.task.step(batch)
        state["step"] += 1
        state["batch_in_epoch"] += 1
        # One small all-reduce per step: every process sees the same (mean) values, so a NaN
        # anywhere stops all processes together instead of leaving the others waiting.
        # The same all-reduce carries two flags, so every process stops or saves at the same step:
        # a stop signal arrived here, and (--checkpoint-minutes) the time for a checkpoint has come.
        names = list(losses)
        stacked = torch.stack([losses[k] for k in names])
        minutes = self.config.checkpoint_minutes
        flags = [self.signals.requested is not None,
                 bool(minutes) and time.monotonic() - self.last_save_time >= 60 * minutes]
        both = torch.cat([stacked, torch.tensor(flags, dtype=stacked.dtype, device=stacked.device)])
        *reduced, stop, due = self.accelerator.reduce(both, reduction="mean").tolist()
        self.stop_agreed, self.save_agreed = stop > 0, due > 0
        values = dict(zip(names, reduced, strict=True))
        self.step_times.append(time.perf_counter() - t0)
        for name in [k for k in values if k == "skipped" or k.startswith("skipped_")]:
            key = "skipped_steps" + name[len("skipped"):]  # fp16 overflow: counted, not fatal
            state[key] += int(values.pop(name) > 0)
        check_finite(values, state["step"])
        self.window.append(values)
        for names_of_item in batch["skipped"]:
            self.skipped_names.update(n for n in names_of_item.split("\n") if n)
        state["skipped_files"] = len(self.skipped_names)
        return values

    def after_step(self, batch: dict[str, Any], values: dict[str, float]) -> None:
        """Tracker logs, sample grids, the task's own work and checkpoints, each on its schedule."""
        acc, cfg, state, step = self.accelerator, self.config, self.state, self.state["step"]
        if cfg.log_every and step % cfg.log_every == 0:
            fp16 = sum(v for k, v in state.items() if k.startswith("skipped_steps"))
            acc.log({**values, "lr": self.task.lr(), "epoch": state["epoch"], "skipped_files": state["skipped_files"],
                     "skipped_steps_fp16": fp16}, step=step)
        if cfg.sample_every and step % cfg.sample_every == 0 and acc.is_main_process:
            grids = self.task.samples(batch)
            log_images(acc, grids, step)
            if self.task.sample_folder:
                for grid in grids.values():
                    save_image(grid, self.out_dir / self.task.sample_folder / f"step_{step:08d}.png")
        self.task.after_step(state, batch)
        every_k = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
        if every_k or (self.save_agreed and self.last_saved != step):  # K steps, or --checkpoint-minutes
            self.save_checkpoint()

    def write_outputs(self, summary: dict[str, Any], batch: Any) -> tuple[str, Path, dict[str, Path]]:
        """The task's outputs; on a full disk its half-written folders are removed and a
        :class:`~cut_hf.errors.DiskFullError` says how much the models need (their checkpoint's weights)."""
        try:
            return self.task.write_outputs(summary, batch)
        except Exception as e:
            if not is_disk_full(e, self.out_dir):
                raise
            latest = self.ckpts.latest()
            written = sum(tree_bytes(f) for f in self.task.output_folders())
            weights = sum(tree_bytes(f) for f in latest.glob("model*.safetensors")) if latest else 0
            for folder in self.task.output_folders():
                shutil.rmtree(folder, ignore_errors=True)
            advice = (f"{latest.name} holds the trained state: free space and rerun with --resume latest to write them"
                      if latest else "free space and rerun")
            raise DiskFullError("the model folders", self.out_dir, max(written, weights), advice) from None

    def finish(self, batch: Any) -> dict[str, Any]:
        """The summary; the task's outputs (main process) and the Hub upload."""
        acc, cfg, state = self.accelerator, self.config, self.state
        final = {k: sum(w[k] for w in self.window) / len(self.window) for k in self.window[-1]} if self.window else {}
        summary = {**state, "num_processes": acc.num_processes, "final_losses": final, "loss_window": len(self.window),
                   "stopped_early": state["step"] < self.planned_steps, "max_steps": self.max_steps,
                   "seconds_per_step": self.step_times, "output_dir": str(self.out_dir)}
        self.task.after_training(summary)
        if acc.is_main_process:
            saved, root, subfolders = self.write_outputs(summary, batch)
            fp16 = sum(v for k, v in state.items() if k.startswith("skipped_steps"))
            acc.print(f"saved {saved}; skipped {state['skipped_files']} unreadable file(s), "
                      f"{fp16} fp16 overflow step(s)")
            if self.uploader is not None:
                for problem in self.uploader.wait():  # the checkpoints' uploads end before the models' push
                    logger.warning("%s", problem)
            if cfg.push_to_hub:
                if not cfg.hub_model_id:  # the parser requires it; a hand-made config may not
                    raise ValueError("push_to_hub needs hub_model_id (--hub-model-id user/name)")
                try:
                    url = push_folders_to_hub(str(cfg.hub_model_id), root, subfolders, private=cfg.private,
                                              endpoint=cfg.hub_endpoint)
                except PushError as e:  # the outputs are saved: say so and how to retry, keep the other processes going
                    summary["push_error"] = str(e)
                else:
                    acc.print(f"pushed to {url}")
                    summary["hub_url"] = url
        acc.wait_for_everyone()
        acc.end_training()
        return summary

"""Small pieces every training script of cut-hf shares: checkpoints, trackers, a NaN guard, image grids, Hub upload.

They hold no training logic of their own, so ``train.py`` (CUT) and the SimCLR loop read the same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
_CKPT_RE = re.compile(r"^checkpoint_(\d+)$")


# ----------------------------------------------------------------------------- checkpoints


class CheckpointError(RuntimeError):
    """A checkpoint cannot be resumed from; the message says why."""


class CheckpointManager:
    """Numbered, atomic, pruned checkpoints under one folder.

    ``save`` writes ``accelerator.save_state`` into ``.tmp-checkpoint_<n>``, adds ``trainer_state.json``
    (step, epoch, data position, ...), fsyncs, writes the ``COMPLETE`` marker last and renames the
    folder to ``checkpoint_<n>``. A run killed at any moment leaves either no ``checkpoint_<n>`` or a
    complete one; only folders with the marker are ever resumed from or counted. The oldest complete
    checkpoints beyond ``keep`` are deleted after each save.

    All processes must call :meth:`save` (each writes its own RNG state); the file system must be
    shared between them, as Accelerate's ``save_state`` assumes.
    """

    def __init__(self, root: str | os.PathLike, keep: int | None = 3) -> None:
        self.root = Path(root)
        self.keep = keep

    # -- finding
    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and p.is_dir() and (p / COMPLETE_MARKER).is_file():
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

    def next_index(self) -> int:
        """One past the highest number ever used here, complete or not (a counter never reused)."""
        if not self.root.is_dir():
            return 0
        used = [int(m.group(1)) for p in self.root.iterdir() if (m := _CKPT_RE.match(p.name.removeprefix(".tmp-")))]
        return max(used, default=-1) + 1

    def resolve(self, resume: str) -> Path | None:
        """``"latest"`` -> the newest complete checkpoint here (``None`` if there is none yet);
        a path -> that checkpoint, which must be complete."""
        if resume == "latest":
            return self.latest()
        path = Path(resume).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"--resume {resume!r}: no such checkpoint folder")
        if not (path / COMPLETE_MARKER).is_file():
            raise CheckpointError(f"--resume {resume!r} is incomplete (no {COMPLETE_MARKER} marker): the run that "
                                  "wrote it stopped while saving; use an earlier checkpoint")
        return path

    @staticmethod
    def read_state(path: str | os.PathLike) -> dict[str, Any]:
        """The ``trainer_state.json`` of a checkpoint."""
        try:
            return json.loads((Path(path) / TRAINER_STATE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"checkpoint {str(path)!r} has no readable {TRAINER_STATE}: {e}") from e

    # -- writing
    def save(self, accelerator: Any, trainer_state: Mapping[str, Any], index: int) -> Path:
        """Save the full training state as ``checkpoint_<index>``; returns its path (on every process)."""
        final = self.root / f"checkpoint_{index}"
        tmp = self.root / f".tmp-checkpoint_{index}"
        if accelerator.is_main_process:
            if final.exists():
                raise CheckpointError(f"{final} already exists; refusing to overwrite a checkpoint")
            if tmp.exists():
                shutil.rmtree(tmp)  # left by a run killed while saving
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))  # models, optimizers, schedulers, scaler, RNG of every process
        if accelerator.is_main_process:
            (tmp / TRAINER_STATE).write_text(json.dumps(dict(trainer_state), indent=2, sort_keys=True))
        accelerator.wait_for_everyone()  # every process's RNG file is on disk
        if accelerator.is_main_process:
            _fsync_tree(tmp)
            marker = tmp / COMPLETE_MARKER
            with open(marker, "w") as f:
                f.write(f"step {trainer_state.get('step')}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)  # atomic on POSIX: the final name appears complete or not at all
            _fsync_dir(self.root)
            self.prune()
        accelerator.wait_for_everyone()
        return final

    def prune(self) -> None:
        """Delete complete checkpoints beyond the newest ``keep`` (main process only)."""
        if not self.keep or self.keep < 1:
            return
        for old in self.complete()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def remove_stale(self) -> list[Path]:
        """Delete half-written folders left by killed runs (main process only); returns them."""
        stale = []
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(".tmp-checkpoint_"):
                    shutil.rmtree(p, ignore_errors=True)
                    stale.append(p)
        return stale


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- logging


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the step and the term."""


def check_finite(losses: Mapping[str, float], step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first loss term that is NaN or inf."""
    for name, value in losses.items():
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"step {step}: loss {name} is {value}; stopping (lower --lr, or try --mixed-precision no / bf16; "
                "the last checkpoint is intact)")


def tracker_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config TensorBoard's hparams accept: numbers, strings and bools; lists and None as text."""
    out = {}
    for k, v in config.items():
        out[k] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def log_images(accelerator: Any, images: Mapping[str, torch.Tensor], step: int) -> None:
    """Log (C, H, W) images in [0, 1] to every tracker that takes images (TensorBoard here)."""
    for tracker in accelerator.trackers:
        if hasattr(tracker, "log_images"):
            batch = {k: v.unsqueeze(0) if v.dim() == 3 else v for k, v in images.items()}  # (1, C, H, W)
            try:
                tracker.log_images(batch, step=step)
            except NotImplementedError:  # trackers that declare but lack image support
                pass


# ----------------------------------------------------------------------------- images


def image_grid(columns: Sequence[torch.Tensor], max_rows: int = 4, padding: int = 2) -> torch.Tensor:
    """One row per sample, one column per tensor: e.g. real_A | fake_B | real_B | idt_B.

    Args:
        columns: tensors (B, C, H, W) in [-1, 1]; 1-channel ones are shown as gray RGB.
        max_rows: at most this many samples.
    Returns:
        (3, H', W') float tensor in [0, 1], on the CPU.
    """
    from torchvision.utils import make_grid

    cols = []
    for t in columns:
        t = t[:max_rows].detach().float().cpu().clamp(-1, 1).add(1).div(2)  # (B, C, H, W) in [0, 1]
        cols.append(t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t[:, :3])
    h = max(c.shape[2] for c in cols)
    w = max(c.shape[3] for c in cols)
    cols = [torch.nn.functional.pad(c, (0, w - c.shape[3], 0, h - c.shape[2])) for c in cols]
    tiles = torch.stack(cols, dim=1).flatten(0, 1)  # (B * n_cols, 3, H, W), row-major
    return make_grid(tiles, nrow=len(cols), padding=padding, pad_value=1.0)


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save a (3, H, W) tensor in [0, 1] as a PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = image.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(path)
    return path


# ----------------------------------------------------------------------------- Hub


def push_folders_to_hub(
    repo_id: str,
    root_folder: str | os.PathLike,
    subfolders: Mapping[str, str | os.PathLike] | None = None,
    private: bool = False,
    commit_message: str = "Upload model trained with cut-hf",
    api: Any = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> str:
    """Create ``repo_id`` (if needed) and upload ``root_folder`` to its root and each of
    ``subfolders`` (path in repo -> local folder) under that path. Returns the repo URL.

    ``api`` is an ``HfApi``-like object (``create_repo``, ``upload_folder``); by default a real
    ``huggingface_hub.HfApi(endpoint=endpoint, token=token)``.
    """
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(repo_id=repo_id, folder_path=str(root_folder), repo_type="model",
                      commit_message=commit_message)
    for path_in_repo, folder in (subfolders or {}).items():
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), path_in_repo=path_in_repo, repo_type="model",
                          commit_message=f"{commit_message} ({path_in_repo})")
    return str(repo_url)

"""Checkpoints of a training run: atomic, marked complete, named by step, pruned to the newest K.

Folders are ``checkpoint-<step>``; runs written before that naming left ``checkpoint_<index>``
folders, which are still found, ordered by the step in their ``trainer_state.json`` and resumed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any


COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
# checkpoint-<step>; checkpoint_<index> is the name used before checkpoints were named by step.
_CKPT_RE = re.compile(r"^checkpoint([-_])(\d+)$")
_TMP_PREFIX = ".tmp-"


# ----------------------------------------------------------------------------- checkpoints


class CheckpointError(RuntimeError):
    """A checkpoint cannot be resumed from; the message says why."""


class CheckpointManager:
    """Atomic, pruned checkpoints under one folder, named by step.

    ``save`` writes ``accelerator.save_state`` into ``.tmp-checkpoint-<step>``, adds ``trainer_state.json``
    (step, epoch, data position, ...), fsyncs, writes the ``COMPLETE`` marker last and renames the
    folder to ``checkpoint-<step>``. A run killed at any moment leaves either no ``checkpoint-<step>``
    or a complete one; only folders with the marker are ever resumed from or counted. The oldest complete
    checkpoints beyond ``keep`` are deleted after each save.

    All processes must call :meth:`save` (each writes its own RNG state); the file system must be
    shared between them, as Accelerate's ``save_state`` assumes.
    """

    def __init__(self, root: str | os.PathLike, keep: int | None = 3) -> None:
        self.root = Path(root)
        self.keep = keep

    # -- finding
    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest (lowest step) first; both namings count."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and p.is_dir() and (p / COMPLETE_MARKER).is_file():
                found.append((self._step(p, m), m.group(1) == "-", p))
        return [p for *_, p in sorted(found)]

    @staticmethod
    def _step(path: Path, match: re.Match) -> int:
        """The step of a checkpoint: its name's number, or (old ``checkpoint_<index>`` names) the
        step its trainer state records."""
        if match.group(1) == "-":
            return int(match.group(2))
        try:
            return int(json.loads((path / TRAINER_STATE).read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return int(match.group(2))

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1] if done else None

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
    def save(self, accelerator: Any, trainer_state: Mapping[str, Any], step: int) -> Path:
        """Save the full training state as ``checkpoint-<step>``; returns its path (on every process)."""
        final = self.root / f"checkpoint-{step}"
        tmp = self.root / f"{_TMP_PREFIX}checkpoint-{step}"
        if accelerator.is_main_process:
            if final.exists():
                raise CheckpointError(f"{final} already exists; refusing to overwrite a checkpoint "
                                      "(resume with --resume latest, or use another --output-dir)")
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
                if p.name.startswith(_TMP_PREFIX) and _CKPT_RE.match(p.name[len(_TMP_PREFIX):]):
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



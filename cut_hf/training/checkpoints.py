"""Checkpoints of a training run: atomic, marked complete, verified, named by step, pruned to the newest K.

Folders are ``checkpoint-<step>``; runs written before that naming left ``checkpoint_<index>``
folders, which are still found, ordered by the step in their ``trainer_state.json`` and resumed.
A ``manifest.json`` records every file's size and SHA-256 when it is written, so a file damaged
afterwards (truncated by a full disk, a bad copy, a flaky network file system) is noticed before
resuming, and ``--resume latest`` falls back to the newest checkpoint that is still whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from cut_hf.errors import DiskFullError, is_disk_full, tree_bytes

COMPLETE_MARKER = "COMPLETE"
TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"  # {relative path: {"bytes": n, "sha256": hex}} of every other file
# checkpoint-<step>; checkpoint_<index> is the name used before checkpoints were named by step.
_CKPT_RE = re.compile(r"^checkpoint([-_])(\d+)$")
_TMP_PREFIX = ".tmp-"
_DAMAGED_PREFIX = "damaged-"


# ----------------------------------------------------------------------------- checkpoints


class CheckpointError(RuntimeError):
    """A checkpoint cannot be resumed from; the message says why."""


class CheckpointManager:
    """Atomic, pruned checkpoints under one folder, named by step.

    ``save`` writes ``accelerator.save_state`` into ``.tmp-checkpoint-<step>``, adds ``trainer_state.json``
    (step, epoch, data position, ...), fsyncs, writes ``manifest.json`` and then the ``COMPLETE`` marker
    and renames the folder to ``checkpoint-<step>``. A run killed at any moment leaves either no
    ``checkpoint-<step>`` or a complete one; only folders with the marker are ever resumed from or
    counted. The oldest complete checkpoints beyond ``keep`` are deleted only after the new one is
    complete. A disk that fills while saving raises :class:`~cut_hf.errors.DiskFullError` on every
    process, after the half-written folder is removed; the checkpoints before it stay as they were.

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

    def latest_intact(self, warn: Callable[[str], None] = print, set_aside: bool = False) -> Path | None:
        """The newest complete checkpoint whose files are whole (:func:`damage`); ``warn`` gets one
        line for each newer one passed over because it is damaged. ``set_aside`` (the main process of
        a run that will save again) renames those to ``damaged-checkpoint-<step>``: kept for a look,
        no longer found, and no longer in the way of the resumed run's checkpoint of that step."""
        for path in reversed(self.complete()):
            problem = damage(path)
            if problem is None:
                return path
            where = ""
            if set_aside:
                aside = path.with_name(f"{_DAMAGED_PREFIX}{path.name}")
                shutil.rmtree(aside, ignore_errors=True)  # an older one of the same step
                os.replace(path, aside)
                where = f", moved to {aside.name}"
            warn(f"warning: {path} is damaged ({problem}{where}); resuming from the checkpoint before it")
        return None

    def resolve(self, resume: str, warn: Callable[[str], None] = print, set_aside: bool = False) -> Path | None:
        """``"latest"`` -> the newest complete, undamaged checkpoint here (``None`` if there is none
        yet; ``warn`` and ``set_aside`` as in :meth:`latest_intact`); a path -> that checkpoint, which
        must be complete and undamaged."""
        if resume == "latest":
            return self.latest_intact(warn, set_aside)
        path = Path(resume).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"--resume {resume!r}: no such checkpoint folder")
        if not (path / COMPLETE_MARKER).is_file():
            raise CheckpointError(f"--resume {resume!r} is incomplete (no {COMPLETE_MARKER} marker): the run that "
                                  "wrote it stopped while saving; use an earlier checkpoint")
        problem = damage(path)
        if problem is not None:
            raise CheckpointError(f"--resume {resume!r} is damaged ({problem}); use an earlier checkpoint")
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
        """Save the full training state as ``checkpoint-<step>``; returns its path (on every process).

        Raises :class:`~cut_hf.errors.DiskFullError` (every process) when the disk or quota is full,
        after removing the half-written folder; older checkpoints are untouched.
        """
        final = self.root / f"checkpoint-{step}"
        tmp = self.root / f"{_TMP_PREFIX}checkpoint-{step}"
        if accelerator.is_main_process:
            if final.exists():
                raise CheckpointError(f"{final} already exists; refusing to overwrite a checkpoint "
                                      "(resume with --resume latest, or use another --output-dir)")
            if tmp.exists():
                shutil.rmtree(tmp)  # left by a run killed while saving
        error = _attempt(lambda: tmp.mkdir(parents=True) if accelerator.is_main_process else None)
        self._check(accelerator, error, tmp)

        def write() -> None:
            accelerator.save_state(str(tmp))  # models, optimizers, schedulers, scaler, RNG of every process
            if accelerator.is_main_process:
                (tmp / TRAINER_STATE).write_text(json.dumps(dict(trainer_state), indent=2, sort_keys=True))

        error = _attempt(write)
        self._check(accelerator, error, tmp)  # also: every process's RNG file is on disk
        if accelerator.is_main_process:
            error = _attempt(lambda: self._seal(tmp, final, trainer_state))
        self._check(accelerator, error, tmp)
        if accelerator.is_main_process:
            self.prune()  # only now: the new checkpoint is complete
        accelerator.wait_for_everyone()
        return final

    def _seal(self, tmp: Path, final: Path, trainer_state: Mapping[str, Any]) -> None:
        """fsync, the manifest, the marker, the atomic rename (main process)."""
        _fsync_tree(tmp)
        manifest = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                    for p in sorted(tmp.rglob("*")) if p.is_file()}
        _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        _write_synced(tmp / COMPLETE_MARKER, f"step {trainer_state.get('step')}\n")
        os.replace(tmp, final)  # atomic on POSIX: the final name appears complete or not at all
        _fsync_dir(self.root)

    def _check(self, accelerator: Any, error: BaseException | None, tmp: Path) -> None:
        """Every process learns whether any of them failed; if one did, all raise (none waits for
        the others at a barrier) and the main process removes the half-written ``tmp``."""
        if not _failed_anywhere(accelerator, error is not None):
            return
        full = error is not None and is_disk_full(error, tmp)  # before removing: the space is free again after
        latest = self.latest()
        needed = max(tree_bytes(tmp), tree_bytes(latest) if latest else 0)
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        name = tmp.name[len(_TMP_PREFIX):]
        if full:
            advice = (f"{latest.name} is complete: free space and rerun with --resume latest" if latest
                      else "no checkpoint written yet: free space and rerun")
            raise DiskFullError(name, self.root, needed, advice) from None
        if error is None:
            raise CheckpointError(f"another process could not write its part of {name}; see its error")
        raise error

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


def damage(path: str | os.PathLike) -> str | None:
    """Why the checkpoint at ``path`` cannot be trusted, or None when its files are whole.

    With a ``manifest.json`` (checkpoints written by this version): every file listed is there with
    its recorded size and SHA-256. Without one (older checkpoints): every ``.safetensors`` file's
    header is whole and its tensors fit in the file.
    """
    path = Path(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        for f in sorted(path.glob("*.safetensors")):
            problem = _safetensors_damage(f)
            if problem:
                return f"{f.name}: {problem}"
        return None
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError) as e:
        return f"{MANIFEST} unreadable: {e}"
    for name, entry in manifest.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        size = f.stat().st_size
        if size != entry["bytes"]:
            return f"{name} has {size} of {entry['bytes']} bytes"
        if _sha256(f) != entry["sha256"]:
            return f"{name} does not match its recorded SHA-256"
    return None


def _safetensors_damage(f: Path) -> str | None:
    """A safetensors file's header is whole and its data fits (no hash was recorded for it)."""
    try:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        size = f.stat().st_size
        return None if size >= 8 + n + end else f"{size} of {8 + n + end} bytes"
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError) as e:
        return f"unreadable header ({e})"


def _attempt(fn: Callable[[], object]) -> Exception | None:
    """Run ``fn``; the error it raised (KeyboardInterrupt and the like pass through), or None."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every process must hear of it before anyone raises
        return e
    return None


def _failed_anywhere(accelerator: Any, failed: bool) -> bool:
    """``failed`` of any process (one small all-reduce; alone: ``failed``)."""
    if getattr(accelerator, "num_processes", 1) <= 1:
        return failed
    flag = torch.tensor([float(failed)], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def _sha256(f: Path) -> str:
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_synced(f: Path, text: str) -> None:
    with open(f, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


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



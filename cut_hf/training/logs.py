"""What a training run reports: the NaN guard, tracker values and images, sample grids, weight digests, Hub upload."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cut_hf.errors import one_line


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
    """Log (C, H, W) images in [0, 1] to every tracker that takes images: those with Accelerate's
    ``log_images`` (TensorBoard, wandb, aim, clearml, swanlab) and trackio (its ``Image`` values)."""
    for tracker in accelerator.trackers:
        if getattr(tracker, "name", None) == "trackio":
            import trackio

            tracker.log({k: trackio.Image(v.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
                         for k, v in images.items()}, step=step)
        elif hasattr(tracker, "log_images"):
            batch = {k: v.unsqueeze(0) if v.dim() == 3 else v for k, v in images.items()}  # (1, C, H, W)
            with contextlib.suppress(NotImplementedError):  # trackers that declare but lack image support
                tracker.log_images(batch, step=step)


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


class PushError(RuntimeError):
    """A push to the Hub failed; the message says that the repository is unchanged and how to retry."""


#: Remote files a push of the models leaves alone: the Hub's own, and the checkpoints of --push-checkpoints.
KEEP_REMOTE = (".gitattributes", "checkpoints/")


def output_folders(output_dir: str | os.PathLike) -> tuple[Path, dict[str, Path]]:
    """The Hub layout of a training output folder: (the folder for the repository's root, {path
    in repo: folder}). ``train.py``'s generator/ goes to the root with sampler/ and discriminator/
    beside it; the SimCLR trainer's model/ goes to the root."""
    out = Path(output_dir)
    root = next((out / n for n in ("generator", "model") if (out / n / "config.json").is_file()), None)
    if root is None:
        raise PushError(f"{str(out)!r} holds no trained model (generator/ or model/ with config.json)")
    return root, {n: out / n for n in ("sampler", "discriminator") if (out / n / "config.json").is_file()}


def _files(folder: Path, prefix: str = "") -> dict[str, Path]:
    """{path in repo: file} for every file under ``folder``."""
    return {prefix + p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _hub_api(api: Any, endpoint: str | None, token: str | None) -> Any:
    if api is not None:
        return api
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def _commit(api: Any, repo_id: str, files: Mapping[str, Path], stale: Sequence[str], message: str) -> None:
    """One commit that adds ``files`` and deletes ``stale``: all of it lands, or none."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    operations: list[Any] = [CommitOperationAdd(path_in_repo=k, path_or_fileobj=str(v)) for k, v in files.items()]
    operations += [CommitOperationDelete(path_in_repo=k) for k in stale]
    api.create_commit(repo_id=repo_id, operations=operations, commit_message=message, repo_type="model")


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
    """Create ``repo_id`` (if needed) and make it hold ``root_folder`` at its root and each of
    ``subfolders`` (path in repo -> local folder) under that path, in **one commit** that also
    deletes the remote files the outputs no longer have (but :data:`KEEP_REMOTE`). Returns the repo URL.

    A failure anywhere raises :class:`PushError` naming the command that retries; the commit is
    atomic, so the repository is as it was, and the local folders are only read.
    ``api`` is an ``HfApi``-like object (``create_repo``, ``list_repo_files``, ``create_commit``);
    by default a real ``huggingface_hub.HfApi(endpoint=endpoint, token=token)``.
    """
    files = _files(Path(root_folder))
    for path_in_repo, folder in (subfolders or {}).items():
        files.update(_files(Path(folder), path_in_repo.strip("/") + "/"))
    out = Path(root_folder).parent
    try:
        hub = _hub_api(api, endpoint, token)
        repo_url = hub.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        remote = hub.list_repo_files(repo_id, repo_type="model")
        stale = sorted(f for f in remote if f not in files and not f.startswith(KEEP_REMOTE))
        _commit(hub, repo_id, files, stale, commit_message)
    except Exception as err:  # network, auth, quota...: one line, and the way back
        raise PushError(f"push to {repo_id} failed ({one_line(err)}); the repository is unchanged and {str(out)!r} "
                        f"is intact: retry with `cut-hf push {out} --hub-model-id {repo_id}`") from err
    return str(repo_url)


class CheckpointUploader:
    """``--push-checkpoints``: each checkpoint goes to the repository's ``checkpoints/<name>/`` in one
    commit, on a background thread (one at a time, in order), so training does not wait for the
    network. Remote checkpoints that are no longer kept locally are deleted in the same commit.
    Failures are collected, not raised: :meth:`wait` returns them (the checkpoints stay on disk).
    """

    def __init__(self, repo_id: str, private: bool = False, endpoint: str | None = None, token: str | None = None,
                 api: Any = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.repo_id, self.private = repo_id, private
        self.endpoint, self.token, self.api = endpoint, token, api
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cut-hf-checkpoint-upload")
        self.futures: list[tuple[str, Any]] = []

    def submit(self, folder: str | os.PathLike) -> None:
        """Upload ``folder`` (a complete checkpoint) in the background."""
        self.futures.append((Path(folder).name, self.executor.submit(self._push, Path(folder))))

    def _push(self, folder: Path) -> None:
        hub = _hub_api(self.api, self.endpoint, self.token)
        hub.create_repo(self.repo_id, private=self.private, exist_ok=True, repo_type="model")
        kept = {p.name for p in folder.parent.iterdir() if p.is_dir()}  # checkpoints still on disk
        stale = sorted(f for f in hub.list_repo_files(self.repo_id, repo_type="model")
                       if f.startswith("checkpoints/") and f.split("/")[1] not in kept)
        _commit(hub, self.repo_id, _files(folder, f"checkpoints/{folder.name}/"), stale,
                f"Upload checkpoint {folder.name}")

    def wait(self) -> list[str]:
        """Wait for every upload; returns one line per failed one."""
        problems = []
        for name, future in self.futures:
            try:
                future.result()
            except Exception as err:  # noqa: BLE001 - reported: the outputs do not depend on it
                problems.append(f"checkpoint upload {name} failed ({one_line(err)}); it is still on disk if kept")
        self.executor.shutdown()
        self.futures = []
        return problems


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names and exact bytes): equal digests, equal weights."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

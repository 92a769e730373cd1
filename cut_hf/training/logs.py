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


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names and exact bytes): equal digests, equal weights."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

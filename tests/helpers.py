"""Helpers shared by tests in several folders (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository


def image_to_tensor(source, channels: int = 3):
    """Any image source -> (channels, H, W) float in [-1, 1]: what translate() gives the generator."""
    from cut_hf.images import load_image, pil_to_tensor

    return pil_to_tensor(load_image(source, channels))


def make_images(folder, n: int, size=(40, 44), seed: int = 0, prefix: str = "img", ext: str = "png") -> list:
    """``n`` random RGB images of ``size`` (H, W) saved as ``folder/<prefix>_<i>.<ext>``; returns their paths."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"{prefix}_{i}.{ext}"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def sharpen(module, seed: int = 0, bias_std: float = 0.1):
    """Re-draw ``module``'s weights at He scale (std sqrt(2 / fan_in)), biases at ``bias_std``, and
    batch-norm scales, shifts and running statistics around 1 and 0; returns ``module``.

    The paper's initialisation (Xavier, gain 0.02, zero biases) makes a random network's output tiny
    (~1e-10 for a discriminator without norms, ~1e-12 for a batch-norm generator) or nearly constant,
    so comparing two networks at any tolerance above float rounding would pass whatever they compute.
    At He scale every layer keeps its input's magnitude: outputs are O(1) and every layer shows in them.
    Buffers such as the blur filters are left alone.
    """
    import math

    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * bias_std)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return module


def assert_close_to(actual, expected, rel: float = 1e-5, min_std: float = 0.05) -> None:
    """``actual`` equals ``expected`` to ``rel`` of ``expected``'s largest magnitude, and
    ``expected`` varies (std > ``min_std``), so the comparison can tell two networks apart."""
    import torch

    scale = expected.abs().max().item()
    assert expected.float().std().item() > min_std, f"reference output too flat to compare (std {expected.std():.2e})"
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


class LocalHub:
    """A stand-in for ``huggingface_hub.HfApi`` whose repositories are folders under ``root``.

    ``create_commit`` applies all its operations or none, as the Hub does; ``fail_at`` makes the
    commit numbered so (0-based) fail after reading half of its files. Every call is recorded.
    """

    root = None  # set by the test: where the "remote" repositories live
    fail_at: int | None = None
    instances: list = []  # noqa: RUF012 - the test reads the instances its run made

    def __init__(self, endpoint=None, token=None) -> None:
        self.endpoint, self.calls = endpoint, []
        LocalHub.instances.append(self)

    @classmethod
    def reset(cls, root) -> None:
        from pathlib import Path

        cls.root, cls.fail_at, cls.instances = Path(root), None, []
        cls.commits = []

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)
        return f"{self.endpoint or 'https://huggingface.co'}/{repo_id}"

    def list_repo_files(self, repo_id, repo_type=None):
        repo = self.root / repo_id
        return sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, **kwargs):
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        operations = list(operations)
        self.calls.append(("create_commit", repo_id, commit_message))
        number = len(LocalHub.commits)
        LocalHub.commits.append((repo_id, commit_message, operations))
        staged = {}
        adds = [op for op in operations if isinstance(op, CommitOperationAdd)]
        for i, op in enumerate(adds):
            if LocalHub.fail_at == number and i == len(adds) // 2:
                raise ConnectionError("connection reset by peer (simulated, halfway through the upload)")
            with open(op.path_or_fileobj, "rb") as f:
                staged[op.path_in_repo] = f.read()
        repo = self.root / repo_id  # all uploaded: apply the whole commit
        for op in operations:
            if isinstance(op, CommitOperationDelete):
                (repo / op.path_in_repo).unlink()
        for path, data in staged.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_bytes(data)
        return f"commit {number}"


def make_clip(path, frames: int = 36, fps: int = 12, size=(96, 128), audio: bool = True, seed: int = 0,
              shape_rows: int = 32):
    """A test video: a yellow block half the width crossing a still random texture of 4-pixel squares,
    ``frames`` frames at ``fps`` (H.264, crf 10) and, with ``audio``, a 440 Hz sine (AAC, mono 16 kHz).
    ``size`` is (H, W); the block covers ``shape_rows`` rows in the middle, so bands at the top and
    bottom stay still. Returns the path."""
    import av
    import numpy as np

    h, w = size
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, (h // 4, w // 4, 3)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt, video.options = w, h, "yuv420p", {"crf": "10"}
    sound = None
    if audio:
        sound = out.add_stream("aac", rate=16000)
        sound.layout = "mono"
    block_w = w // 2
    for i in range(frames):
        image = background.copy()
        x = int(-block_w + i * (w + block_w) / max(1, frames - 1))  # enters at the left, leaves at the right
        image[(h - shape_rows) // 2 : (h + shape_rows) // 2, max(0, x) : max(0, x + block_w)] = (250, 240, 20)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i
        out.mux(video.encode(frame))
    out.mux(video.encode(None))
    if sound is not None:
        rate = 16000
        t = np.arange(int(rate * frames / fps)) / rate
        wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for k in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(wave[None, k : k + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = rate, k
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    out.close()
    return path

"""Translation-quality metrics: FID / KID between image sets, paired PSNR / SSIM / LPIPS.

All image metrics are computed with torchmetrics. FID and KID share one feature pass: features are
extracted once per image (Inception-v3 pool3 by default, as pytorch-fid and the CUT paper) and fed
to torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` through their custom
``feature=`` module hook.

Feature extractors follow torchmetrics' contract for Inception: they take ``uint8`` tensors
(B, 3, H, W) in [0, 255] of any size (Inception resizes to 299x299 itself) and return (B, d) floats.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

# torch-fidelity's copy of the TF "2015-12-05" FID Inception weights (the network pytorch-fid uses;
# pytorch-fid names the file pt_inception-2015-12-05-6726825d.pth).
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILENAME = INCEPTION_URL.rsplit("/", 1)[1]
HOW_TO_GET_INCEPTION = (
    f"download {INCEPTION_URL} (or pytorch-fid's pt_inception-2015-12-05-6726825d.pth) where you have network "
    "and pass --inception-weights PATH"
)

__all__ = [
    "INCEPTION_URL",
    "MetricsUnavailable",
    "TinyFeatureExtractor",
    "extract_features",
    "fid_kid",
    "inception_feature_extractor",
    "lpips_available",
    "paired_metrics",
]


class MetricsUnavailable(RuntimeError):
    """A metric cannot run here (missing weights or package); the message says what to do, in one line."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def inception_cache_path() -> Path:
    """Where torch.hub keeps the Inception weights after torch-fidelity's normal download."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME


def inception_feature_extractor(weights_path: str | os.PathLike | None = None) -> nn.Module:
    """The FID Inception-v3 (2048-d pool3 features) of torchmetrics / torch-fidelity, in eval mode.

    Args:
        weights_path: a local copy of the Inception weights. ``None`` uses torch.hub's cached copy,
            or downloads it when online (not when ``HF_HUB_OFFLINE=1``).

    Raises:
        MetricsUnavailable: torch-fidelity missing, weights missing offline, unreachable or foreign.
    """
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError as err:  # pragma: no cover - torchmetrics is a requirement
        raise MetricsUnavailable(f"FID needs torchmetrics: {err}") from err
    if not _TORCH_FIDELITY_AVAILABLE:
        raise MetricsUnavailable("FID/KID with Inception need torch-fidelity: pip install torch-fidelity==0.4.0")

    path: Path | None = None
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise MetricsUnavailable(f"Inception weights {str(path)!r} not found; {HOW_TO_GET_INCEPTION}")
        # torch-fidelity reads the file with weights_only=False: check first that it is plain tensors.
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any unreadable or code-carrying pickle is refused alike
            raise MetricsUnavailable(
                f"{str(path)!r} is not a plain Inception state dict (truncated, foreign or needs code to load)"
            ) from err
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise MetricsUnavailable(f"{str(path)!r} is not an Inception state dict")
    elif not inception_cache_path().is_file() and _offline():
        raise MetricsUnavailable(
            f"the FID Inception weights are not cached and HF_HUB_OFFLINE=1; {HOW_TO_GET_INCEPTION}")

    try:
        net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"],
            feature_extractor_weights_path=str(path) if path is not None else None,
        )
    except RuntimeError as err:  # load_state_dict mismatch: the file is some other network
        if path is None:
            raise MetricsUnavailable(f"could not load the Inception weights: {str(err).splitlines()[0]}") from err
        raise MetricsUnavailable(f"{str(path)!r} does not hold the FID Inception-v3 weights") from err
    except OSError as err:  # URLError / HTTPError / socket errors while downloading
        raise MetricsUnavailable(
            f"could not download the FID Inception weights ({err}); {HOW_TO_GET_INCEPTION}") from err
    net.num_features = 2048
    return net.eval()


class TinyFeatureExtractor(nn.Module):
    """A small fixed random conv net: FID/KID machinery on CPU in tests and smoke runs.

    Not a perceptual metric (its FID is not comparable with any paper's); it exists so the exact code
    path of the Inception evaluation can run without 100 MB of weights. Deterministic for a seed.

    Args:
        dim: feature size.
        size: images are resized to ``size`` x ``size`` first (like Inception's 299).
        seed: seed of the random weights.
    """

    def __init__(self, dim: int = 16, size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.num_features, self.size = dim, size
        gen = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, dim, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        with torch.no_grad():  # He-style scale: activations stay O(1), like a trained network's
            for p in self.net.parameters():
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5 * (1.0 if p.dim() > 1 else 0.1))
        self.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, dim) float32."""
        x = images.float() / 127.5 - 1.0
        x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                      antialias=True)
        return self.net(x)


@torch.inference_mode()
def extract_features(extractor: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Features (B, d) as float64 on CPU for ``uint8`` images (B, 3, H, W), on the extractor's device."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    device = next((p.device for p in extractor.parameters()), torch.device("cpu"))
    feats = extractor(images.to(device))
    return feats.reshape(images.shape[0], -1).double().cpu()


class _Precomputed(nn.Module):
    """Identity "feature extractor": lets torchmetrics' FID/KID take features computed once."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid_kid(
    real_features: torch.Tensor,
    fake_features: torch.Tensor,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """FID and KID (torchmetrics) between two feature sets (N, d) and (M, d), N, M >= 2.

    KID's subsets are drawn with ``seed`` (torchmetrics uses the global RNG, which we fork), and
    their size is capped at the smaller set (torch-fidelity's default is 1000).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n_real, n_fake = len(real_features), len(fake_features)
    if n_real < 2 or n_fake < 2:
        raise ValueError(f"FID/KID need at least 2 images on each side, got {n_fake} translated, {n_real} reference")
    dim = real_features.shape[1]
    # Both feature sets are complete in this process. Without sync_on_compute=False, torchmetrics
    # all-gathers the states at compute() whenever torch.distributed is initialised, and an
    # evaluation on the main process of a multi-process run would wait forever for the others.
    fid = FrechetInceptionDistance(feature=_Precomputed(dim), sync_on_compute=False)
    fid.update(real_features.double(), real=True)
    fid.update(fake_features.double(), real=False)
    subset = min(kid_subset_size, n_real, n_fake)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Precomputed(dim), subsets=kid_subsets, subset_size=subset,
                                      sync_on_compute=False)
    kid.update(real_features.double(), real=True)
    kid.update(fake_features.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subsets": kid_subsets,
        "kid_subset_size": subset,
    }


def lpips_available() -> tuple[bool, str]:
    """Whether LPIPS (AlexNet) can run without downloading: its torchvision backbone must be cached."""
    try:
        from torchvision.models import AlexNet_Weights
    except ImportError as err:  # pragma: no cover
        return False, f"torchvision has no AlexNet weights enum: {err}"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / AlexNet_Weights.DEFAULT.url.rsplit("/", 1)[1]
    if not cached.is_file():
        return False, (f"LPIPS skipped: the AlexNet backbone weights are not in {cached.parent} "
                       f"(download {AlexNet_Weights.DEFAULT.url} there to enable it)")
    return True, "LPIPS (AlexNet, torchmetrics)"


def paired_metrics(
    outputs: Sequence[torch.Tensor] | torch.Tensor,
    references: Sequence[torch.Tensor] | torch.Tensor,
    *,
    lpips: nn.Module | None = None,
) -> dict[str, list[float]]:
    """Per-image PSNR (dB), SSIM and optionally LPIPS between outputs and their ground truths.

    Args:
        outputs: float images (3, H, W) in [0, 1] (a list, or a batch (B, 3, H, W)).
        references: the matching ground truths, same sizes.
        lpips: a torchmetrics ``LearnedPerceptualImagePatchSimilarity(normalize=True)`` or None.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    result: dict[str, list[float]] = {"psnr": [], "ssim": []}
    if lpips is not None:
        result["lpips"] = []
    for out, ref in zip(outputs, references, strict=True):
        if out.shape != ref.shape:
            raise ValueError(f"paired images differ in size: output {tuple(out.shape)} vs reference {tuple(ref.shape)}")
        o, r = out[None].double(), ref[None].double()
        result["psnr"].append(float(peak_signal_noise_ratio(o, r, data_range=1.0)))
        ssim = structural_similarity_index_measure(o, r, data_range=1.0)
        assert isinstance(ssim, torch.Tensor)  # a tuple only with return_full_image or return_contrast_sensitivity
        result["ssim"].append(float(ssim))
        if lpips is not None:
            with torch.inference_mode():
                result["lpips"].append(float(lpips(o.float(), r.float())))
    return result

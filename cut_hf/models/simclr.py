"""SimCLR: a ResNet encoder f and a projection head g (Chen et al., 2020)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torchvision
from huggingface_hub import ModelCard

from cut_hf.hub.mixin import SIMCLR_CODE_URL, SIMCLR_PAPER_URL, CheckedHubMixin, mixin_kwargs

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
SIMCLR_TAGS = ["simclr", "contrastive-learning", "self-supervised-learning", "image-feature-extraction", "resnet"]


def resnet_encoder(backbone: str = "resnet50", cifar_stem: bool = False) -> tuple[nn.Module, int]:
    """A randomly initialised torchvision ResNet without its classifier, and its feature size.

    Args:
        backbone: torchvision ResNet name; never downloads weights.
        cifar_stem: the paper's CIFAR-10 variant (appendix B.9): the 7x7 stride-2 first conv becomes
            a 3x3 stride-1 conv and the max-pool is removed, so 32 px inputs keep their detail.

    Returns:
        (module mapping (B, 3, H, W) -> (B, D), D): D is 512 for resnet18/34 and 2048 for resnet50+.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    net = getattr(torchvision.models, backbone)(weights=None)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's init
        net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()  # f(x) = h: the average-pooled output of the last stage
    return net, dim


class SimCLR(
    nn.Module,
    CheckedHubMixin,
    **mixin_kwargs("simclr", tags=SIMCLR_TAGS, paper_url=SIMCLR_PAPER_URL, pipeline_tag="image-feature-extraction",
                   code_url=SIMCLR_CODE_URL),
):
    """SimCLR's encoder f (a ResNet, fc removed) and projection head g (Linear -> ReLU -> Linear).

    ``forward(x)`` returns ``(h, z)``: the representation ``h = f(x)`` used downstream (linear
    probe, kNN) and the projection ``z = g(h)`` on which NT-Xent is computed. Inputs are RGB images
    in [0, 1], as produced by :class:`~cut_hf.SimCLRAugment`. All arguments are JSON values, so
    ``save_pretrained`` writes them to ``config.json``.

    Args:
        backbone: ``"resnet50"`` (h of 2048 values, the paper's) or a smaller ResNet such as
            ``"resnet18"`` (512 values) for small runs. Random initialisation, never downloaded.
        proj_dim: size of z (128 in the paper).
        cifar_stem: 3x3 stride-1 first convolution and no max-pool, for 32 px images.
    """

    def __init__(self, backbone: str = "resnet50", proj_dim: int = 128, cifar_stem: bool = False) -> None:
        super().__init__()
        if int(proj_dim) < 1:
            raise ValueError(f"proj_dim must be >= 1, got {proj_dim}")
        self.backbone, self.proj_dim, self.cifar_stem = backbone, int(proj_dim), bool(cifar_stem)
        self.encoder, self.feature_dim = resnet_encoder(backbone, cifar_stem)
        # g: one hidden layer as wide as h (the paper's non-linear head).
        self.projector = nn.Sequential(
            nn.Linear(self.feature_dim, self.feature_dim),
            nn.ReLU(inplace=True),
            nn.Linear(self.feature_dim, self.proj_dim),
        )

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:  # the mixin's, with the architecture
        for key in ("backbone", "proj_dim", "cifar_stem", "feature_dim"):
            kwargs.setdefault(key, getattr(self, key))
        return super().generate_model_card(*args, **kwargs)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """h = f(x): (B, 3, H, W) in [0, 1] -> (B, feature_dim)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images of shape (B, 3, H, W), got {tuple(x.shape)}")
        return self.encoder(x)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """z = g(h): (B, feature_dim) -> (B, proj_dim), not normalised (NT-Xent normalises)."""
        return self.projector(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (h (B, feature_dim), z (B, proj_dim))."""
        h = self.encode(x)
        return h, self.project(h)

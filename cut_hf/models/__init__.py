"""Networks of cut-hf, each an ``nn.Module`` with ``PyTorchModelHubMixin``."""

from .discriminator import PatchDiscriminator
from .generator import CUTGenerator, nce_channels
from .patch_sampler import PatchSampler
from .simclr import SimCLR
from .stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

__all__ = ["CUTGenerator", "PatchDiscriminator", "PatchSampler", "nce_channels", "SimCLR", "StyleGAN2Generator",
           "StyleGAN2Discriminator"]

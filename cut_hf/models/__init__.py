"""Networks of cut-hf, each an ``nn.Module`` with ``PyTorchModelHubMixin``."""

from cut_hf.models.discriminator import PatchDiscriminator
from cut_hf.models.generator import CUTGenerator, nce_channels
from cut_hf.models.patch_sampler import PatchSampler
from cut_hf.models.simclr import SimCLR
from cut_hf.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

__all__ = [
           "CUTGenerator",
           "PatchDiscriminator",
           "PatchSampler",
           "SimCLR",
           "StyleGAN2Discriminator",
           "StyleGAN2Generator",
           "nce_channels",
]

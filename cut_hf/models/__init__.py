"""Networks of cut-hf, each an ``nn.Module`` with ``PyTorchModelHubMixin``."""

from .discriminator import PatchDiscriminator
from .generator import CUTGenerator, nce_channels
from .patch_sampler import PatchSampler
from .simclr import SimCLR

__all__ = ["CUTGenerator", "PatchDiscriminator", "PatchSampler", "nce_channels", "SimCLR"]

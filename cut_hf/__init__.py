"""cut-hf: contrastive unpaired image-to-image translation (CUT, FastCUT, SinCUT) and SimCLR, the Hugging Face way."""

from cut_hf.data.augment import SimCLRAugment
from cut_hf.errors import ModelLoadError
from cut_hf.hub.loading import load_generator
from cut_hf.models import (
    CUTGenerator,
    PatchDiscriminator,
    PatchSampler,
    SimCLR,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    nce_channels,
)
from cut_hf.translation.pipeline import Tiling, TranslationReport, translate, will_tile
from cut_hf.translation.video import VideoReport, translate_video

__version__ = "0.1.0"

__all__ = [
    "CUTGenerator",
    "ModelLoadError",
    "PatchDiscriminator",
    "PatchSampler",
    "SimCLR",
    "SimCLRAugment",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "Tiling",
    "TranslationReport",
    "VideoReport",
    "__version__",
    "load_generator",
    "nce_channels",
    "translate",
    "translate_video",
    "will_tile",
]

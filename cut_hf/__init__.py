"""cut-hf: contrastive unpaired image-to-image translation (CUT, FastCUT) and SimCLR, the Hugging Face way."""

from .augment import SimCLRAugment
from .errors import ModelLoadError
from .loading import load_generator
from .models import CUTGenerator, PatchDiscriminator, PatchSampler, SimCLR, nce_channels
from .pipeline import translate

__version__ = "0.1.0"

__all__ = ["CUTGenerator", "PatchDiscriminator", "PatchSampler", "nce_channels", "SimCLR", "SimCLRAugment", "ModelLoadError",
           "load_generator", "translate", "__version__"]

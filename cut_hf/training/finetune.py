"""``train.py --init-from ID_OR_DIR``: start a CUT / FastCUT run from a published or earlier model.

The source is a Hub id, a ``save_pretrained`` folder or a ``train.py`` output folder. Its generator
is always loaded (strictly); its PatchSampler (F) and discriminator (D) too when it has them
(``sampler/`` and ``discriminator/`` beside the generator, as ``train.py`` writes and pushes them),
else they start fresh. The architecture comes from the source's ``config.json`` files:
:func:`source_flags` gives ``train.py``'s flag values for it, so the run's own record (card,
checkpoints) describes the models it trains.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from cut_hf.errors import ModelLoadError
from cut_hf.hub.files import resolve_model_dir
from cut_hf.hub.mixin import read_config
from cut_hf.models import CUTGenerator, PatchDiscriminator, PatchSampler
from cut_hf.models.generator import generator_class

# train.py flag -> (model, config key, whether the flag is the key's negation)
ARCHITECTURE_FLAGS: dict[str, tuple[str, str, bool]] = {
    "input_nc": ("generator", "input_nc", False), "output_nc": ("generator", "output_nc", False),
    "ngf": ("generator", "ngf", False), "n_blocks": ("generator", "n_blocks", False),
    "norm_g": ("generator", "norm", False), "no_antialias": ("generator", "antialias", True),
    "no_antialias_up": ("generator", "antialias_up", True), "dropout": ("generator", "dropout", False),
    "nce_layers": ("generator", "nce_layers", False), "residual": ("generator", "residual", False),
    "ndf": ("discriminator", "ndf", False), "n_layers_d": ("discriminator", "n_layers", False),
    "norm_d": ("discriminator", "norm", False), "netf_nc": ("sampler", "nc", False),
}


class InitFromError(ModelLoadError):
    """The ``--init-from`` source cannot start this run; the message says why, in one line."""


def source_folders(init_from: str) -> dict[str, Path]:
    """{"generator": folder, and "sampler" / "discriminator" where the source has them}.

    Raises :class:`~cut_hf.errors.ModelLoadError` when the generator cannot be found or fetched.
    """
    generator = resolve_model_dir(init_from, fallback_subfolder=CUTGenerator.output_subfolder)
    folders = {"generator": generator}
    local = Path(init_from).expanduser()
    for sub in ("sampler", "discriminator"):
        if local.is_dir():  # a train.py output folder (beside generator/) or a Hub-layout folder (inside it)
            found = next((d for d in (local / sub, generator / sub) if (d / "config.json").is_file()), None)
            if found is not None:
                folders[sub] = found
            continue
        with contextlib.suppress(ModelLoadError):  # a repository of the generator alone: F / D start fresh
            folders[sub] = resolve_model_dir(init_from, sub)
    return folders


def source_flags(folders: dict[str, Path]) -> dict[str, Any]:
    """``train.py``'s architecture flag values that describe the source's models."""
    configs = {name: read_config(folder) for name, folder in folders.items()}
    if generator_class(configs["generator"]) is not CUTGenerator:
        raise InitFromError(f"--init-from {str(folders['generator'])!r} is a SinCUT (StyleGAN2) generator; "
                            "--init-from starts CUT / FastCUT runs")
    flags: dict[str, Any] = {}
    for flag, (model, key, negated) in ARCHITECTURE_FLAGS.items():
        if model in configs and key in configs[model]:
            value = configs[model][key]
            flags[flag] = (not value) if negated else tuple(value) if isinstance(value, list) else value
    return flags


def load_source_models(folders: dict[str, Path], fast_ops: bool, num_patches: int,
                       ) -> tuple[CUTGenerator, PatchDiscriminator | None, PatchSampler | None]:
    """G (and D, F where the source has them), loaded strictly, in training mode."""
    generator = CUTGenerator.from_pretrained(folders["generator"], fast_ops=fast_ops).train()
    discriminator = (PatchDiscriminator.from_pretrained(folders["discriminator"]).train()
                     if "discriminator" in folders else None)
    sampler = None
    if "sampler" in folders:
        sampler = PatchSampler.from_pretrained(folders["sampler"], num_patches=num_patches).train()
        if sampler.in_channels != generator.feature_channels():
            raise InitFromError(f"the sampler in {str(folders['sampler'])!r} takes channels {sampler.in_channels}, "
                                f"the generator's PatchNCE layers give {generator.feature_channels()}")
    return generator, discriminator, sampler

"""SinCUT in the training runtime: the two single images as data, the StyleGAN2 networks, and the task.

``train.py --mode sincut`` runs the CUT runtime (:class:`~cut_hf.training.tasks.cut.CUTTask`) with
three things swapped, each built here from :class:`SinCUTTrainConfig` (CUT's configuration and
SinCUT's own settings):

* data: zoom-and-patch crops of one image per domain (:mod:`cut_hf.data.single_image`) instead of
  unpaired folders; an epoch is ``epoch_crops`` crops;
* models: :class:`~cut_hf.StyleGAN2Generator` and :class:`~cut_hf.StyleGAN2Discriminator` (their
  widths follow ``crop_size``, so it joins the settings a resumed run must share);
* the task: :class:`SinCUTTask`, whose checkpoints only resume SinCUT runs and whose outputs carry
  a SinCUT model card. The objective is :class:`~cut_hf.objectives.sincut.SinCUTObjective`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from cut_hf.data.single_image import SingleImageDataset, SingleImageSampler, ZoomAndPatch, load_single_images
from cut_hf.models import PatchSampler, StyleGAN2Discriminator, StyleGAN2Generator
from cut_hf.objectives.cut import CUTObjective, CUTObjectiveConfig
from cut_hf.objectives.sincut import SinCUTConfig, SinCUTObjectiveConfig
from cut_hf.training.runtime import ConfigError, fixed
from cut_hf.training.tasks.cut import CUTTask, CUTTrainConfig, write_model_folders


@dataclass(frozen=True, kw_only=True)
class SinCUTTrainConfig(CUTTrainConfig):
    """:class:`~cut_hf.training.tasks.cut.CUTTrainConfig` and the flags only ``--mode sincut``
    takes (defaults: :class:`~cut_hf.objectives.sincut.SinCUTConfig`, the paper's ``--model sincut``).

    Attributes:
        image_a, image_b: the one image of each domain (or ``data_dir`` with one image in trainA/
            and trainB/).
        random_scale_max: each crop's image is zoomed out by up to this factor.
        epoch_crops: crops in one epoch.
        num_downsampling: stride-2 stages of the StyleGAN2 generator (fixes its shapes).
        lambda_r1: weight of the R1 penalty on real B.
        crop_size: as CUT's, but it also sets the StyleGAN2 networks' widths (fixes their shapes).
    """

    image_a: str | None = None
    image_b: str | None = None
    random_scale_max: float = SinCUTConfig.random_scale_max
    epoch_crops: int = SinCUTConfig.epoch_crops
    num_downsampling: int = fixed()
    lambda_r1: float = SinCUTConfig.lambda_r1
    crop_size: int = fixed()

    objective_config: ClassVar[type[CUTObjectiveConfig]] = SinCUTObjectiveConfig


def sincut_flag_defaults() -> dict[str, Any]:
    """``train.py``'s flag values for ``--mode sincut``: :class:`~cut_hf.objectives.sincut.SinCUTConfig`
    (the paper's ``--model sincut``) under the flags' names, plus the StyleGAN2 generator's 6 blocks.

    Channels-last stays off: ``perf.channels_last_`` converts whole modules, and the modulated
    convolution's official 5-D weight (1, out, in, k, k) has no channels-last layout.
    """
    values = asdict(SinCUTConfig())
    values["beta1"], values["beta2"] = values.pop("betas")
    values["nce_t"] = values.pop("nce_temperature")
    values["nce_layers"] = ",".join(map(str, values["nce_layers"]))
    return {**values, "n_blocks": 6, "channels_last": False}


def build_sincut_models(c: SinCUTTrainConfig) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator, PatchSampler]:
    """SinCUT's G, D and F (the PatchSampler's MLPs built for G's ``nce_layers``).

    Raises :class:`~cut_hf.training.runtime.ConfigError` for a crop size that is not a power of two
    (D judges exactly ``2 ** round(log2(crop_size))`` px crops) and for settings G refuses."""
    if c.crop_size & (c.crop_size - 1) or c.crop_size < 8:
        raise ConfigError(f"--mode sincut needs a power-of-two --crop-size >= 8 (D judges whole crops), "
                          f"got {c.crop_size}")
    try:
        generator = StyleGAN2Generator(input_nc=c.input_nc, output_nc=c.output_nc, ngf=c.ngf, n_blocks=c.n_blocks,
                                       num_downsampling=c.num_downsampling, crop_size=c.crop_size,
                                       nce_layers=list(c.nce_layers))
    except ValueError as err:  # e.g. --nce-layers beyond a shallow encoder (--n-blocks)
        raise ConfigError(f"--mode sincut: {err}") from err
    discriminator = StyleGAN2Discriminator(input_nc=c.output_nc, ndf=c.ndf, crop_size=c.crop_size)
    sampler = PatchSampler.for_generator(generator, num_patches=c.num_patches, nc=c.netf_nc)
    return generator, discriminator, sampler


def single_image_data(c: SinCUTTrainConfig, num_processes: int, rank: int) -> tuple[SingleImageDataset,
                                                                                 SingleImageSampler, str]:
    """The two images' crops, their sampler for process ``rank``, and a line about them.

    Raises :class:`~cut_hf.data.sources.DataError` when the images are missing or unreadable, when
    ``--data-dir`` does not hold exactly one image per domain, or when the crop does not fit.
    """
    image_a, image_b = load_single_images(c.image_a, c.image_b, c.data_dir)
    geometry = ZoomAndPatch(c.crop_size, c.random_scale_max, not c.no_flip)
    dataset = SingleImageDataset(image_a, image_b, c.batch_size, geometry, seed=c.seed, channels_a=c.input_nc,
                                 channels_b=c.output_nc)
    sampler = SingleImageSampler(c.batch_size, num_processes, rank, seed=c.seed, epoch_crops=c.epoch_crops)
    sizes = [f"`{name}` ({img.width}x{img.height})" for img, name in zip(dataset.images, dataset.names, strict=True)]
    return dataset, sampler, f"A {sizes[0]}, B {sizes[1]}; {c.crop_size} px zoom-and-patch crops"


class SinCUTTask(CUTTask):
    """:class:`~cut_hf.training.tasks.cut.CUTTask` for SinCUT: its own checkpoint kind and outputs
    with a SinCUT card. No evaluation while training (there is no test folder: the model is for its
    one image)."""

    name = "sincut"
    config: SinCUTTrainConfig

    def save(self, summary: dict[str, Any], grid: torch.Tensor | None) -> None:
        save_sincut_outputs(self.config, self.objective, summary, grid)


def image_names(c: SinCUTTrainConfig) -> tuple[str, str]:
    """The file names of the two images (the labels' defaults): from the flags, without reading them."""
    if c.image_a and c.image_b:
        return Path(c.image_a).name, Path(c.image_b).name
    (_, name_a), (_, name_b) = load_single_images(data_dir=c.data_dir)
    return name_a, name_b


def save_sincut_outputs(c: SinCUTTrainConfig, objective: CUTObjective, summary: dict[str, Any],
                        grid: torch.Tensor | None) -> Path:
    """Write OUTPUT/generator (SinCUT card and sample grid), OUTPUT/sampler, OUTPUT/discriminator."""
    file_a, file_b = image_names(c)
    name_a, name_b = c.label_a or Path(file_a).stem, c.label_b or Path(file_b).stem
    training = {
        "mode": "SinCUT (one image per domain)",
        "data": f"image A `{file_a}`, image B `{file_b}`",
        "steps": summary["step"],
        "epochs completed": f"{summary['epoch']} (of {c.epoch_crops} crops each)",
        "crops": f"{c.crop_size} px, zoom 1/{c.random_scale_max:g} to 1 per minibatch, flips {not c.no_flip}",
        "batch size": f"{c.batch_size} x {summary['num_processes']} process(es)",
        "precision": c.mixed_precision if c.mixed_precision != "no" else "fp32",
        "learning rate": f"{c.lr} (Adam betas {c.beta1}, {c.beta2}); {c.n_epochs} + {c.n_epochs_decay} epochs",
        "networks": f"StyleGAN2 G (ngf {c.ngf}, {c.n_blocks} blocks, {c.num_downsampling} downsampling), "
                    f"StyleGAN2 D (ndf {c.ndf})",
        "lambda GAN / NCE / R1 / identity": f"{c.lambda_gan} / {c.lambda_nce} / {c.lambda_r1} / {c.lambda_identity}",
        "NCE identity loss": c.nce_idt,
        "NCE layers / patches / T": f"{','.join(map(str, c.nce_layers))} / {c.num_patches} / {c.nce_t}",
        "GAN loss": c.gan_mode,
        "seed": c.seed,
    }
    window = summary["loss_window"]
    card = dict(
        model_name=f"SinCUT {name_a} → {name_b}", domain_a=name_a, domain_b=name_b,
        losses={f"{k} (mean of last {window} steps)": f"{v:.4f}" for k, v in summary["final_losses"].items()},
        description=(f"Trained with cut-hf's `train.py --mode sincut` for {summary['step']} steps on crops of "
                     f"two images, `{file_a}` and `{file_b}`: it translates images like the first into the "
                     "style of the second (best on the first image itself)."
                     + (" The run ended early (--max-steps): this is not a fully trained model."
                        if summary["stopped_early"] else "")),
        training=training,
        provenance=f"Trained from scratch with:\n\n```bash\n{c.command}\n```",
        sample_image="samples.png" if grid is not None else None,
        repo_id=c.hub_model_id,
    )
    return write_model_folders(Path(c.output_dir), objective, card, grid)

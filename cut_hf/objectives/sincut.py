"""SinCUT (the paper's single-image translation): its settings and the two loss terms it adds to CUT.

SinCUT is CUT with a StyleGAN2 generator and discriminator, the non-saturating GAN loss, an R1
penalty on real B for the discriminator and an identity L1 loss G(B) vs B for the generator,
PatchNCE with one patch per crop and layer whose negatives are the other crops of the minibatch,
trained on zoom-and-patch crops of two single images (:mod:`cut_hf.data.single_image`).

The step, as the official ``SinCUTModel`` orders it: G translates ``cat(real_A, real_B)`` (fake_B
and idt_B); D's loss is ``(GAN(D(fake_B.detach()), fake) + GAN(D(real_B), real)) / 2 +
r1_penalty(D(real_B), real_B)`` with ``real_B.requires_grad_()`` set before D sees it; G's loss
is ``GAN(D(fake_B), real) + (NCE(real_A, fake_B) + NCE(real_B, idt_B)) / 2 +
identity_loss(idt_B, real_B)``, each NCE the mean over layers of ``lambda_nce`` x PatchNCE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cut_hf.objectives.cut import CUTObjective, CUTObjectiveConfig
from cut_hf.objectives.losses import gan_loss


@dataclass(frozen=True)
class SinCUTConfig:
    """The defaults of the official ``--model sincut`` (``models/sincut_model.py`` and the options it
    inherits from ``cut_model.py``), one field per setting.

    ``load_size`` only sets the networks' widths through ``min(load_size, crop_size)``: zoom-and-patch
    never resizes to it. An epoch is ``epoch_crops`` crops; the learning rate is constant for
    ``n_epochs`` and decays linearly to zero over ``n_epochs_decay``.
    """

    gan_mode: str = "nonsaturating"
    lambda_gan: float = 1.0
    lambda_r1: float = 1.0
    lambda_identity: float = 1.0
    lambda_nce: float = 4.0
    nce_layers: tuple[int, ...] = (0, 2, 4)
    num_patches: int = 1
    nce_negatives_from_batch: bool = True  # the official nce_includes_all_negatives_from_minibatch
    nce_idt: bool = True
    nce_temperature: float = 0.07
    netf_nc: int = 256
    flip_equivariance: bool = False
    ngf: int = 10
    ndf: int = 8
    num_downsampling: int = 1
    lr: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    batch_size: int = 16
    crop_size: int = 64
    load_size: int = 1024
    random_scale_max: float = 3.0
    epoch_crops: int = 100_000
    n_epochs: int = 8
    n_epochs_decay: int = 8


def r1_penalty(real_pred: torch.Tensor, real: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """R1 gradient penalty ``0.5 * weight * E_batch ||d sum(D(real)) / d real||^2``.

    As the official ``R1_loss``: the gradient of the *summed* logits with respect to the real
    images, squared and summed over each image's pixels and channels, averaged over the batch,
    times ``weight / 2``. The graph is kept (``create_graph``) so that the penalty trains D.

    Args:
        real_pred: D's logits for ``real``, any shape with the batch first.
        real: the real images (B, C, H, W); must have ``requires_grad`` set before D saw them.
        weight: lambda_R1 (1.0 in SinCUT).
    """
    if not real.requires_grad:
        raise ValueError("r1_penalty needs real.requires_grad_() before the discriminator's forward")
    (grad,) = torch.autograd.grad(real_pred.sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean() * (0.5 * weight)


@dataclass(frozen=True)
class SinCUTObjectiveConfig(CUTObjectiveConfig):
    """:class:`~cut_hf.objectives.cut.CUTObjectiveConfig` with SinCUT's defaults (from :class:`SinCUTConfig`,
    the identity L1 on) and its R1 weight.

    Attributes:
        lambda_r1: weight of the R1 penalty on real B in D's loss (0: none).
    """

    lambda_nce: float = SinCUTConfig.lambda_nce
    gan_mode: str = SinCUTConfig.gan_mode
    num_patches: int = SinCUTConfig.num_patches
    # One patch per crop and layer: the negatives must be the other crops' patches. Each of NCE and
    # NCE_Y is computed on its own crops (as the official calculate_NCE_loss), never on cat(A, B).
    nce_negatives_from_batch: bool = SinCUTConfig.nce_negatives_from_batch
    lambda_r1: float = SinCUTConfig.lambda_r1
    lambda_identity: float = SinCUTConfig.lambda_identity


class SinCUTObjective(CUTObjective):
    """CUT's step with SinCUT's two extra terms, as the official ``SinCUTModel``.

    D's loss gains ``D_R1`` (:func:`r1_penalty` of D's logits for real B, which must therefore be
    computed on a copy of real B that requires grad, with the graph kept); G's loss gains ``idt``
    (:func:`~cut_hf.objectives.losses.identity_loss`, which :class:`~cut_hf.objectives.cut.CUTObjective` adds
    for any ``lambda_identity`` above 0; SinCUT's config sets it to 1). Everything else (forward on
    cat(A, B), PatchNCE, the order of the updates) is :class:`~cut_hf.objectives.cut.CUTObjective`'s.

    Under DistributedDataParallel the penalty's ``autograd.grad`` asks only for the input's gradient,
    so no parameter gradient (and no DDP all-reduce hook) fires there; D's parameters get their
    gradients, R1's second-order part included, in the one ``backward`` of the total loss, where
    DDP averages them once, as for CUT's two D passes.
    """

    config: SinCUTObjectiveConfig

    def discriminator_loss(
        self, fake_b: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(D_fake + D_real) / 2 + D_R1, the official ``compute_D_loss`` of SinCUT."""
        cfg = self.config
        loss_fake = gan_loss(self.net_d(fake_b.detach()), False, cfg.gan_mode)
        real = real_b.detach().requires_grad_(cfg.lambda_r1 > 0)  # (B, C, H, W): R1 differentiates w.r.t. it
        pred_real = self.net_d(real)  # (B, 1)
        loss_real = gan_loss(pred_real, True, cfg.gan_mode)
        terms = {"D_fake": loss_fake, "D_real": loss_real}
        loss = (loss_fake + loss_real) * 0.5
        if cfg.lambda_r1 > 0:
            terms["D_R1"] = r1_penalty(pred_real, real, cfg.lambda_r1)
            loss = loss + terms["D_R1"]
        return loss, terms


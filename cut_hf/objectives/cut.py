"""The CUT / FastCUT objective (Park et al., ECCV 2020): the losses and order of one training step.

Step for step the paper's code (``models/cut_model.py`` of taesungp/contrastive-unpaired-translation):
the generator's forward pass (with the identity images and FastCUT's random flip), the
discriminator step, then one step of the generator and the PatchSampler's MLPs. Two changes do not
alter it: the PatchNCE keys reuse the features of the forward pass (``reuse_features``), and G and F
share one optimiser (two parameter groups) so that a single fp16 GradScaler scales them correctly.

A variant is a subclass: it may widen :class:`CUTObjectiveConfig`, and override
:meth:`CUTObjective.discriminator_loss` / :meth:`CUTObjective.generator_loss` by calling ``super()``
and adding its terms (SinCUT adds an R1 penalty to the first; its identity L1 is an option of every mode here).
The generator's ``nce_layers`` is the one list of PatchNCE layers; the objective never keeps its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from cut_hf.models import CUTGenerator, PatchDiscriminator, PatchSampler
from cut_hf.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from cut_hf.objectives.losses import GAN_MODES, gan_loss, identity_loss, patch_nce_loss

#: The networks a CUT-style step trains: CUT's, or SinCUT's StyleGAN2 pair (:mod:`cut_hf.objectives.sincut`).
Generator = CUTGenerator | StyleGAN2Generator
Discriminator = PatchDiscriminator | StyleGAN2Discriminator


@dataclass(frozen=True)
class CUTObjectiveConfig:
    """What the losses of a step depend on (the ``objective`` flags of ``train.py``).

    Attributes:
        lambda_gan: weight of the generator's GAN loss (0: none).
        lambda_nce: weight of PatchNCE (CUT 1, FastCUT 10; 0: none).
        nce_idt: the PatchNCE identity loss on domain B images (CUT).
        flip_equivariance: FastCUT's random horizontal flip of the generator's input.
        gan_mode: ``lsgan``, ``vanilla`` or ``nonsaturating``.
        nce_t: PatchNCE temperature.
        num_patches: patches per layer and image.
        nce_negatives_from_batch: negatives from every image of the batch, not only the same one.
        reuse_features: PatchNCE keys from the forward pass instead of a second encoder pass.
        lambda_identity: weight of the identity L1 ``|G(B) - B|`` (0 in the paper's CUT and FastCUT;
            SinCUT's 1; CycleGAN's option for keeping colours and backgrounds). Needs ``nce_idt``,
            which makes the forward pass translate B.
    """

    lambda_gan: float = 1.0
    lambda_nce: float = 1.0
    nce_idt: bool = True
    flip_equivariance: bool = False
    gan_mode: str = "lsgan"
    nce_t: float = 0.07
    num_patches: int = 256
    nce_negatives_from_batch: bool = False
    reuse_features: bool = True
    lambda_identity: float = 0.0

    def __post_init__(self) -> None:
        if self.gan_mode not in GAN_MODES:
            raise ValueError(f"gan_mode must be one of {GAN_MODES}, got {self.gan_mode!r}")
        if self.lambda_identity > 0 and not self.nce_idt:
            raise ValueError("the identity loss translates real B: it needs nce_idt (G runs on cat(A, B))")


class GeneratorWithFeatures(nn.Module):
    """The generator as DistributedDataParallel sees it: one forward, translation and features.

    DDP synchronises gradients only for passes made through its ``forward``; this wrapper makes
    the pass that also yields the PatchNCE features (``forward_with_features``) that forward.
    Its state dict is the generator's with a ``generator.`` prefix (checkpoint files keep it).
    """

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.generator.forward_with_features(x)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def build_optimizers(generator: nn.Module, discriminator: nn.Module, sampler: nn.Module, lr: float,
                     betas: tuple[float, float]) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam for G and F together (two parameter groups: one fp16 GradScaler step), Adam for D."""
    opt_g = torch.optim.Adam([{"params": list(generator.parameters()), "name": "G"},
                              {"params": list(sampler.parameters()), "name": "F"}], lr=lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    return opt_g, opt_d


class CUTObjective:
    """G, D and F with the CUT losses and the paper's order of a training step.

    ``net_g``, ``net_d`` and ``net_f`` are what the step calls: Accelerate's prepared (possibly
    DDP-wrapped) G, D and F when built by :meth:`prepared`, else the plain ones. ``generator``,
    ``discriminator`` and ``sampler`` are always the plain modules (saved, evaluated and frozen).

    A subclass (SinCUT) overrides :meth:`discriminator_loss` / :meth:`generator_loss`, calls
    ``super()`` and adds its terms to the loss and to the returned dict (logged by name).
    """

    def __init__(self, generator: Generator, discriminator: Discriminator, sampler: PatchSampler,
                 config: CUTObjectiveConfig, wrapped: tuple[nn.Module, nn.Module, nn.Module] | None = None) -> None:
        self.generator, self.discriminator, self.sampler = generator, discriminator, sampler
        self.config = config
        self.net_g, self.net_d, self.net_f = wrapped or (GeneratorWithFeatures(generator), discriminator, sampler)
        self.last: dict[str, Any] | None = None  # the latest forward pass's images (sample grids)

    @classmethod
    def prepared(cls, accelerator: Any, generator: Generator, discriminator: Discriminator,
                 sampler: PatchSampler, config: CUTObjectiveConfig, *others: Any) -> tuple[CUTObjective, list[Any]]:
        """``accelerator.prepare`` G (as :class:`GeneratorWithFeatures`), D, F and ``others`` (optimisers,
        schedulers) in one call, in the order every checkpoint was written with (``model``,
        ``model_1``, ``model_2``, ``optimizer``, ...). Returns the objective and the prepared ``others``."""
        g, d, f, *rest = accelerator.prepare(GeneratorWithFeatures(generator), discriminator, sampler, *others)
        return cls(generator, discriminator, sampler, config, wrapped=(g, d, f)), rest

    # -- the losses
    def forward(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, Any]:
        """The official ``forward()``: G on cat(real_A, real_B) with the identity loss, flipped at random
        for FastCUT's flip equivariance. Also returns the features of that pass (PatchNCE keys)."""
        cfg = self.config
        real = torch.cat([real_a, real_b]) if cfg.nce_idt else real_a  # (2B or B, C, H, W)
        flipped = bool(cfg.flip_equivariance) and bool(torch.rand(()) < 0.5)
        if flipped:
            real = torch.flip(real, [3])
        fake, feats = self.net_g(real)
        n = real_a.shape[0]
        return {"fake_B": fake[:n], "idt_B": fake[n:] if cfg.nce_idt else None, "feats": feats, "flipped": flipped}

    def discriminator_loss(
        self, fake_b: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(D_fake + D_real) / 2, with the fake detached so that no gradient reaches G."""
        loss_fake = gan_loss(self.net_d(fake_b.detach()), False, self.config.gan_mode)
        loss_real = gan_loss(self.net_d(real_b), True, self.config.gan_mode)
        return (loss_fake + loss_real) * 0.5, {"D_fake": loss_fake, "D_real": loss_real}

    def nce_loss(self, src: torch.Tensor, tgt: torch.Tensor, flipped: bool = False,
                 feat_k: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The official ``calculate_NCE_loss(src, tgt)``, weighted by lambda_NCE and averaged over layers.

        Queries are G's features of the translation ``tgt`` (flipped back when the input was flipped);
        keys are G's features of the source ``src`` at the same sampled locations. ``feat_k`` are those
        key features if already computed (the forward pass's); otherwise a second encoder pass makes
        them. Keys carry no gradient (the loss detaches them), so they are built without a graph.
        """
        cfg = self.config
        feat_q = self.generator.encode(tgt)  # list of (B, C_l, H_l, W_l), at the generator's nce_layers
        if flipped:
            feat_q = [torch.flip(f, [3]) for f in feat_q]
        with torch.no_grad():
            if feat_k is None:
                feat_k = self.generator.encode(src)
            k_pool, patch_ids = self.sampler([f.detach() for f in feat_k], cfg.num_patches)  # (B*S, nc) each
        q_pool, _ = self.net_f(feat_q, cfg.num_patches, patch_ids)  # same locations, through DDP for F's grads
        terms = [patch_nce_loss(f_q, f_k, cfg.nce_t, batch_size=src.shape[0],
                                negatives_from_batch=cfg.nce_negatives_from_batch) * cfg.lambda_nce
                 for f_q, f_k in zip(q_pool, k_pool, strict=True)]
        # added one by one, in layer order, as the paper's code does (0.0 + first term is the first term)
        return sum(terms[1:], terms[0]) / len(self.generator.nce_layers)

    def generator_loss(self, real_a: torch.Tensor, real_b: torch.Tensor,
                       out: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G_GAN + NCE, or G_GAN + (NCE + NCE_Y) / 2 with the NCE identity loss, as the official compute_G_loss;
        plus ``idt`` = lambda_identity x L1(G(B), B) when that weight is set (SinCUT's term)."""
        cfg = self.config
        terms: dict[str, torch.Tensor] = {}
        zero = real_a.new_zeros(())
        loss_gan = zero
        if cfg.lambda_gan > 0:
            # D's plain module: its parameters are frozen here and its DDP wrapper must not expect grads.
            loss_gan = gan_loss(self.discriminator(out["fake_B"]), True, cfg.gan_mode) * cfg.lambda_gan
            terms["G_GAN"] = loss_gan
        loss_nce = zero
        if cfg.lambda_nce > 0:
            # The forward pass saw exactly real_A (and real_B) unless it flipped them: reuse its features then.
            reuse = cfg.reuse_features and not out["flipped"]
            n = real_a.shape[0]
            keys_a = [f[:n] for f in out["feats"]] if reuse else None
            terms["NCE"] = self.nce_loss(real_a, out["fake_B"], out["flipped"], keys_a)
            loss_nce = terms["NCE"]
            if cfg.nce_idt:
                keys_b = [f[n:] for f in out["feats"]] if reuse else None
                terms["NCE_Y"] = self.nce_loss(real_b, out["idt_B"], out["flipped"], keys_b)
                loss_nce = (terms["NCE"] + terms["NCE_Y"]) * 0.5
        loss = loss_gan + loss_nce
        if cfg.lambda_identity > 0:
            terms["idt"] = identity_loss(out["idt_B"], real_b, cfg.lambda_identity)
            loss = loss + terms["idt"]
        return loss, terms

    # -- the step
    def training_step(self, batch: dict[str, torch.Tensor], optimizers: tuple[Any, Any],
                      accelerator: Any) -> dict[str, torch.Tensor]:
        """One CUT step, the official ``optimize_parameters``: forward, D step, then G+F step.

        Returns the detached loss terms (D_fake, D_real, G_GAN, NCE[, NCE_Y]) as 0-d tensors, so the
        caller reduces them across processes in one call, and ``skipped_D`` / ``skipped_G`` (1.0
        when fp16's GradScaler skipped that optimiser's step). The images are kept in :attr:`last`.
        """
        opt_g, opt_d = optimizers
        real_a = batch["A"].to(accelerator.device, non_blocking=True)  # (B, C, H, W) in [-1, 1]
        real_b = batch["B"].to(accelerator.device, non_blocking=True)
        with accelerator.autocast():
            out = self.forward(real_a, real_b)

        # D step: fake detached, D trainable.
        set_requires_grad(self.discriminator, True)
        opt_d.zero_grad(set_to_none=True)
        with accelerator.autocast():
            loss_d, d_terms = self.discriminator_loss(out["fake_B"], real_b)
        accelerator.backward(loss_d)
        opt_d.step()

        # G and F step: D frozen (it receives no gradients).
        set_requires_grad(self.discriminator, False)
        opt_g.zero_grad(set_to_none=True)
        with accelerator.autocast():
            loss_g, g_terms = self.generator_loss(real_a, real_b, out)
        accelerator.backward(loss_g)
        opt_g.step()
        set_requires_grad(self.discriminator, True)

        self.last = out
        losses = {k: v.detach().float() for k, v in {**d_terms, **g_terms}.items()}
        losses["skipped_D"] = torch.tensor(float(opt_d.step_was_skipped), device=real_a.device)
        losses["skipped_G"] = torch.tensor(float(opt_g.step_was_skipped), device=real_a.device)
        return losses

    def sample_columns(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """real_A | fake_B | real_B | idt_B (no idt_B without the identity loss) of the latest step."""
        out = self.last
        if out is None:
            raise RuntimeError("sample_columns needs a training step first")
        return [batch["A"], out["fake_B"], batch["B"]] + ([out["idt_B"]] if out["idt_B"] is not None else [])

"""SinCUT's loss terms against their formulas and the official code, and its PatchNCE setting."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cut_hf import StyleGAN2Discriminator
from cut_hf.objectives.losses import patch_nce_loss
from cut_hf.objectives.losses import identity_loss
from cut_hf.objectives.sincut import SinCUTConfig, r1_penalty
from tests.reference.official import PatchNCELoss, patchnce_opt
from tests.reference.official_sincut import r1_loss


def test_r1_matches_its_formula_on_a_quadratic_critic():
    # D(x) = sum(w * x^2) per image: dD/dx = 2 w x, so R1 = 0.5 * lambda * mean_b sum (2 w x)^2.
    torch.manual_seed(0)
    w = torch.rand(3, 4, 5)
    real = torch.randn(2, 3, 4, 5, requires_grad=True)
    pred = (w * real.pow(2)).flatten(1).sum(1, keepdim=True)  # (B, 1)
    expected = 0.5 * 2.5 * (2 * w * real.detach()).pow(2).flatten(1).sum(1).mean()
    assert torch.allclose(r1_penalty(pred, real, weight=2.5), expected)


def test_r1_equals_the_official_and_trains_the_discriminator():
    torch.manual_seed(0)
    d = StyleGAN2Discriminator(ndf=4, crop_size=16)
    real = (torch.rand(3, 3, 16, 16) * 2 - 1).requires_grad_()
    pred = d(real)
    ours = r1_penalty(pred, real)
    assert torch.allclose(ours, r1_loss(pred, real), rtol=1e-6)
    ours.backward()  # second-order: the penalty reaches D's weights
    assert d.convs[0][0].weight.grad is not None and d.convs[0][0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(pred, real.detach())


def test_identity_is_the_weighted_mean_absolute_error():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert torch.allclose(identity_loss(a, b, weight=0.5), 0.5 * (a - b).abs().mean())


def test_config_has_the_official_sincut_defaults():
    c = SinCUTConfig()
    assert (c.gan_mode, c.lambda_r1, c.lambda_identity, c.lambda_nce, c.nce_layers, c.num_patches) == (
        "nonsaturating", 1.0, 1.0, 4.0, (0, 2, 4), 1)
    assert c.nce_negatives_from_batch and c.nce_idt and not c.flip_equivariance
    assert (c.lr, c.betas, c.batch_size, c.crop_size, c.load_size) == (0.002, (0.0, 0.99), 16, 64, 1024)
    assert (c.ngf, c.ndf, c.num_downsampling, c.n_epochs, c.n_epochs_decay, c.epoch_crops) == (10, 8, 1, 8, 8, 100_000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.lr = 0.1  # type: ignore[misc]


def test_patch_nce_with_negatives_from_the_minibatch_is_the_official_sincut_setting():
    # One patch per crop: 8 crops give 8 query/key pairs, each with the 7 other crops as negatives.
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    k = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    official = PatchNCELoss(patchnce_opt(batch_size=8, all_negatives=True))(q, k).mean()
    assert torch.allclose(patch_nce_loss(q, k, negatives_from_batch=True), official)
    # G(cat(A, B)) in one pass: groups of the two halves equal the official separate NCE and NCE_Y.
    q2, k2 = torch.cat([q, q.flip(0)]), torch.cat([k, k.roll(1, 0)])
    halves = 0.5 * (patch_nce_loss(q2[:8], k2[:8], negatives_from_batch=True)
                    + patch_nce_loss(q2[8:], k2[8:], negatives_from_batch=True))
    assert torch.allclose(patch_nce_loss(q2, k2, batch_size=2), halves)

"""Losses against slow loop-by-loop references written from the papers, the official code, and
known values; precision under bf16/fp16; errors for bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cut_hf.objectives.losses import gan_loss, info_nce, nt_xent_loss, patch_nce_loss
from tests.reference.official import GANLoss, PatchNCELoss, patchnce_opt


def unit(*shape, seed=0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# --- slow references, one anchor at a time, in float64 ------------------------------------------
def patch_nce_loop(q: torch.Tensor, k: torch.Tensor, batch_size: int, tau: float, from_batch: bool) -> float:
    """CUT eq. (2)/(3): for query patch i, -log( e^{q_i.k_i/tau} / (e^{q_i.k_i/tau} + sum_neg e^{q_i.k_j/tau}) ),
    negatives = the other patches of the same image (or of the whole batch), averaged over queries."""
    q, k = q.double(), k.double()
    n = q.shape[0]
    s = n // batch_size
    total = 0.0
    for i in range(n):
        image = i // s
        negatives = [j for j in range(n) if j != i and (from_batch or j // s == image)]
        pos = math.exp(float(q[i] @ k[i]) / tau)
        neg = sum(math.exp(float(q[i] @ k[j]) / tau) for j in negatives)
        total += -math.log(pos / (pos + neg))
    return total / n


def nt_xent_loop(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> float:
    """SimCLR Algorithm 1: views 2k-1, 2k of each image; l(i,j) = -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t);
    L = 1/2N sum_k [l(2k-1, 2k) + l(2k, 2k-1)]."""
    views = []
    for a, b in zip(z_a.double(), z_b.double()):
        views += [a, b]  # the paper's interleaved order: 2k-1 and 2k are the two views of image k
    m = len(views)

    def sim(u, v):
        return float(u @ v / (u.norm() * v.norm()))

    def l(i, j):
        den = sum(math.exp(sim(views[i], views[t]) / tau) for t in range(m) if t != i)
        return -math.log(math.exp(sim(views[i], views[j]) / tau) / den)

    return sum(l(2 * k, 2 * k + 1) + l(2 * k + 1, 2 * k) for k in range(m // 2)) / m


def nt_xent_anchor_terms(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> list[float]:
    """The loss l(i, positive of i) of each of the 2N views as an anchor, views 0..N-1 then N..2N-1 (z_a then z_b)."""
    views = list(z_a.double()) + list(z_b.double())
    m, n = len(views), len(views) // 2

    def sim(u, v):
        return float(u @ v / (u.norm() * v.norm()))

    terms = []
    for i in range(m):
        den = sum(math.exp(sim(views[i], views[t]) / tau) for t in range(m) if t != i)
        terms.append(-math.log(math.exp(sim(views[i], views[(i + n) % m]) / tau) / den))
    return terms


# --- PatchNCE ---------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size, from_batch", [(1, False), (3, False), (3, True)])
def test_patch_nce_equals_the_paper_loop_and_the_official_loss(batch_size, from_batch):
    s, d, tau = 12, 16, 0.07
    q, k = unit(batch_size * s, d, seed=1), unit(batch_size * s, d, seed=2)
    k = F.normalize(k + 2 * q, dim=1)  # positives more similar than negatives, like a trained model
    ours = patch_nce_loss(q, k, tau, batch_size=batch_size, negatives_from_batch=from_batch)
    assert ours.dtype == torch.float32 and ours.dim() == 0
    assert ours.item() == pytest.approx(patch_nce_loop(q, k, batch_size, tau, from_batch), abs=1e-5)
    official = PatchNCELoss(patchnce_opt(batch_size, tau, from_batch))(q, k).mean()
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-6)


def test_patch_nce_negatives_from_batch_differ_from_per_image():
    q, k = unit(24, 8, seed=3), unit(24, 8, seed=4)
    per_image = patch_nce_loss(q, k, batch_size=2)
    whole = patch_nce_loss(q, k, negatives_from_batch=True)
    assert whole > per_image  # twice the negatives, each adding to the denominator


def test_patch_nce_detaches_the_keys():
    q, k = unit(8, 4, seed=5).requires_grad_(), unit(8, 4, seed=6).requires_grad_()
    patch_nce_loss(q, k, batch_size=1).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and k.grad is None


def test_patch_nce_known_value():
    # Orthonormal queries equal to their keys: positive logit 1/T, S-1 negatives at 0 (plus the
    # -10 diagonal entry, e^{-10/T} ~ 1e-62): loss = log(1 + (S - 1) e^{-1/T}).
    s, tau = 6, 0.5
    q = torch.eye(s)
    expected = math.log(1 + (s - 1) * math.exp(-1 / tau))
    assert patch_nce_loss(q, q.clone(), tau, batch_size=1).item() == pytest.approx(expected, abs=1e-6)


# --- NT-Xent ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n, tau", [(1, 0.5), (4, 0.5), (5, 0.1), (3, 0.07)])
def test_nt_xent_equals_the_simclr_loop(n, tau):
    g = torch.Generator().manual_seed(n)
    z_a = torch.randn(n, 8, generator=g) * 3  # not normalised: the loss uses cosine similarity
    z_b = z_a + torch.randn(n, 8, generator=g)
    assert nt_xent_loss(z_a, z_b, tau).item() == pytest.approx(nt_xent_loop(z_a, z_b, tau), abs=1e-5)


def test_nt_xent_is_symmetric_and_scale_invariant():
    z_a, z_b = torch.randn(6, 5), torch.randn(6, 5)
    loss = nt_xent_loss(z_a, z_b)
    torch.testing.assert_close(nt_xent_loss(z_b, z_a), loss)
    torch.testing.assert_close(nt_xent_loss(7 * z_a, 0.1 * z_b), loss)


def test_nt_xent_known_values():
    n, tau = 3, 0.5
    basis = torch.eye(2 * n)
    # Identical views of orthogonal images: the positive has cosine 1, the 2N-2 negatives 0.
    identical = nt_xent_loss(basis[:n], basis[:n].clone(), tau).item()
    assert identical == pytest.approx(math.log(1 + (2 * n - 2) * math.exp(-1 / tau)), abs=1e-6)
    # All 2N views mutually orthogonal: every logit is 0, the loss is log(2N - 1).
    orthogonal = nt_xent_loss(basis[:n], basis[n:], tau).item()
    assert orthogonal == pytest.approx(math.log(2 * n - 1), abs=1e-6)
    assert identical < orthogonal


def test_nt_xent_removes_self_similarity_instead_of_masking_it():
    # With one pair the only logit left is the positive, so the loss is exactly 0; keeping the
    # self-similarity (cosine 1) as a negative would give log(1 + e^{(1 - s)/T}) > 0.
    assert nt_xent_loss(torch.randn(1, 4), torch.randn(1, 4)).item() == pytest.approx(0.0, abs=1e-7)


# --- the InfoNCE core -------------------------------------------------------------------------
def test_info_nce_is_cross_entropy_with_the_positive_first():
    pos, neg, tau = torch.randn(5, 1), torch.randn(5, 7), 0.2
    loop = sum(-math.log(math.exp(pos[i, 0] / tau) / sum(math.exp(v / tau) for v in [pos[i, 0], *neg[i]]))
               for i in range(5)) / 5
    assert info_nce(pos, neg, tau).item() == pytest.approx(float(loop), abs=1e-5)
    assert info_nce(torch.zeros(4, 1), torch.zeros(4, 9), 1.0).item() == pytest.approx(math.log(10), abs=1e-6)


# --- GAN losses -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["lsgan", "vanilla", "nonsaturating"])
@pytest.mark.parametrize("real", [True, False])
def test_gan_loss_equals_the_formula_and_the_official(mode, real):
    pred = torch.randn(3, 1, 5, 5)
    p = pred.double()
    t = 1.0 if real else 0.0
    formula = {
        "lsgan": ((p - t) ** 2).mean(),
        "vanilla": -(t * torch.log(torch.sigmoid(p)) + (1 - t) * torch.log(1 - torch.sigmoid(p))).mean(),
        "nonsaturating": (-torch.log(torch.sigmoid(p)) if real else -torch.log(1 - torch.sigmoid(p))).mean(),
    }[mode]
    ours = gan_loss(pred, real, mode)
    assert ours.dim() == 0 and ours.item() == pytest.approx(formula.item(), abs=1e-5)
    torch.testing.assert_close(ours, GANLoss(mode)(pred, real).mean(), rtol=1e-6, atol=1e-6)


def test_gan_loss_known_values():
    zeros, ones = torch.zeros(2, 1, 3, 3), torch.ones(2, 1, 3, 3)
    assert gan_loss(zeros, True).item() == 1.0 and gan_loss(zeros, False).item() == 0.0
    assert gan_loss(ones, True).item() == 0.0 and gan_loss(ones, False).item() == 1.0
    for mode in ("vanilla", "nonsaturating"):
        assert gan_loss(zeros, True, mode).item() == pytest.approx(math.log(2))
        assert gan_loss(zeros, False, mode).item() == pytest.approx(math.log(2))
    assert gan_loss(torch.full((1, 1, 2, 2), 50.0), True, "vanilla").item() == pytest.approx(0.0, abs=1e-12)


# --- precision --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_give_finite_float32_losses(dtype):
    q = unit(64, 32, seed=7)
    loss = patch_nce_loss(q.to(dtype), q.to(dtype), 0.07, batch_size=1)  # logits up to 1/0.07 = 14.3
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss = nt_xent_loss(q[:32].to(dtype), q[32:].to(dtype), 0.07)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # 300^2 overflows float16 (max 65504); the loss must not.
    big = torch.full((2, 1, 4, 4), 300.0, dtype=dtype)
    assert gan_loss(big, False).item() == 90000.0
    for mode in ("vanilla", "nonsaturating"):
        out = gan_loss(big, False, mode)
        assert out.dtype == torch.float32 and out.item() == pytest.approx(300.0)


def test_similarity_logits_stay_float32_under_autocast():
    # bf16 keeps 8 significant bits: a negative at cosine 0.5 + 2^-10 rounds to 0.5 in a bf16
    # matmul, a logit error of 2^-10 / 0.07. Autocast would do that to bmm/matmul even on float32
    # inputs; the losses switch it off.
    def unit_row(c):
        return [c, (1 - c * c) ** 0.5, 0.0, 0.0]

    q = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    k = torch.tensor([unit_row(0.3), unit_row(0.5 + 2**-10)])  # k[1] is query 0's negative
    expected = patch_nce_loss(q, k, 0.07, batch_size=1)
    expected_nt = nt_xent_loss(q, k, 0.07)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = patch_nce_loss(q, k, 0.07, batch_size=1)
        got_nt = nt_xent_loss(q, k, 0.07)
        unguarded = patch_nce_loss.__wrapped__(q, k, 0.07, batch_size=1)  # the loss without the guard
        assert gan_loss(torch.randn(2, 1, 3, 3), True).dtype == torch.float32
    assert got.dtype == got_nt.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_nt, expected_nt, rtol=0, atol=1e-6)
    assert abs(unguarded.item() - expected.item()) > 1e-3  # so this test can tell


# --- errors -----------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    q = unit(8, 4)
    with pytest.raises(ValueError, match="batch_size"):
        patch_nce_loss(q, q)
    with pytest.raises(ValueError, match="split into batch_size=3"):
        patch_nce_loss(q, q, batch_size=3)
    with pytest.raises(ValueError, match=r"\(B\*S, D\)"):
        patch_nce_loss(q, q[:4], batch_size=1)
    with pytest.raises(ValueError, match=r"\(B\*S, D\)"):
        patch_nce_loss(q[None], q[None], batch_size=1)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        nt_xent_loss(q, q[:, :2])
    with pytest.raises(ValueError, match="at least one pair"):
        nt_xent_loss(q[:0], q[:0])
    with pytest.raises(ValueError, match="gan mode"):
        gan_loss(q, True, "wgan")


def test_nt_xent_losses_share_one_core():
    from cut_hf.objectives.losses import nt_xent_logits, nt_xent_loss_for_anchors

    z_a, z_b = unit(6, 5), unit(6, 5, seed=1)
    pos, neg = nt_xent_logits(z_a, z_b)
    assert pos.shape == (12, 1) and neg.shape == (12, 10)
    reference = nt_xent_loop(z_a, z_b, 0.3)  # SimCLR's Algorithm 1, not the library's own definition
    assert info_nce(pos, neg, 0.3).item() == pytest.approx(reference, abs=1e-5)
    assert nt_xent_loss(z_a, z_b, 0.3).item() == pytest.approx(reference, abs=1e-5)
    pos2, neg2 = nt_xent_logits(z_a, z_b, slice(2, 4))  # rows 2, 3 then their second views 8, 9
    torch.testing.assert_close(pos2, pos[[2, 3, 8, 9]])
    torch.testing.assert_close(neg2, neg[[2, 3, 8, 9]])
    assert nt_xent_loss_for_anchors(z_a, z_b, slice(0, 6), 0.3).item() == pytest.approx(reference, abs=1e-5)
    # A share of the anchors: the loop's terms of rows 2, 3 and their second views, against all 12 views.
    share = nt_xent_anchor_terms(z_a, z_b, 0.3)
    expected = (share[2] + share[3] + share[8] + share[9]) / 4
    assert nt_xent_loss_for_anchors(z_a, z_b, slice(2, 4), 0.3).item() == pytest.approx(expected, abs=1e-5)

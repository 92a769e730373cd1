"""Contrastive and adversarial losses: one InfoNCE core, PatchNCE (CUT), NT-Xent (SimCLR), GAN losses.

All are pure functions of tensors. Logits are formed in float32 whatever the autocast dtype:
at T = 0.07 a cosine of 1 becomes 14.3 and exp() of logits overflows fp16's 65504 quickly, and
bf16's 8-bit mantissa is too coarse for contrastive logits.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch
import torch.nn.functional as F

GAN_MODES = ("lsgan", "vanilla", "nonsaturating")

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _float32_loss(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a loss with autocast switched off on the devices of its tensor arguments.

    Casting inputs with ``.float()`` is not enough: under autocast ``bmm``/``matmul`` cast their
    float32 operands back to bf16/fp16, and the similarity logits would lose most of their bits.
    """

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        device_types = {a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)}
        with contextlib.ExitStack() as stack:
            for device_type in device_types:
                if torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
            return fn(*args, **kwargs)

    return wrapper


@_float32_loss
def info_nce(positives: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE / cross entropy over N queries with the positive in column 0.

    Args:
        positives: (N, 1) similarity of each query with its positive key.
        negatives: (N, K) similarities with its negatives.
        temperature: divides all logits.
    """
    logits = torch.cat([positives, negatives], dim=1).float() / temperature  # (N, 1 + K)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


@_float32_loss
def patch_nce_loss(
    feat_q: torch.Tensor,
    feat_k: torch.Tensor,
    temperature: float = 0.07,
    batch_size: int | None = None,
    negatives_from_batch: bool = False,
) -> torch.Tensor:
    """PatchNCE for one layer, equal to the official ``PatchNCELoss`` followed by ``.mean()``.

    Query patch i (from the translated image) must match key patch i (same location in the
    source image) against the other patches. Keys are detached, as in the paper.

    Args:
        feat_q: (B * S, D) L2-normalised query embeddings, image-major (``PatchSampler`` output).
        feat_k: (B * S, D) key embeddings at the same locations.
        temperature: tau, 0.07 in the paper.
        batch_size: B; negatives come from the same image (S - 1 per query). Required unless
            ``negatives_from_batch``.
        negatives_from_batch: take negatives from every image of the batch (B * S - 1 per query),
            the official ``--nce_includes_all_negatives_from_minibatch``.
    """
    if feat_q.shape != feat_k.shape or feat_q.dim() != 2:
        raise ValueError(f"feat_q and feat_k must both be (B*S, D), got {tuple(feat_q.shape)}, {tuple(feat_k.shape)}")
    feat_q, feat_k = feat_q.float(), feat_k.detach().float()
    n, dim = feat_q.shape
    if negatives_from_batch:
        groups = 1
    elif batch_size is None:
        raise ValueError("patch_nce_loss needs batch_size unless negatives_from_batch=True")
    else:
        groups = batch_size
    if n % groups:
        raise ValueError(f"{n} patches do not split into batch_size={groups} images")
    # bmm, as the paper's code: the same value as a sum of products, and the same rounding (bitwise parity).
    l_pos = torch.bmm(feat_q.unsqueeze(1), feat_k.unsqueeze(2)).view(-1, 1)  # (N, 1)
    q, k = feat_q.view(groups, -1, dim), feat_k.view(groups, -1, dim)  # (G, S, D)
    s = q.shape[1]
    l_neg = torch.bmm(q, k.transpose(1, 2))  # (G, S, S)
    # The diagonal is the positive itself; the original fills it with -10 (not -inf), so it still
    # contributes exp(-10 / T) ~ 6e-63 to the denominator. Kept for exact equality.
    eye = torch.eye(s, dtype=torch.bool, device=q.device)[None]
    l_neg = l_neg.masked_fill(eye, -10.0).view(-1, s)  # (N, S)
    return info_nce(l_pos, l_neg, temperature)


@_float32_loss
def nt_xent_logits(
    z_a: torch.Tensor, z_b: torch.Tensor, anchors: slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosine similarities NT-Xent is computed from: the one core of both NT-Xent losses.

    Each anchor (a view of one of the images ``anchors`` selects) is compared with all 2N views:
    its positive is the other view of its image, its negatives are the 2N - 2 views of the other
    images; self-similarity is removed, not masked with a constant. Anchors are the first views
    of the selected rows, then their second views.

    Args:
        z_a: (N, D) projections of the first views (need not be normalised).
        z_b: (N, D) projections of the second views, row i the same image as ``z_a[i]``.
        anchors: rows whose views are anchors (all by default; one process's share when the
            batch was gathered from every process).

    Returns:
        ``(positives, negatives)``: (2A, 1) and (2A, 2N - 2) float32 cosines for A anchor rows.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(f"z_a and z_b must both be (N, D), got {tuple(z_a.shape)}, {tuple(z_b.shape)}")
    n = z_a.shape[0]
    if n < 1:
        raise ValueError("NT-Xent needs at least one pair")
    rows = torch.arange(n, device=z_a.device)[anchors]  # (A,)
    if rows.numel() == 0:
        raise ValueError(f"anchors {anchors} select no rows of a batch of {n}")
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)  # (2N, D)
    rows = torch.cat([rows, rows + n])  # (2A,) anchor rows in z: first views, then second views
    sim = z[rows] @ z.t()  # (2A, 2N)
    pos = (rows + n) % (2 * n)  # the other view of the same image
    ar = torch.arange(rows.numel(), device=z.device)
    keep = torch.ones_like(sim, dtype=torch.bool)
    keep[ar, rows] = False  # self-similarity removed
    keep[ar, pos] = False
    return sim[ar, pos].unsqueeze(1), sim[keep].view(rows.numel(), 2 * n - 2)


def nt_xent_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2N views of N images (:func:`nt_xent_logits` of every anchor).

    Each anchor has one positive (its other view) and 2N - 2 negatives. The loss is averaged over
    all 2N anchors, i.e. both directions (a -> b and b -> a).

    Args:
        z_a: (N, D) projections of the first views (need not be normalised).
        z_b: (N, D) projections of the second views, row i the same image as ``z_a[i]``.
        temperature: tau (0.5 in the paper for small batches, 0.1 for large ones).
    """
    return info_nce(*nt_xent_logits(z_a, z_b), temperature)


def nt_xent_loss_for_anchors(
    z_a: torch.Tensor, z_b: torch.Tensor, anchors: slice, temperature: float = 0.5
) -> torch.Tensor:
    """NT-Xent of a subset of the anchors against all 2M views: the distributed form of SimCLR's loss.

    With ``z_a, z_b`` gathered from every process (M = world size x local N) and ``anchors`` this
    process's rows, each process computes the loss of its own 2N anchors (rows ``anchors`` of ``z_a``
    and the same rows of ``z_b``) against all 2M - 2 negatives, forming a (2N, 2M) similarity block
    instead of the full (2M, 2M). The mean over a partition of the rows into equal slices equals
    :func:`nt_xent_loss` on the whole batch.

    Args:
        z_a: (M, D) first-view projections of all images.
        z_b: (M, D) second-view projections, row i the same image as ``z_a[i]``.
        anchors: the rows whose views are anchors here, e.g. ``slice(rank * N, (rank + 1) * N)``.
        temperature: tau.
    """
    return info_nce(*nt_xent_logits(z_a, z_b, anchors), temperature)


@_float32_loss
def gan_loss(prediction: torch.Tensor, target_is_real: bool, mode: str = "lsgan") -> torch.Tensor:
    """Adversarial loss of discriminator logits against a real/fake target, averaged.

    Modes: ``lsgan`` (least squares, the paper's default), ``vanilla`` (binary cross entropy on
    logits) and ``nonsaturating`` (softplus form, -log D(G(z)) for the generator). Computed in
    float32 so that bf16/fp16 autocast outputs cannot overflow or lose the small differences.
    """
    pred = prediction.float()
    if mode == "lsgan":
        return F.mse_loss(pred, torch.full_like(pred, 1.0 if target_is_real else 0.0))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(pred, torch.full_like(pred, 1.0 if target_is_real else 0.0))
    if mode == "nonsaturating":
        return F.softplus(-pred).mean() if target_is_real else F.softplus(pred).mean()
    raise ValueError(f"gan mode must be one of {GAN_MODES}, got {mode!r}")


def identity_loss(idt_b: torch.Tensor, real_b: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """``weight * mean |G(B) - B|``: the identity-preservation L1 (CycleGAN's, SinCUT's), in float32 under autocast."""
    return F.l1_loss(idt_b.float(), real_b.float()) * weight

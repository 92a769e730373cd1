"""Collectives that keep autograd: gathering SimCLR projections from every process.

``accelerator.gather`` and ``torch.distributed.all_gather`` return tensors cut from the graph, so
the negatives another process contributes would carry no gradient back to the encoder. SimCLR
needs it (the paper's "global" negatives): :func:`gather_with_grad` gathers in the forward pass
and, in the backward pass, sums the gradients every process computed for each slice and hands
each process the gradient of its own slice.

With every process backpropagating its own loss L_r and DDP averaging parameter gradients over
W processes, the update is the gradient of (1 / W) * sum_r L_r: exactly one process on the
combined batch (``tests/test_simclr.py`` checks it with two gloo processes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward all-reduces (sums) the gradient and keeps this rank's slice."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # (N, ...) -> (W * N, ...)
        ctx.rank, ctx.n = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # (W * N, ...) -> (N, ...)
        # Every rank's loss depends on every slice; the gradient of slice r is the sum over ranks.
        # all_reduce (not reduce_scatter) because gloo has no reduce_scatter.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N, ...) from all processes in rank order -> (W * N, ...), differentiably.

    Every process must pass the same shape (use ``drop_last`` in the data loader). Without an
    initialised process group this is the identity.
    """
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)

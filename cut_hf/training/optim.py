"""Optimisers and learning-rate schedules of cut-hf's objectives: LARS, warmup + cosine, the paper's linear decay."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, overload

import torch
import torch.nn as nn


class LARS(torch.optim.Optimizer):
    """LARS (You et al., 2017) as SimCLR's ``lars_optimizer.py``: SGD with momentum and a per-layer trust ratio.

    For each parameter w with gradient g, in a group with ``lars_adaptation=True``::

        g <- g + weight_decay * w
        trust = eta * ||w|| / ||g||      (1 when either norm is 0)
        v <- momentum * v + lr * trust * g
        w <- w - v                       (nesterov: w - (momentum * v + lr * trust * g))

    Groups with ``lars_adaptation=False`` (biases and norm parameters in SimCLR) use trust 1 and no
    weight decay: plain momentum SGD. :func:`param_groups` builds the two groups.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 1e-3, nesterov: bool = False) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"invalid LARS hyper-parameters: lr {lr}, momentum {momentum}, "
                             f"weight_decay {weight_decay}, eta {eta}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, nesterov=nesterov,
                        lars_adaptation=True)
        super().__init__(params, defaults)

    @overload  # torch.optim.Optimizer.step's two forms
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            adapt = group["lars_adaptation"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if adapt and group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                lr = group["lr"]
                if adapt:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    scaled = g * (trust * lr)
                else:
                    scaled = g * lr
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                v = state["momentum_buffer"]
                v.mul_(group["momentum"]).add_(scaled)
                p.sub_(v * group["momentum"] + scaled if group["nesterov"] else v)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights (decayed, LARS-adapted) and biases + norm parameters (neither), as the paper.

    Parameters with one dimension are exactly the biases and the batch-norm scales and shifts of a
    ResNet and its head.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_adaptation": True},
        {"params": no_decay, "weight_decay": 0.0, "lars_adaptation": False},
    ]


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warmup from 1/warmup to 1, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def linear_decay(n_epochs: int, n_epochs_decay: int) -> Callable[[int], float]:
    """The paper code's ``linear`` policy: lr constant for ``n_epochs``, then down by 1/(decay+1) per epoch."""

    def factor(epoch: int) -> float:  # epoch: scheduler steps taken so far (0-based)
        return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)

    return factor

"""The SimCLR objective (Chen et al., 2020): two views per image, NT-Xent over the views of every process.

Reproducibility: every random choice of an item (its two views) comes from a generator seeded by
(seed, epoch, index), and each epoch's order from (seed, epoch); nothing reads the global RNG after
the model is built, so ``--resume`` continues bit-exactly (fp32, same processes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from cut_hf.data.augment import SimCLRAugment
from cut_hf.data.sources import ImageList, load_readable
from cut_hf.data.unpaired import item_generator, to_channels
from cut_hf.models.simclr import SimCLR
from cut_hf.objectives.losses import nt_xent_loss_for_anchors
from cut_hf.training.distributed import gather_with_grad, rank, world_size


class SimCLRViewDataset(Dataset):
    """Items ``(epoch, index)`` -> ``{"view1", "view2", "name", "skipped"}``.

    The views are (3, S, S) float tensors in [0, 1], drawn by ``augment`` with a generator seeded by
    (seed, epoch, index): an item is the same whichever process, worker or resumed run loads it.
    An unreadable file is skipped (the next readable image takes its place) and named in
    ``skipped`` so the loop can count it.
    """

    def __init__(self, images: ImageList, augment: SimCLRAugment, seed: int = 0) -> None:
        self.images, self.augment, self.seed = images, augment, seed
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        skipped: list[str] = []
        img, i = load_readable(self.images, index, lambda j: j + 1, skipped, self._warned,
                               convert=lambda im: to_channels(im, 3))  # EXIF, 16-bit, palette, alpha handled
        view1, view2 = self.augment(img, generator=item_generator(self.seed, epoch, index, salt=7))
        return {"view1": view1, "view2": view2, "name": self.images.name(i), "skipped": "\n".join(skipped)}


def contrastive_loss(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent of this process's views against the views of every process, with gradients through the gather.

    Args:
        z: (2N, D) projections of this process's first views (rows :N) then second views (rows N:).
        temperature: tau.
    Returns:
        (loss of this process's 2N anchors, top-1 accuracy of finding the positive among all 2WN - 1 views).
    """
    n = z.shape[0] // 2
    everyone = gather_with_grad(z.float())  # (W * 2N, D), rank-major
    w = world_size()
    pairs = everyone.view(w, 2, n, -1)  # (W, 2, N, D)
    z_a, z_b = pairs[:, 0].reshape(w * n, -1), pairs[:, 1].reshape(w * n, -1)  # (W * N, D) each
    anchors = slice(rank() * n, (rank() + 1) * n)
    loss = nt_xent_loss_for_anchors(z_a, z_b, anchors, temperature)
    with torch.no_grad():  # how often the other view is the nearest of all views: a readable progress signal
        zn = torch.nn.functional.normalize(torch.cat([z_a, z_b]), dim=1)  # (2WN, D)
        rows = torch.cat([torch.arange(w * n)[anchors], torch.arange(w * n)[anchors] + w * n]).to(z.device)
        sim = zn[rows] @ zn.t()
        sim[torch.arange(rows.numel(), device=z.device), rows] = -float("inf")
        accuracy = (sim.argmax(dim=1) == (rows + w * n) % (2 * w * n)).float().mean()
    return loss, accuracy


class SimCLRObjective:
    """A SimCLR model with its optimiser and per-step schedule; :meth:`training_step` is one step."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        self.model, self.temperature = model, temperature

    def training_step(self, batch: dict[str, Any], optimizer: Any, scheduler: Any,
                      accelerator: Any) -> dict[str, torch.Tensor]:
        """One step over both views; returns the detached ``nt_xent``, ``positive_top1`` and
        ``skipped`` (1.0 when fp16's GradScaler skipped the step)."""
        views = torch.cat([batch["view1"], batch["view2"]]).to(accelerator.device, non_blocking=True)  # (2N, 3, S, S)
        if accelerator.device.type == "cuda":
            views = views.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            _, z = self.model(views)  # one pass over both views: BN statistics over all 2N views
        loss, accuracy = contrastive_loss(z, self.temperature)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        skipped = torch.tensor(float(optimizer.step_was_skipped), device=accelerator.device)
        return {"nt_xent": loss.detach(), "positive_top1": accuracy, "skipped": skipped}


def revert_sync_batchnorm(model: SimCLR) -> SimCLR:
    """SyncBatchNorm layers back to BatchNorm2d, so the saved model loads without a process group."""
    if not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        return model
    plain = SimCLR(backbone=model.backbone, proj_dim=model.proj_dim, cifar_stem=model.cifar_stem)
    plain.load_state_dict(model.state_dict())
    return plain.to(next(model.parameters()).device)

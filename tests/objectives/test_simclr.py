"""SimCLR model (Hub round trip), NT-Xent over a subset of anchors, and the loss across two processes."""

from __future__ import annotations

import datetime
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cut_hf import SimCLR
from cut_hf.objectives.losses import nt_xent_loss, nt_xent_loss_for_anchors

TINY = dict(backbone="resnet18", proj_dim=16, cifar_stem=True)


@pytest.fixture(scope="module")
def tiny_simclr() -> SimCLR:
    torch.manual_seed(0)
    return SimCLR(**TINY).eval()


# ----------------------------------------------------------------------------- model


def test_shapes_and_cifar_stem(tiny_simclr):
    x = torch.rand(2, 3, 16, 16)
    h, z = tiny_simclr(x)
    assert h.shape == (2, 512) and z.shape == (2, 16)
    assert tiny_simclr.encoder.conv1.kernel_size == (3, 3) and tiny_simclr.encoder.conv1.stride == (1, 1)
    assert isinstance(tiny_simclr.encoder.maxpool, torch.nn.Identity)
    assert isinstance(tiny_simclr.encoder.fc, torch.nn.Identity)
    head = tiny_simclr.projector
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Linear"]
    assert head[0].in_features == head[0].out_features == 512  # hidden = h size
    assert torch.equal(tiny_simclr.encode(x), h)


def test_default_is_the_papers_resnet50():
    with torch.device("meta"):  # the structure only: no 25 M random numbers to draw
        m = SimCLR()
    assert (m.backbone, m.proj_dim, m.cifar_stem, m.feature_dim) == ("resnet50", 128, False, 2048)
    assert m.encoder.conv1.kernel_size == (7, 7) and not isinstance(m.encoder.maxpool, torch.nn.Identity)
    assert m.projector[2].out_features == 128


def test_save_from_pretrained_strict_identical_outputs(tiny_simclr, tmp_path):
    tiny_simclr.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == TINY  # every __init__ argument, JSON values only
    loaded = SimCLR.from_pretrained(tmp_path, strict=True).eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.inference_mode():
        for a, b in zip(tiny_simclr(x), loaded(x)):
            assert torch.equal(a, b)
    card = (tmp_path / "README.md").read_text()
    assert "pipeline_tag: image-feature-extraction" in card and "- simclr" in card and "library_name: cut-hf" in card
    assert "resnet18" in card and "CIFAR stem" in card and "{{" not in card and "{%" not in card


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="backbone"):
        SimCLR(backbone="vit_b_16")
    with pytest.raises(ValueError, match="proj_dim"):
        SimCLR(backbone="resnet18", proj_dim=0)
    with pytest.raises(ValueError, match="RGB"):
        SimCLR(**TINY).encode(torch.rand(2, 1, 16, 16))


# ----------------------------------------------------------------------------- NT-Xent for a subset of anchors


def test_anchor_subsets_partition_the_full_loss_and_its_gradients():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 8, generator=g, requires_grad=True)
    b = torch.randn(6, 8, generator=g, requires_grad=True)
    full = nt_xent_loss(a, b, 0.2)
    ga, gb = torch.autograd.grad(full, (a, b))
    assert torch.allclose(nt_xent_loss_for_anchors(a, b, slice(0, 6), 0.2), full, atol=1e-6)
    parts = [nt_xent_loss_for_anchors(a, b, slice(i, i + 2), 0.2) for i in (0, 2, 4)]
    assert len({round(float(p.detach()), 4) for p in parts}) == 3  # each slice has its own loss
    mean = sum(parts) / 3
    assert torch.allclose(mean, full, atol=1e-6)
    pa, pb = torch.autograd.grad(mean, (a, b))
    assert torch.allclose(pa, ga, atol=1e-6) and torch.allclose(pb, gb, atol=1e-6)


def test_anchor_loss_is_float32_under_autocast_and_checks_input():
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent_loss_for_anchors(a.bfloat16(), b.bfloat16(), slice(0, 2), 0.07)
    assert loss.dtype == torch.float32
    ref = nt_xent_loss_for_anchors(a.bfloat16().float(), b.bfloat16().float(), slice(0, 2), 0.07)
    assert torch.allclose(loss, ref, atol=1e-6)
    with pytest.raises(ValueError, match="select no rows"):
        nt_xent_loss_for_anchors(a, b, slice(4, 6))
    with pytest.raises(ValueError, match="both be"):
        nt_xent_loss_for_anchors(a, b[:3], slice(0, 2))


# ----------------------------------------------------------------------------- two processes (gloo)

WORLD, PER_RANK, SIZE, T = 2, 3, 8, 0.5


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The combined batch: view 1 and view 2 of WORLD * PER_RANK images, (M, 3, S, S) each."""
    g = torch.Generator().manual_seed(42)
    m = WORLD * PER_RANK
    return torch.rand(m, 3, SIZE, SIZE, generator=g), torch.rand(m, 3, SIZE, SIZE, generator=g)


class _TinyEncoder(torch.nn.Module):
    """A small f + g with SimCLR's forward signature; the gather and the loss are under test, not the ResNet.

    No batch norm: each view's z depends on that view alone, so one process on the whole batch is
    comparable with two processes on halves (with batch norm the per-process statistics differ).
    """

    def __init__(self) -> None:
        super().__init__()
        self.f = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                     torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        self.g = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.f(x)
        return h, self.g(h)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return _TinyEncoder()


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    from cut_hf.objectives.simclr import contrastive_loss

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=180))  # a crashed peer fails the test, not hangs it
    try:
        model = _model()
        v1, v2 = _batch()
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)  # this process's images
        _, z = model(torch.cat([v1[mine], v2[mine]]))
        loss, accuracy = contrastive_loss(z, T)
        loss.backward()
        # What DDP does after backward: average the parameter gradients over processes.
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        dist.all_reduce(grads)
        grads /= WORLD
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= WORLD
        torch.save({"local_loss": loss.detach(), "mean_loss": mean_loss, "grads": grads, "accuracy": accuracy},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process_on_the_combined_batch(tmp_path):
    # Rank 1 in a spawned process, rank 0 here: one interpreter start instead of two.
    peer = mp.get_context("spawn").Process(target=_worker, args=(1, str(tmp_path / "pg"), str(tmp_path)))
    peer.start()
    try:
        _worker(0, str(tmp_path / "pg"), str(tmp_path))
    finally:
        peer.join(timeout=240)
    assert peer.exitcode == 0
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD))

    model = _model()
    v1, v2 = _batch()
    _, z = model(torch.cat([v1, v2]))
    m = WORLD * PER_RANK
    loss = nt_xent_loss(z[:m], z[m:], T)  # the library's single-process NT-Xent on all 2M views
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])

    assert not torch.allclose(r0["local_loss"], r1["local_loss"])  # each rank scores its own anchors
    assert torch.allclose(r0["mean_loss"], loss, atol=1e-5) and torch.allclose(r1["mean_loss"], loss, atol=1e-5)
    assert torch.equal(r0["grads"], r1["grads"])
    assert grads.abs().max() > 0
    assert torch.allclose(r0["grads"], grads, rtol=1e-4, atol=1e-6)
    # The test can fail: with a plain all_gather (other ranks' views as constants) and DDP's
    # averaging, the cross terms are missing and the gradients differ.
    naive = torch.zeros_like(grads)
    for r in range(WORLD):
        local = _model()
        _, zs = local(torch.cat([v1, v2]))
        zs = torch.cat([zs[:m].view(WORLD, PER_RANK, -1), zs[m:].view(WORLD, PER_RANK, -1)], dim=1)  # (W, 2N, D)
        zs = torch.stack([zs[i] if i == r else zs[i].detach() for i in range(WORLD)])
        za, zb = zs[:, :PER_RANK].reshape(m, -1), zs[:, PER_RANK:].reshape(m, -1)
        nt_xent_loss_for_anchors(za, zb, slice(r * PER_RANK, (r + 1) * PER_RANK), T).backward()
        naive += torch.cat([p.grad.flatten() for p in local.parameters()]) / WORLD
    assert not torch.allclose(naive, grads, rtol=1e-3, atol=1e-5)

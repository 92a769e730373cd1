"""SinCUT's R1 penalty through DistributedDataParallel (2 CPU processes, gloo): D's gradients,
second-order R1 part included, are the mean of what each process's data gives on its own."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cut_hf import StyleGAN2Discriminator
from cut_hf.objectives.sincut import SinCUTObjective, SinCUTObjectiveConfig


def _data(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1


def _d_grads(net_d: torch.nn.Module, plain: torch.nn.Module, rank: int) -> dict[str, torch.Tensor]:
    objective = SinCUTObjective(None, plain, None, SinCUTObjectiveConfig(lambda_r1=3.0), wrapped=(None, net_d, None))
    fake, real = _data(rank)
    loss, terms = objective.discriminator_loss(fake, real)
    assert terms["D_R1"] > 0
    loss.backward()
    return {k: p.grad.clone() for k, p in plain.named_parameters()}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        d = StyleGAN2Discriminator(ndf=4, crop_size=16)
        ddp = torch.nn.parallel.DistributedDataParallel(d)
        torch.save(_d_grads(ddp, d, rank), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_r1_gradients_are_averaged_by_ddp(tmp_path: Path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    alone = []
    for rank in (0, 1):
        torch.manual_seed(0)
        d = StyleGAN2Discriminator(ndf=4, crop_size=16)
        alone.append(_d_grads(d, d, rank))
    for name in alone[0]:
        mean = (alone[0][name] + alone[1][name]) / 2
        torch.testing.assert_close(ranks[0][name], mean, atol=1e-5, rtol=1e-4)
        assert torch.equal(ranks[0][name], ranks[1][name]), name

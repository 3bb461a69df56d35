"""Two gloo processes on CPU: each rank's loss and the rank-averaged gradient equal the
single-process ones on the concatenated batch."""

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ibzoo.frameworks import BarlowTwinsLoss, BYOLLoss, MoCoV3Loss, NTXentLoss, VICRegLoss

WORLD_SIZE = 2
# Each loss on views of one batch; BYOL and MoCo v3 compare views with (detached) views as targets.
LOSSES = {
    "simclr": lambda views: NTXentLoss()(views),
    "barlow": lambda views: BarlowTwinsLoss()(views),
    "vicreg": lambda views: VICRegLoss()(views),
    "byol": lambda views: BYOLLoss()(views, views),
    "mocov3": lambda views: MoCoV3Loss()(views, views),
}
# Forked children skip re-importing torch, which takes seconds per process on a busy machine;
# run_rank limits them to one thread, as DataLoader workers do, so fork is safe with OpenMP.
START_METHOD = "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def make_problem() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A shared linear map (the 'model', identical on every rank) and 3 views of a batch of 8."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    views = [torch.randn(8, 5, generator=generator, dtype=torch.float64) for _ in range(3)]
    return weight, views


def loss_and_weight_gradient(name: str, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    weight = make_problem()[0].requires_grad_()
    loss = LOSSES[name]([view @ weight for view in views])
    loss.backward()
    return loss.detach(), weight.grad


def run_rank(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        results = {}
        for name in LOSSES:
            local_views = [view.chunk(WORLD_SIZE)[rank] for view in make_problem()[1]]
            loss, gradient = loss_and_weight_gradient(name, local_views)
            dist.all_reduce(gradient)  # what DDP does, followed by dividing by the world size
            results[name] = (loss, gradient / WORLD_SIZE)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.distributed
def test_distributed_losses_equal_single_process_on_the_global_batch(tmp_path):
    mp.start_processes(
        run_rank, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True, start_method=START_METHOD
    )
    for rank in range(WORLD_SIZE):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        for name in LOSSES:
            expected_loss, expected_gradient = loss_and_weight_gradient(name, make_problem()[1])
            loss, gradient = results[name]
            torch.testing.assert_close(loss, expected_loss, msg=f"{name} loss on rank {rank}")
            torch.testing.assert_close(gradient, expected_gradient, msg=f"{name} gradient on rank {rank}")

"""Helpers shared by the objectives: float32-or-wider math under autocast, view checks, and a
differentiable all-gather so that distributed losses see the global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch
import torch.distributed as dist
from torch import Tensor


def upcast(x: Tensor) -> Tensor:
    """Return ``x`` in float32, or in its own dtype when that is wider (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def autocast_disabled(x: Tensor) -> AbstractContextManager:
    """Switch autocast off on ``x``'s device so that upcast tensors stay upcast inside matmuls."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def check_views(views: Sequence[Tensor], loss_name: str) -> None:
    """Raise ValueError unless ``views`` holds at least two 2-D tensors of one shape (B, D)."""
    if isinstance(views, Tensor) or len(views) < 2:
        raise ValueError(
            f"{loss_name} needs a sequence of at least 2 views, each of shape (batch, features); "
            f"got {type(views).__name__} of length {len(views)}. Pass e.g. [z_view1, z_view2]."
        )
    shapes = [tuple(view.shape) for view in views]
    if views[0].ndim != 2 or len(set(shapes)) != 1:
        raise ValueError(
            f"{loss_name} needs views of one shape (batch, features); got shapes {shapes}. "
            "Flatten the features and use the same batch for every view."
        )


def distributed_world() -> tuple[int, int]:
    """Return (rank, world size) of the default process group, or (0, 1) when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns this rank's slice of the summed gradients.

    Every rank's loss depends on every rank's rows, so the gradient of a local input is the sum over
    ranks of the gradients that reach its gathered copy. Written here (rather than using
    ``torch.distributed.nn.functional.all_gather``, deprecated in recent torch) with collectives that
    every backend, gloo included, supports.
    """

    @staticmethod
    def forward(ctx, rows: Tensor) -> Tensor:
        chunks = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(chunks, rows.contiguous())
        return torch.cat(chunks)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd may still hold grad
        dist.all_reduce(grad)
        rank, world = distributed_world()
        local_rows = grad.shape[0] // world
        return grad[rank * local_rows : (rank + 1) * local_rows]


def gather_rows(rows: Tensor) -> Tensor:
    """Concatenate ``rows`` (B, ...) of every rank in rank order: (W * B, ...), differentiably.

    W: world size, B: rows per rank (must be equal on every rank, e.g. ``drop_last=True``).
    """
    return _GatherRows.apply(rows)


def mean_over_ranks(value: Tensor) -> Tensor:
    """All-reduce mean of a detached copy of ``value`` across ranks (no gradient)."""
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def with_global_value(loss: Tensor) -> Tensor:
    """``loss`` (this rank's mean over its own rows) reporting the mean over ranks, its gradient unchanged.

    For a loss whose rows are only this rank's: DDP's gradient averaging already turns the local gradient
    into the global-batch one, and every rank then logs the same global-batch value.
    """
    _, world = distributed_world()
    return loss + (mean_over_ranks(loss) - loss.detach()) if world > 1 else loss

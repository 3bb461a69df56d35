"""Barlow Twins' redundancy-reduction loss, as formulated in solo-learn.

Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021
(arXiv 2103.03230). solo-learn's ``barlow_loss_func`` multiplies the loss by ``scale_loss``
(here ``scale``); the paper-notes recipes use lambda_offdiag = 0.0051 and scale = 0.1. Under
torch.distributed the standardisation and the cross-correlation use the whole global batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ibzoo.objectives._common import (
    autocast_disabled,
    check_views,
    distributed_world,
    gather_rows,
    upcast,
)

# nn.BatchNorm1d's default eps, so that the standardisation matches solo-learn's BatchNorm1d(affine=False).
_BATCH_NORM_EPS = 1e-5


class BarlowTwinsLoss(nn.Module):
    """scale * (sum_i (1 - c_ii)^2 + lambda_offdiag * sum_{i != j} c_ij^2), c = z1n^T z2n / N.

    z1n, z2n are the two views standardised per dimension over the batch (biased variance, as
    BatchNorm1d in training mode). With V > 2 views the loss is the mean over all view pairs.

    Args:
        lambda_offdiag: weight of the off-diagonal (redundancy) terms.
        scale: overall factor (solo-learn's ``scale_loss``).
        gather_distributed: when torch.distributed is initialised, standardise and correlate over
            the rows of every rank, so each rank returns the global-batch loss; DDP's gradient
            averaging then yields its gradient. Every rank must pass the same batch size.
    """

    def __init__(self, lambda_offdiag: float = 0.0051, scale: float = 0.1, gather_distributed: bool = True):
        super().__init__()
        if not lambda_offdiag >= 0:
            raise ValueError(
                f"BarlowTwinsLoss lambda_offdiag must be >= 0, got {lambda_offdiag}; the paper uses 0.0051."
            )
        if not scale > 0:
            raise ValueError(f"BarlowTwinsLoss scale must be > 0, got {scale}; solo-learn uses 0.1.")
        self.lambda_offdiag = lambda_offdiag
        self.scale = scale
        self.gather_distributed = gather_distributed

    def extra_repr(self) -> str:
        return (
            f"lambda_offdiag={self.lambda_offdiag}, scale={self.scale}, "
            f"gather_distributed={self.gather_distributed}"
        )

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        """Loss of ``views``: V tensors of shape (B, D). Returns a scalar (float32 or wider).

        V: views, B: images per view on this rank, D: features.
        """
        check_views(views, "BarlowTwinsLoss")
        _, world = distributed_world() if self.gather_distributed else (0, 1)
        with autocast_disabled(views[0]):
            stacked = torch.stack([upcast(view) for view in views], dim=1)  # B, V, D
            if world > 1:
                stacked = gather_rows(stacked)
            batch = stacked.shape[0]
            if batch < 2:
                raise ValueError(
                    f"BarlowTwinsLoss needs at least 2 images to standardise features, got {batch}. "
                    "Use a larger batch (over all ranks)."
                )
            mean = stacked.mean(dim=0)
            variance = stacked.var(dim=0, unbiased=False)
            standardised = (stacked - mean) / torch.sqrt(variance + _BATCH_NORM_EPS)
            pair_losses = [
                self._pair_loss(standardised[:, first], standardised[:, second])
                for first, second in itertools.combinations(range(len(views)), 2)
            ]
            return torch.stack(pair_losses).mean()

    def _pair_loss(self, first: Tensor, second: Tensor) -> Tensor:
        """Loss of two standardised views (N, D); N: global batch."""
        correlation = first.T @ second / first.shape[0]
        is_diagonal = torch.eye(correlation.shape[0], dtype=torch.bool, device=correlation.device)
        on_diagonal = (1 - torch.diagonal(correlation)).pow(2).sum()
        off_diagonal = correlation.masked_fill(is_diagonal, 0.0).pow(2).sum()
        return self.scale * (on_diagonal + self.lambda_offdiag * off_diagonal)

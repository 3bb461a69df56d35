"""What pretraining minimises: the SSL loss of a framework (SimCLR's NT-Xent or Barlow Twins) on the
projector outputs Z2 plus lambda * I(Z1; Z2), the matrix mutual-information regulariser of Ouyang et al.,
"Projection Head is Secretly an Information Bottleneck", ICLR 2025 (arXiv 2503.00507).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ibzoo.names import FRAMEWORKS, Framework
from ibzoo.objectives.barlow_twins import BarlowTwinsLoss
from ibzoo.objectives.matrix_mi import InformationPlane, MatrixEntropies, matrix_entropies
from ibzoo.objectives.simclr import NTXentLoss

__all__ = [
    "BottleneckObjective",
    "Framework",
    "ObjectiveConfig",
    "ObjectiveOutput",
    "build_ssl_loss",
]


@dataclass
class ObjectiveConfig:
    """What the training loss is; saved verbatim with a run's configuration."""

    framework: Framework = "simclr"
    """Which SSL loss: "simclr" (NT-Xent) or "barlow" (Barlow Twins)."""
    temperature: float = 0.2
    """SimCLR softmax temperature (> 0)."""
    lambda_offdiag: float = 0.0051
    """Barlow Twins weight of the off-diagonal correlations (>= 0)."""
    scale: float = 0.1
    """Barlow Twins overall loss factor (> 0), solo-learn's scale_loss."""
    mi_weight: float = 0.0
    """lambda of the matrix MI regulariser (>= 0); 0 disables it. Paper: ~1e-4 CIFAR, ~1e-2 IN-100."""
    mi_alpha: float = 2.0
    """Rényi order of the matrix entropies (> 0); 1 is the von Neumann entropy."""

    def __post_init__(self) -> None:
        if self.framework not in FRAMEWORKS:
            raise ValueError(f"Unknown framework {self.framework!r}; choose one of {list(FRAMEWORKS)}.")
        for name in ("temperature", "scale", "mi_alpha", "lambda_offdiag", "mi_weight"):
            value = getattr(self, name)
            zero_allowed = name in ("lambda_offdiag", "mi_weight")
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
                bound = ">= 0" if zero_allowed else "> 0"
                raise ValueError(f"ObjectiveConfig.{name} must be a finite number {bound}, got {value}.")


def build_ssl_loss(config: ObjectiveConfig) -> nn.Module:
    """The SSL loss of ``config.framework``: NTXentLoss or BarlowTwinsLoss."""
    if config.framework == "simclr":
        return NTXentLoss(temperature=config.temperature)
    return BarlowTwinsLoss(lambda_offdiag=config.lambda_offdiag, scale=config.scale)


class ObjectiveOutput(NamedTuple):
    """What BottleneckObjective returns."""

    loss: Tensor  # ssl_loss + mi_weight * mutual_information: what to backpropagate
    ssl_loss: Tensor  # SSL loss on the projector outputs Z2
    mutual_information: Tensor | None  # I(Z1; Z2); None when neither the loss nor the plane needed it
    information_plane: InformationPlane | None  # detached; only when asked for


class BottleneckObjective(nn.Module):
    """SSL loss on the projector outputs plus mi_weight * I(Z1; Z2) (the paper's training regulariser).

    I(Z1; Z2) uses all views concatenated (N = V * B rows) of this process only: under
    torch.distributed it is a per-rank estimate, and DDP averages its gradient over ranks.
    """

    def __init__(self, config: ObjectiveConfig) -> None:
        super().__init__()
        self.config = config
        self.ssl_loss = build_ssl_loss(config)

    def forward(
        self, z1_views: Sequence[Tensor], z2_views: Sequence[Tensor], information_plane: bool = False
    ) -> ObjectiveOutput:
        """Loss of V views: ``z1_views`` backbone features (B, D1), ``z2_views`` projector outputs (B, D2).

        V: views, B: images per view, D1: backbone features, D2: projector outputs. ``information_plane``
        (for logging intervals) also evaluates the SSL loss on Z1 without gradient; under
        torch.distributed ask for it on every rank at the same step, since the SSL loss gathers.
        The mutual information is computed only when mi_weight > 0 or the plane is asked for.
        """
        ssl_loss = self.ssl_loss(z2_views)
        regularised = self.config.mi_weight > 0
        if not (regularised or information_plane):
            return ObjectiveOutput(ssl_loss, ssl_loss, None, None)

        with torch.set_grad_enabled(torch.is_grad_enabled() and regularised):
            entropies = matrix_entropies(
                torch.cat(list(z1_views)), torch.cat(list(z2_views)), self.config.mi_alpha
            )
        mutual_information = entropies.mutual_information
        loss = ssl_loss + self.config.mi_weight * mutual_information if regularised else ssl_loss

        plane = None
        if information_plane:
            with torch.no_grad():
                ssl_loss_on_z1 = self.ssl_loss(z1_views)
            detached = MatrixEntropies(*(entropy.detach() for entropy in entropies))
            plane = InformationPlane.from_entropies(detached, ssl_loss_on_z1)
        return ObjectiveOutput(loss, ssl_loss, mutual_information, plane)

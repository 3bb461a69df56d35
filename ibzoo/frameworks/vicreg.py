"""VICReg: its loss, heads, views and presets.

Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022 (arXiv 2105.04906). Recipe from solo-learn (commit 9187ea3): ``scripts/pretrain/
{cifar,imagenet-100}/vicreg.yaml`` (its views inline, or ``imagenet-100/augmentations/vicreg.yaml``),
``solo/methods/vicreg.py``, ``solo/losses/vicreg.py``.

The variance term sums the two views' hinges, as solo-learn's ``variance_loss`` and the VICReg paper's
official code do; lightly (``lightly/loss/vicreg_loss.py``) averages them, which halves its weight. ibzoo
follows solo-learn, whose weights (25 / 25 / 1) were tuned with the sum.

Bottlenecks: the head is Barlow Twins' shape (three 2048-wide Linears), so top-k follows the Barlow
Twins pattern and FSQ takes Barlow Twins' 3 levels (no reference value exists for VICReg). 3-level codes
lie in {-1, 0, 1}: their per-dimension std reaches the hinge's target of 1 only when a dimension uses
-1 and +1 about equally, so the variance term drives every code dimension to its widest spread rather
than switching off. ibzoo keeps the codes as they are (the loss sees what the projector outputs):
measured at init (``resnet18_vicreg_fsq.fmnist``, 128 random images), the codes' per-dimension std is 0.37
on average against 0.34 for the unquantized MLP output, so rounding does not starve the hinge (its term is
0.63 of its maximum 1, no dimension yet at std 1); scaling the codes would only rescale the hinge's
target. What training makes of it is the benchmark's to measure.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ibzoo.frameworks._common import (
    autocast_disabled,
    check_views,
    distributed_world,
    gather_rows,
    upcast,
    with_global_value,
)
from ibzoo.frameworks.framework import Framework, Recipe
from ibzoo.projectors import ProjectorConfig
from ibzoo.view_recipe import SMALL_IMAGE_SIZE, ViewRecipe

__all__ = ["VICREG", "VICRegLoss"]

_VARIANCE_EPS = 1e-4  # solo-learn's variance_loss: std = sqrt(var + 1e-4)


def _variance(z: Tensor) -> Tensor:
    """mean over dimensions of relu(1 - sqrt(var + eps)), unbiased variance over the batch."""
    return F.relu(1 - torch.sqrt(z.var(dim=0) + _VARIANCE_EPS)).mean()


def _covariance(z: Tensor) -> Tensor:
    """sum of squared off-diagonal covariances / D, covariance over the batch with N - 1."""
    rows, dim = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (rows - 1)
    off_diagonal = cov.masked_fill(torch.eye(dim, dtype=torch.bool, device=z.device), 0.0)
    return off_diagonal.pow(2).sum() / dim


class VICRegLoss(nn.Module):
    """w_inv * MSE(z_a, z_b) + w_var * (v(z_a) + v(z_b)) + w_cov * (c(z_a) + c(z_b)), mean over view pairs.

    solo-learn's ``vicreg_loss_func``: the invariance on this process's rows, variance and covariance on
    the rows of every process (gathered with gradient, as VICReg's official ``main_vicreg.py``).

    Args:
        invariance_weight, variance_weight, covariance_weight: 25, 25 and 1 in vicreg.yaml.
        gather_distributed: gather across processes when torch.distributed is initialised.
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        weights = (invariance_weight, variance_weight, covariance_weight)
        if not all(weight >= 0 for weight in weights):
            raise ValueError(f"VICRegLoss weights must be >= 0, got {weights}; vicreg.yaml uses 25, 25, 1.")
        self.invariance_weight, self.variance_weight, self.covariance_weight = weights
        self.gather_distributed = gather_distributed

    def extra_repr(self) -> str:
        return (
            f"invariance_weight={self.invariance_weight}, variance_weight={self.variance_weight}, "
            f"covariance_weight={self.covariance_weight}"
        )

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        """Loss of ``views``: V tensors of shape (B, D). Returns a scalar (float32 or wider)."""
        check_views(views, "VICRegLoss")
        _, world = distributed_world() if self.gather_distributed else (0, 1)
        with autocast_disabled(views[0]):
            local = [upcast(view) for view in views]
            spread = [gather_rows(view) if world > 1 else view for view in local]
            if spread[0].shape[0] < 2:
                raise ValueError("VICRegLoss needs at least 2 images (over all processes) for a variance.")
            pair_losses = []
            for a, b in itertools.combinations(range(len(views)), 2):
                # The invariance is on this rank's rows, as solo-learn's; every rank reports its global mean.
                invariance = F.mse_loss(local[a], local[b])
                if world > 1:
                    invariance = with_global_value(invariance)
                variance = _variance(spread[a]) + _variance(spread[b])
                covariance = _covariance(spread[a]) + _covariance(spread[b])
                pair_losses.append(
                    self.invariance_weight * invariance
                    + self.variance_weight * variance
                    + self.covariance_weight * covariance
                )
            return torch.stack(pair_losses).mean()


def vicreg_views(image_size: int) -> tuple[ViewRecipe, ...]:
    """Both views alike: crop 0.2-1, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, greyscale 0.2, solarization 0.1,
    flip 0.5 (cifar/vicreg.yaml, no blur); above 64 px blur p 0.5 (imagenet-100/augmentations/vicreg.yaml)."""
    blur = 0.0 if image_size <= SMALL_IMAGE_SIZE else 0.5
    return (ViewRecipe(crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_p=blur, solarize_p=0.1),)


VICREG = Framework(
    name="vicreg",
    title="VICReg",
    citation="Bardes, Ponce and LeCun, ICLR 2022, arXiv:2105.04906",
    loss=VICRegLoss,
    loss_args=("invariance_weight", "variance_weight", "covariance_weight"),
    # vicreg.yaml: sim_loss_weight 25, var_loss_weight 25, cov_loss_weight 1 (both families).
    settings={
        family: {"invariance_weight": 25.0, "variance_weight": 25.0, "covariance_weight": 1.0}
        for family in ("cifar", "imagenet")
    },
    # proj_hidden_dim 2048, proj_output_dim 2048: Linear-BN-ReLU-Linear-BN-ReLU-Linear.
    heads={
        family: ProjectorConfig(hidden_features=(2048, 2048), out_features=2048, batch_norm=True)
        for family in ("cifar", "imagenet")
    },
    topk_stem=ProjectorConfig(hidden_features=(2048,), out_features=None, batch_norm=True),
    fsq_levels=3,
    topk_fsq_standardize=True,  # as Barlow Twins': 3 levels round a fresh top-k head's output to 0
    # vicreg.yaml: LARS lr 0.3, weight decay 1e-4, classifier_lr 0.1; batch 256 (IN-100: 128 x 2 GPUs);
    # 1000 epochs (CIFAR), 400 (IN-100).
    recipes={
        "cifar": Recipe(lr=0.3, weight_decay=1e-4, batch_size=256, epochs=1000, classifier_lr=0.1),
        "imagenet": Recipe(lr=0.3, weight_decay=1e-4, batch_size=256, epochs=400, classifier_lr=0.1),
    },
    views=vicreg_views,
)

"""MoCo v3 (ResNet branch): its loss, heads, views and presets.

Chen, Xie and He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021
(arXiv 2104.02057). Recipe from solo-learn (commit 9187ea3): ``scripts/pretrain/{cifar,imagenet-100}/
mocov3.yaml``, ``solo/methods/mocov3.py`` (the ``"resnet" in backbone_name`` branch), ``solo/losses/
mocov3.py``, ``solo/utils/momentum.py``.

Bottleneck placement follows BYOL's (:mod:`ibzoo.frameworks.byol`): on the online projector's output
before the predictor, the target structurally identical and unquantized by default, FSQ with 30 levels
(MoCo v3's InfoNCE on a 256-d output is SimCLR's kind of loss), top-k after Linear-BN-ReLU to 2048. The
projector's output BatchNorm (no affine parameters) stays in front of the quantizer. The authors' compiled
``methods/__pycache__/mocov3.cpython-311.pyc`` defines the MI functions but does not use them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ibzoo.frameworks._common import (
    autocast_disabled,
    check_views,
    distributed_world,
    upcast,
    with_global_value,
)
from ibzoo.frameworks.barlow_twins import asymmetric_views
from ibzoo.frameworks.framework import Framework, Recipe
from ibzoo.projectors import ProjectorConfig

__all__ = ["MOCOV3", "MoCoV3Loss"]


def _gather_without_grad(rows: Tensor) -> Tensor:
    """(W * B, D): every rank's rows in rank order, detached (solo-learn's concat_all_gather_no_grad)."""
    _, world = distributed_world()
    if world == 1:
        return rows.detach()
    chunks = [torch.empty_like(rows) for _ in range(world)]
    torch.distributed.all_gather(chunks, rows.detach().contiguous())
    return torch.cat(chunks)


class MoCoV3Loss(nn.Module):
    """Sum over ordered view pairs (a, b), a != b, of 2 tau * CE(q_a . k_b / tau, own image).

    solo-learn's ``mocov3_loss_func``: queries and keys L2-normalised, the keys of every process gathered
    without gradient, the positive of local query i at global row i + B * rank, the cross entropy scaled by
    2 tau; ``methods/mocov3.py`` sums it over both view orders. Every rank reports the global-batch value.

    Args:
        temperature: tau; mocov3.yaml uses 0.2.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"MoCoV3Loss temperature must be > 0, got {temperature}; MoCo v3 uses 0.2.")
        self.temperature = temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, queries: Sequence[Tensor], keys: Sequence[Tensor]) -> Tensor:
        """``queries``: the online predictor's output per view, V x (B, D); ``keys``: the target
        projector's output per view, V x (B, D). Returns a scalar (float32 or wider)."""
        check_views(queries, "MoCoV3Loss")
        check_views(keys, "MoCoV3Loss")
        rank, _ = distributed_world()
        with autocast_disabled(queries[0]):
            batch = queries[0].shape[0]
            labels = torch.arange(batch, device=queries[0].device) + batch * rank
            losses = []
            for a, query in enumerate(queries):
                for b, key in enumerate(keys):
                    if a == b:
                        continue
                    q = F.normalize(upcast(query), dim=1)
                    k = _gather_without_grad(F.normalize(upcast(key), dim=1))
                    logits = q @ k.T / self.temperature
                    losses.append(F.cross_entropy(logits, labels) * (2 * self.temperature))
            return with_global_value(torch.stack(losses).sum())


MOCOV3 = Framework(
    name="mocov3",
    title="MoCo v3",
    citation="Chen, Xie and He, ICCV 2021, arXiv:2104.02057",
    loss=MoCoV3Loss,
    loss_args=("temperature",),
    # mocov3.yaml: temperature 0.2, base_tau 0.99, final_tau 1.0, pred_hidden_dim 4096 (both families).
    settings={
        family: {
            "temperature": 0.2,
            "momentum_base": 0.99,
            "momentum_end": 1.0,
            "predictor_hidden": 4096,
            "quantize_target": False,
        }
        for family in ("cifar", "imagenet")
    },
    # _build_mlp(2, 512, 4096, 256): Linear(no bias)-BN-ReLU-Linear(no bias)-BN(affine=False).
    heads={
        family: ProjectorConfig(
            hidden_features=(4096,), out_features=256, batch_norm=True, bias=False, out_batch_norm=True
        )
        for family in ("cifar", "imagenet")
    },
    topk_stem=ProjectorConfig(hidden_features=(2048,), out_features=None, batch_norm=True, bias=False),
    fsq_levels=30,
    # _build_mlp(2, 256, 4096, 256, last_bn=False): Linear(no bias)-BN-ReLU-Linear(no bias).
    predictor=ProjectorConfig(hidden_features=(4096,), out_features=256, batch_norm=True, bias=False),
    # mocov3.yaml: LARS lr 0.3, weight decay 1e-6, classifier_lr 0.3; batch 256 (IN-100: 128 x 2 GPUs);
    # 1000 epochs (CIFAR), 400 (IN-100).
    recipes={
        "cifar": Recipe(lr=0.3, weight_decay=1e-6, batch_size=256, epochs=1000, classifier_lr=0.3),
        "imagenet": Recipe(lr=0.3, weight_decay=1e-6, batch_size=256, epochs=400, classifier_lr=0.3),
    },
    views=asymmetric_views,
)

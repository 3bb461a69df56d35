"""The pretraining model: a timm backbone, a bottleneck projector, the framework's predictor and momentum
target where it has them, and the objective that trains them.

Downstream tasks keep only the backbone (Z1); the projector (Z1 -> Z2) exists to shape what the
backbone learns, which is why :meth:`SSLModel.backbone_only` hands the backbone back as a plain timm model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ibzoo.frameworks import get_framework
from ibzoo.objectives import BottleneckObjective, ObjectiveConfig, ObjectiveOutput
from ibzoo.projectors import DiscretizedProjector, ProjectorConfig, build_projector

__all__ = ["EncodedLoss", "SSLModel", "momentum_at"]


class EncodedLoss(NamedTuple):
    """What :meth:`SSLModel.encode_and_loss` returns."""

    objective: ObjectiveOutput  # the loss and its parts
    features: list[Tensor]  # Z1 of each view, (B, F) each, with gradient


def momentum_at(step: int, total_steps: int, base: float, end: float) -> float:
    """tau after ``step`` of ``total_steps`` optimisation steps: end - (end - base)(cos(pi step / K) + 1) / 2.

    solo-learn's ``MomentumUpdater.update_tau`` (``solo/utils/momentum.py``); its ``on_train_batch_end``
    (``solo/methods/base.py``) averages with the tau of the step before, so the update after step k uses
    ``momentum_at(k - 1, ...)``, base at the first step.
    """
    return end - (end - base) * (math.cos(math.pi * step / total_steps) + 1) / 2


class SSLModel(nn.Module):
    """Backbone + projector (+ predictor and momentum target) + objective, for any framework.

    Shapes (B: batch, V: views, F: backbone features, P: projector output):
        ``forward(images (B, C, H, W)) -> (B, F)``, ``project((B, F)) -> (B, P)``,
        ``compute_loss(V tensors (B, C, H, W)) -> ObjectiveOutput``.

    For a framework with a target (BYOL, MoCo v3), ``target_backbone`` and ``target_projector`` are
    copies of the online ones without gradient, moved towards them by :meth:`update_target` after every
    optimisation step, and ``predictor`` maps Z2 to the prediction of the target's output. They live in
    the state dict, so a checkpoint resumes them exactly.

    Args:
        backbone: a timm model built with ``num_classes=0`` (pooled features of width ``num_features``).
        projector_config: which bottleneck projector to put on top (see :mod:`ibzoo.projectors`).
        objective_config: the framework, its settings, and the weight of the matrix-MI regularizer.
    """

    def __init__(
        self, backbone: nn.Module, projector_config: ProjectorConfig, objective_config: ObjectiveConfig
    ) -> None:
        super().__init__()
        if getattr(backbone, "num_classes", 0) != 0:
            raise ValueError(
                f"The backbone has a {backbone.num_classes}-way classifier; build it with num_classes=0 "
                "so that it returns pooled features."
            )
        framework = get_framework(objective_config.framework)
        self.backbone = backbone
        self.projector = build_projector(backbone.num_features, projector_config)
        predictor = framework.predictor_config(self.projector.out_features, objective_config.predictor_hidden)
        self.predictor = build_projector(self.projector.out_features, predictor) if predictor else None
        self.target_backbone = self.target_projector = None
        if framework.has_target:
            # Same structure as the online network (top-k layers included): the EMA pairs by position.
            self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
            self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.objective = BottleneckObjective(objective_config)
        self.projector_config = projector_config
        self.objective_config = objective_config

    @property
    def num_features(self) -> int:
        return self.backbone.num_features

    def forward(self, images: Tensor) -> Tensor:
        """Pre-projector features Z1 (B, F): the representation downstream tasks use."""
        return self.backbone(images)

    def project(self, features: Tensor) -> Tensor:
        """Projector output Z2 (B, P) for backbone features (B, F)."""
        return self.projector(features)

    def compute_loss(self, views: Sequence[Tensor], information_plane: bool = False) -> ObjectiveOutput:
        """The training loss for V >= 2 augmented views of the same B images (see :meth:`encode_and_loss`)."""
        return self.encode_and_loss(views, information_plane).objective

    def encode_and_loss(self, views: Sequence[Tensor], information_plane: bool = False) -> EncodedLoss:
        """The training loss for V >= 2 augmented views of the same B images, with the features Z1 it used.

        Each view goes through the backbone on its own, as in the reference code, so BatchNorm statistics
        never mix the two views of one image. ``information_plane`` is passed to the objective (the
        plane's quantities, for logging steps). The features are returned for what trains beside the
        model on them, such as an online classifier.
        """
        if len(views) < 2:
            raise ValueError(
                f"Self-supervised pretraining needs at least 2 views per image, got {len(views)}."
            )
        z1 = [self.backbone(view) for view in views]
        z2 = [self.projector(z) for z in z1]
        predictions = targets = None
        if self.predictor is not None:
            predictions = [self.predictor(z) for z in z2]
        if self.target_backbone is not None:
            with torch.no_grad():
                targets = [self._target_output(view) for view in views]
        objective = self.objective(z1, z2, information_plane, predictions=predictions, targets=targets)
        return EncodedLoss(objective, z1)

    def _target_output(self, view: Tensor) -> Tensor:
        """The target's projector output for one view; its quantizer is skipped unless quantize_target."""
        features = self.target_backbone(view)
        head = self.target_projector
        if isinstance(head, DiscretizedProjector) and not self.objective_config.quantize_target:
            return head.unquantized(features)
        return head(features)

    @torch.no_grad()
    def update_target(self, step: int, total_steps: int) -> None:
        """Move the target towards the online backbone and projector after optimisation step ``step``
        (1-based) of ``total_steps``: target = tau target + (1 - tau) online, tau = ``momentum_at(step -
        1)``. Parameters only, paired by position, as solo-learn's ``MomentumUpdater.update``; BatchNorm
        statistics stay the target's own. Nothing happens for a framework without a target."""
        if self.target_backbone is None:
            return
        config = self.objective_config
        tau = momentum_at(step - 1, total_steps, config.momentum_base, config.momentum_end)
        for online, target in (
            (self.backbone, self.target_backbone),
            (self.projector, self.target_projector),
        ):
            for online_param, target_param in zip(online.parameters(), target.parameters(), strict=True):
                target_param.mul_(tau).add_(online_param.detach(), alpha=1 - tau)

    def heads(self) -> nn.Module:
        """Everything trained beside the backbone, as one module for ``projector.safetensors``: the
        projector itself (its state dict as ibzoo has always saved it), or with a predictor and target a
        ModuleDict of ``projector``, ``predictor``, ``target_backbone`` and ``target_projector`` (sharing
        this model's modules, so loading into it loads into the model)."""
        if self.predictor is None and self.target_backbone is None:
            return self.projector
        parts = {"projector": self.projector, "predictor": self.predictor}
        parts |= {"target_backbone": self.target_backbone, "target_projector": self.target_projector}
        return nn.ModuleDict({name: module for name, module in parts.items() if module is not None})

    def backbone_only(self) -> nn.Module:
        """The backbone as an ordinary timm model (shares parameters with this model)."""
        return self.backbone

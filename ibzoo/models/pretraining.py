"""The pretraining model: a timm backbone, a bottleneck projector and the objective that trains them.

Downstream tasks keep only the backbone (Z1); the projector (Z1 -> Z2) exists to shape what the
backbone learns, which is why :meth:`SSLModel.backbone_only` hands the backbone back as a plain timm model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from ibzoo.objectives import BottleneckObjective, ObjectiveConfig, ObjectiveOutput
from ibzoo.projectors import ProjectorConfig, build_projector

__all__ = ["EncodedLoss", "SSLModel"]


class EncodedLoss(NamedTuple):
    """What :meth:`SSLModel.encode_and_loss` returns."""

    objective: ObjectiveOutput  # the loss and its parts
    features: list[Tensor]  # Z1 of each view, (B, F) each, with gradient


class SSLModel(nn.Module):
    """Backbone + projector + objective for SimCLR / Barlow Twins pretraining.

    Shapes (B: batch, V: views, F: backbone features, P: projector output):
        ``forward(images (B, C, H, W)) -> (B, F)``, ``project((B, F)) -> (B, P)``,
        ``compute_loss(V tensors (B, C, H, W)) -> ObjectiveOutput``.

    Args:
        backbone: a timm model built with ``num_classes=0`` (pooled features of width ``num_features``).
        projector_config: which bottleneck projector to put on top (see :mod:`ibzoo.projectors`).
        objective_config: the self-supervised loss and the weight of the matrix-MI regularizer.
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
        self.backbone = backbone
        self.projector = build_projector(backbone.num_features, projector_config)
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
        return EncodedLoss(self.objective(z1, z2, information_plane=information_plane), z1)

    def backbone_only(self) -> nn.Module:
        """The backbone as an ordinary timm model (shares parameters with this model)."""
        return self.backbone

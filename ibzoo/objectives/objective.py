"""What pretraining minimises: a framework's SSL loss plus lambda * I(Z1; Z2), the matrix mutual-information
regulariser of Ouyang et al., "Projection Head is Secretly an Information Bottleneck", ICLR 2025
(arXiv 2503.00507). The loss itself comes from the framework's file (:mod:`ibzoo.frameworks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ibzoo.frameworks import FRAMEWORKS, get_framework
from ibzoo.objectives.matrix_mi import InformationPlane, MatrixEntropies, matrix_entropies

__all__ = [
    "FRAMEWORK_SETTINGS",
    "BottleneckObjective",
    "ObjectiveConfig",
    "ObjectiveOutput",
    "framework_settings",
    "recorded_objective_config",
]

# The ObjectiveConfig fields that belong to a framework (each framework file says which it reads), and
# what a value must be. Written once here; the frameworks give the values.
FRAMEWORK_SETTINGS = {
    "temperature": "positive",
    "lambda_offdiag": "non-negative",
    "scale": "positive",
    "invariance_weight": "non-negative",
    "variance_weight": "non-negative",
    "covariance_weight": "non-negative",
    "momentum_base": "fraction",
    "momentum_end": "fraction",
    "predictor_hidden": "width",
    "quantize_target": "flag",
}


@dataclass
class ObjectiveConfig:
    """What the training loss is; saved verbatim with a run's configuration.

    The framework's own settings default to its reference values for CIFAR-sized data (the zoo's
    recipes set the ImageNet-100 ones where they differ); a setting the framework does not read must stay
    None, so that no framework silently takes another's values.
    """

    framework: str = "simclr"
    """Which SSL framework: a name of ``ibzoo.frameworks.FRAMEWORKS``."""
    temperature: float | None = None
    """Softmax temperature (> 0): SimCLR, MoCo v3."""
    lambda_offdiag: float | None = None
    """Weight of the off-diagonal correlations (>= 0): Barlow Twins."""
    scale: float | None = None
    """Overall loss factor (> 0), solo-learn's scale_loss: Barlow Twins."""
    invariance_weight: float | None = None
    """Weight of the invariance (MSE) term (>= 0): VICReg."""
    variance_weight: float | None = None
    """Weight of the variance hinge (>= 0): VICReg."""
    covariance_weight: float | None = None
    """Weight of the covariance term (>= 0): VICReg."""
    momentum_base: float | None = None
    """EMA coefficient tau of the target network at the first step (in [0, 1]): BYOL, MoCo v3."""
    momentum_end: float | None = None
    """tau at the last step, reached on a cosine (in [momentum_base, 1]): BYOL, MoCo v3."""
    predictor_hidden: int | None = None
    """Hidden width of the online predictor: BYOL, MoCo v3."""
    quantize_target: bool | None = None
    """Quantize the target's projector output too, when the projector quantizes (default: only the online
    output, as the paper's authors' BYOL): BYOL, MoCo v3."""
    mi_weight: float = 0.0
    """lambda of the matrix MI regulariser (>= 0); 0 disables it. Paper: ~1e-4 CIFAR, ~1e-2 IN-100."""
    mi_alpha: float = 2.0
    """Rényi order of the matrix entropies (> 0); 1 is the von Neumann entropy."""

    def __post_init__(self) -> None:
        if self.framework not in FRAMEWORKS:
            raise ValueError(
                f"ObjectiveConfig.framework={self.framework!r} is unknown; choose one of "
                f"{', '.join(FRAMEWORKS)}."
            )
        framework = get_framework(self.framework)
        own = framework.settings["cifar"]
        for name in FRAMEWORK_SETTINGS:
            value = getattr(self, name)
            if name not in own:
                if value is not None:
                    owners = [f.title for f in FRAMEWORKS.values() if name in f.settings["cifar"]]
                    raise ValueError(
                        f"ObjectiveConfig.{name}={value!r} is a setting of {', '.join(owners)}, not of "
                        f"{framework.title}, which reads {', '.join(own) or 'no settings'}; drop it."
                    )
                continue
            if value is None:
                setattr(self, name, own[name])
            else:
                _check_setting(name, value)
        if self.momentum_base is not None and self.momentum_base > self.momentum_end:
            raise ValueError(
                f"ObjectiveConfig.momentum_base={self.momentum_base} exceeds momentum_end="
                f"{self.momentum_end}; tau rises from base to end."
            )
        _check_setting("mi_weight", self.mi_weight)
        _check_setting("mi_alpha", self.mi_alpha)


def recorded_objective_config(values: dict[str, object]) -> ObjectiveConfig:
    """An ObjectiveConfig from a saved one (a checkpoint's config.json). ibzoo 0.x before the framework
    files recorded every framework's settings, the inert ones included; those of another framework are
    dropped here, so that older checkpoints keep loading."""
    framework = FRAMEWORKS.get(values.get("framework"))
    if framework is not None:
        own = framework.settings["cifar"]
        values = {k: v for k, v in values.items() if k in own or k not in FRAMEWORK_SETTINGS}
    return ObjectiveConfig(**values)


def _check_setting(name: str, value: object) -> None:
    rule = {**FRAMEWORK_SETTINGS, "mi_weight": "non-negative", "mi_alpha": "positive"}[name]
    if rule == "flag":
        if not isinstance(value, bool):
            raise ValueError(f"ObjectiveConfig.{name}={value!r} must be true or false.")
        return
    if rule == "width":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"ObjectiveConfig.{name}={value!r} must be a positive integer.")
        return
    number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    within = {
        "positive": lambda v: v > 0,
        "non-negative": lambda v: v >= 0,
        "fraction": lambda v: 0 <= v <= 1,
    }
    if not (number and within[rule](value)):
        wanted = {"positive": "> 0", "non-negative": ">= 0", "fraction": "in [0, 1]"}[rule]
        raise ValueError(f"ObjectiveConfig.{name}={value!r} must be a finite number {wanted}.")


def framework_settings(config: ObjectiveConfig) -> dict[str, object]:
    """The settings of ``config`` its framework reads, by name (for model cards and logs)."""
    own = get_framework(config.framework).settings["cifar"]
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name in own}


class ObjectiveOutput(NamedTuple):
    """What BottleneckObjective returns."""

    loss: Tensor  # ssl_loss + mi_weight * mutual_information: what to backpropagate
    ssl_loss: Tensor  # the framework's SSL loss
    mutual_information: Tensor | None  # I(Z1; Z2); None when neither the loss nor the plane needed it
    information_plane: InformationPlane | None  # detached; only when asked for


class BottleneckObjective(nn.Module):
    """The framework's SSL loss plus mi_weight * I(Z1; Z2) (the paper's training regulariser).

    Z2 is the online projector's output (after quantization when the projector quantizes) for every
    framework; with a predictor and target (BYOL, MoCo v3) the SSL loss compares the predictor's output
    with the target's instead of the projector outputs with each other. I(Z1; Z2) uses all views
    concatenated (N = V * B rows) of this process only: under torch.distributed it is a per-rank estimate,
    and DDP averages its gradient over ranks.
    """

    def __init__(self, config: ObjectiveConfig) -> None:
        super().__init__()
        self.config = config
        self.framework = get_framework(config.framework)
        self.ssl_loss = self.framework.build_loss(config)

    def forward(
        self,
        z1_views: Sequence[Tensor],
        z2_views: Sequence[Tensor],
        information_plane: bool = False,
        predictions: Sequence[Tensor] | None = None,
        targets: Sequence[Tensor] | None = None,
    ) -> ObjectiveOutput:
        """Loss of V views: ``z1_views`` backbone features (B, D1), ``z2_views`` projector outputs (B, D2);
        for a framework with a target, ``predictions`` (the online predictor's outputs) and ``targets``
        (the target network's projector outputs), V x (B, D2) each.

        V: views, B: images per view, D1: backbone features, D2: projector outputs. ``information_plane``
        (for logging intervals) also evaluates the SSL loss on Z1 without gradient, for the frameworks
        where that is defined (without a target); under torch.distributed ask for it on every rank at the
        same step, since the SSL loss gathers. The mutual information is computed only when mi_weight > 0
        or the plane is asked for.
        """
        with_target = self.framework.has_target
        ssl_loss = self.ssl_loss(predictions, targets) if with_target else self.ssl_loss(z2_views)
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
            ssl_loss_on_z1 = None
            if not with_target:  # -L_ssl(Z1) needs the loss to take Z1 as it takes Z2
                with torch.no_grad():
                    ssl_loss_on_z1 = self.ssl_loss(z1_views)
            detached = MatrixEntropies(*(entropy.detach() for entropy in entropies))
            plane = InformationPlane.from_entropies(detached, ssl_loss_on_z1)
        return ObjectiveOutput(loss, ssl_loss, mutual_information, plane)

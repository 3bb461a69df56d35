"""Optimisers and learning-rate schedules for ibzoo's self-supervised pretraining.

The recipes we reproduce (solo-learn's, which the paper's code builds on, for all five frameworks) train
with LARS: SGD with momentum whose step is rescaled per parameter tensor by a trust ratio
(You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", arXiv 1708.03888). Biases and
normalisation weights are excluded from both the trust ratio and weight decay, the learning rate is scaled
linearly with the batch size, and it follows a per-step linear warmup then a cosine decay.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

OptimizerName = Literal["lars", "sgd", "adamw"]
LrScaling = Literal["linear", "none"]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling, following solo-learn's LARS.

    For each parameter tensor w with gradient g, in a group that is not excluded:

        d = g + wd * w
        trust = eta * ||w|| / (||g|| + wd * ||w||)
        local_lr = min(trust, lr) if clip_lr else lr * trust      (lr where ||w|| = 0 or the denominator is 0)
        buf = momentum * buf + local_lr / lr * d                    (buf = the first such term)
        w = w - lr * buf

    With ``clip_lr`` (LARC's clip mode, solo-learn's ``clip_lr: True`` used by every recipe of the zoo's
    frameworks) the trust ratio *is* the step size and the scheduled lr only caps it; without it the trust
    ratio multiplies the scheduled lr as in the LARS paper. A zero-norm weight takes a plain SGD step, so
    freshly zero-initialised tensors can leave zero. Unlike solo-learn, which then also skips weight decay,
    a zero gradient still gets decay here, scaled by eta / wd. solo-learn (Projector_Theory
    ``utils/lars.py``) also adds eps = 1e-8 to the denominator; here the zero guards take its place, and
    with ||g|| of order 1e-3 or more it would change the trust ratio by at most 1e-5 relative. Kept out so
    that the optimiser the published ``.fmnist`` weights were trained with stays the one in this file.

    Groups with ``lars_exclude=True`` (see :func:`parameter_groups`) take plain SGD-with-momentum steps
    without weight decay: the SimCLR/BYOL treatment of biases and normalisation weights. The flag defaults
    to False, so build groups with :func:`parameter_groups` rather than passing ``model.parameters()``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip_lr: bool = True,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"LARS lr must be >= 0, got {lr}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}.")
        if weight_decay < 0.0:
            raise ValueError(f"LARS weight_decay must be >= 0, got {weight_decay}.")
        if eta <= 0.0:
            raise ValueError(f"LARS eta (trust coefficient) must be > 0, got {eta}; 0.02 is solo-learn's.")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr, lars_exclude=False
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Take one optimisation step; ``closure``, if given, re-evaluates the loss, which is returned."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, weight_decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = param.grad
                if not group["lars_exclude"]:
                    update = update.add(param, alpha=weight_decay)
                    update = update * self._trust_scale(
                        param, lr, weight_decay, group["eta"], group["clip_lr"]
                    )
                if momentum != 0.0:
                    state = self.state[param]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = update.detach().clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(update)
                    update = state["momentum_buffer"]
                param.add_(update, alpha=-lr)
        return loss

    @staticmethod
    def _trust_scale(
        param: torch.Tensor, lr: float, weight_decay: float, eta: float, clip_lr: bool
    ) -> torch.Tensor:
        """The factor (0-dim tensor) that turns the scheduled lr into this tensor's step size."""
        # Norms in float32 so half-precision parameters neither overflow nor lose the ratio; torch.where
        # keeps the zero-norm guards on the device (no host sync per tensor on CUDA).
        param_norm = torch.linalg.vector_norm(param, dtype=torch.float32)
        grad_norm = torch.linalg.vector_norm(param.grad, dtype=torch.float32)
        denominator = grad_norm + weight_decay * param_norm
        defined = (param_norm > 0) & (denominator > 0)
        trust = eta * param_norm / torch.where(defined, denominator, 1.0)
        if clip_lr:
            # min(trust, lr) / lr; at lr == 0 the step is zero whatever the factor.
            trust = torch.clamp(trust / lr, max=1.0) if lr > 0 else torch.ones_like(trust)
        return torch.where(defined, trust, 1.0).to(param.dtype)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into decayed and excluded optimiser groups.

    Tensors with ndim <= 1 (biases, BatchNorm/LayerNorm weights) go to a group with ``weight_decay=0`` and
    ``lars_exclude=True``; all others get ``weight_decay`` and LARS adaptation. Parameters with
    ``requires_grad=False`` are left out; empty groups are dropped.
    """
    decayed, excluded = [], []
    for param in model.parameters():
        if param.requires_grad:
            (excluded if param.ndim <= 1 else decayed).append(param)
    groups = [
        {"params": decayed, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": excluded, "weight_decay": 0.0, "lars_exclude": True},
    ]
    return [group for group in groups if group["params"]]


@dataclass
class OptimizerConfig:
    """How pretraining optimises: the optimiser, its learning rate and the schedule's shape.

    The defaults are the paper's CIFAR/ImageNet-100 Barlow Twins setting (solo-learn's recipe); SimCLR on
    CIFAR uses ``lr=0.4``.
    """

    name: OptimizerName = "lars"
    """"lars" (the reference recipe), "sgd" (with momentum) or "adamw"; none decays biases or norms."""
    lr: float = 0.3
    """Base learning rate: the peak lr for a total batch of 256 when ``lr_scaling="linear"``."""
    weight_decay: float = 1e-4
    """L2 penalty on weights with ndim >= 2 (decoupled for AdamW)."""
    momentum: float = 0.9
    """Momentum of LARS and SGD; AdamW keeps its default betas and ignores it."""
    lars_eta: float = 0.02
    """LARS trust coefficient eta."""
    lars_clip_lr: bool = True
    """LARS step size min(trust, lr) instead of lr * trust (see :class:`LARS`)."""
    warmup_epochs: float = 10.0
    """Epochs of linear warmup, converted to optimisation steps by the training script."""
    min_lr_ratio: float = 0.0
    """Final lr as a fraction of the peak lr at the end of the cosine decay."""
    lr_scaling: LrScaling = "linear"
    """"linear": peak lr = lr * total_batch_size / 256, the total summed over devices and nodes as in
    solo-learn (which multiplies its per-device batch size by devices * nodes) and SimCLR; "none": lr as
    given."""

    def __post_init__(self) -> None:
        for field, choices in (("name", OptimizerName), ("lr_scaling", LrScaling)):
            if getattr(self, field) not in get_args(choices):
                valid = ", ".join(get_args(choices))
                raise ValueError(f"OptimizerConfig.{field}={getattr(self, field)!r} is not one of {valid}.")
        if self.lr <= 0:
            raise ValueError(f"OptimizerConfig.lr must be > 0, got {self.lr}.")
        if self.weight_decay < 0:
            raise ValueError(f"OptimizerConfig.weight_decay must be >= 0, got {self.weight_decay}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"OptimizerConfig.momentum must be in [0, 1), got {self.momentum}.")
        if self.lars_eta <= 0:
            raise ValueError(f"OptimizerConfig.lars_eta must be > 0, got {self.lars_eta}.")
        if self.warmup_epochs < 0:
            raise ValueError(f"OptimizerConfig.warmup_epochs must be >= 0, got {self.warmup_epochs}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"OptimizerConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}.")

    def scaled_lr(self, total_batch_size: int) -> float:
        """The peak learning rate for ``total_batch_size`` samples per step (all devices together)."""
        if total_batch_size < 1:
            raise ValueError(f"total_batch_size must be >= 1, got {total_batch_size}.")
        return self.lr * total_batch_size / 256 if self.lr_scaling == "linear" else self.lr


def build_optimizer(
    model: nn.Module, config: OptimizerConfig, total_batch_size: int
) -> torch.optim.Optimizer:
    """Build ``config``'s optimiser over ``model``'s trainable parameters (see :func:`parameter_groups`).

    ``total_batch_size`` is the number of samples per optimisation step over all devices; it sets the
    peak lr through :meth:`OptimizerConfig.scaled_lr`.
    """
    lr = config.scaled_lr(total_batch_size)
    groups = parameter_groups(model, config.weight_decay)
    if not groups:
        raise ValueError("The model has no parameters with requires_grad=True; unfreeze some to train it.")
    if config.name == "lars":
        return LARS(groups, lr=lr, momentum=config.momentum, eta=config.lars_eta, clip_lr=config.lars_clip_lr)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=lr)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup then cosine decay, stepped once per optimisation step.

    The lr used at step s (0-based, ``scheduler.step()`` called after each ``optimizer.step()``) is the
    group's base lr times (s + 1) / warmup_steps during warmup, so the first step is small but not wasted
    and the last warmup step uses the full lr. The reference (Projector_Theory ``utils/lr_scheduler.py`` with
    ``methods/base.py``'s default ``warmup_start_lr`` 3e-5) instead starts at an absolute 3e-5 and rises in
    warmup_steps - 1 equal steps; ibzoo's ramp is proportional to the lr, so it keeps its shape at any batch
    size and for the classifier's group. The two differ by at most base lr / warmup_steps at any step (2e-4
    on CIFAR SimCLR's 1950-step warm-up) and agree from the end of the warm-up on; then
    min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * (s - warmup_steps) / (total_steps - warmup_steps))) / 2,
    reaching ``min_lr_ratio`` after the last step. To resume, rebuild the schedule with the same arguments
    and load its ``state_dict`` (and the optimiser's).
    """
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"Need 0 <= warmup_steps <= total_steps and total_steps >= 1, got warmup_steps={warmup_steps}, "
            f"total_steps={total_steps}; shorten the warmup (warmup_epochs) or train for longer."
        )
    if not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}.")
    decay_steps = max(total_steps - warmup_steps, 1)

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / decay_steps, 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

"""SimCLR: its NT-Xent loss (extended to any number of views), heads, views and presets.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020
(arXiv 2002.05709). With more than two views every other view of the same image is a positive,
averaged as in SupCon's L_out (Khosla et al., arXiv 2004.11362); for two views this is exactly
SimCLR's loss. Under torch.distributed the negatives come from the whole global batch.
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
    gather_rows,
    upcast,
    with_global_value,
)
from ibzoo.frameworks.framework import Framework, Recipe
from ibzoo.projectors import ProjectorConfig
from ibzoo.view_recipe import ViewRecipe


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross entropy over V >= 2 views.

    For anchor i with positives P(i) (the same image in the other V - 1 views) and candidates A(i)
    (every row but i itself): loss_i = -1/|P(i)| sum_{p in P(i)} log softmax_{a in A(i)}(s_ia / t)[p],
    s = cosine similarity; the loss is the mean over anchors.

    Args:
        temperature: softmax temperature t; the paper-notes recipes use 0.2.
        gather_distributed: when torch.distributed is initialised, compare local anchors with the
            rows of every rank. Each rank then returns the global-batch loss, and its gradient is
            that of the local anchors' mean, which DDP's gradient averaging turns into the gradient
            of the global-batch loss. Every rank must pass the same batch size.
    """

    def __init__(self, temperature: float = 0.2, gather_distributed: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"NTXentLoss temperature must be > 0, got {temperature}; SimCLR uses 0.2.")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"

    def forward(self, views: Sequence[Tensor]) -> Tensor:
        """Loss of ``views``: V tensors of shape (B, D), not normalised. Returns a scalar (float32+).

        V: views, B: images per view on this rank, D: features.
        """
        check_views(views, "NTXentLoss")
        rank, world = distributed_world() if self.gather_distributed else (0, 1)
        with autocast_disabled(views[0]):
            local = torch.stack([F.normalize(upcast(view), dim=1) for view in views], dim=1)  # B, V, D
            batch, num_views, dim = local.shape
            gathered = gather_rows(local) if world > 1 else local  # (W * B, V, D) in rank order
            global_batch = gathered.shape[0]
            # View-major layouts: row v * batch + b is image b of view v.
            anchors = local.transpose(0, 1).reshape(num_views * batch, dim)
            candidates = gathered.transpose(0, 1).reshape(num_views * global_batch, dim)
            logits = anchors @ candidates.T / self.temperature

            device = logits.device
            image_in_batch = rank * batch + torch.arange(batch, device=device)
            anchor_row = (
                torch.arange(num_views, device=device)[:, None] * global_batch + image_in_batch
            ).flatten()
            candidate_row = torch.arange(num_views * global_batch, device=device)
            is_self = anchor_row[:, None] == candidate_row
            is_positive = (anchor_row[:, None] % global_batch == candidate_row % global_batch) & ~is_self

            log_prob = logits.masked_fill(is_self, float("-inf")).log_softmax(dim=1)
            positive_log_prob = log_prob.masked_fill(~is_positive, 0.0).sum(dim=1) / (num_views - 1)
            loss = -positive_log_prob.mean()
        # Report the same global-batch value on every rank; the gradient stays the local one.
        return with_global_value(loss) if world > 1 else loss


def simclr_views(image_size: int) -> tuple[ViewRecipe, ...]:
    """Both views alike, at every size: PKU-ML/Projector_Theory ``scripts/pretrain/cifar/augmentations/
    symmetric.yaml`` (crop 0.08-1, jitter 0.8/0.8/0.8/0.2 p 0.8, greyscale 0.2, blur p 0.5, flip 0.5, no
    solarization)."""
    return (ViewRecipe(jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5),)


SIMCLR = Framework(
    name="simclr",
    title="SimCLR",
    citation="Chen et al., ICML 2020, arXiv:2002.05709",
    loss=NTXentLoss,
    loss_args=("temperature",),
    # Projector_Theory scripts/pretrain/{cifar,imagenet-100}/simclr.yaml: temperature 0.2.
    settings={"cifar": {"temperature": 0.2}, "imagenet": {"temperature": 0.2}},
    # proj_hidden_dim / proj_output_dim: 2048 / 256 (CIFAR), 4096 / 512 (ImageNet-100); Linear-ReLU-Linear.
    heads={
        "cifar": ProjectorConfig(hidden_features=(2048,), out_features=256),
        "imagenet": ProjectorConfig(hidden_features=(4096,), out_features=512),
    },
    # Projector_Theory methods/simclr.py: the sparse autoencoder replaces the MLP (512 -> 512).
    topk_stem=None,
    # The paper's text: about 30 levels for SimCLR (the yamls ship point_num: 0).
    fsq_levels=30,
    # LARS lr 0.4 (CIFAR) / 0.3 (IN-100), weight decay 1e-4, classifier_lr 0.1; 200 / 100 epochs;
    # batch 256 (IN-100: 128 x 2 GPUs).
    recipes={
        "cifar": Recipe(lr=0.4, weight_decay=1e-4, batch_size=256, epochs=200, classifier_lr=0.1),
        "imagenet": Recipe(lr=0.3, weight_decay=1e-4, batch_size=256, epochs=100, classifier_lr=0.1),
    },
    views=simclr_views,
)

"""BYOL: its loss, heads, views and presets, and where a bottleneck goes in a momentum framework.

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020 (arXiv 2006.07733). Recipe from solo-learn
(commit 9187ea3): ``scripts/pretrain/{cifar,imagenet-100}/byol.yaml``, ``solo/methods/byol.py``,
``solo/losses/byol.py``, ``solo/utils/momentum.py``.

Where the bottleneck goes (ibzoo's decisions, each with its reason):

- On the online projector's output z, before the predictor: p = g(z), so I(Z1; P) <= I(Z1; Z) and a
  bottleneck there bounds everything after it. This is also where the paper's authors put FSQ in their
  unreleased BYOL (PKU-ML/Projector_Theory, compiled ``methods/__pycache__/byol.cpython-311.pyc``).
- The target (an EMA copy of backbone and projector) has the same structure as the online network, top-k
  layers included, because the EMA pairs parameters by position. FSQ has no parameters: the target's
  output is *not* quantized by default, as in the authors' file; ``quantize_target=True`` quantizes it too.
- FSQ levels: 30, the paper's value for SimCLR, whose head BYOL's resembles (a cosine loss on a 256-d
  output); no reference value exists for BYOL.
- Top-k: the Barlow Twins pattern, Linear-BN-ReLU to 2048 then the autoencoder there (the output, 256-d,
  is too narrow for an autoencoder with k = 1000), so online and target hold 2 x 410M top-k parameters.
- Matrix MI: I(Z1; Z) with Z the online projector output (after FSQ when quantized). The information
  plane's I(Z1; R) = -L_ssl(Z1) has no meaning without a predictor and target for Z1, and is not logged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ibzoo.frameworks._common import autocast_disabled, check_views, upcast, with_global_value
from ibzoo.frameworks.barlow_twins import asymmetric_views
from ibzoo.frameworks.framework import Framework, Recipe
from ibzoo.projectors import ProjectorConfig

__all__ = ["BYOL", "BYOLLoss"]


class BYOLLoss(nn.Module):
    """Sum over ordered view pairs (a, b), a != b, of 2 - 2 cos(p_b, sg(z'_a)), each a mean over images.

    solo-learn's ``byol_loss_func`` summed as its ``methods/byol.py`` does: for two views
    L = (2 - 2 cos(p_2, z'_1)) + (2 - 2 cos(p_1, z'_2)), in [0, 8]. The targets z' carry no gradient.
    Under torch.distributed every rank reports the global-batch value.
    """

    def forward(self, predictions: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
        """``predictions``: the online predictor's output per view, V x (B, D); ``targets``: the target
        projector's output per view, V x (B, D). Returns a scalar (float32 or wider)."""
        check_views(predictions, "BYOLLoss")
        check_views(targets, "BYOLLoss")
        with autocast_disabled(predictions[0]):
            loss = predictions[0].new_zeros(
                (), dtype=torch.promote_types(predictions[0].dtype, torch.float32)
            )
            for a, target in enumerate(targets):
                for b, prediction in enumerate(predictions):
                    if a != b:
                        cosine = F.cosine_similarity(upcast(prediction), upcast(target).detach(), dim=-1)
                        loss = loss + 2 - 2 * cosine.mean()
        return with_global_value(loss)


BYOL = Framework(
    name="byol",
    title="BYOL",
    citation="Grill et al., NeurIPS 2020, arXiv:2006.07733",
    loss=BYOLLoss,
    loss_args=(),
    # byol.yaml: momentum base_tau 0.99, final_tau 1.0; pred_hidden_dim 4096 (CIFAR), 8192 (IN-100).
    settings={
        family: {
            "momentum_base": 0.99,
            "momentum_end": 1.0,
            "predictor_hidden": hidden,
            "quantize_target": False,
        }
        for family, hidden in (("cifar", 4096), ("imagenet", 8192))
    },
    # proj_hidden_dim 4096, proj_output_dim 256: Linear-BN-ReLU-Linear (solo/methods/byol.py).
    heads={
        family: ProjectorConfig(hidden_features=(4096,), out_features=256, batch_norm=True)
        for family in ("cifar", "imagenet")
    },
    topk_stem=ProjectorConfig(hidden_features=(2048,), out_features=None, batch_norm=True),
    fsq_levels=30,
    # The predictor: Linear-BN-ReLU-Linear back to the projector's width.
    predictor=ProjectorConfig(hidden_features=(4096,), out_features=256, batch_norm=True),
    # byol.yaml: LARS lr 1.0, weight decay 1e-5, classifier_lr 0.1, batch 256, 1000 epochs (CIFAR);
    # IN-100: lr 0.5, weight decay 1e-6, batch 128 x 2 GPUs, 400 epochs.
    recipes={
        "cifar": Recipe(lr=1.0, weight_decay=1e-5, batch_size=256, epochs=1000, classifier_lr=0.1),
        "imagenet": Recipe(lr=0.5, weight_decay=1e-6, batch_size=256, epochs=400, classifier_lr=0.1),
    },
    views=asymmetric_views,
)

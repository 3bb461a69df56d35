"""MLP projection heads (and predictors) of the joint-embedding frameworks, the plain baselines the
bottleneck projectors improve on.

"Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR 2025,
https://arxiv.org/abs/2503.00507) compares its discretized and sparse projectors against these heads, and
its Barlow Twins top-k variant keeps the first Linear-BatchNorm-ReLU block as a "stem" in front of the
sparse autoencoder (``out_features=None``). Layer layout follows solo-learn, which the paper's code builds on.
"""

from collections.abc import Sequence

import torch
from torch import nn

from ibzoo.projectors._common import is_int_at_least


class MLPProjector(nn.Module):
    """Linear(-BatchNorm1d)-ReLU blocks, one per hidden width, then an optional final Linear.

    SimCLR head, ``MLPProjector(512, (2048,), 256)``:
    "We use a MLP with one hidden layer to obtain z_i = g(h_i) = W(2) σ(W(1) h_i) where σ is a ReLU
    non-linearity." [0]

    Barlow Twins head, ``MLPProjector(512, (2048, 2048), 2048, batch_norm=True)``:
    "The projector network has three linear layers, each with 8192 output units. The first two layers of
    the projector are followed by a batch normalization layer and rectified linear units." [1]
    (the paper's CIFAR recipe uses 2048 units).

    MoCo v3 head (ResNet branch), ``MLPProjector(512, (4096,), 256, batch_norm=True, bias=False,
    out_batch_norm=True)``: "the projection head ... is a 2-layer MLP ... following SimCLR, [with] BN on
    the output" [2]; solo-learn's ``methods/mocov3.py`` builds its Linears without bias and ends in
    ``BatchNorm1d(affine=False)``.

    - [0] SimCLR, Chen et al., 2020, https://arxiv.org/abs/2002.05709
    - [1] Barlow Twins, Zbontar et al., 2021, https://arxiv.org/abs/2103.03230
    - [2] MoCo v3, Chen et al., 2021, https://arxiv.org/abs/2104.02057

    Args:
        in_features: Width of the encoder features fed to the head.
        hidden_features: Output width of each Linear(-BatchNorm1d)-ReLU block, in order.
        out_features: Width of the final Linear. ``None`` drops it, leaving a stem that ends in ReLU.
        batch_norm: Put BatchNorm1d between each hidden Linear and its ReLU.
        bias: Give every Linear a bias.
        out_batch_norm: End in BatchNorm1d without affine parameters after the final Linear.

    Attributes:
        out_features: Width of the output (the last hidden width when ``out_features`` is None).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Sequence[int] = (2048,),
        out_features: int | None = 256,
        batch_norm: bool = False,
        bias: bool = True,
        out_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        hidden_features = tuple(hidden_features)
        named_widths = [("in_features", in_features)]
        named_widths += [(f"hidden_features[{i}]", width) for i, width in enumerate(hidden_features)]
        if out_features is not None:
            named_widths.append(("out_features", out_features))
        for name, width in named_widths:
            if not is_int_at_least(width):
                raise ValueError(f"MLPProjector: {name}={width!r} must be a positive int.")
        if not hidden_features and out_features is None:
            raise ValueError(
                "MLPProjector: hidden_features=() with out_features=None has no layers; "
                "give at least one hidden width or an out_features."
            )
        if out_batch_norm and out_features is None:
            raise ValueError("MLPProjector: out_batch_norm=True needs an out_features (a final Linear).")

        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_features:
            layers.append(nn.Linear(width, hidden, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU(inplace=True))
            width = hidden
        if out_features is not None:
            layers.append(nn.Linear(width, out_features, bias=bias))
            width = out_features
            if out_batch_norm:
                layers.append(nn.BatchNorm1d(width, affine=False))
        self.layers = nn.Sequential(*layers)
        self.out_features: int = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project encoder features.

        Args:
            x: (B, D_in) features; B: batch, D_in: ``in_features``.

        Returns:
            (B, D_out) projections; D_out: ``self.out_features``.
        """
        return self.layers(x)

"""Discretized projector: finite scalar quantization (FSQ) of a projection head's output.

Structural regularization A of "Projection Head is Secretly an Information Bottleneck" (Ouyang et al.,
ICLR 2025, https://arxiv.org/abs/2503.00507): rounding every output dimension to a few levels caps how
much of the encoder features the projector can pass on. The quantizer is FSQ from "Finite Scalar
Quantization: VQ-VAE Made Simple" (Mentzer et al., 2023, https://arxiv.org/abs/2309.15505), with the
paper's constants: h = (L - 1)(1 - eps) / 2, offset o = 0.5 for even L else 0, shift s = tan(o / h),
bound(z) = tanh(z + s) h - o, output = round(bound(z)) / floor(L / 2) with a straight-through round.
"""

import math

import torch
from torch import nn

from ibzoo.projectors._common import is_int_at_least


class FiniteScalarQuantizer(nn.Module):
    """Round every feature to one of ``levels`` values in about [-1, 1], with a straight-through gradient.

    The same number of levels is used for every dimension, as in the paper (about 30 for SimCLR, 3 for
    Barlow Twins). The constants are plain floats: they depend on ``levels`` only, so they need no
    state-dict entry and follow the input to any device.

    Args:
        levels: Number of levels L per dimension, at least 2.
        eps: Keeps tanh's range just inside the outermost rounding boundaries.
    """

    def __init__(self, levels: int, eps: float = 1e-3) -> None:
        super().__init__()
        if not is_int_at_least(levels, 2):
            raise ValueError(f"FiniteScalarQuantizer: levels={levels!r} must be an int >= 2.")
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"FiniteScalarQuantizer: eps={eps!r} must lie in [0, 1); the paper uses 1e-3.")
        self.levels = levels
        self.eps = eps
        self.half_width = (levels - 1) * (1.0 - eps) / 2.0
        self.offset = 0.5 if levels % 2 == 0 else 0.0
        self.shift = math.tan(self.offset / self.half_width)
        # Integer codes run from -half_levels to levels - 1 - half_levels for odd and even L alike.
        self.half_levels = levels // 2

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash z into (-h - o, h - o), where rounding yields exactly ``levels`` integers; same shape."""
        return torch.tanh(z + self.shift) * self.half_width - self.offset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Quantize projections.

        Computed in at least float32 so bfloat16 inputs (or autocast) cannot move values across a
        rounding boundary; the result is cast back to the input dtype.

        Args:
            z: (..., D) projections; D: features.

        Returns:
            (..., D) codes on ``levels`` values in about [-1, 1], in z's dtype. The gradient is that of
            ``bound(z) / floor(L / 2)``: round is treated as the identity.
        """
        bounded = self.bound(z.to(torch.promote_types(z.dtype, torch.float32)))
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return (rounded / self.half_levels).to(z.dtype)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Map codes from ``forward`` to integer level indices.

        Args:
            codes: (..., D) quantized values.

        Returns:
            (..., D) int64 indices in [0, levels).
        """
        integer_codes = torch.round(codes.float() * self.half_levels)
        return (integer_codes + self.half_levels).long()

    def indices_to_codes(self, indices: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Map integer level indices back to the codes ``forward`` produces.

        Args:
            indices: (..., D) integer indices in [0, levels).
            dtype: Floating dtype of the result.

        Returns:
            (..., D) codes in about [-1, 1].
        """
        return ((indices.float() - self.half_levels) / self.half_levels).to(dtype)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, eps={self.eps}"


class DiscretizedProjector(nn.Module):
    """A projector followed by a ``FiniteScalarQuantizer`` on its output.

    Args:
        projector: Any projection head with an ``out_features`` attribute.
        levels: Quantization levels per output dimension.
        standardize: Standardize each output dimension over the batch before quantizing
            (``BatchNorm1d`` without affine parameters; running statistics in eval mode). ibzoo's
            deviation from the reference, for heads whose fresh outputs lie inside FSQ's middle level:
            Barlow Twins' top-k head outputs about 0.05 at init, which 3 levels round to 0 in every
            dimension, so no gradient reaches the backbone (``ibzoo.frameworks.barlow_twins``).

    Attributes:
        out_features: The wrapped projector's output width.
    """

    def __init__(self, projector: nn.Module, levels: int, standardize: bool = False) -> None:
        super().__init__()
        if not isinstance(getattr(projector, "out_features", None), int):
            raise ValueError(
                f"DiscretizedProjector: {type(projector).__name__} has no int `out_features`; "
                "wrap a projector that reports its output width."
            )
        self.projector = projector
        self.standardize = nn.BatchNorm1d(projector.out_features, affine=False) if standardize else None
        self.quantizer = FiniteScalarQuantizer(levels)
        self.out_features: int = projector.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project then quantize.

        Args:
            x: (B, D_in) encoder features; B: batch, D_in: the projector's input width.

        Returns:
            (B, D_out) quantized projections; D_out: ``self.out_features``.
        """
        return self.quantizer(self.unquantized(x))

    def unquantized(self, x: torch.Tensor) -> torch.Tensor:
        """What the quantizer receives: the projection, standardized when so built; (B, D_out)."""
        projected = self.projector(x)
        return projected if self.standardize is None else self.standardize(projected)

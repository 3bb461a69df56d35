"""Matrix-based Rényi entropy and mutual information of feature batches.

This is the training regulariser I(Z1; Z2) of Ouyang et al., "Projection Head is Secretly an
Information Bottleneck", ICLR 2025 (arXiv 2503.00507), and the information-plane quantities logged
with it. The entropy functional is that of Sanchez Giraldo, Rao & Principe, "Measures of Entropy
From Data Using Infinitely Divisible Kernels", IEEE Trans. Inf. Theory 2015 (arXiv 1211.2459).

With n L2-normalised rows, K = Z Z^T has unit diagonal, so A = K / n is positive semi-definite with
trace 1 and H_a = log(tr(A^a)) / (1 - a); for a = 1 it is the von Neumann entropy -sum(l log l) over
the eigenvalues l of A. The joint entropy uses the Hadamard product K1 o K2, again of unit diagonal.

The estimate of I is not bounded below by 0. For a = 2 it is log(E[x y] / (E[x] E[y])), the means taken
over the n^2 entries of x = K1 o K1 and y = K2 o K2: negative when the squared similarities of Z2's pairs
run against those of Z1's. Minimised with a large weight it can be driven there: Barlow Twins' mlp_mi in
the Fashion-MNIST benchmark (weight 5) logged I = +0.61 at step 20, about 0 at step 940 and -0.43 at the
end (step 1860).

Speed: tr(A^a) depends only on the nonzero eigenvalues, which Z Z^T / n shares with Z^T Z / n
(d x d) and (K1 o K2) / n shares with R^T R / n, R (n x d1 d2) being the row-wise Kronecker
(Khatri-Rao) product of Z1 and Z2. Each matrix is formed on its cheaper side, and for integer a the
trace is sum(A^p o A^q) with p + q = a: ceil(a/2) - 1 matmuls, none for a = 2 (the squared
Frobenius norm). No n x n matrix power is ever taken.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ibzoo.frameworks._common import autocast_disabled


class MatrixEntropies(NamedTuple):
    """H_a(K1), H_a(K2) and H_a(K1 o K2) of one batch; scalars."""

    z1_entropy: Tensor
    z2_entropy: Tensor
    joint_entropy: Tensor

    @property
    def mutual_information(self) -> Tensor:
        """I(Z1; Z2) = H(K1) + H(K2) - H(K1 o K2)."""
        return self.z1_entropy + self.z2_entropy - self.joint_entropy


class InformationPlane(NamedTuple):
    """The paper's information-plane coordinates of one batch; scalars. The two that need the SSL loss
    on Z1 are None for frameworks where that loss is not defined (BYOL, MoCo v3: predictor and target)."""

    mutual_information: Tensor  # I(Z1; Z2)
    z1_entropy: Tensor  # H(K1)
    upper_bound: Tensor  # H(K1) - I(Z1; Z2)
    z1_target_information: Tensor | None  # I(Z1; R), taken as minus the SSL loss computed on Z1
    lower_bound: Tensor | None  # I(Z1; R) - I(Z1; Z2)

    @classmethod
    def from_entropies(cls, entropies: MatrixEntropies, ssl_loss_on_z1: Tensor | None) -> InformationPlane:
        """Coordinates from already computed entropies and the SSL loss evaluated on Z1 (None: unknown)."""
        mutual_information = entropies.mutual_information
        target_information = None if ssl_loss_on_z1 is None else -ssl_loss_on_z1
        return cls(
            mutual_information=mutual_information,
            z1_entropy=entropies.z1_entropy,
            upper_bound=entropies.z1_entropy - mutual_information,
            z1_target_information=target_information,
            lower_bound=None if target_information is None else target_information - mutual_information,
        )


def _check_order(alpha: float) -> None:
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"Rényi order alpha must be a finite number > 0, got {alpha}; the paper uses 2.")


def _is_integer_order(alpha: float) -> bool:
    return alpha >= 2 and float(alpha).is_integer()


def _trace_power_cost(size: int, alpha: float) -> float:
    """Rough flop count of tr(A^a) for a size x size A; only used to choose the cheaper side."""
    if _is_integer_order(alpha):
        return (math.ceil(alpha / 2) - 1) * size**3 + size**2
    return 4.0 * size**3  # an eigendecomposition costs a few matmuls


def _entropy(matrix: Tensor, alpha: float) -> Tensor:
    """H_a of a symmetric PSD ``matrix`` of trace 1 (either side of its Gram factorisation)."""
    if _is_integer_order(alpha):
        order = int(alpha)
        low_power = torch.linalg.matrix_power(matrix, order // 2)
        high_power = low_power if order % 2 == 0 else low_power @ matrix
        # tr(A^p A^q) = sum(A^p o A^q) because powers of a symmetric matrix are symmetric.
        return torch.log((low_power * high_power).sum()) / (1 - order)
    # Clamping at `tiny` rather than 0 keeps the gradient of l log l finite for rounding-level eigenvalues.
    eigenvalues = torch.linalg.eigvalsh(matrix).clamp_min(torch.finfo(matrix.dtype).tiny)
    if alpha == 1:
        return torch.special.entr(eigenvalues).sum()
    return torch.log(eigenvalues.pow(alpha).sum()) / (1 - alpha)


def _unit_rows(*features: Tensor) -> tuple[Tensor, ...]:
    """Upcast to one float32-or-wider dtype and L2-normalise each row; check shapes (N, D_i)."""
    shapes = [tuple(z.shape) for z in features]
    if any(len(shape) != 2 or shape[0] == 0 for shape in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError(
            f"matrix entropies need non-empty 2-D features (rows, dims) with the same rows; got shapes "
            f"{shapes}. Concatenate the views along dim 0 and flatten the features."
        )
    dtype = functools.reduce(torch.promote_types, [z.dtype for z in features], torch.float32)
    return tuple(F.normalize(z.to(dtype), dim=1) for z in features)


def _normalised_gram(z: Tensor) -> Tensor:
    """K / n on its cheaper side: Z^T Z / n (d x d) if d < n, else Z Z^T / n (n x n)."""
    rows, dims = z.shape
    return (z.T @ z if dims < rows else z @ z.T) / rows


def _joint_and_marginal_grams(
    z1: Tensor, z2: Tensor, alpha: float
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(K1 o K2) / n on its cheaper side, with K1 / n and K2 / n when they were formed on the way."""
    rows, dims1 = z1.shape
    dims2 = z2.shape[1]
    khatri_rao_dims = dims1 * dims2
    khatri_rao_cost = rows * khatri_rao_dims**2 + _trace_power_cost(khatri_rao_dims, alpha)
    hadamard_cost = rows**2 * (dims1 + dims2) + _trace_power_cost(rows, alpha)
    if khatri_rao_cost < hadamard_cost:
        khatri_rao = (z1[:, :, None] * z2[:, None, :]).reshape(rows, khatri_rao_dims)
        return khatri_rao.T @ khatri_rao / rows, None, None
    gram1, gram2 = z1 @ z1.T / rows, z2 @ z2.T / rows
    return gram1 * gram2 * rows, gram1, gram2


def _marginal_gram(z: Tensor, square_gram: Tensor | None, alpha: float) -> Tensor:
    """K / n of ``z``: the n x n one already formed, unless the d x d side is still cheaper."""
    rows, dims = z.shape
    reuse_cost = _trace_power_cost(rows, alpha)
    if square_gram is not None and reuse_cost <= rows * dims**2 + _trace_power_cost(dims, alpha):
        return square_gram
    return _normalised_gram(z)


def matrix_renyi_entropy(z: Tensor, alpha: float = 2.0) -> Tensor:
    """H_a(K / N) with K = Z Z^T of the L2-normalised rows of ``z`` (N, D); a scalar in [0, log N].

    N: rows (samples), D: features. Differentiable; computed in float32 or wider.
    """
    _check_order(alpha)
    with autocast_disabled(z):
        (unit,) = _unit_rows(z)
        return _entropy(_normalised_gram(unit), alpha)


def joint_matrix_renyi_entropy(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> Tensor:
    """H_a((K1 o K2) / N), o the Hadamard product, of ``z1`` (N, D1) and ``z2`` (N, D2); a scalar.

    N: rows (samples), D1, D2: features. Differentiable; computed in float32 or wider.
    """
    _check_order(alpha)
    with autocast_disabled(z1):
        unit1, unit2 = _unit_rows(z1, z2)
        return _entropy(_joint_and_marginal_grams(unit1, unit2, alpha)[0], alpha)


def matrix_entropies(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> MatrixEntropies:
    """H_a(K1), H_a(K2) and H_a(K1 o K2) of ``z1`` (N, D1) and ``z2`` (N, D2), sharing the Gram work.

    N: rows (samples), D1, D2: features. Differentiable; computed in float32 or wider.
    """
    _check_order(alpha)
    with autocast_disabled(z1):
        unit1, unit2 = _unit_rows(z1, z2)
        joint, gram1, gram2 = _joint_and_marginal_grams(unit1, unit2, alpha)
        return MatrixEntropies(
            z1_entropy=_entropy(_marginal_gram(unit1, gram1, alpha), alpha),
            z2_entropy=_entropy(_marginal_gram(unit2, gram2, alpha), alpha),
            joint_entropy=_entropy(joint, alpha),
        )


def matrix_mutual_information(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> Tensor:
    """I(Z1; Z2) = H(K1) + H(K2) - H(K1 o K2) of ``z1`` (N, D1) and ``z2`` (N, D2); a scalar.

    N: rows (samples), D1, D2: features. Differentiable (the paper's training regulariser).
    """
    return matrix_entropies(z1, z2, alpha).mutual_information


def information_plane(z1: Tensor, z2: Tensor, ssl_loss_on_z1: Tensor, alpha: float = 2.0) -> InformationPlane:
    """Information-plane coordinates of ``z1`` (N, D1), ``z2`` (N, D2) and the SSL loss on Z1 (scalar).

    N: rows (samples), D1, D2: features. Not detached: wrap in torch.no_grad() when only logging.
    """
    return InformationPlane.from_entropies(matrix_entropies(z1, z2, alpha), ssl_loss_on_z1)

"""Matrix Rényi entropies and mutual information against the direct n x n formulas, and their
mathematical properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from ibzoo.objectives import matrix_mi
from ibzoo.objectives.matrix_mi import (
    information_plane,
    joint_matrix_renyi_entropy,
    matrix_entropies,
    matrix_mutual_information,
    matrix_renyi_entropy,
)


def direct_entropy_of(normalised_kernel: torch.Tensor, alpha: float) -> torch.Tensor:
    """H_a(A) straight from the definition on the n x n matrix A (trace 1)."""
    if alpha == 1:
        eigenvalues = torch.linalg.eigvalsh(normalised_kernel).clamp_min(1e-300)
        return -(eigenvalues * eigenvalues.log()).sum()
    power = torch.linalg.matrix_power(normalised_kernel, int(alpha))
    return torch.log(torch.trace(power)) / (1 - alpha)


def direct_kernel(z: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(z, dim=1)
    return unit @ unit.T


def direct_entropy(z: torch.Tensor, alpha: float) -> torch.Tensor:
    return direct_entropy_of(direct_kernel(z) / len(z), alpha)


def direct_joint_entropy(z1: torch.Tensor, z2: torch.Tensor, alpha: float) -> torch.Tensor:
    return direct_entropy_of(direct_kernel(z1) * direct_kernel(z2) / len(z1), alpha)


def direct_mutual_information(z1: torch.Tensor, z2: torch.Tensor, alpha: float) -> torch.Tensor:
    return direct_entropy(z1, alpha) + direct_entropy(z2, alpha) - direct_joint_entropy(z1, z2, alpha)


# (rows, dims1, dims2): features narrower than the batch (d x d side), wider (n x n side), and so
# narrow that the joint term goes through the Khatri-Rao side.
SHAPES = [(24, 5, 3), (10, 16, 12), (40, 2, 3)]
PAIRS = [
    (matrix_mutual_information, direct_mutual_information),
    (joint_matrix_renyi_entropy, direct_joint_entropy),
    (lambda z1, z2, alpha: matrix_renyi_entropy(z1, alpha), lambda z1, z2, alpha: direct_entropy(z1, alpha)),
]


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("fast", "direct"), PAIRS, ids=["mutual_information", "joint", "entropy"])
def test_fast_routes_equal_direct_formula_values_and_gradients(fast, direct, shape, alpha):
    rows, dims1, dims2 = shape
    generator = torch.Generator().manual_seed(rows + dims1)
    z1 = torch.randn(rows, dims1, generator=generator, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(rows, dims2, generator=generator, dtype=torch.float64, requires_grad=True)
    value, expected = fast(z1, z2, alpha), direct(z1, z2, alpha)
    torch.testing.assert_close(value, expected)
    grads = torch.autograd.grad(value, [z1, z2], allow_unused=True, materialize_grads=True)
    expected_grads = torch.autograd.grad(expected, [z1, z2], allow_unused=True, materialize_grads=True)
    torch.testing.assert_close(grads, expected_grads)


def test_the_shapes_above_cover_every_route():
    alpha = 2.0
    routes = set()
    for rows, dims1, dims2 in SHAPES:
        z1, z2 = F.normalize(torch.randn(rows, dims1), dim=1), F.normalize(torch.randn(rows, dims2), dim=1)
        joint, gram1, _ = matrix_mi._joint_and_marginal_grams(z1, z2, alpha)
        routes.add(("khatri-rao" if gram1 is None else "hadamard", tuple(joint.shape)))
        routes.add(("marginal", tuple(matrix_mi._normalised_gram(z1).shape)))
    assert ("khatri-rao", (6, 6)) in routes
    assert ("hadamard", (24, 24)) in routes
    assert {("marginal", (5, 5)), ("marginal", (10, 10))} <= routes


def test_non_integer_order_uses_eigenvalues():
    z = torch.randn(12, 4, dtype=torch.float64)
    kernel = direct_kernel(z) / 12
    eigenvalues = torch.linalg.eigvalsh(kernel).clamp_min(0)
    expected = torch.log(eigenvalues.pow(1.5).sum()) / (1 - 1.5)
    torch.testing.assert_close(matrix_renyi_entropy(z, 1.5), expected)
    torch.testing.assert_close(matrix_renyi_entropy(z, 2.0), -torch.log((kernel**2).sum()))


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_entropy_bounds_and_extremes(alpha):
    rows = 8
    entropy = matrix_renyi_entropy(torch.randn(rows, 3), alpha)
    assert 0 <= entropy.item() <= math.log(rows) + 1e-6
    orthogonal = torch.eye(rows) * torch.arange(1.0, rows + 1)[:, None]  # row norms do not matter
    torch.testing.assert_close(matrix_renyi_entropy(orthogonal, alpha).item(), math.log(rows))
    identical = torch.randn(1, 5).expand(rows, 5)
    torch.testing.assert_close(matrix_renyi_entropy(identical, alpha).item(), 0.0, atol=1e-5, rtol=0)


def test_mutual_information_is_symmetric():
    z1, z2 = torch.randn(20, 6, dtype=torch.float64), torch.randn(20, 9, dtype=torch.float64)
    torch.testing.assert_close(matrix_mutual_information(z1, z2), matrix_mutual_information(z2, z1))


def test_self_information_is_not_the_entropy_in_general():
    """The issue expected I(Z; Z) = H(Z); for this matrix definition that is false in general.

    For alpha = 2 with unit rows (|K_ij| <= 1), I(Z; Z) = 2 H(K) - H(K o K)
    = log(n^2 sum K^4 / (sum K^2)^2). Cauchy-Schwarz over the n^2 entries gives I >= 0, and
    K^4 <= K^2 gives I <= H(K) = log(n^2 / sum K^2), with equality iff every K_ij is 0 or +-1
    (rows orthogonal or parallel): K o K = K only then. Otherwise I(Z; Z) < H(Z) strictly.
    """
    z = torch.randn(16, 4, dtype=torch.float64)
    kernel = direct_kernel(z)
    self_information = matrix_mutual_information(z, z)
    closed_form = torch.log(16**2 * (kernel**4).sum() / (kernel**2).sum() ** 2)
    torch.testing.assert_close(self_information, closed_form)
    assert 0 < self_information.item() < matrix_renyi_entropy(z).item() - 1e-3

    clusters = torch.eye(4, dtype=torch.float64).repeat_interleave(4, dim=0)  # orthogonal groups of 4
    clusters = clusters * torch.tensor([1.0, -2.0, 3.0, -0.5], dtype=torch.float64).repeat(4)[:, None]
    torch.testing.assert_close(matrix_mutual_information(clusters, clusters), matrix_renyi_entropy(clusters))
    torch.testing.assert_close(matrix_renyi_entropy(clusters).item(), math.log(4))


def test_information_plane_coordinates():
    z1, z2 = torch.randn(12, 7, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64)
    ssl_loss_on_z1 = torch.tensor(2.5, dtype=torch.float64)
    plane = information_plane(z1, z2, ssl_loss_on_z1)
    mutual_information = direct_mutual_information(z1, z2, 2.0)
    torch.testing.assert_close(plane.mutual_information, mutual_information)
    torch.testing.assert_close(plane.z1_entropy, direct_entropy(z1, 2.0))
    torch.testing.assert_close(plane.z1_target_information, -ssl_loss_on_z1)
    torch.testing.assert_close(plane.lower_bound, -ssl_loss_on_z1 - mutual_information)
    torch.testing.assert_close(plane.upper_bound, direct_entropy(z1, 2.0) - mutual_information)


def test_low_precision_inputs_are_upcast():
    z1, z2 = torch.randn(32, 16), torch.randn(32, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        entropies = matrix_entropies(z1.bfloat16(), z2.bfloat16())
    assert all(entropy.dtype == torch.float32 for entropy in entropies)
    torch.testing.assert_close(
        entropies.mutual_information, matrix_mutual_information(z1, z2), atol=2e-2, rtol=2e-2
    )


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("inf"), float("nan")])
def test_rejects_bad_order(alpha):
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        matrix_renyi_entropy(torch.randn(4, 3), alpha)


def test_rejects_mismatched_rows():
    with pytest.raises(ValueError, match=r"same rows; got shapes \[\(4, 3\), \(5, 3\)\]"):
        matrix_mutual_information(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="2-D"):
        matrix_renyi_entropy(torch.randn(4))

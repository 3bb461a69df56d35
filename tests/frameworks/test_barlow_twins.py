"""BarlowTwinsLoss against solo-learn's formulation, by hand, by properties, and its errors."""

import itertools

import pytest
import torch

from ibzoo.frameworks.barlow_twins import BarlowTwinsLoss


def solo_learn_barlow(z1: torch.Tensor, z2: torch.Tensor, lamb: float, scale_loss: float) -> torch.Tensor:
    """solo-learn's barlow_loss_func (single process): BatchNorm1d, correlation, masked squares."""
    batch, dims = z1.shape
    batch_norm = torch.nn.BatchNorm1d(dims, affine=False).to(z1.dtype)
    correlation = torch.einsum("bi,bj->ij", batch_norm(z1), batch_norm(z2)) / batch
    diagonal = torch.eye(dims, dtype=torch.bool)
    squared_difference = (correlation - torch.eye(dims, dtype=z1.dtype)).pow(2)
    squared_difference = torch.where(diagonal, squared_difference, lamb * squared_difference)
    return scale_loss * squared_difference.sum()


@pytest.mark.parametrize(("lambda_offdiag", "scale"), [(0.0051, 0.1), (0.5, 1.0)])
def test_two_views_equal_solo_learn_loss_and_gradient(lambda_offdiag, scale):
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(16, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    z2 = (z1.detach() + 0.5 * torch.randn(16, 6, generator=generator, dtype=torch.float64)).requires_grad_()
    loss = BarlowTwinsLoss(lambda_offdiag, scale)([z1, z2])
    expected = solo_learn_barlow(z1, z2, lambda_offdiag, scale)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, [z1, z2]), torch.autograd.grad(expected, [z1, z2]))


def test_more_views_average_all_pairs():
    generator = torch.Generator().manual_seed(1)
    views = [torch.randn(10, 4, generator=generator, dtype=torch.float64) for _ in range(3)]
    pair_losses = [solo_learn_barlow(a, b, 0.0051, 0.1) for a, b in itertools.combinations(views, 2)]
    torch.testing.assert_close(BarlowTwinsLoss()(views), torch.stack(pair_losses).mean())


def test_hand_checked_two_identical_dimensions():
    """Both dimensions hold the same +-1 column (variance 1): c = 1/(1 + eps) everywhere."""
    column = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    z = torch.stack([column, column], dim=1)
    c = 1 / (1 + 1e-5)
    expected = 0.1 * (2 * (1 - c) ** 2 + 0.0051 * 2 * c**2)
    torch.testing.assert_close(BarlowTwinsLoss()([z, z.clone()]).item(), expected)
    anti_correlated = 0.1 * (2 * (1 + c) ** 2 + 0.0051 * 2 * c**2)
    torch.testing.assert_close(BarlowTwinsLoss()([z, -z]).item(), anti_correlated)


def test_near_zero_for_identical_decorrelated_views():
    """Rows 1..7 of an 8 x 8 Hadamard matrix: zero-mean, unit-variance, orthogonal columns."""
    hadamard = torch.ones(1, 1)
    for _ in range(3):
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)])
    z = hadamard[:, 1:]
    assert BarlowTwinsLoss()([z, z.clone()]).item() < 1e-8
    # Shuffling the rows of one view destroys the correlation, so the loss must not stay near zero.
    assert BarlowTwinsLoss()([z, z.flip(0)]).item() > 0.1


def test_invariant_to_per_dimension_affine_maps():
    generator = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(12, 5, generator=generator), torch.randn(12, 5, generator=generator)
    gain, shift = torch.rand(5, generator=generator) * 5 + 0.5, torch.randn(5, generator=generator)
    torch.testing.assert_close(
        BarlowTwinsLoss()([z1 * gain + shift, z2]), BarlowTwinsLoss()([z1, z2]), atol=1e-5, rtol=1e-4
    )


def test_low_precision_inputs_give_a_float32_loss():
    generator = torch.Generator().manual_seed(3)
    views = [torch.randn(32, 8, generator=generator) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_precision = BarlowTwinsLoss()([view.bfloat16() for view in views])
    assert low_precision.dtype == torch.float32
    torch.testing.assert_close(low_precision, BarlowTwinsLoss()(views), atol=2e-2, rtol=2e-2)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="lambda_offdiag must be >= 0"):
        BarlowTwinsLoss(lambda_offdiag=-0.1)
    with pytest.raises(ValueError, match="scale must be > 0"):
        BarlowTwinsLoss(scale=0.0)
    with pytest.raises(ValueError, match="at least 2 images"):
        BarlowTwinsLoss()([torch.randn(1, 4), torch.randn(1, 4)])
    with pytest.raises(ValueError, match="at least 2 views"):
        BarlowTwinsLoss()([torch.randn(4, 4)])

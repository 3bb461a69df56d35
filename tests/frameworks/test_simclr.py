"""NTXentLoss against a direct textbook formulation, by hand, by invariances, and its errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from ibzoo.frameworks.simclr import NTXentLoss


def textbook_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss as written in the paper: 2B anchors, positive (i, i + B), loop over k != i."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    rows, batch = len(z), len(z1)
    similarity = z @ z.T / temperature
    losses = []
    for i in range(rows):
        positive = (i + batch) % rows
        denominator = sum(torch.exp(similarity[i, k]) for k in range(rows) if k != i)
        losses.append(-torch.log(torch.exp(similarity[i, positive]) / denominator))
    return torch.stack(losses).mean()


def supcon_multiview(views: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """SupCon L_out with the same image in the other views as positives, as nested loops."""
    z = [F.normalize(view, dim=1) for view in views]
    rows = [(view, image) for view in range(len(z)) for image in range(len(z[0]))]

    def logit(anchor, other):
        return torch.dot(z[anchor[0]][anchor[1]], z[other[0]][other[1]]) / temperature

    losses = []
    for anchor in rows:
        log_denominator = torch.logsumexp(
            torch.stack([logit(anchor, row) for row in rows if row != anchor]), 0
        )
        positives = [logit(anchor, (view, anchor[1])) for view in range(len(z)) if view != anchor[0]]
        losses.append(-(torch.stack(positives) - log_denominator).mean())
    return torch.stack(losses).mean()


@pytest.mark.parametrize("temperature", [0.1, 0.2, 1.0])
def test_two_views_equal_the_textbook_loss_and_its_gradient(temperature):
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    loss = NTXentLoss(temperature)([z1, z2])
    expected = textbook_nt_xent(z1, z2, temperature)
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss, [z1, z2])
    expected_grads = torch.autograd.grad(expected, [z1, z2])
    torch.testing.assert_close(grads, expected_grads)


def test_three_views_equal_supcon_with_other_views_as_positives():
    generator = torch.Generator().manual_seed(1)
    views = [torch.randn(4, 3, generator=generator, dtype=torch.float64) for _ in range(3)]
    torch.testing.assert_close(NTXentLoss(0.5)(views), supcon_multiview(views, 0.5))


def test_hand_checked_orthogonal_pairs():
    """Anchor e1 sees its positive e1 (cosine 1) and two negatives e2 (cosine 0)."""
    basis = torch.eye(2)
    temperature = 0.5
    expected = math.log(1 + 2 * math.exp(-1 / temperature))
    torch.testing.assert_close(NTXentLoss(temperature)([basis, basis.clone()]).item(), expected)


def test_invariant_to_feature_scale_and_consistent_batch_permutation():
    generator = torch.Generator().manual_seed(2)
    views = [torch.randn(8, 4, generator=generator) for _ in range(3)]
    loss = NTXentLoss()(views)
    row_scales = torch.rand(8, 1, generator=generator) * 10 + 0.1
    torch.testing.assert_close(NTXentLoss()([view * row_scales for view in views]), loss)
    permutation = torch.randperm(8, generator=generator)
    torch.testing.assert_close(NTXentLoss()([view[permutation] for view in views]), loss)
    # Permuting one view alone breaks the positive pairs, so the loss must change.
    assert not torch.allclose(NTXentLoss()([views[0][permutation], *views[1:]]), loss)


def test_low_precision_inputs_give_a_float32_loss_close_to_float32_math():
    generator = torch.Generator().manual_seed(3)
    views = [torch.randn(8, 16, generator=generator) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_precision = NTXentLoss()([view.bfloat16() for view in views])
    assert low_precision.dtype == torch.float32
    torch.testing.assert_close(low_precision, NTXentLoss()(views), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("temperature", [0.0, -0.2, float("nan")])
def test_rejects_non_positive_temperature(temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NTXentLoss(temperature)


def test_rejects_bad_views():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at least 2 views"):
        NTXentLoss()([z])
    with pytest.raises(ValueError, match="at least 2 views"):
        NTXentLoss()(torch.stack([z, z]))
    with pytest.raises(ValueError, match=r"one shape.*\(4, 3\), \(5, 3\)"):
        NTXentLoss()([z, torch.randn(5, 3)])

"""ObjectiveConfig validation, build_ssl_loss, and BottleneckObjective's total loss and plane."""

import pytest
import torch

from ibzoo.objectives import (
    BarlowTwinsLoss,
    BottleneckObjective,
    NTXentLoss,
    ObjectiveConfig,
    build_ssl_loss,
    matrix_mutual_information,
    matrix_renyi_entropy,
)


def make_views(num_views=2, batch=6, dims1=10, dims2=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z1_views = [torch.randn(batch, dims1, generator=generator, requires_grad=True) for _ in range(num_views)]
    z2_views = [torch.randn(batch, dims2, generator=generator, requires_grad=True) for _ in range(num_views)]
    return z1_views, z2_views


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("framework", "byol", r"Unknown framework 'byol'; choose one of \['simclr', 'barlow'\]"),
        ("mi_weight", -1e-4, "mi_weight must be a finite number >= 0"),
        ("mi_alpha", 0.0, "mi_alpha must be a finite number > 0"),
        ("mi_alpha", float("nan"), "mi_alpha must be a finite number > 0"),
        ("temperature", 0.0, "temperature must be a finite number > 0"),
        ("scale", -0.1, "scale must be a finite number > 0"),
        ("lambda_offdiag", float("inf"), "lambda_offdiag must be a finite number >= 0"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        ObjectiveConfig(**{field: value})


def test_build_ssl_loss_follows_the_config():
    simclr = build_ssl_loss(ObjectiveConfig(framework="simclr", temperature=0.5))
    assert isinstance(simclr, NTXentLoss)
    assert simclr.temperature == 0.5
    barlow = build_ssl_loss(ObjectiveConfig(framework="barlow", lambda_offdiag=0.01, scale=0.2))
    assert isinstance(barlow, BarlowTwinsLoss)
    assert (barlow.lambda_offdiag, barlow.scale) == (0.01, 0.2)


@pytest.mark.parametrize("framework", ["simclr", "barlow"])
def test_total_is_ssl_plus_weighted_mutual_information(framework):
    config = ObjectiveConfig(framework=framework, mi_weight=0.3, mi_alpha=2.0)
    z1_views, z2_views = make_views(num_views=3)
    output = BottleneckObjective(config)(z1_views, z2_views)
    ssl_loss = build_ssl_loss(config)(z2_views)
    mutual_information = matrix_mutual_information(torch.cat(z1_views), torch.cat(z2_views))
    torch.testing.assert_close(output.ssl_loss, ssl_loss)
    torch.testing.assert_close(output.mutual_information, mutual_information)
    torch.testing.assert_close(output.loss, ssl_loss + 0.3 * mutual_information)
    assert output.information_plane is None
    output.loss.backward()
    assert all(view.grad is not None and view.grad.abs().sum() > 0 for view in z1_views)


def test_without_weight_mutual_information_is_skipped_and_backbone_gets_no_gradient():
    z1_views, z2_views = make_views()
    output = BottleneckObjective(ObjectiveConfig(mi_weight=0.0))(z1_views, z2_views)
    assert output.mutual_information is None
    assert output.information_plane is None
    assert output.loss is output.ssl_loss
    output.loss.backward()
    assert all(view.grad is None for view in z1_views)


@pytest.mark.parametrize("mi_weight", [0.0, 0.1])
def test_information_plane_is_detached_and_matches_its_definition(mi_weight):
    config = ObjectiveConfig(framework="simclr", mi_weight=mi_weight)
    z1_views, z2_views = make_views()
    output = BottleneckObjective(config)(z1_views, z2_views, information_plane=True)
    plane = output.information_plane
    assert all(not value.requires_grad for value in plane)
    z1, z2 = torch.cat(z1_views), torch.cat(z2_views)
    mutual_information = matrix_mutual_information(z1, z2).detach()
    ssl_loss_on_z1 = NTXentLoss()(z1_views).detach()
    torch.testing.assert_close(plane.mutual_information, mutual_information)
    torch.testing.assert_close(plane.z1_entropy, matrix_renyi_entropy(z1).detach())
    torch.testing.assert_close(plane.z1_target_information, -ssl_loss_on_z1)
    torch.testing.assert_close(plane.lower_bound, -ssl_loss_on_z1 - mutual_information)
    torch.testing.assert_close(plane.upper_bound, plane.z1_entropy - mutual_information)
    torch.testing.assert_close(
        output.loss.detach(), output.ssl_loss.detach() + mi_weight * mutual_information
    )
    # Only the regulariser may route gradient to the backbone features.
    assert output.mutual_information.requires_grad == (mi_weight > 0)

"""ObjectiveConfig validation, the framework's loss, and BottleneckObjective's total loss and plane."""

import pytest
import torch

from ibzoo.frameworks import FRAMEWORKS, BarlowTwinsLoss, NTXentLoss, get_framework
from ibzoo.objectives import (
    BottleneckObjective,
    ObjectiveConfig,
    framework_settings,
    matrix_mutual_information,
    matrix_renyi_entropy,
)


def build_ssl_loss(config):
    return get_framework(config.framework).build_loss(config)


def make_views(num_views=2, batch=6, dims1=10, dims2=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z1_views = [torch.randn(batch, dims1, generator=generator, requires_grad=True) for _ in range(num_views)]
    z2_views = [torch.randn(batch, dims2, generator=generator, requires_grad=True) for _ in range(num_views)]
    return z1_views, z2_views


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("framework", "dino", r"framework='dino' is unknown; choose one of simclr, barlow, byol, vicreg"),
        ("mi_weight", -1e-4, "mi_weight=-0.0001 must be a finite number >= 0"),
        ("mi_alpha", 0.0, "mi_alpha=0.0 must be a finite number > 0"),
        ("mi_alpha", float("nan"), "mi_alpha=nan must be a finite number"),
        ("temperature", 0.0, "temperature=0.0 must be a finite number > 0"),
        ("momentum_base", 1.5, "momentum_base=1.5 must be a finite number in"),
        ("predictor_hidden", 0, "predictor_hidden=0 must be a positive integer"),
        ("quantize_target", "yes", "quantize_target='yes' must be true or false"),
        ("scale", -0.1, "scale=-0.1 must be a finite number > 0"),
        ("lambda_offdiag", float("inf"), "lambda_offdiag=inf must be a finite number >= 0"),
        ("variance_weight", float("nan"), "variance_weight=nan must be a finite number >= 0"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    owner = next((f for f in FRAMEWORKS.values() if field in f.settings["cifar"]), FRAMEWORKS["simclr"])
    values = {"framework": owner.name, field: value} if field != "framework" else {field: value}
    with pytest.raises(ValueError, match=message):
        ObjectiveConfig(**values)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_framework_takes_its_own_settings_and_refuses_another_s(framework):
    config = ObjectiveConfig(framework=framework)
    own = FRAMEWORKS[framework].settings["cifar"]
    assert framework_settings(config) == own
    foreign = next(name for f in FRAMEWORKS.values() for name in f.settings["cifar"] if name not in own)
    with pytest.raises(
        ValueError, match=rf"{foreign}=.* is a setting of .*, not of {FRAMEWORKS[framework].title}"
    ):
        ObjectiveConfig(framework=framework, **{foreign: FRAMEWORKS_VALUE[foreign]})


FRAMEWORKS_VALUE = {name: value for f in FRAMEWORKS.values() for name, value in f.settings["cifar"].items()}


def test_momentum_must_rise():
    with pytest.raises(ValueError, match=r"momentum_base=0\.9 exceeds momentum_end=0\.5"):
        ObjectiveConfig(framework="byol", momentum_base=0.9, momentum_end=0.5)


def test_build_ssl_loss_follows_the_config():
    simclr = build_ssl_loss(ObjectiveConfig(framework="simclr", temperature=0.5))
    assert isinstance(simclr, NTXentLoss)
    assert simclr.temperature == 0.5
    barlow = build_ssl_loss(ObjectiveConfig(framework="barlow", lambda_offdiag=0.01, scale=0.2))
    assert isinstance(barlow, BarlowTwinsLoss)
    assert (barlow.lambda_offdiag, barlow.scale) == (0.01, 0.2)


@pytest.mark.parametrize("framework", ["simclr", "barlow", "vicreg"])
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

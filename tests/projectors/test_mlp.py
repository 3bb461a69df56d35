import pytest
import torch
from torch import nn

from ibzoo.projectors import MLPProjector


def layer_types(projector: MLPProjector) -> list[type]:
    return [type(layer) for layer in projector.layers]


def test_simclr_head_is_linear_relu_linear():
    projector = MLPProjector(512, (2048,), 256)
    assert layer_types(projector) == [nn.Linear, nn.ReLU, nn.Linear]
    first, _, last = projector.layers
    assert (first.in_features, first.out_features, last.out_features) == (512, 2048, 256)
    assert projector.out_features == 256
    assert projector(torch.randn(4, 512)).shape == (4, 256)


def test_barlow_twins_head_has_three_linears_with_batch_norm_between():
    projector = MLPProjector(512, (2048, 2048), 2048, batch_norm=True)
    assert layer_types(projector) == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    linears = [layer for layer in projector.layers if isinstance(layer, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (512, 2048),
        (2048, 2048),
        (2048, 2048),
    ]
    assert projector(torch.randn(4, 512)).shape == (4, 2048)


def test_stem_without_out_features_ends_in_relu():
    projector = MLPProjector(64, (128,), None, batch_norm=True)
    assert layer_types(projector) == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert projector.out_features == 128
    out = projector(torch.randn(8, 64))
    assert out.shape == (8, 128) and (out >= 0).all()


def test_forward_matches_direct_formula():
    projector = MLPProjector(6, (5,), 3)
    first, _, last = projector.layers
    x = torch.randn(7, 6)
    expected = torch.relu(x @ first.weight.T + first.bias) @ last.weight.T + last.bias
    torch.testing.assert_close(projector(x), expected)


def test_single_linear_when_no_hidden_layers():
    projector = MLPProjector(16, (), 8)
    assert layer_types(projector) == [nn.Linear]
    assert projector.out_features == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(in_features=0), r"in_features=0 must be a positive int"),
        (dict(in_features=8, hidden_features=(16, -1)), r"hidden_features\[1\]=-1 must be a positive int"),
        (dict(in_features=8, out_features=2.0), r"out_features=2.0 must be a positive int"),
        (dict(in_features=8, hidden_features=(), out_features=None), r"has no layers"),
    ],
)
def test_rejects_bad_widths(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLPProjector(**kwargs)

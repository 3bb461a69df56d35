import pytest
import timm
import torch

import ibzoo  # noqa: F401  (registers the CIFAR-stem architectures with timm)


@pytest.mark.parametrize(("name", "width"), [("resnet18_cifar", 512), ("resnet50_cifar", 2048)])
def test_cifar_stem_keeps_32px_resolution_until_the_stages(name, width):
    model = timm.create_model(name)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    features = model.forward_features(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, width, 4, 4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, width)


def test_features_only_reports_the_cifar_reductions():
    model = timm.create_model("resnet18_cifar", features_only=True, in_chans=1)
    outputs = model(torch.randn(1, 1, 32, 32))
    assert model.feature_info.reduction() == [1, 1, 2, 4, 8]
    assert [o.shape[-1] for o in outputs] == [32 // r for r in model.feature_info.reduction()]


def test_stem_options_are_refused():
    with pytest.raises(ValueError, match="fixed 3x3 stem"):
        timm.create_model("resnet18_cifar", stem_type="deep")

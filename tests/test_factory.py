import subprocess
import sys

import pytest
import timm
import torch

import ibzoo

NAME = "resnet18_cifar_simclr_mlp"


def test_create_model_returns_pooled_features_by_default():
    model = ibzoo.create_model(NAME)
    assert model.num_classes == 0
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        (dict(num_classes=10), (2, 10)),
        (dict(in_chans=1), (2, 512)),
        (dict(global_pool="avgmax"), (2, 512)),
        (dict(global_pool=""), (2, 512, 4, 4)),
        (dict(num_classes=10, drop_rate=0.5), (2, 10)),
    ],
)
def test_create_model_honours_timm_keyword_arguments(kwargs, shape):
    model = ibzoo.create_model(NAME, **kwargs)
    x = torch.randn(2, kwargs.get("in_chans", 3), 32, 32)
    assert model(x).shape == shape


def test_features_only():
    model = ibzoo.create_model(NAME, features_only=True, out_indices=(2, 4))
    assert [f.shape[1:] for f in model(torch.randn(1, 3, 32, 32))] == [(128, 16, 16), (512, 4, 4)]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(KeyError, match="resnet18_cifar_simclr_topk"):
        ibzoo.create_model("resnet18_cifar_simclr_topkk")


def test_wrong_keyword_names_the_model():
    with pytest.raises(TypeError, match=f"{NAME}:.*colour_mode"):
        ibzoo.create_model(NAME, colour_mode="rgb")


def test_any_timm_backbone_pairs_with_any_projector():
    model = ibzoo.create_pretraining_model("resnet10t", framework="barlow", projector="fsq")
    assert model.projector_config.fsq_levels == 3 and model.objective_config.framework == "barlow"
    z = model.project(model(torch.randn(2, 3, 64, 64)))
    assert z.shape == (2, 2048)
    with pytest.raises(ValueError, match="not a zoo name"):
        ibzoo.create_pretraining_model("resnet10t")
    with pytest.raises(ValueError, match="already simclr"):
        ibzoo.create_pretraining_model(NAME, framework="barlow", projector="mlp")


def test_timm_sees_the_zoo_after_import():
    assert NAME in timm.list_models("*_cifar_simclr_*")
    assert ibzoo.model_info(NAME + ".cifar10").framework == "simclr"


def test_submodules_named_in_messages_are_reachable_from_the_package():
    """Messages say "re-save with ibzoo.hub.save_pretrained": that works after a plain `import ibzoo`."""
    code = (
        "import sys, ibzoo; assert 'ibzoo.hub' not in sys.modules; print(ibzoo.hub.save_pretrained.__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "save_pretrained"
    with pytest.raises(AttributeError, match="module 'ibzoo' has no attribute 'hubb'"):
        ibzoo.hubb  # noqa: B018

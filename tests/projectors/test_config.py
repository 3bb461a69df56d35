import dataclasses
import json

import pytest
import torch
import yaml

from ibzoo.projectors import (
    DiscretizedProjector,
    MLPProjector,
    ProjectorConfig,
    ProjectorStack,
    TopKSparseProjector,
    build_projector,
)


def linear_params(i: int, o: int) -> int:
    return i * o + o


def topk_params(width: int, latents: int) -> int:
    return 2 * width + linear_params(width, latents) + latents * width


def structure(module: torch.nn.Module) -> list[type]:
    """The projector's parts from the outside in: wrappers first, then what they hold, in order."""
    if isinstance(module, DiscretizedProjector):
        return [DiscretizedProjector, *structure(module.projector)]
    if isinstance(module, ProjectorStack):
        return [ProjectorStack, *(part for child in module for part in structure(child))]
    return [type(module)]


# The paper's variants (latents scaled down from 100000 to keep the test fast):
# name -> (config, output width, parameter count, module types in `structure` order).
PAPER_VARIANTS = {
    "simclr_mlp": (
        ProjectorConfig(),
        256,
        linear_params(512, 2048) + linear_params(2048, 256),
        [MLPProjector],
    ),
    "simclr_fsq": (
        ProjectorConfig(fsq_levels=30),
        256,
        linear_params(512, 2048) + linear_params(2048, 256),
        [DiscretizedProjector, MLPProjector],
    ),
    "simclr_in100_mlp": (
        ProjectorConfig(hidden_features=(4096,), out_features=512),
        512,
        linear_params(512, 4096) + linear_params(4096, 512),
        [MLPProjector],
    ),
    "simclr_topk": (
        ProjectorConfig(hidden_features=(), out_features=None, topk_latents=4096, topk_k=64),
        512,
        topk_params(512, 4096),
        [TopKSparseProjector],
    ),
    "simclr_topk_fsq": (
        ProjectorConfig(hidden_features=(), out_features=None, topk_latents=4096, topk_k=64, fsq_levels=30),
        512,
        topk_params(512, 4096),
        [DiscretizedProjector, TopKSparseProjector],
    ),
    "barlow_mlp": (
        ProjectorConfig(hidden_features=(2048, 2048), out_features=2048, batch_norm=True),
        2048,
        linear_params(512, 2048) + 2 * linear_params(2048, 2048) + 2 * 2 * 2048,
        [MLPProjector],
    ),
    "barlow_fsq": (
        ProjectorConfig(hidden_features=(2048, 2048), out_features=2048, batch_norm=True, fsq_levels=3),
        2048,
        linear_params(512, 2048) + 2 * linear_params(2048, 2048) + 2 * 2 * 2048,
        [DiscretizedProjector, MLPProjector],
    ),
    "barlow_topk": (
        ProjectorConfig(
            hidden_features=(2048,), out_features=None, batch_norm=True, topk_latents=4096, topk_k=64
        ),
        2048,
        linear_params(512, 2048) + 2 * 2048 + topk_params(2048, 4096),
        [ProjectorStack, MLPProjector, TopKSparseProjector],
    ),
}


@pytest.mark.parametrize("name", PAPER_VARIANTS)
def test_paper_variant_shapes_parameters_and_gradients(name):
    config, out_features, parameter_count, parts = PAPER_VARIANTS[name]
    torch.manual_seed(0)
    projector = build_projector(512, config)
    assert structure(projector) == parts
    assert projector.out_features == out_features
    assert sum(p.numel() for p in projector.parameters()) == parameter_count

    x = torch.randn(8, 512, requires_grad=True)
    out = projector(x)
    assert out.shape == (8, out_features)
    (out * torch.randn_like(out)).sum().backward()
    for param_name, param in projector.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all() and param.grad.any(), (
            f"{param_name} has a zero or bad gradient"
        )
    assert x.grad.any()


def test_barlow_topk_is_stem_then_autoencoder():
    config = PAPER_VARIANTS["barlow_topk"][0]
    stem, autoencoder = build_projector(512, config)
    assert stem.out_features == 2048 and isinstance(stem.layers[-1], torch.nn.ReLU)
    assert (autoencoder.in_features, autoencoder.latents, autoencoder.k) == (2048, 4096, 64)
    assert "latents=4096, k=64" in repr(build_projector(512, config))


@pytest.mark.parametrize("name", PAPER_VARIANTS)
def test_config_round_trips_through_json_and_yaml(name):
    config = PAPER_VARIANTS[name][0]
    as_dict = dataclasses.asdict(config)
    assert ProjectorConfig(**json.loads(json.dumps(as_dict))) == config
    assert ProjectorConfig(**yaml.safe_load(yaml.safe_dump(json.loads(json.dumps(as_dict))))) == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(topk_latents=100), r"topk_latents=100 and topk_k=None must be set together"),
        (dict(topk_k=10), r"topk_latents=None and topk_k=10 must be set together"),
        (dict(topk_latents=10, topk_k=11), r"topk_k=11 exceeds topk_latents=10; lower topk_k"),
        (dict(topk_latents=10, topk_k=0), r"topk_k=0 must be a positive int"),
        (dict(fsq_levels=1), r"fsq_levels=1 must be an int >= 2"),
        (dict(hidden_features=[2048, 0]), r"hidden_features\[1\]=0 must be a positive int"),
        (dict(out_features=-1), r"out_features=-1 must be a positive int or None"),
        (dict(hidden_features=(), out_features=None), r"describes no projector"),
        (dict(hidden_features=(), batch_norm=True), r"batch_norm=True needs hidden_features"),
    ],
)
def test_config_rejects_inconsistent_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProjectorConfig(**kwargs)


def test_build_rejects_bad_in_features():
    with pytest.raises(ValueError, match=r"in_features=0 must be a positive int"):
        build_projector(0, ProjectorConfig())

"""The framework seam: the registry is the one table, and a new framework needs nothing else."""

import dataclasses

import pytest
import torch

import ibzoo
from ibzoo.augment import build_pretrain_transform
from ibzoo.frameworks import FRAMEWORKS, get_framework
from ibzoo.frameworks.simclr import SIMCLR
from ibzoo.objectives import ObjectiveConfig


def test_every_framework_file_states_what_the_zoo_needs():
    for name, framework in FRAMEWORKS.items():
        assert framework.name == name and framework.title and "arXiv" in framework.citation
        assert (
            set(framework.heads) == set(framework.recipes) == set(framework.settings) == {"cifar", "imagenet"}
        )
        assert len({frozenset(settings) for settings in framework.settings.values()}) == 1
        assert set(framework.loss_args) <= set(framework.settings["cifar"])
        assert framework.views(32) and framework.views(224)
        assert (framework.predictor is not None) == framework.has_target


def test_an_unknown_framework_is_an_error_everywhere():
    for call in (
        lambda: get_framework("dino"),
        lambda: ObjectiveConfig(framework="dino"),
        lambda: build_pretrain_transform("dino", 32, (0.5,) * 3, (0.5,) * 3),
        lambda: ibzoo.create_pretraining_model("resnet18", framework="dino", projector="mlp"),
    ):
        with pytest.raises(ValueError, match="dino"):
            call()


def test_a_new_framework_is_one_value_in_the_table(monkeypatch):
    """What the README promises a contributor: a framework file's value, registered, trains with any
    projector through the same doors (here a copy of SimCLR under another name and temperature)."""
    toy = dataclasses.replace(
        SIMCLR, name="toy", title="Toy", settings={f: {"temperature": 0.5} for f in ("cifar", "imagenet")}
    )
    monkeypatch.setitem(FRAMEWORKS, "toy", toy)
    model = ibzoo.create_pretraining_model("resnet18", framework="toy", projector="fsq")
    assert model.objective_config.temperature == 0.5 and model.projector_config.fsq_levels == 30
    views = build_pretrain_transform("toy", 32, (0.5,) * 3, (0.5,) * 3)
    assert len(views.view_transforms) == 2
    model.compute_loss([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)]).loss.backward()
    assert all(p.grad is not None for p in model.backbone.parameters())

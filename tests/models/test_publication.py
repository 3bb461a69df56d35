"""Where a name's weights lie (source_of, locate_weights): the source timm would read, or the pickle
refused; an unpublished zoo tag's source knows how to train it."""

from pathlib import Path

import pytest
import torch

from ibzoo.models.publication import locate_weights, source_of, tag_repo_id
from ibzoo.published_source import PublishedSource
from ibzoo.weights import CheckpointError

NAME = "resnet18_cifar_simclr_topk"


@pytest.mark.parametrize(
    ("overlay", "source", "filename"),
    [
        ({"hf_hub_id": "org/repo"}, PublishedSource("org/repo"), "model.safetensors"),
        # timm's default file name: ibzoo reads its safetensors twin.
        (
            {"hf_hub_id": "org/repo@v1", "hf_hub_filename": "pytorch_model.bin"},
            PublishedSource("org/repo", "v1"),
            "model.safetensors",
        ),
        (
            {"hf_hub_id": "org/repo", "hf_hub_filename": "ema.safetensors"},
            PublishedSource("org/repo"),
            "ema.safetensors",
        ),
        ({"file": "/w/backbone.safetensors"}, PublishedSource(folder=Path("/w")), "backbone.safetensors"),
        ({"state_dict": {"w": torch.zeros(1)}}, None, "model.safetensors"),
    ],
    ids=["hub", "hub-default-bin", "hub-file", "file", "in-memory"],
)
def test_weights_are_located_where_timm_would_read_them(overlay, source, filename):
    located = locate_weights(NAME, {"pretrained_cfg_overlay": overlay})
    assert (located.source, located.filename) == (source, filename)


def test_a_published_models_own_name_is_its_source(tmp_path):
    located = locate_weights(f"local-dir:{tmp_path}", {})
    assert located.source == PublishedSource(folder=tmp_path) and located.filename == "model.safetensors"
    assert locate_weights("hf-hub:org/repo@main", {}).source == PublishedSource("org/repo", "main")


@pytest.mark.parametrize(
    ("overlay", "named"),
    [
        ({"file": "/w/pytorch_model.bin"}, "/w/pytorch_model.bin"),
        (
            {"hf_hub_id": "org/repo", "hf_hub_filename": "other_pytorch_model.bin"},
            "org/repo/other_pytorch_model.bin",
        ),
        ({"hf_hub_id": "", "url": "https://example.com/w.pth"}, "https://example.com/w.pth"),
    ],
    ids=["file", "hub-file", "url"],
)
def test_a_pickle_is_refused_naming_it(overlay, named):
    with pytest.raises(CheckpointError, match="pickle") as raised:
        locate_weights(NAME, {"pretrained_cfg_overlay": overlay})
    assert named in str(raised.value)


def test_an_unpublished_zoo_tags_source_says_how_to_train_it():
    source = source_of(f"{NAME}.cifar10")
    assert source == PublishedSource(tag_repo_id(f"{NAME}.cifar10"))
    assert "train/pretrain.py --model resnet18_cifar_simclr_topk" in source.not_published
    assert locate_weights(f"{NAME}.cifar10", {}).source.not_published == source.not_published


def test_another_repo_named_for_a_zoo_name_is_not_its_unpublished_repo():
    # The how-to-train text belongs to the zoo's own repo, not to any repo a zoo name is pointed at.
    located = locate_weights(NAME, {"pretrained_cfg_overlay": {"hf_hub_id": "org/repo"}})
    assert located.source.not_published is None
    assert source_of("hf-hub:org/repo").not_published is None
    assert source_of("resnet18").not_published is None  # timm's own repo (timm/resnet18.a1_in1k)

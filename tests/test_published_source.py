"""Where a name's weights lie (locate_weights): the source timm would read, or the pickle refused."""

from pathlib import Path

import pytest
import torch

from ibzoo.published_source import PublishedSource, locate_weights
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

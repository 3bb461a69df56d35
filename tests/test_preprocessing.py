"""One preprocessing truth: the resize the zoo trains with is the one every pretrained config declares,
ibzoo evaluates with, and ``timm.data.create_transform`` gives a user of the published weights."""

import numpy as np
import pytest
import timm.data
import torch
from PIL import Image
from torchvision.transforms import v2

import ibzoo
from ibzoo.augment import INTERPOLATION, build_view_transform, view_recipes
from ibzoo.evaluation import model_eval_transform


def _rgb_image(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# Larger than the 224 px inputs and than the 32 px ones, not square, so every resize and crop does work.
IMAGES = [_rgb_image(300, 257, seed=0), _rgb_image(45, 37, seed=1)]


@pytest.fixture(scope="module")
def pretrained_backbones() -> dict[str, torch.nn.Module]:
    """Every name.tag's backbone, published or not, on the meta device: only its pretrained_cfg matters."""
    with torch.device("meta"):
        return {name_tag: ibzoo.create_model(name_tag) for name_tag in ibzoo.list_models(include_tags=True)}


def test_every_pretrained_tag_is_evaluated_as_timm_create_transform_preprocesses(pretrained_backbones):
    checked = 0
    for name_tag, model in pretrained_backbones.items():
        timm_transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
        ours = model_eval_transform(model)
        for image in IMAGES:
            # Equal up to float rounding: timm divides by 255 where torchvision v2 multiplies by 1/255.
            torch.testing.assert_close(ours(image), timm_transform(image), rtol=0, atol=1e-5, msg=name_tag)
            checked += 1
    assert checked == len(IMAGES) * len(ibzoo.list_models(include_tags=True)) > 0


def test_training_views_resize_as_the_pretrained_configs_declare(pretrained_backbones):
    declared = {model.pretrained_cfg["interpolation"] for model in pretrained_backbones.values()}
    assert declared == {INTERPOLATION}
    for framework in ("simclr", "barlow"):
        for size in (32, 224):
            for recipe in view_recipes(framework, size):
                view = build_view_transform(recipe, size, (0.5,) * 3, (0.25,) * 3)
                assert view.interpolation == v2.InterpolationMode(INTERPOLATION), (framework, size)

"""Tests for ibzoo.augment: recipes, per-sample transforms, and their attachment to a data set."""

import pickle

import datasets
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from ibzoo.augment import (
    RandomGaussianBlur,
    ToNormalizedTensor,
    ViewRecipe,
    blur_kernel_size,
    build_decode_transform,
    build_eval_transform,
    build_pretrain_transform,
    build_view_transform,
    collate,
    to_rgb_or_grey,
    view_recipes,
    with_views,
)
from ibzoo.data import ImageDataset
from ibzoo.frameworks import FRAMEWORK_NAMES as FRAMEWORKS

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _image(mode: str = "RGB", size: tuple[int, int] = (32, 32), seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGBA").convert(mode)


def _normalized_range() -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


def test_recipes_follow_the_reference_code() -> None:
    # PKU-ML/Projector_Theory scripts/pretrain/cifar/augmentations/symmetric.yaml, at every size.
    for size in (32, 224):
        (simclr,) = view_recipes("simclr", size)
        assert simclr == ViewRecipe(jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5, solarize_p=0.0)
        assert (simclr.crop_scale, simclr.jitter_p, simclr.grayscale_p, simclr.flip_p) == (
            (0.08, 1.0),
            0.8,
            0.2,
            0.5,
        )
    first, second = view_recipes("barlow", 224)
    assert (first.blur_p, first.solarize_p, second.blur_p, second.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert first.jitter == second.jitter == (0.4, 0.4, 0.2, 0.1)
    assert [recipe.blur_p for recipe in view_recipes("barlow", 32)] == [0.0, 0.0]
    assert all(recipe.crop_scale == (0.08, 1.0) and recipe.jitter_p == 0.8 for recipe in (first, second))
    # The batched blur's kernel reaches +-4 sigma of the largest sigma (2 px), whatever the image size.
    assert blur_kernel_size() == 17


def test_simclr_blur_is_pils_with_a_seeded_sigma() -> None:
    """The reference blurs with PIL's GaussianBlur(radius=sigma), sigma ~ U(0.1, 2), kernel uncapped;
    sigma comes from torch's generator so that a seeded loader repeats it."""
    image = _image("RGB", (32, 32))
    blur = RandomGaussianBlur()
    torch.manual_seed(3)
    sigma = 0.1 + 1.9 * torch.rand(()).item()
    torch.manual_seed(3)
    blurred = blur(image)
    assert np.array_equal(
        np.asarray(blurred), np.asarray(image.filter(ImageFilter.GaussianBlur(radius=sigma)))
    )
    torch.manual_seed(3)
    assert np.array_equal(np.asarray(blur(image)), np.asarray(blurred))
    # sigma = 2 at 32 px blurs far beyond a 3-pixel kernel: neighbouring pixels end up nearly equal.
    strong = np.asarray(image.filter(ImageFilter.GaussianBlur(radius=2.0)), dtype=np.float64)
    assert (
        np.abs(np.diff(strong, axis=1)).mean()
        < 0.1 * np.abs(np.diff(np.asarray(image, dtype=np.float64), axis=1)).mean()
    )


def test_unknown_framework() -> None:
    with pytest.raises(ValueError, match=r"Unknown framework 'dino'.*simclr"):
        build_pretrain_transform("dino", 32, MEAN, STD)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("mode", "size"), [("RGB", 32), ("L", 32), ("RGBA", 64)])
def test_pretrain_views_shape_dtype_range(framework: str, mode: str, size: int) -> None:
    transform = build_pretrain_transform(framework, size, MEAN, STD, num_views=3)
    views = transform(_image(mode, (40, 36)))
    low, high = _normalized_range()
    assert len(views) == 3
    for view in views:
        assert view.shape == (3, size, size) and view.dtype == torch.float32
        assert bool((view >= low - 1e-5).all() and (view <= high + 1e-5).all())


def test_views_differ_and_seed_repeats() -> None:
    transform = build_pretrain_transform("simclr", 32, MEAN, STD)
    image = _image()
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(0)
    again = transform(image)
    assert not torch.equal(first[0], first[1])
    for view, repeated in zip(first, again, strict=True):
        torch.testing.assert_close(view, repeated, rtol=0, atol=0)


def test_transform_pickles_for_spawned_workers() -> None:
    transform = build_pretrain_transform("barlow", 32, MEAN, STD)
    restored = pickle.loads(pickle.dumps(transform))
    torch.manual_seed(1)
    expected = transform(_image())
    torch.manual_seed(1)
    torch.testing.assert_close(restored(_image()), expected)


def test_eval_transform_at_32_px_only_normalizes() -> None:
    image = _image()
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255.0
    expected = (pixels - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(build_eval_transform(32, MEAN, STD)(image), expected)


def test_eval_transform_center_crop() -> None:
    # A 256 x 256 image with a white 224 x 224 centre: resize to 256 (224 / 0.875) keeps it, the crop keeps
    # only it.
    pixels = np.zeros((256, 256), dtype=np.uint8)
    pixels[16:240, 16:240] = 255
    out = build_eval_transform(224, (0.0,) * 3, (1.0,) * 3)(Image.fromarray(pixels))
    assert out.shape == (3, 224, 224)
    torch.testing.assert_close(out, torch.ones(3, 224, 224))
    with pytest.raises(ValueError, match="crop_pct"):
        build_eval_transform(224, MEAN, STD, crop_pct=1.5)


def test_decode_transform_gives_fixed_size_uint8_with_one_channel_for_grey() -> None:
    grey = _image("L", (64, 48))
    out = build_decode_transform(32)(grey)
    assert out.shape == (1, 32, 32) and out.dtype == torch.uint8
    colour = build_decode_transform(32)(grey.convert("RGB"))
    assert colour.shape == (3, 32, 32)
    torch.testing.assert_close(colour, out.expand(3, -1, -1), rtol=0, atol=0)
    assert build_decode_transform(32)(_image("P", (40, 40))).shape == (3, 32, 32)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_to_normalized_tensor_is_torchvisions_pipeline_in_one_step(mode: str) -> None:
    pipeline = v2.Compose(
        [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(MEAN), list(STD))]
    )
    for seed in range(20):
        image = _image(mode, seed=seed)
        expected = pipeline(image.convert("RGB"))
        torch.testing.assert_close(ToNormalizedTensor(MEAN, STD)(image), expected, rtol=0, atol=0)


def _torchvision_view(recipe: ViewRecipe, size: int) -> v2.Compose:
    """The reference's per-sample pipeline (PKU-ML/Projector_Theory, data/pretrain_dataloader.py) as
    torchvision v2 transforms, for RGB images."""
    blur = [v2.RandomApply([RandomGaussianBlur()], p=recipe.blur_p)] if recipe.blur_p > 0 else []
    solarize = [v2.RandomSolarize(128, p=recipe.solarize_p)] if recipe.solarize_p > 0 else []
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=recipe.crop_scale, interpolation=v2.InterpolationMode.BICUBIC),
            v2.RandomApply([v2.ColorJitter(*recipe.jitter)], p=recipe.jitter_p),
            v2.RandomGrayscale(p=recipe.grayscale_p),
            *blur,
            *solarize,
            v2.RandomHorizontalFlip(p=recipe.flip_p),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(MEAN), list(STD)),
        ]
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("mode", "size"), [("L", 32), ("RGB", 32), ("RGBA", 32), ("RGB", 224)])
def test_views_are_torchvisions_pipeline_bit_for_bit(framework: str, mode: str, size: int) -> None:
    # build_view_transform composes the steps by hand for speed: it must draw the same random numbers in
    # the same order and make the same pixels as the v2 pipeline, a greyscale image on one channel included.
    for view, recipe in enumerate(view_recipes(framework, size)):
        ours, reference = build_view_transform(recipe, size, MEAN, STD), _torchvision_view(recipe, size)
        for seed in range(60 if size == 32 else 8):
            image = _image(mode, (36, 28) if size == 32 else (240, 180), seed=seed)
            torch.manual_seed(seed)
            got, after = ours(image), torch.rand(1)
            torch.manual_seed(seed)
            expected = reference(image.convert("RGB"))
            assert got.shape == (3, size, size)
            torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=f"view {view}, seed {seed}")
            assert torch.equal(after, torch.rand(1))  # the generator is left where torchvision leaves it


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_grey_images_make_the_views_of_their_rgb_copies(framework: str) -> None:
    # Greyscale images are augmented on one channel (to_rgb_or_grey): every operation must give the same
    # pixels as on the image's three-channel copy, the path of a colour image, for every random draw.
    transform = build_pretrain_transform(framework, 32, MEAN, STD, num_views=2)
    for seed in range(40):
        grey = _image("L", (28, 28), seed=seed)
        torch.manual_seed(seed)
        views = transform(grey)
        torch.manual_seed(seed)
        expected = transform(grey.convert("RGB"))
        for view, reference in zip(views, expected, strict=True):
            assert view.shape == (3, 32, 32)
            torch.testing.assert_close(view, reference, rtol=0, atol=0)
    grey = _image("L", (28, 28))
    evaluation = build_eval_transform(32, MEAN, STD)
    torch.testing.assert_close(evaluation(grey), evaluation(grey.convert("RGB")), rtol=0, atol=0)


def test_collate_repeats_grey_decoded_images_only_beside_colour_ones() -> None:
    decode = build_decode_transform(8)
    grey, colour = decode(_image("L", (8, 8))), decode(_image("RGB", (8, 8)))
    assert collate([{"views": [grey]}, {"views": [grey]}])["views"][0].shape == (2, 1, 8, 8)
    (mixed,) = collate([{"views": [grey]}, {"views": [colour]}])["views"]
    assert mixed.shape == (2, 3, 8, 8)
    torch.testing.assert_close(mixed[0], grey.expand(3, -1, -1), rtol=0, atol=0)
    torch.testing.assert_close(mixed[1], colour, rtol=0, atol=0)


def _image_dataset(labelled: bool) -> ImageDataset:
    rows = {"image": [_image("L", seed=i) for i in range(6)]}
    features = {"image": datasets.Image()}
    if labelled:
        rows["label"] = [i % 3 for i in range(6)]
        features["label"] = datasets.ClassLabel(names=["a", "b", "c"])
    dataset = datasets.Dataset.from_dict(rows, features=datasets.Features(features))
    return ImageDataset(dataset, "image", "label" if labelled else None, None, 3 if labelled else None)


def test_with_views_and_collate_through_a_data_loader() -> None:
    dataset = with_views(_image_dataset(labelled=True), build_pretrain_transform("simclr", 16, MEAN, STD))
    batches = list(DataLoader(dataset, batch_size=4, collate_fn=collate))
    assert [len(batch["label"]) for batch in batches] == [4, 2]
    first = batches[0]
    assert len(first["views"]) == 2 and first["views"][0].shape == (4, 3, 16, 16)
    assert first["label"].tolist() == [0, 1, 2, 0] and first["label"].dtype == torch.int64


def test_with_views_single_view_and_unlabelled() -> None:
    dataset = with_views(_image_dataset(labelled=False), build_eval_transform(16, MEAN, STD))
    row = dataset[0]
    assert set(row) == {"views"} and row["views"][0].shape == (3, 16, 16)
    batch = collate([dataset[0], dataset[1]])
    assert set(batch) == {"views"} and batch["views"][0].shape == (2, 3, 16, 16)


@pytest.mark.parametrize("as_png", [True, False])
def test_sixteen_bit_grey_images_are_scaled_not_clipped(tmp_path, as_png: bool) -> None:
    """A 16-bit greyscale PNG used to become nearly all white (PIL's convert clips above 255)."""
    levels = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)
    image = Image.fromarray(levels)
    if as_png:
        image.save(tmp_path / "deep.png")
        image = Image.open(tmp_path / "deep.png")
    grey = to_rgb_or_grey(image)
    assert grey.mode == "L"
    np.testing.assert_array_equal(np.asarray(grey), (levels >> 8).astype(np.uint8))
    view = build_eval_transform(32, MEAN, STD)(image)
    eight_bit = build_eval_transform(32, MEAN, STD)(Image.fromarray((levels >> 8).astype(np.uint8)))
    torch.testing.assert_close(view, eight_bit)

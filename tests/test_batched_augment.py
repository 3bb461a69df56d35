"""Tests for ibzoo.batched_augment: each vectorised operation against torchvision on single images, and
per-sample randomness of the whole pipeline."""

import datasets
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader

from ibzoo.augment import SOLARIZE_THRESHOLD, ViewRecipe, blur_kernel_size, build_decode_transform, with_views
from ibzoo.batched_augment import (
    AugmentInCollate,
    BatchedAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    build_batched_pretrain_augment,
    gaussian_blur,
    resized_crop,
    sample_crop_boxes,
)
from ibzoo.data import ImageDataset

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
# Every random operation off: a view is the normalised input.
IDENTITY = ViewRecipe(crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)


def _images(batch: int = 6, size: int = 12) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _normalize(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.mark.parametrize(
    ("ours", "reference", "factors"),
    [
        (adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.4, 0.8, 1.2, 0.0]),
        (adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.4, 0.8, 1.2, 0.0]),
        (adjust_saturation, TF.adjust_saturation, [0.6, 1.0, 1.4, 0.8, 1.2, 0.0]),
        (adjust_hue, TF.adjust_hue, [-0.1, 0.0, 0.1, 0.05, -0.5, 0.5]),
    ],
)
def test_color_operations_match_torchvision_per_sample(ours, reference, factors) -> None:
    images = _images()
    images[0, :, :2] = 0.5  # grey pixels: zero chroma, the case HSV handles specially
    expected = torch.stack([reference(image, factor) for image, factor in zip(images, factors, strict=True)])
    torch.testing.assert_close(ours(images, torch.tensor(factors)), expected, atol=2e-6, rtol=0)


def test_gaussian_blur_is_a_gaussian_with_edges_extended() -> None:
    images, sigmas = _images(), [0.1, 0.5, 1.0, 1.5, 2.0, 0.3]
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="replicate")
    expected = torch.stack(
        [
            TF.gaussian_blur(image, [5, 5], [s, s])[:, 2:-2, 2:-2]
            for image, s in zip(padded, sigmas, strict=True)
        ]
    )
    torch.testing.assert_close(gaussian_blur(images, torch.tensor(sigmas), 5), expected)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_batched_blur_agrees_with_the_references_pil_blur(sigma: float) -> None:
    """The per-sample path (and the reference) blur with PIL, which approximates the Gaussian by box blurs."""
    smooth = torch.nn.functional.interpolate(_images(1, 8), size=32, mode="bilinear", align_corners=False)
    pixels = (smooth[0] * 255).round().to(torch.uint8)
    image = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    pil = torch.from_numpy(np.array(image.filter(ImageFilter.GaussianBlur(radius=sigma)))).permute(2, 0, 1)
    difference = gaussian_blur(pixels[None].float() / 255, torch.tensor([sigma]), blur_kernel_size())[0]
    difference = (difference - pil.float() / 255).abs()
    # About half a grey level on average (PIL rounds to uint8), a few at most near the edges.
    assert difference.mean() < 1 / 255 and difference.max() < 5 / 255


def test_resized_crop_of_output_size_is_a_slice() -> None:
    images = _images()
    boxes = torch.tensor([[3.0, 2.0, 11.0, 10.0]]).expand(6, 4)
    torch.testing.assert_close(resized_crop(images, boxes, 8), images[:, :, 2:10, 3:11], atol=1e-6, rtol=0)


def test_resized_crop_matches_torchvision_bilinear_inside() -> None:
    # Away from the crop's border roi_align and torchvision's bilinear resize sample the same points; at
    # the border roi_align may read the pixel just outside the crop where torchvision repeats the edge.
    images = _images()
    boxes = torch.tensor([[3.0, 2.0, 9.0, 8.0]]).expand(6, 4)
    expected = TF.resized_crop(images, 2, 3, 6, 6, [12, 12], antialias=False)
    torch.testing.assert_close(resized_crop(images, boxes, 12)[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])


def test_crop_boxes_fit_and_cover_the_scale() -> None:
    torch.manual_seed(0)
    boxes = sample_crop_boxes(2000, 32, 24, (0.08, 1.0), torch.device("cpu"))
    left, top, right, bottom = boxes.unbind(dim=1)
    assert bool((left >= 0).all() and (top >= 0).all() and (right <= 24).all() and (bottom <= 32).all())
    width, height = right - left, bottom - top
    assert bool((width >= 1).all() and (height >= 1).all())
    area = width * height / (32 * 24)
    assert area.min() < 0.15 and area.max() > 0.9
    ratio = width / height
    assert bool((ratio > 0.6).all() and (ratio < 1.6).all())


def test_identity_recipe_only_normalizes() -> None:
    images = (_images() * 255).round().to(torch.uint8)
    augment = BatchedAugment([IDENTITY], 12, MEAN, STD, num_views=2)
    for view in augment(images):
        torch.testing.assert_close(view, _normalize(images / 255.0))


@pytest.mark.parametrize(
    ("recipe", "reference"),
    [
        (ViewRecipe(crop_scale=(1.0, 1.0), flip_p=1.0, jitter_p=0.0, grayscale_p=0.0), TF.horizontal_flip),
        (
            ViewRecipe(crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=1.0),
            lambda images: TF.rgb_to_grayscale(images, num_output_channels=3),
        ),
        (
            ViewRecipe(crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, solarize_p=1.0),
            lambda images: TF.solarize(images, SOLARIZE_THRESHOLD / 255.0),
        ),
    ],
)
def test_certain_operations_match_torchvision(recipe: ViewRecipe, reference) -> None:
    images = _images()
    (view,) = BatchedAugment([recipe], 12, MEAN, STD, num_views=1)(images)
    torch.testing.assert_close(view, _normalize(reference(images)))


@pytest.mark.parametrize("framework", ["simclr", "barlow"])
def test_views_shapes_and_per_sample_randomness(framework: str) -> None:
    # The same image eight times: parameters drawn once per batch would give eight equal outputs.
    images = (_images(1, 40) * 255).to(torch.uint8).expand(8, 3, 40, 40)
    torch.manual_seed(0)
    views = build_batched_pretrain_augment(framework, 32, MEAN, STD, num_views=2)(images)
    assert len(views) == 2
    for view in views:
        assert view.shape == (8, 3, 32, 32) and view.dtype == torch.float32
        assert len({tuple(sample.flatten()[:50].tolist()) for sample in view}) == 8
    assert not torch.equal(views[0], views[1])


def test_seed_repeats_and_blur_path_runs() -> None:
    augment = build_batched_pretrain_augment("barlow", 72, MEAN, STD)
    images = (_images(2, 80) * 255).to(torch.uint8)
    torch.manual_seed(3)
    first = augment(images)
    torch.manual_seed(3)
    for view, again in zip(first, augment(images), strict=True):
        torch.testing.assert_close(view, again, rtol=0, atol=0)
    assert first[0].shape == (2, 3, 72, 72)


@pytest.mark.parametrize(
    "recipe",
    [
        ViewRecipe(
            crop_scale=(1.0, 1.0), flip_p=0.0, jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.5, grayscale_p=0.0
        ),
        ViewRecipe(crop_scale=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.5),
    ],
    ids=["jitter", "blur"],
)
def test_operations_touch_only_their_samples(recipe: ViewRecipe) -> None:
    # Jitter and blur run on the samples drawn for them only: the others come out as they went in, and
    # a sample's view does not depend on the other images of its batch.
    images = _images(16)
    augment = BatchedAugment([recipe], 12, MEAN, STD, num_views=1)
    torch.manual_seed(5)
    (view,) = augment(images)
    changed = (view - _normalize(images)).flatten(1).abs().amax(dim=1) > 1e-5
    assert 0 < int(changed.sum()) < 16
    others = images.clone()
    others[1::2] = _images(16, 12).flip(0)[1::2]  # replace every other image
    torch.manual_seed(5)
    (again,) = augment(others)
    torch.testing.assert_close(again[0::2], view[0::2], rtol=0, atol=0)


def test_rejects_batches_neither_rgb_nor_grey() -> None:
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\) or greyscale.*build_decode_transform"):
        build_batched_pretrain_augment("simclr", 32, MEAN, STD)(torch.zeros(2, 2, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("framework", ["simclr", "barlow"])
def test_grey_batch_makes_the_views_of_its_rgb_copy(framework: str) -> None:
    # A (B, 1, H, W) batch skips saturation, hue and greyscale, which leave grey unchanged, but draws the
    # same parameters: its views equal its three-channel copy's up to float rounding (the luma weights
    # sum to 0.9999, not 1).
    generator = torch.Generator().manual_seed(1)
    grey = torch.randint(0, 256, (32, 1, 20, 20), generator=generator, dtype=torch.uint8)
    augment = build_batched_pretrain_augment(framework, 16, MEAN, STD)
    torch.manual_seed(3)
    views = augment(grey)
    torch.manual_seed(3)
    expected = augment(grey.expand(-1, 3, -1, -1))
    for view, reference in zip(views, expected, strict=True):
        assert view.shape == (32, 3, 16, 16)
        torch.testing.assert_close(view, reference, rtol=0, atol=2e-3)


def test_augment_in_collate_through_data_loader_workers() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 20, 24), dtype=np.uint8)
    rows = {"image": [Image.fromarray(image) for image in pixels], "label": [0, 1, 0, 1, 1]}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    data = ImageDataset(datasets.Dataset.from_dict(rows, features=features), "image", "label", ("a", "b"), 2)
    collate_fn = AugmentInCollate(build_batched_pretrain_augment("simclr", 16, MEAN, STD))
    loader = DataLoader(
        with_views(data, build_decode_transform(16)), batch_size=4, num_workers=1, collate_fn=collate_fn
    )
    batches = list(loader)
    assert [batch["label"].tolist() for batch in batches] == [[0, 1, 0, 1], [1]]
    assert len(batches[0]["views"]) == 2 and batches[0]["views"][1].shape == (4, 3, 16, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda() -> None:
    augment = build_batched_pretrain_augment("simclr", 32, MEAN, STD).cuda()
    views = augment(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, device="cuda"))
    assert views[0].device.type == "cuda" and views[0].shape == (4, 3, 32, 32)

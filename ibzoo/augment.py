"""Multi-view augmentation: the per-image (PIL) transforms that make a framework's views, and their
attachment to a data set.

What each view is, is the framework's (``ibzoo/frameworks/<framework>.py``, as :class:`ViewRecipe`s read
from its reference yaml: SimCLR's ``symmetric.yaml``, the ``asymmetric.yaml`` of Barlow Twins, BYOL and
MoCo v3, VICReg's own). Each view is: random resized crop (bicubic), colour jitter, greyscale, Gaussian
blur (PIL's ``ImageFilter.GaussianBlur(radius=sigma)`` with sigma uniform in 0.1..2 pixels and no cap on
the kernel), solarization, horizontal flip, then normalisation with the model's mean/std, following the
reference's ``data/pretrain_dataloader.py`` (PKU-ML/Projector_Theory, on solo-learn).

The per-sample transforms here run on PIL images in DataLoader workers. :mod:`ibzoo.batched_augment`
runs the same recipes on whole uint8 batches from :func:`build_decode_transform`, on the accelerator
or in the workers.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch.utils.data import default_collate
from torchvision.transforms import ColorJitter, InterpolationMode, RandomResizedCrop, v2

from ibzoo.data import ImageDataset
from ibzoo.frameworks import get_framework
from ibzoo.view_recipe import SMALL_IMAGE_SIZE, ViewRecipe

# Solarization inverts pixels at or above 128 of 255, as PIL's ImageOps.solarize does by default.
SOLARIZE_THRESHOLD = 128
# The blur's standard deviation in pixels, uniform per image (the reference's GaussianBlur).
BLUR_SIGMA = (0.1, 2.0)
# The one resize interpolation of the zoo: the training crops' (the reference's RandomResizedCrop is
# bicubic, data/pretrain_dataloader.py), declared by every pretrained config, so that evaluation and a
# user's timm.data.create_transform resize as training did. (ibzoo.batched_augment crops bilinearly.)
INTERPOLATION = "bicubic"
# The crop's aspect-ratio range: torchvision's RandomResizedCrop default, which the reference keeps.
CROP_RATIO = (3 / 4, 4 / 3)


def view_recipes(framework: str, image_size: int) -> tuple[ViewRecipe, ...]:
    """The view recipes of ``framework`` at ``image_size`` (its file in :mod:`ibzoo.frameworks` holds
    them); view v uses recipe v % len(recipes)."""
    return get_framework(framework).views(image_size)


def blur_kernel_size() -> int:
    """Odd Gaussian kernel wide enough for the largest sigma (+-4 sigma: 17 taps), at every image size.

    The reference blurs with PIL, whose kernel grows with sigma; a kernel capped at a tenth of the image
    (BYOL's 23 taps at 224 px, 3 at 32 px) would cut sigma = 2 down to a small box on small images.
    """
    return 2 * math.ceil(4 * BLUR_SIGMA[1]) + 1


class RandomGaussianBlur:
    """PIL image -> PIL image blurred by ``ImageFilter.GaussianBlur(radius=sigma)``, sigma uniform in
    ``BLUR_SIGMA``: the reference's ``GaussianBlur`` (PKU-ML/Projector_Theory,
    ``data/pretrain_dataloader.py``).

    Our own class rather than torchvision's ``GaussianBlur``, which needs one fixed kernel size (see
    :func:`blur_kernel_size`), and rather than the reference's, which draws sigma from Python's
    ``random``: sigma comes from torch's generator, which the pretraining loader seeds per image, so a
    resumed run makes the same views.
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        low, high = BLUR_SIGMA
        sigma = low + (high - low) * torch.rand(()).item()
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))


def to_rgb_or_grey(image: Image.Image) -> Image.Image:
    """RGB and greyscale ("L") images pass through; 16-bit greyscale becomes 8-bit greyscale, scaled;
    palette, RGBA and other modes convert to RGB.

    Greyscale images stay single-channel until the tensor step (:func:`to_three_channels`): every
    operation of the recipes gives a grey image's three equal channels the same values as its one
    channel (hue and saturation leave grey unchanged; tests/test_augment.py checks the views are
    identical), so working on one channel makes the same views for a third of the pixel work.
    """
    if image.mode in ("RGB", "L"):
        return image
    if image.mode.startswith("I"):
        # 16-bit greyscale (PIL's "I;16*", or "I" for a 16-bit PNG): PIL's convert clips every value above
        # 255 to white; keep the top 8 of the 16 bits instead, as an 8-bit scan of the image would.
        pixels = np.asarray(image, dtype=np.int64).clip(0, 65535) >> 8
        return Image.fromarray(pixels.astype(np.uint8), mode="L")
    return image.convert("RGB")


def to_three_channels(image: torch.Tensor) -> torch.Tensor:
    """(1 or 3, H, W) -> (3, H, W): a greyscale image's channel repeated, as the models take RGB."""
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


class ToNormalizedTensor:
    """PIL image (RGB or L) -> (3, H, W) float32 tensor in [0, 1], normalised with ``mean`` / ``std``.

    The arithmetic of torchvision's PILToTensor, ToDtype(scale=True) and Normalize (a test checks the
    result is bit-identical), in one step: as three v2 transforms, or even as their three kernels, the
    per-call overhead cost more than the arithmetic on a 32 px view (38 -> 18 us).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        height, width = image.height, image.width
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        if image.mode == "L":
            pixels = pixels.view(1, height, width)
        else:
            pixels = pixels.view(height, width, 3).permute(2, 0, 1)
        pixels = pixels.to(torch.float32).mul_(1 / 255)
        return to_three_channels(pixels).sub(self.mean).div_(self.std)


class ViewTransform:
    """One view of a recipe, per sample: PIL image -> (3, S, S) float32 tensor, normalised; S: image_size.

    The reference's pipeline (``data/pretrain_dataloader.py``): RandomResizedCrop (bicubic),
    RandomApply(ColorJitter), RandomGrayscale, RandomApply(GaussianBlur), RandomSolarize and
    RandomHorizontalFlip, in that order. The random parameters come from torchvision's own ``get_params``
    and the pixels from the same PIL calls as torchvision's kernels, with the same draws in the same order
    as ``torchvision.transforms.v2.Compose`` of those transforms: the views are bit-identical to it
    (tests/test_augment.py). Composed by hand because v2's per-transform dispatch (pytree flattening,
    kernel lookup, usage logging) cost more than the pixel work on a 32 px view: about 40 % less time per
    view (0.45 -> 0.28 ms on one core of this project's 2-core machine).

    A greyscale ("L") image stays single-channel until the tensor (see :func:`to_rgb_or_grey`), and so
    does a colour view once it turns grey: the steps after greyscale treat every channel alike.
    """

    def __init__(self, recipe: ViewRecipe, image_size: int, mean: Sequence[float], std: Sequence[float]):
        self.recipe, self.image_size = recipe, image_size
        self.interpolation = InterpolationMode(INTERPOLATION)
        self.jitter = ColorJitter(*recipe.jitter)  # its ranges, as torchvision reads the strengths
        self.blur = RandomGaussianBlur()
        self.to_tensor = ToNormalizedTensor(mean, std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        recipe, size = self.recipe, self.image_size
        image = to_rgb_or_grey(image)
        box = RandomResizedCrop.get_params(image, list(recipe.crop_scale), list(CROP_RATIO))
        image = v2.functional.resized_crop(image, *box, [size, size], self.interpolation, antialias=True)
        if _happens(recipe.jitter_p):
            image = self._jitter(image)
        if _happens(recipe.grayscale_p):
            image = image.convert("L")
        if recipe.blur_p > 0 and _happens(recipe.blur_p):
            image = self.blur(image)
        if recipe.solarize_p > 0 and _happens(recipe.solarize_p):
            image = ImageOps.solarize(image, SOLARIZE_THRESHOLD)
        if _happens(recipe.flip_p):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.to_tensor(image)

    def _jitter(self, image: Image.Image) -> Image.Image:
        """ColorJitter: brightness, contrast, saturation and hue, in a random order (torchvision's kernels
        are these ImageEnhance calls; hue leaves a grey image unchanged)."""
        j = self.jitter
        order, *factors = ColorJitter.get_params(j.brightness, j.contrast, j.saturation, j.hue)
        for step in order.tolist():
            factor = factors[step]
            if factor is None:
                continue
            if step == 0:
                image = ImageEnhance.Brightness(image).enhance(factor)
            elif step == 1:
                image = ImageEnhance.Contrast(image).enhance(factor)
            elif step == 2:
                image = ImageEnhance.Color(image).enhance(factor)
            elif image.mode != "L":
                image = v2.functional.adjust_hue(image, factor)
        return image


def _happens(probability: float) -> bool:
    """One draw of torch's generator: True with ``probability``. Compared in float32, as torchvision's
    random transforms compare (``torch.rand(1) >= p`` skips), but without a tensor comparison."""
    return torch.rand(1).item() < float(np.float32(probability))


def build_view_transform(
    recipe: ViewRecipe, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> ViewTransform:
    """One view's per-sample pipeline: PIL image -> (3, S, S) float32 normalised tensor; S: image_size."""
    return ViewTransform(recipe, image_size, mean, std)


class MultiViewTransform:
    """Apply several view pipelines to one image: PIL image -> list of V (3, S, S) tensors.

    A class rather than a closure so DataLoader workers can pickle it under the spawn start method.
    """

    def __init__(self, view_transforms: Sequence[Callable[[Image.Image], torch.Tensor]]) -> None:
        self.view_transforms = list(view_transforms)

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        return [transform(image) for transform in self.view_transforms]


def build_pretrain_transform(
    framework: str, image_size: int, mean: Sequence[float], std: Sequence[float], num_views: int = 2
) -> MultiViewTransform:
    """The per-sample pretraining augmentation of ``framework``.

    Args:
        framework: a name of ibzoo.frameworks.FRAMEWORK_NAMES, whose views it builds.
        image_size: Side S of the square views.
        mean, std: Per-channel normalisation, from the model's pretrained_cfg (timm data config).
        num_views: Number of views V; a framework with two recipes (asymmetric views) alternates them.

    Returns:
        A callable: PIL image (any mode and size) -> list of V float32 tensors of shape (3, S, S).
    """
    if num_views < 1:
        raise ValueError(f"build_pretrain_transform: num_views={num_views!r} must be at least 1.")
    recipes = view_recipes(framework, image_size)
    transforms = [build_view_transform(recipe, image_size, mean, std) for recipe in recipes]
    return MultiViewTransform([transforms[view % len(transforms)] for view in range(num_views)])


def build_eval_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float | None = None,
    interpolation: str = INTERPOLATION,
) -> v2.Compose:
    """Deterministic evaluation preprocessing: PIL image -> (3, S, S) float32 normalised tensor.

    The shorter side is resized to floor(S / crop_pct) with ``interpolation`` and the centre S x S kept,
    as ``timm.data.create_transform`` does for the same data config. ``crop_pct`` defaults to 1.0 (resize
    only) up to SMALL_IMAGE_SIZE and to timm's 0.875 above; pass the model's own value.
    """
    if crop_pct is None:
        crop_pct = 1.0 if image_size <= SMALL_IMAGE_SIZE else 0.875
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"build_eval_transform: crop_pct={crop_pct!r} must lie in (0, 1].")
    mode = v2.InterpolationMode(interpolation)
    resize = v2.Resize(math.floor(image_size / crop_pct), interpolation=mode, antialias=True)
    steps = [to_rgb_or_grey, resize, v2.CenterCrop(image_size)]
    return v2.Compose([*steps, ToNormalizedTensor(mean, std)])


def build_decode_transform(image_size: int) -> v2.Compose:
    """Decode only, for augmentation on the accelerator: PIL image -> (C, S, S) uint8 tensor.

    The shorter side is resized to S and the centre kept, so every image of a batch has one size. C is 1
    for a greyscale image and 3 otherwise: :func:`collate` repeats the grey channel only in a batch that
    mixes both, and :class:`ibzoo.batched_augment.BatchedAugment` augments an all-grey batch on one
    channel.
    """
    return v2.Compose(
        [
            to_rgb_or_grey,
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.PILToTensor(),
        ]
    )


class _ViewsAndLabels:
    """``with_transform`` callback: a batch of rows -> {"views": per-row lists of tensors, "label": ids}."""

    def __init__(self, image_column: str, label_column: str | None, transform: Callable) -> None:
        self.image_column, self.label_column, self.transform = image_column, label_column, transform

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        views = [self.transform(image) for image in batch[self.image_column]]
        out = {"views": [list(v) if isinstance(v, list | tuple) else [v] for v in views]}
        if self.label_column is not None:
            out["label"] = batch[self.label_column]
        return out


def with_views(data: ImageDataset, transform: Callable) -> datasets.Dataset:
    """Attach ``transform`` to the data set so that rows decode and augment on access.

    Args:
        data: A split from :func:`ibzoo.data.load_image_dataset`.
        transform: PIL image -> tensor (evaluation, decode-only) or list of V tensors (pretraining).

    Returns:
        A ``datasets.Dataset`` whose rows are {"views": list of V tensors, "label": int}; "label" is
        absent for unlabelled data. Evaluation rows have V = 1. Batch them with :func:`collate`.
    """
    return data.dataset.with_transform(_ViewsAndLabels(data.image_column, data.label_column, transform))


def _stack(views: list[torch.Tensor]) -> torch.Tensor:
    if len({view.shape[0] for view in views}) > 1:  # decoded grey images beside colour ones
        views = [to_three_channels(view) for view in views]
    return default_collate(views)  # in a DataLoader worker it stacks straight into shared memory


def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack rows of :func:`with_views` for a torch DataLoader.

    Returns:
        {"views": list of V (B, C, S, S) tensors, "label": (B,) int64 tensor when labelled};
        B: batch, V: views, S: image size; C = 3, except for decode-only rows
        (:func:`build_decode_transform`) of a batch whose images are all greyscale, C = 1.
    """
    num_views = len(rows[0]["views"])
    batch: dict[str, Any] = {"views": [_stack([row["views"][v] for row in rows]) for v in range(num_views)]}
    if "label" in rows[0]:
        batch["label"] = torch.tensor([row["label"] for row in rows], dtype=torch.int64)
    return batch

"""The pretraining recipes of :mod:`ibzoo.augment`, run on whole batches on the accelerator.

torchvision's v2 transforms draw one set of random parameters per call, so on a batch every image
would get the same crop and jitter. Here every operation draws its parameters per sample and is
vectorised over the batch: crops through ``torchvision.ops.roi_align`` (bilinear, several samples per
output pixel when shrinking), colour jitter in a random order per sample (each of the four operations
is evaluated at each of the four positions and kept where the sample's order puts it there), blur as a
grouped convolution with one kernel per sample. Colour operations follow torchvision's float formulas,
so each matches ``torchvision.transforms.v2.functional`` on a single image. Feed it uint8 batches from
``ibzoo.augment.build_decode_transform``.

Four details differ from the per-sample path, which follows the reference's PIL pipeline: the crop
resamples bilinearly (the reference is bicubic); the blur is an exact Gaussian of the same sigma (PIL
approximates it by three box blurs; they agree to about 1/255, tests/test_batched_augment.py); the flip
comes right after the crop instead of last (every later step works per pixel, on image means or with a
mirror-symmetric kernel, so a view is the same either way); and solarization inverts float values
>= 128/255 where PIL inverts the 8-bit pixels >= 128 of the rounded image (they differ by that rounding).

On a CPU-only machine the same module is also the faster way to augment: run it in the DataLoader
workers through :class:`AugmentInCollate` (one thread each); it spends far less time in Python per
image than the per-sample PIL pipeline.
"""

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ibzoo.augment import (
    BLUR_SIGMA,
    CROP_RATIO,
    SOLARIZE_THRESHOLD,
    ViewRecipe,
    blur_kernel_size,
    collate,
    view_recipes,
)

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
CROP_ATTEMPTS = 10


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _uniform(low: float, high: float, size: int, device: torch.device) -> torch.Tensor:
    return torch.rand(size, device=device) * (high - low) + low


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float RGB in [0, 1] -> (B, 1, H, W) luma; a (B, 1, H, W) grey batch is its own luma."""
    if images.shape[1] == 1:
        return images
    red, green, blue = images.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * red + GRAY_WEIGHTS[1] * green + GRAY_WEIGHTS[2] * blue).unsqueeze(1)


def adjust_brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale (B, 3, H, W) images in [0, 1] by (B,) factors, clamped to [0, 1]."""
    return (images * _per_sample(factors)).clamp(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend (B, 3, H, W) images with their mean luma by (B,) factors (1: unchanged)."""
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    factors = _per_sample(factors)
    return (factors * images + (1.0 - factors) * mean).clamp(0.0, 1.0)


def adjust_saturation(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Blend (B, 3, H, W) images with their greyscale version by (B,) factors (1: unchanged)."""
    factors = _per_sample(factors)
    return (factors * images + (1.0 - factors) * grayscale(images)).clamp(0.0, 1.0)


def adjust_hue(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (B, 3, H, W) images in [0, 1] by (B,) shifts in turns, through HSV."""
    value, max_channel = images.max(dim=1, keepdim=True)  # ties go to the first channel, as in PIL
    chroma = value - images.amin(dim=1, keepdim=True)
    saturation = chroma / torch.where(value > 0, value, 1.0)
    red, green, blue = images.split(1, dim=1)
    safe_chroma = torch.where(chroma > 0, chroma, 1.0)
    hue_sixths = torch.where(
        max_channel == 0,
        (green - blue) / safe_chroma,
        torch.where(max_channel == 1, (blue - red) / safe_chroma + 2.0, (red - green) / safe_chroma + 4.0),
    )
    hue = torch.remainder(hue_sixths / 6.0 + _per_sample(shifts), 1.0)
    # HSV -> RGB: channel n of (R, G, B) = (5, 3, 1) is V - V S clamp(min(k, 4 - k), 0, 1), k = (n + 6H) % 6.
    offsets = torch.tensor([5.0, 3.0, 1.0], device=images.device).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6.0 * hue, 6.0)
    return value - value * saturation * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur (B, C, H, W) images, each with its own sigma from (B,); edges extended, as PIL's blur does."""
    batch, channels, height, width = images.shape
    half = (kernel_size - 1) / 2
    positions = torch.linspace(-half, half, kernel_size, device=images.device)
    kernels = torch.exp(-0.5 * (positions / sigmas.view(-1, 1)) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    pad = kernel_size // 2
    flat = F.pad(images.reshape(1, batch * channels, height, width), (pad, pad, pad, pad), mode="replicate")
    flat = F.conv2d(flat, kernels.view(-1, 1, 1, kernel_size), groups=batch * channels)
    flat = F.conv2d(flat, kernels.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def sample_crop_boxes(
    batch: int, height: int, width: int, scale: tuple[float, float], device: torch.device
) -> torch.Tensor:
    """Draw RandomResizedCrop boxes: (B, 4) float (left, top, right, bottom) in pixel units.

    Like torchvision, each sample takes the first of 10 draws (area fraction uniform in ``scale``,
    log aspect ratio uniform in log 3/4..4/3) that fits the image; samples with none fall back to the
    whole image (torchvision's fallback for images whose own ratio lies within 3/4..4/3).
    """
    area = height * width * _uniform(*scale, batch * CROP_ATTEMPTS, device)
    log_ratio = _uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), batch * CROP_ATTEMPTS, device)
    crop_w = torch.sqrt(area * torch.exp(log_ratio)).round().view(batch, CROP_ATTEMPTS)
    crop_h = torch.sqrt(area / torch.exp(log_ratio)).round().view(batch, CROP_ATTEMPTS)
    fits = (crop_w >= 1) & (crop_w <= width) & (crop_h >= 1) & (crop_h <= height)
    first_fit = fits.int().argmax(dim=1, keepdim=True)
    found = fits.any(dim=1)
    crop_w = torch.where(found, crop_w.gather(1, first_fit).squeeze(1), float(width))
    crop_h = torch.where(found, crop_h.gather(1, first_fit).squeeze(1), float(height))
    # floor(u * (n + 1)) is uniform on 0..n, like torch.randint(0, n + 1).
    left = torch.floor(torch.rand(batch, device=device) * (width - crop_w + 1))
    top = torch.floor(torch.rand(batch, device=device) * (height - crop_h + 1))
    return torch.stack([left, top, left + crop_w, top + crop_h], dim=1)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop (B, C, H, W) float images to (B, 4) boxes and resize bilinearly to (B, C, size, size)."""
    indices = torch.arange(images.shape[0], device=images.device, dtype=images.dtype).view(-1, 1)
    # aligned=True puts pixel i's centre at i + 0.5, so a box of the output's size is an exact slice.
    return roi_align(images, torch.cat([indices, boxes.to(images.dtype)], dim=1), size, aligned=True)


class BatchedViewAugment(nn.Module):
    """One view recipe applied to a batch with parameters drawn per sample; used by BatchedAugment."""

    def __init__(self, recipe: ViewRecipe, image_size: int) -> None:
        super().__init__()
        self.recipe, self.image_size = recipe, image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float in [0, 1] -> (B, C, S, S) float in [0, 1]; S: image_size, C: 3 or 1 (grey).

        A grey batch draws the same random parameters as its three-channel copy, so it makes the same
        views, without the steps that leave grey unchanged (saturation, hue, greyscale).
        """
        recipe, batch, device = self.recipe, images.shape[0], images.device
        boxes = sample_crop_boxes(batch, images.shape[2], images.shape[3], recipe.crop_scale, device)
        views = resized_crop(images, boxes, self.image_size)
        views = torch.where(self._draw(recipe.flip_p, batch, device), views.flip(-1), views)
        views = self._color_jitter(views)
        to_grey = self._draw(recipe.grayscale_p, batch, device)
        if views.shape[1] == 3:
            views = torch.where(to_grey, grayscale(views).expand_as(views), views)
        if recipe.blur_p > 0:
            sigmas = _uniform(*BLUR_SIGMA, batch, device)
            # Only the samples drawn for a blur are convolved: the blur is the costliest step on a CPU.
            chosen = self._draw(recipe.blur_p, batch, device).view(-1).nonzero().view(-1)
            if chosen.numel() > 0:
                views[chosen] = gaussian_blur(views[chosen], sigmas[chosen], blur_kernel_size())
        if recipe.solarize_p > 0:
            solarized = torch.where(views >= SOLARIZE_THRESHOLD / 255.0, 1.0 - views, views)
            views = torch.where(self._draw(recipe.solarize_p, batch, device), solarized, views)
        return views

    @staticmethod
    def _draw(probability: float, batch: int, device: torch.device) -> torch.Tensor:
        return _per_sample(torch.rand(batch, device=device) < probability)

    def _color_jitter(self, images: torch.Tensor) -> torch.Tensor:
        batch, device = images.shape[0], images.device
        brightness, contrast, saturation, hue = self.recipe.jitter
        jittered = self._draw(self.recipe.jitter_p, batch, device).view(-1)
        operations = [
            (adjust_brightness, _uniform(max(0.0, 1 - brightness), 1 + brightness, batch, device)),
            (adjust_contrast, _uniform(max(0.0, 1 - contrast), 1 + contrast, batch, device)),
            (adjust_saturation, _uniform(max(0.0, 1 - saturation), 1 + saturation, batch, device)),
            (adjust_hue, _uniform(-hue, hue, batch, device)),
        ]
        order = torch.rand(batch, len(operations), device=device).argsort(dim=1)
        unchanging = (adjust_saturation, adjust_hue) if images.shape[1] == 1 else ()  # on grey images
        images = images.clone()
        for position in range(len(operations)):
            for index, (operation, factors) in enumerate(operations):
                if operation in unchanging:
                    continue
                # Each operation runs on the samples that take it at this position only: a quarter of the
                # work of running all four on the whole batch (the hue rotation alone is ~40 tensor ops).
                chosen = (jittered & (order[:, position] == index)).nonzero().view(-1)
                if chosen.numel() > 0:
                    images[chosen] = operation(images[chosen], factors[chosen])
        return images


class BatchedAugment(nn.Module):
    """Pretraining augmentation of whole batches: uint8 (B, C, H, W) -> list of V normalised views.

    B: batch, C: 3, or 1 for a batch of greyscale images (augmented on one channel, a third of the
    work, and repeated to RGB at the end), H x W: decoded size, V: views, S: image_size. Works on any
    device; computes in float32.
    Random parameters come from torch's default generator on the input's device, so
    ``torch.manual_seed`` makes it repeatable.
    """

    def __init__(
        self,
        recipes: Sequence[ViewRecipe],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        num_views: int = 2,
    ) -> None:
        super().__init__()
        if num_views < 1:
            raise ValueError(f"BatchedAugment: num_views={num_views!r} must be at least 1.")
        self.views = nn.ModuleList(
            BatchedViewAugment(recipes[view % len(recipes)], image_size) for view in range(num_views)
        )
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Augment a batch.

        Args:
            images: (B, 3, H, W) or greyscale (B, 1, H, W), uint8 or float in [0, 1].

        Returns:
            V float32 tensors of shape (B, 3, S, S), normalised with mean/std.
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"BatchedAugment expects (B, 3, H, W) or greyscale (B, 1, H, W) images, got shape "
                f"{tuple(images.shape)}; decode with ibzoo.augment.build_decode_transform."
            )
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return [(view(images).expand(-1, 3, -1, -1) - mean) / std for view in self.views]


def build_batched_pretrain_augment(
    framework: str, image_size: int, mean: Sequence[float], std: Sequence[float], num_views: int = 2
) -> BatchedAugment:
    """The batched counterpart of :func:`ibzoo.augment.build_pretrain_transform`, same recipes."""
    return BatchedAugment(view_recipes(framework, image_size), image_size, mean, std, num_views)


class AugmentInCollate:
    """DataLoader ``collate_fn`` that stacks decode-only rows and augments the whole batch in the worker.

    Rows come from ``with_views(data, build_decode_transform(S))``; the result is
    {"views": list of V (B, 3, S, S) float32 tensors, "label": (B,) int64 tensor when labelled}.
    """

    def __init__(self, augment: BatchedAugment) -> None:
        self.augment = augment

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(rows)
        batch["views"] = self.augment(batch["views"][0])
        return batch

"""``ViewRecipe``: how one augmented view of an image is made, as a framework's file states it.

Each framework (:mod:`ibzoo.frameworks`) gives its views as recipes read from its reference
configuration; :mod:`ibzoo.augment` (per image, PIL) and :mod:`ibzoo.batched_augment` (whole batches)
carry them out. Here so that both sides can import it without importing each other.
"""

from dataclasses import dataclass

__all__ = ["SMALL_IMAGE_SIZE", "ViewRecipe"]

# Up to this size images take the CIFAR recipes (no blur in most frameworks) and resize-only evaluation.
SMALL_IMAGE_SIZE = 64


@dataclass(frozen=True)
class ViewRecipe:
    """Probabilities and strengths of the random operations that make one view.

    Attributes:
        crop_scale: Range of the crop's area, as a fraction of the image's.
        flip_p: Probability of a horizontal flip.
        jitter: Colour jitter strengths (brightness, contrast, saturation, hue), as in ColorJitter.
        jitter_p: Probability of applying the colour jitter.
        grayscale_p: Probability of converting to greyscale (kept as 3 channels).
        blur_p: Probability of a Gaussian blur, sigma uniform in BLUR_SIGMA.
        solarize_p: Probability of solarization.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    solarize_p: float = 0.0

"""The data sets the zoo publishes weights for, one row each: pretrained tag, Hub data set, input size,
normalisation, and which family of recipes (:class:`ibzoo.frameworks.Family`) its images take.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ibzoo.frameworks import Family

__all__ = ["DATASETS", "DatasetCfg"]


@dataclass(frozen=True)
class DatasetCfg:
    """A dataset the zoo publishes weights for: its pretrained tag, input size and normalisation."""

    tag: str
    hf_dataset: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    family: Family
    """Which of the paper's recipes its images take: "cifar" (32 px) or "imagenet" (224 px)."""


DATASETS = {
    "cifar10": DatasetCfg(
        "cifar10",
        "uoft-cs/cifar10",
        (3, 32, 32),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        1.0,
        "cifar",
    ),
    "cifar100": DatasetCfg(
        "cifar100",
        "uoft-cs/cifar100",
        (3, 32, 32),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        1.0,
        "cifar",
    ),
    "in100": DatasetCfg(
        "in100",
        "clane9/imagenet-100",
        (3, 224, 224),
        IMAGENET_DEFAULT_MEAN,
        IMAGENET_DEFAULT_STD,
        0.875,
        "imagenet",
    ),
    # 28 px greyscale images resized to 32 px and repeated over 3 channels. Small images take the CIFAR
    # recipe (projector sizes, learning rate, MI weight) whatever the backbone's stem.
    "fmnist": DatasetCfg(
        "fmnist", "zalando-datasets/fashion_mnist", (3, 32, 32), (0.2860,) * 3, (0.3530,) * 3, 1.0, "cifar"
    ),
}

"""Tiny labelled image sets for tests: greyscale images whose brightness is their class, so that even an
untrained encoder's features tell the classes apart and a probe beats chance on a handful of images."""

from pathlib import Path

import datasets
import numpy as np
from PIL import Image


def brightness_images(
    num_rows: int, num_classes: int, size: int = 32, seed: int = 0
) -> tuple[list[Image.Image], list[int]]:
    """``num_rows`` greyscale ``size`` x ``size`` images, row i of class i % ``num_classes``: noise in
    0..59 plus a brightness step per class, spread over 0..254."""
    rng = np.random.default_rng(seed)
    step = 195 // max(num_classes - 1, 1)
    labels = [row % num_classes for row in range(num_rows)]
    images = [Image.fromarray(rng.integers(0, 60, (size, size), dtype=np.uint8) + step * y) for y in labels]
    return images, labels


def save_brightness_dataset(
    path: str | Path, num_train: int, num_test: int, num_classes: int, size: int = 32
) -> Path:
    """A ``save_to_disk`` folder of :func:`brightness_images` with train and test splits, columns
    ``image`` and ``label`` (a ClassLabel named "a", "b", ...)."""
    names = [chr(ord("a") + index) for index in range(num_classes)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    splits = {}
    for seed, (split, num_rows) in enumerate((("train", num_train), ("test", num_test))):
        images, labels = brightness_images(num_rows, num_classes, size, seed)
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return Path(path)

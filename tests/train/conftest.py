"""Fixtures shared by the train/ script tests."""

import numpy as np
import pytest

from helpers.idx import write_idx
from helpers.images import brightness_images


@pytest.fixture
def idx_dir(tmp_path):
    """64 train and 64 test 28x28 images whose brightness grows with the label, in Fashion-MNIST's IDX
    files (what apt-get install dataset-fashion-mnist installs)."""
    folder = tmp_path / "idx"
    folder.mkdir()
    for seed, prefix in enumerate(("train", "t10k")):
        images, labels = brightness_images(64, num_classes=10, size=28, seed=seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.stack([np.asarray(i) for i in images]))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.asarray(labels))
    return folder

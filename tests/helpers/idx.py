"""Writing IDX files (MNIST's format), so tests can make a small Fashion-MNIST of their own."""

import gzip
from pathlib import Path

import numpy as np


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as unsigned bytes in IDX format, gzip'ed when ``path`` ends in ``.gz``; the
    inverse of :func:`ibzoo.data.read_idx`."""
    path = Path(path)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())
    return path

"""Projection heads: the MLP (``mlp.py``), finite scalar quantization (``fsq.py``), the sparse top-k
autoencoder (``topk.py``), and ``ProjectorConfig`` / ``build_projector`` composing them into the paper's
variants (``config.py``).
"""

from ibzoo.projectors.config import ProjectorConfig, ProjectorStack, build_projector
from ibzoo.projectors.fsq import DiscretizedProjector, FiniteScalarQuantizer
from ibzoo.projectors.mlp import MLPProjector
from ibzoo.projectors.topk import TopKLatents, TopKSparseProjector

__all__ = [
    "DiscretizedProjector",
    "FiniteScalarQuantizer",
    "MLPProjector",
    "ProjectorConfig",
    "ProjectorStack",
    "TopKLatents",
    "TopKSparseProjector",
    "build_projector",
]

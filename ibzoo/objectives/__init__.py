"""Self-supervised objectives: SimCLR and Barlow Twins losses (``simclr.py``, ``barlow_twins.py``), the
matrix mutual-information regulariser (``matrix_mi.py``) of Ouyang et al., "Projection Head is Secretly an
Information Bottleneck", ICLR 2025 (arXiv 2503.00507), and ``BottleneckObjective`` combining them
(``objective.py``): loss = L_ssl(Z2) + lambda * I(Z1; Z2).
"""

from ibzoo.objectives.barlow_twins import BarlowTwinsLoss
from ibzoo.objectives.matrix_mi import (
    InformationPlane,
    MatrixEntropies,
    information_plane,
    joint_matrix_renyi_entropy,
    matrix_entropies,
    matrix_mutual_information,
    matrix_renyi_entropy,
)
from ibzoo.objectives.objective import (
    BottleneckObjective,
    Framework,
    ObjectiveConfig,
    ObjectiveOutput,
    build_ssl_loss,
)
from ibzoo.objectives.simclr import NTXentLoss

__all__ = [
    "BarlowTwinsLoss",
    "BottleneckObjective",
    "Framework",
    "InformationPlane",
    "MatrixEntropies",
    "NTXentLoss",
    "ObjectiveConfig",
    "ObjectiveOutput",
    "build_ssl_loss",
    "information_plane",
    "joint_matrix_renyi_entropy",
    "matrix_entropies",
    "matrix_mutual_information",
    "matrix_renyi_entropy",
]

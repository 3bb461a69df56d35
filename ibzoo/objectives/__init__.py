"""The training objective: the matrix mutual-information regulariser (``matrix_mi.py``) of Ouyang et al.,
"Projection Head is Secretly an Information Bottleneck", ICLR 2025 (arXiv 2503.00507), and
``BottleneckObjective`` (``objective.py``): loss = L_ssl + lambda * I(Z1; Z2), with L_ssl the framework's
own loss (:mod:`ibzoo.frameworks`).
"""

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
    FRAMEWORK_SETTINGS,
    BottleneckObjective,
    ObjectiveConfig,
    ObjectiveOutput,
    framework_settings,
    recorded_objective_config,
)

__all__ = [
    "FRAMEWORK_SETTINGS",
    "BottleneckObjective",
    "InformationPlane",
    "MatrixEntropies",
    "ObjectiveConfig",
    "ObjectiveOutput",
    "framework_settings",
    "information_plane",
    "joint_matrix_renyi_entropy",
    "matrix_entropies",
    "matrix_mutual_information",
    "matrix_renyi_entropy",
    "recorded_objective_config",
]

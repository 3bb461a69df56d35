"""Joint-embedding frameworks, one file each (``simclr.py``, ``barlow_twins.py``, ``byol.py``,
``vicreg.py``, ``mocov3.py``), listed in ``registry.py``; ``framework.py`` says what a framework file holds.
"""

from ibzoo.frameworks.barlow_twins import BarlowTwinsLoss
from ibzoo.frameworks.byol import BYOLLoss
from ibzoo.frameworks.framework import Family, Framework, Recipe
from ibzoo.frameworks.mocov3 import MoCoV3Loss
from ibzoo.frameworks.registry import FRAMEWORK_NAMES, FRAMEWORK_TITLES, FRAMEWORKS, get_framework
from ibzoo.frameworks.simclr import NTXentLoss
from ibzoo.frameworks.vicreg import VICRegLoss

__all__ = [
    "FRAMEWORKS",
    "FRAMEWORK_NAMES",
    "FRAMEWORK_TITLES",
    "BYOLLoss",
    "BarlowTwinsLoss",
    "Family",
    "Framework",
    "MoCoV3Loss",
    "NTXentLoss",
    "Recipe",
    "VICRegLoss",
    "get_framework",
]
